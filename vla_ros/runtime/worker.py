"""The inference worker: one thread that runs the policy on the newest observation only (ROS-free).

The mailbox holds one (observation or undecoded frame, instruction) pair; a newer submit replaces an
older one that has not started, so no queue grows while the model is slower than the camera, and
only the frame the policy will use is decoded (by this thread, when it takes the mailbox). A frame
that fails to decode is reported to `on_reject` and never reaches the policy. A call that raises,
returns an invalid chunk (vla_ros.core.types.validate_chunk) or runs longer than `max_inference_s`
reports a fault; the first call that succeeds in time afterwards reports the recovery.
vla_ros.runtime.process_worker runs the same loop with the policy in a child process.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from vla_ros.core.types import (
    ActionChunk,
    Instruction,
    InstructionCheck,
    Observation,
    Policy,
    PolicyInputs,
    instruction_check,
    policy_inputs,
    validate_chunk,
)

CallResult = tuple[ActionChunk | None, str | None]  # (chunk, None) or (None, why it failed)


def run_policy(policy: Policy, observation: Observation, instruction: Instruction) -> CallResult:
    """One policy call, checked: (chunk stamped with the call's inputs, None) or (None, reason)."""
    try:
        chunk = policy.predict(observation, instruction)
    except Exception as exc:  # the policy is foreign code: every failure becomes a fault
        return None, f"policy raised {type(exc).__name__}: {exc}"
    if not isinstance(chunk, ActionChunk):
        return None, f"policy returned {type(chunk).__name__}, not an ActionChunk"
    reason = validate_chunk(chunk)
    if reason is not None:
        return None, f"invalid policy output: {reason}"
    if chunk.instruction != instruction.text or chunk.stamp != observation.stamp:
        # The chunk belongs to the call's inputs whatever the policy filled in.
        chunk = dataclasses.replace(chunk, instruction=instruction.text, stamp=observation.stamp)
    return chunk, None


ChunkCallback = Callable[[ActionChunk], None]
FaultCallback = Callable[["str | None"], None]  # reason, or None when the policy works again
RejectCallback = Callable[[str, Exception], None]  # (input kind "image", why), for a frame that fails


class Frame(Protocol):
    """Camera frame(s) checked on arrival but not decoded (vla_ros.core.images.CompressedFrame, RawFrame,
    or MultiFrame: every camera's frame and the proprio vector)."""

    stamp: float

    def decode(self) -> Observation: ...


def policy_input_size(policy: object) -> int | None:
    """The side of the square image the policy's model takes (VlaPolicy: its preprocessor's), or None."""
    size = getattr(policy, "input_size", None)
    if size is None:
        size = getattr(getattr(getattr(policy, "preprocessor", None), "cfg", None), "image_size", None)
    return size if isinstance(size, int) and size > 0 else None


@dataclass
class WorkerStats:
    """Counters of the worker, read by the node's status (plain ints and floats)."""

    calls_started: int = 0
    calls_ok: int = 0
    errors: int = 0  # raised, invalid output, or too slow
    timeouts: int = 0
    dropped: int = 0  # submissions replaced before they ran
    rejected: int = 0  # frames that failed to decode (never reached the policy)
    last_decode_s: float = 0.0
    last_latency_s: float = 0.0
    last_error: str = ""


class InferenceWorker:
    """Runs `policy.predict` in a background thread on the newest submitted observation."""

    def __init__(self, policy: Policy | None, on_chunk: ChunkCallback, on_fault: FaultCallback,
                 max_inference_s: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 name: str = "vla-inference", nice: int = 0, on_reject: RejectCallback | None = None) -> None:
        self.policy = policy  # None in the process worker: the policy lives in the child
        self._on_chunk = on_chunk
        self._on_fault = on_fault
        self._on_reject = on_reject
        self._max_s = float(max_inference_s)
        self._clock = clock
        self._name = name
        self._nice = nice
        self._cond = threading.Condition()
        self._slot: tuple[Observation | Frame, Instruction] | None = None
        self._call_started: float | None = None  # clock() when the running call began
        self._call_id = 0
        self._timed_out_call = -1  # id of the call the watchdog already reported
        self._faulted = False
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self.stats = WorkerStats()

    # -- life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the inference thread and its watchdog (idempotent)."""
        if self._threads:
            return
        self._stopping = False
        self._threads = [threading.Thread(target=self._run, name=self._name, daemon=True),
                         threading.Thread(target=self._watch, name=self._name + "-watchdog",
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 2.0) -> bool:
        """Stop both threads; returns False when a policy call is still stuck (the thread is a daemon)."""
        with self._cond:
            self._stopping = True
            self._slot = None
            self._cond.notify_all()
        alive = False
        for t in self._threads:
            t.join(timeout_s)
            alive = alive or t.is_alive()
        self._threads = []
        return not alive

    # -- inputs -------------------------------------------------------------------------------
    def submit(self, observation: Observation, instruction: Instruction) -> None:
        """Offer the newest observation; replaces any pending one that has not started."""
        self._put(observation, instruction)

    def submit_frame(self, frame: Frame, instruction: Instruction) -> None:
        """Offer the newest undecoded frame; this thread decodes it only if it is still the newest."""
        self._put(frame, instruction)

    def _put(self, item: Observation | Frame, instruction: Instruction) -> None:
        with self._cond:
            if self._slot is not None:
                self.stats.dropped += 1
            self._slot = (item, instruction)
            self._cond.notify_all()

    @property
    def input_size(self) -> int | None:
        """The side of the policy's square model input, when the policy says (see policy_input_size)."""
        return policy_input_size(self.policy)

    @property
    def instruction_check(self) -> InstructionCheck | None:
        """The policy's check_instruction (None: it accepts every instruction)."""
        return instruction_check(self.policy)

    @property
    def inputs(self) -> PolicyInputs:
        """What the policy takes: cameras, proprio length, actions per chunk (see policy_inputs)."""
        return policy_inputs(self.policy)

    def clear(self) -> None:
        """Drop the pending observation (e.g. the instruction became empty)."""
        with self._cond:
            self._slot = None

    def describe(self) -> str:
        """The policy's describe() for the status (a failing describe() is reported, not raised)."""
        try:
            return str(self.policy.describe())
        except Exception as exc:  # foreign code: the status still gets a line
            return f"{type(self.policy).__name__} (describe failed: {exc})"

    @property
    def faulted(self) -> bool:
        """True between a failed call and the next call that succeeds in time."""
        return self._faulted

    @property
    def busy_s(self) -> float:
        """How long the running call has been going [s]; 0 when idle."""
        started = self._call_started
        return 0.0 if started is None else max(0.0, self._clock() - started)

    # -- threads ------------------------------------------------------------------------------
    def _lower_priority(self) -> None:
        if self._nice > 0 and hasattr(os, "setpriority"):
            try:  # per-thread on Linux: the control thread wins the CPU when both want it
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self._nice)
            except OSError:
                pass

    def _run(self) -> None:
        self._lower_priority()
        while True:
            with self._cond:
                while self._slot is None and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
                item, instruction = self._slot
                self._slot = None
            observation = self._decode(item)
            if observation is None:
                continue  # rejected: the next good frame runs
            problem = self._prepare()
            if problem is not None:
                self._fail(problem)
                continue
            with self._cond:
                self._call_id += 1
                call_id = self._call_id
                self._call_started = started = self._clock()
                self.stats.calls_started += 1
                self._cond.notify_all()  # wake the watchdog
            chunk, error = self._call(observation, instruction)
            with self._cond:
                latency = self._clock() - started
                self._call_started = None
                reported_by_watchdog = self._timed_out_call == call_id
                stopping = self._stopping
                self._cond.notify_all()
            if stopping:
                return  # stopped during the call: not the policy's fault
            self.stats.last_latency_s = latency
            if reported_by_watchdog:
                continue  # the fault is already reported; a late chunk is discarded
            if error is None and latency > self._max_s:
                self.stats.timeouts += 1
                error = f"policy call took {latency:.3f} s > max_inference_s {self._max_s:.3f} s"
            if error is not None:
                self._fail(error)
                continue
            self.stats.calls_ok += 1
            if self._faulted:
                self._faulted = False
                self._notify(self._on_fault, None)
            self._notify(self._on_chunk, chunk)

    def _decode(self, item: Observation | Frame) -> Observation | None:
        """The observation of a submitted item; None (counted, reported) when the frame is damaged."""
        if isinstance(item, Observation):
            return item
        started = time.perf_counter()
        try:
            observation = item.decode()
        except Exception as exc:  # ImageError, or any failure of the decoder: the input is rejected
            self.stats.rejected += 1
            if self._on_reject is not None:
                self._notify(self._on_reject, "image", exc)
            return None
        finally:
            self.stats.last_decode_s = time.perf_counter() - started
        return observation

    def _notify(self, callback: Callable, *args: object) -> None:
        """Call a consumer callback; its own bugs must not stop the worker."""
        try:
            callback(*args)
        except Exception as exc:
            self.stats.last_error = f"callback {getattr(callback, '__name__', callback)} raised {exc!r}"

    def _prepare(self) -> str | None:
        """Get ready for a call, outside the timed part; returns why not (the process worker
        rebuilds a killed policy process here)."""
        return None

    def _call(self, observation: Observation, instruction: Instruction) -> CallResult:
        """One checked policy call (the process worker forwards it to its child)."""
        return run_policy(self.policy, observation, instruction)

    def _on_timeout(self) -> None:
        """Called by the watchdog after reporting a call past max_inference_s (the process worker
        kills its child here; a thread cannot be stopped, its late result is discarded)."""

    def _fail(self, reason: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = reason
        self._faulted = True
        self._notify(self._on_fault, reason)

    def _watch(self) -> None:
        """Report a call that runs past max_inference_s while it is still running (a hang)."""
        while True:
            with self._cond:
                if self._stopping:
                    return
                started, call_id = self._call_started, self._call_id
                if started is None or self._timed_out_call == call_id:
                    self._cond.wait()
                    continue
                remaining = started + self._max_s - self._clock()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                self._timed_out_call = call_id
                self.stats.timeouts += 1
            self._fail(f"policy call running for more than max_inference_s {self._max_s:.3f} s "
                       "(hung or too slow)")
            self._on_timeout()
