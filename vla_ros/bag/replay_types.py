"""What a replay is given and what it produces: options, the record of a run, the result."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.bag.commands import CommandSeries
from vla_ros.bag.compare import CompareReport
from vla_ros.bag.latency import LatencyModel
from vla_ros.core.types import ActionChunk, Observation

STATUS_TOPIC = "~/status"  # the node publishes VlaStatus on ~/status
# What a replay runs: node = policy and control in one process (vla_node); split = both halves, each chunk
# sent as a vla_ros/ActionChunk message to a ControlHalf with zero link latency; control = the control half
# alone, fed the ActionChunk messages recorded in the bag (no policy).
REPLAY_MODES = ("node", "split", "control")


class ReplayError(RuntimeError):
    """Replay cannot go on (bad input the user must fix); the message says what and where."""


@dataclass
class CompareSpec:
    """What --compare checks the run against."""

    reference: CommandSeries
    exact: bool
    tolerance: np.ndarray
    max_violations: float = 0.0
    max_unmatched: float = 0.0


@dataclass
class ReplayOptions:
    """Everything about a replay that is not the node configuration."""

    latency: LatencyModel = field(default_factory=LatencyModel)
    armed: bool = True  # replay simulates an armed robot
    stamp_source: str = "receive"  # image stamps: receive (log time, as the node does) | header
    namespace: str = "/"  # resolves the config's relative topic names
    status_topic: str = STATUS_TOPIC
    instruction: str | None = None  # fixed instruction at the start (bags without an instruction topic)
    progress: bool = False
    strict: bool = False  # any rejected input message aborts the replay
    plot: bool = True
    overwrite: bool = False
    compare: CompareSpec | None = None
    # Do not run policy calls whose chunk is replaced before any tick uses it: identical commands,
    # fewer model runs (their failures then go uncounted). Off for the measured latency model.
    skip_superseded: bool = False
    mode: str = "node"  # one of REPLAY_MODES

    @property
    def lazy(self) -> bool:
        """Whether superseded calls are skipped (the measured model needs every call's wall time)."""
        return self.skip_superseded and self.latency.kind != "measured"


@dataclass
class Inference:
    """One simulated policy call: when it started and returned on the bag's clock, and its outcome."""

    index: int
    start_ns: int
    finish_ns: int
    image_stamp_ns: int
    latency_s: float
    instruction: str
    observation: Observation | None  # dropped once the policy ran (or the call was skipped)
    instruction_stamp: float = 0.0  # when the instruction was received [s]
    chunk: ActionChunk | None = None
    error: str | None = None
    ran: bool = False
    timeout_ns: int | None = None  # when the watchdog reports a call longer than max_inference_s
    result: str = ""


@dataclass
class ReplayRecord:
    """What happened during a replay, for the output files: one command row per tick, every call."""

    t0: int = 0  # log time of the first input message [ns]
    t_end: int = 0  # log time of the last input message [ns]
    rows: list[dict] = field(default_factory=list)  # commands.csv rows (CSV_COLUMNS keys)
    inferences: list[Inference] = field(default_factory=list)
    instruction_changes: list[tuple[int, str]] = field(default_factory=list)  # (t_ns, text)
    image_count: int = 0  # decoded frames of the primary camera
    encodings: Counter[str] = field(default_factory=Counter)  # the primary camera's
    extra_images: Counter[str] = field(default_factory=Counter)  # decoded frames per extra camera topic
    joint_states: int = 0  # joint state messages with every proprio joint
    not_ready: Counter[str] = field(default_factory=Counter)  # offers without an observation, by reason
    switch_jumps: list[float] = field(default_factory=list)  # command jump at each chunk switch [m/s|rad/s]
    chunk_delays: list[float] = field(default_factory=list)  # arrival - observation of accepted chunks [s]
    estops: int = 0
    rejected_inputs: int = 0
    policy_errors: int = 0
    policy_runs: int = 0
    policy_wall_s: float = 0.0  # wall time spent in policy calls (benchmarks only)


@dataclass
class ReplayResult:
    """What a replay produced (the files are in `out_dir`)."""

    out_dir: Path
    summary: dict
    commands: CommandSeries
    compare: CompareReport | None = None
    wall_s: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)  # wall time per stage (not in the outputs)
