"""A deterministic test double for `Policy`: no model, configurable latency, CPU load and failures.

Used by the node tests and `vla-ros bench-control`; it is NOT a model. Its actions depend only on
the instruction text (a fixed direction per instruction), so a test can tell which instruction
produced a command. Failure modes: "raise" (exception), "nan" (NaN actions), "hang" (blocks until
`release()` or `hang_limit_s`), "bad_shape" (a [T, 6] chunk). `mode` may be changed at any time;
with `mode_file` set, each call reads the mode from that file (so a test can switch the mode of a
policy living in another process).
"""

from __future__ import annotations

import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.core.types import ACTION_DIM, ActionChunk, Instruction, Observation

MODES = ("ok", "raise", "nan", "hang", "bad_shape")
BUSY_KINDS = ("sleep", "python", "numpy")


def instruction_direction(text: str) -> np.ndarray:
    """The unit translation direction [3] the synthetic policy uses for an instruction."""
    seed = zlib.crc32(text.encode("utf-8"))
    v = np.random.default_rng(seed).normal(size=3)
    return v / np.linalg.norm(v)


@dataclass
class SyntheticPolicy:
    """Deterministic stand-in for a VLA: `latency_s` of `busy` work, then a chunk of constant actions.

    busy: "sleep" (idle wait), "python" (a pure-Python loop holding the GIL: the worst case for the
    control thread), "numpy" (matrix products that release the GIL, like a real backend).
    """

    latency_s: float = 0.05
    busy: str = "sleep"
    mode: str = "ok"
    chunk_len: int = 4
    step_m: float = 0.004  # translation of one action [m]
    hang_limit_s: float = 3600.0
    mode_file: str = ""  # when set and readable, overrides `mode` at every call
    calls: list[tuple[str, float]] = field(default_factory=list)  # (instruction, observation stamp)
    _release: threading.Event = field(default_factory=threading.Event, repr=False)

    def __post_init__(self) -> None:
        if self.busy not in BUSY_KINDS:
            raise ValueError(f"busy must be one of {BUSY_KINDS}, got {self.busy!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")

    def describe(self) -> str:
        """Text for VlaStatus.backend."""
        return f"synthetic test double ({self.busy} {self.latency_s * 1e3:.0f} ms, mode {self.mode})"

    def release(self) -> None:
        """End a running hang (and let every later "hang" call return at once)."""
        self._release.set()

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        """Work for `latency_s`, then return actions along the instruction's direction."""
        mode = self._current_mode()
        self.calls.append((instruction.text, observation.stamp))
        t0 = time.perf_counter()
        self._work(self.latency_s)
        if mode == "hang":
            self._release.wait(self.hang_limit_s)
        if mode == "raise":
            raise RuntimeError("synthetic policy failure (mode 'raise')")
        actions = np.zeros((self.chunk_len, ACTION_DIM))
        actions[:, :3] = instruction_direction(instruction.text) * self.step_m
        actions[:, 6] = 1.0 if len(instruction.text) % 2 == 0 else 0.0
        if mode == "nan":
            actions[0, 0] = np.nan
        if mode == "bad_shape":
            actions = actions[:, :6]
        return ActionChunk(actions=actions, stamp=observation.stamp, instruction=instruction.text,
                           timings={"total": time.perf_counter() - t0})

    def _current_mode(self) -> str:
        if self.mode_file:
            try:
                text = Path(self.mode_file).read_text().strip()
            except OSError:
                return self.mode
            if text in MODES:
                return text
        return self.mode

    def _work(self, seconds: float) -> None:
        if seconds <= 0:
            return
        if self.busy == "sleep":
            time.sleep(seconds)
            return
        deadline = time.perf_counter() + seconds
        if self.busy == "python":
            x = 0
            while time.perf_counter() < deadline:
                for i in range(200):
                    x += i * i
            return
        a = np.random.default_rng(0).random((128, 128))
        while time.perf_counter() < deadline:
            a = np.tanh(a @ a)
