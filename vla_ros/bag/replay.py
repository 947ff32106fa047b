"""`vla-ros replay BAG --out DIR`: deterministic offline replay of a bag through the policy and safety filter.

The camera and instruction topics (plus the e-stop and pose topics when the bag has them) drive the
same ControlCore the node uses, on a control clock derived from the bag: ticks at control_rate_hz
from the first input message to the last one. One simulated inference worker runs the policy:
whenever it is idle and a newer image (or a new instruction) is there, it starts on the newest image
at that moment; the chunk reaches the core `latency` later (see LatencyModel). Events at the same
bag time are handled in a fixed order: input messages, a finishing inference, a starting inference
(with zero latency it finishes at once), the control tick, the status. Nothing reads the wall clock
except the `measured` latency model, so the same inputs give byte-identical outputs.

Work: the simulated worker is scheduled from the latency model alone. Every call runs, as in the node.
--skip-superseded runs only calls whose chunk is still in force at the next tick (with a 30 Hz camera,
10 Hz ticks and zero latency: one call in three): faster, exact when calls take longer than a tick,
otherwise it misses the motion a replaced chunk makes between its arrival and its replacement.
Replay wall time is about (policy runs) x (model time) plus a few ms per message.

Outputs in DIR (written under a temporary name, renamed when complete): replay/ (mcap bag: the input
topics, the commands as vla_ros/EndEffectorCommand and VlaStatus), commands.csv, inferences.csv,
plot.png, summary.json, and with --compare: compare.txt, compare.json (exit 1 on a regression).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from vla_ros.bag.commands import DOF_NAMES, CommandSeries, relative_seconds, write_commands_csv
from vla_ros.bag.compare import CompareReport, compare, load_reference, parse_tolerance
from vla_ros.bag.convert import ImageError, check_image_format, image_rgb, image_stamp_ns
from vla_ros.bag.io import (
    BOOL,
    COMPRESSED_IMAGE,
    END_EFFECTOR_COMMAND,
    IMAGE,
    NS_PER_S,
    POSE_STAMPED,
    STRING,
    VLA_STATUS,
    AtomicDir,
    BagError,
    BagReader,
    BagWriter,
    deserialize,
    header_msg,
    msg_class,
    qos_profile,
    stamp_msg,
)
from vla_ros.control.core import ControlCore
from vla_ros.control.safety import Command, intervention_names
from vla_ros.core.config import NodeConfig, load_config
from vla_ros.core.inputs import decode_string_cdr, pose_from_fields
from vla_ros.core.schema import ConfigError
from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy
from vla_ros.runtime.worker import run_policy

STATUS_TOPIC = "~/status"  # the node publishes VlaStatus on ~/status
BAG_NAME = "replay"
STATE_CODES = {"DISARMED": 0, "ARMED": 1, "HOLDING": 2, "ESTOPPED": 3, "FAULT": 4}
INFERENCE_COLUMNS = ("index", "start_ns", "finish_ns", "image_stamp_ns", "latency_s", "instruction", "result")
SUMMARY_VERSION = 1


class ReplayError(RuntimeError):
    """Replay cannot go on (bad input the user must fix); the message says what and where."""


# ------------------------------------------------------------------------------------ latency model

@dataclass(frozen=True)
class LatencyModel:
    """How long each simulated inference takes on the bag's clock.

    zero: the chunk is there the instant the image is; fixed:S: every call takes S seconds;
    trace:PATH: call i takes the i-th latency (cyclically) of an earlier replay's inferences.csv (or a
    CSV with a latency_s column, or a JSON list): a measured run, replayed deterministically;
    measured: each call takes its measured wall time (rounded to 0.1 ms; NOT deterministic: the run's
    inferences.csv can be fed back with trace:).
    """

    kind: str = "zero"
    fixed_s: float = 0.0
    trace: tuple[float, ...] = ()
    source: str = ""

    @staticmethod
    def parse(spec: str) -> LatencyModel:
        """zero | fixed:S | measured | trace:PATH; ValueError with the accepted forms otherwise."""
        spec = (spec or "zero").strip()
        if spec == "zero":
            return LatencyModel()
        if spec == "measured":
            return LatencyModel("measured")
        if spec.startswith("fixed:"):
            try:
                value = float(spec[6:])
            except ValueError:
                value = float("nan")
            if not (math.isfinite(value) and 0.0 <= value <= 600.0):
                raise ValueError(f"latency model {spec!r}: S must be a number of seconds in [0, 600]")
            return LatencyModel("fixed", fixed_s=value)
        if spec.startswith("trace:"):
            path = spec[6:]
            return LatencyModel("trace", trace=_read_latency_trace(path), source=path)
        raise ValueError(f"latency model {spec!r}: use zero, fixed:SECONDS, measured or trace:PATH")

    @property
    def deterministic(self) -> bool:
        return self.kind != "measured"

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.fixed_s:g}"
        if self.kind == "trace":
            return f"trace:{Path(self.source).name} ({len(self.trace)} calls)"
        return self.kind

    def latency_ns(self, index: int, measured_s: float) -> int:
        """Latency of call `index` [ns] (measured_s is the wall time the call took)."""
        if self.kind == "fixed":
            seconds = self.fixed_s
        elif self.kind == "trace":
            seconds = self.trace[index % len(self.trace)]
        elif self.kind == "measured":
            seconds = round(measured_s, 4)
        else:
            seconds = 0.0
        return int(round(seconds * NS_PER_S))


def _read_latency_trace(path: str) -> tuple[float, ...]:
    p = Path(path)
    if p.is_dir():
        p = p / "inferences.csv"
    try:
        if p.suffix == ".json":
            values = [float(v) for v in json.loads(p.read_text())]
        else:
            with open(p, newline="", encoding="utf-8") as f:
                values = [float(row["latency_s"]) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"latency trace {path!r}: cannot read latencies ({exc}); expected a replay output "
                         "directory, a CSV with a latency_s column or a JSON list of seconds") from None
    if not values or not all(math.isfinite(v) and 0.0 <= v <= 600.0 for v in values):
        raise ValueError(f"latency trace {path!r}: needs at least one latency, each in [0, 600] s")
    return tuple(values)


# ----------------------------------------------------------------------------------------- options

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


@dataclass
class ReplayResult:
    """What a replay produced (the files are in `out_dir`)."""

    out_dir: Path
    summary: dict
    commands: CommandSeries
    compare: CompareReport | None = None
    wall_s: float = 0.0
    timings_s: dict[str, float] = field(default_factory=dict)  # wall time per stage (not in the outputs)


def resolve_topic(name: str, namespace: str = "/", node_name: str = "vla_node") -> str:
    """Absolute topic name of a config entry: relative names go under `namespace`, ~/ under the node."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if name.startswith("~/"):
        return f"{ns}/{node_name}/{name[2:]}"
    return f"{ns}/{name}"


# ---------------------------------------------------------------------------------------- progress

class Progress:
    """A one-line progress bar on stderr, redrawn when the percentage changes."""

    def __init__(self, total_ns: int, enabled: bool, stream: Any = None) -> None:
        self.total = max(int(total_ns), 1)
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.last = -1
        self.t_start = time.monotonic()

    def update(self, done_ns: int) -> None:
        if not self.enabled:
            return
        pct = min(100, max(0, int(100 * done_ns / self.total)))
        if pct == self.last:
            return
        self.last = pct
        wall = max(time.monotonic() - self.t_start, 1e-6)
        bar = "#" * (pct // 4) + "." * (25 - pct // 4)
        done_s, total_s = done_ns / NS_PER_S, self.total / NS_PER_S
        self.stream.write(f"\rreplay [{bar}] {pct:3d}%  {done_s:7.1f} / {total_s:.1f} s"
                          f"  {done_s / wall:5.1f}x real time")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.last >= 0:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------ the replayer

@dataclass
class _Inference:
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


def _instruction_text(raw: bytes) -> str:
    """The instruction of a serialized std_msgs/String, decoded and checked exactly as the node does."""
    return decode_string_cdr(raw)


def _pose(msg: Any, log_ns: int) -> Any:
    """The node's pose conversion (unit quaternion check), stamped with the receipt (log) time."""
    p, q = msg.pose.position, msg.pose.orientation
    return pose_from_fields((p.x, p.y, p.z), (q.x, q.y, q.z, q.w), log_ns / NS_PER_S)


class Replayer:
    """Runs one bag through a policy and a ControlCore; see the module docstring for the timeline."""

    def __init__(self, config: NodeConfig, policy: Policy, options: ReplayOptions) -> None:
        self.config = config
        self.policy = policy
        self.options = options
        ctl = config.control
        self.tick_ns = int(round(NS_PER_S / ctl.control_rate_hz))
        self.status_ns = int(round(NS_PER_S / ctl.status_rate_hz))
        self.core = ControlCore(config.safety, self.tick_ns / NS_PER_S, ctl.action_period_s)
        self.core.set_armed(options.armed)
        self.max_inference_ns = int(round(config.policy.max_inference_s * NS_PER_S))
        ns = options.namespace
        self.camera_topic = resolve_topic(config.topics.camera, ns)
        self.instruction_topic = resolve_topic(config.topics.instruction, ns)
        self.estop_topic = resolve_topic(config.topics.estop, ns)
        self.pose_topic = resolve_topic(config.topics.pose, ns) if config.topics.pose else ""
        self.command_topic = resolve_topic(config.topics.command, ns)
        self.status_topic = resolve_topic(options.status_topic, ns)
        # state of the simulated worker and inputs
        self.newest: Observation | None = None
        self.newest_seq = 0
        self.used_seq = 0
        self.instruction_gen = 0  # counts instruction changes: each one reaches the next call
        self.used_gen = 0
        self.pending: _Inference | None = None
        self.inferences: list[_Inference] = []
        self.calls_done_in_period = 0
        self.last_latency_s = 0.0
        self.rejected_inputs = 0
        self.policy_errors = 0
        self.last_error = ""
        self.faulted = False
        self.rows: list[dict] = []
        self.instruction_changes: list[tuple[int, str]] = []
        self.image_count = 0
        self.encodings: Counter[str] = Counter()
        self.estops = 0
        self.ticks_in_period = 0
        self.t0 = 0
        self.t_end = 0
        self.policy_wall_s = 0.0  # wall time spent in policy calls (benchmarks only)
        self.policy_runs = 0
        # Lazy evaluation: run a call only when its result can matter (not for the measured model).
        self.lazy = options.skip_superseded and options.latency.kind != "measured"
        self.unapplied: _Inference | None = None

    # ----- inputs ---------------------------------------------------------------------------------
    def _reject(self, what: str, reason: str, t_ns: int) -> None:
        self.flush()  # the rejection changes last_error: keep the order of events
        self.rejected_inputs += 1
        self.last_error = f"{what}: {reason}"
        if self.options.strict:
            raise ReplayError(f"{what} at t={(t_ns - self.t0) / NS_PER_S:.3f} s rejected: {reason} "
                              "(--strict)")

    def on_message(self, topic: str, msgtype: str, t_ns: int, raw: bytes) -> None:
        """Feed one input message to the core (as the node's subscription callbacks do)."""
        if topic != self.camera_topic:
            self.flush()  # instructions, e-stops and poses change what a held-back chunk would do
        if topic == self.camera_topic:
            try:
                msg = deserialize(raw, msgtype)
                check_image_format(msg, msgtype)
                rgb = image_rgb(msg, msgtype)
            except ImageError as exc:
                if self.image_count == 0 and self.newest is None:
                    raise ReplayError(f"camera topic {topic}: the first frame cannot be decoded: "
                                      f"{exc}") from None
                self._reject(f"camera frame on {topic}", str(exc), t_ns)
                return
            except Exception as exc:  # malformed CDR
                self._reject(f"camera frame on {topic}", f"cannot deserialize: {exc}", t_ns)
                return
            self.image_count += 1
            self.encodings[str(getattr(msg, "encoding", "") or getattr(msg, "format", ""))] += 1
            stamp = image_stamp_ns(msg, t_ns, self.options.stamp_source)
            if self.core.on_image(stamp / NS_PER_S):
                self.newest = Observation(rgb=rgb, stamp=stamp / NS_PER_S, pose=self.core.pose)
                self.newest_seq += 1
        elif topic == self.instruction_topic:
            try:
                text = _instruction_text(raw)
            except Exception as exc:  # InputError, bad CDR
                self._reject(f"instruction on {topic}", str(exc), t_ns)
                return
            self._set_instruction(text, t_ns)
        elif topic == self.estop_topic:
            try:
                if bool(deserialize(raw, msgtype).data):
                    self.core.estop()
                    self.estops += 1
            except Exception as exc:
                self._reject(f"e-stop on {topic}", str(exc), t_ns)
        elif topic == self.pose_topic:
            try:
                pose = _pose(deserialize(raw, msgtype), t_ns)
            except Exception as exc:
                self._reject(f"pose on {topic}", str(exc), t_ns)
                return
            if not self.core.on_pose(pose):
                self._reject(f"pose on {topic}", self.core.last_error, t_ns)

    def _set_instruction(self, text: str, t_ns: int) -> None:
        if self.core.on_instruction(text, t_ns / NS_PER_S):
            self.instruction_changes.append((t_ns, text))
            self.instruction_gen += 1

    # ----- the simulated worker -------------------------------------------------------------------
    def maybe_start_inference(self, t_ns: int) -> None:
        """Start a call when idle and something new is there; with zero latency it also finishes now."""
        while self.pending is None and self.newest is not None and self.core.instruction.strip():
            if self.newest_seq == self.used_seq and self.instruction_gen == self.used_gen:
                return  # nothing new since the last call started
            self.used_seq, self.used_gen = self.newest_seq, self.instruction_gen
            stamp = self.core.instruction_stamp
            call = _Inference(len(self.inferences), t_ns, t_ns, int(round(self.newest.stamp * NS_PER_S)), 0.0,
                              self.core.instruction, self.newest,
                              instruction_stamp=stamp if stamp is not None else t_ns / NS_PER_S)
            measured = 0.0
            if not self.lazy:  # the measured model needs the call's wall time now
                measured = self.run_call(call)
            latency = self.options.latency.latency_ns(call.index, measured)
            call.finish_ns, call.latency_s = t_ns + latency, latency / NS_PER_S
            if latency > self.max_inference_ns:
                call.timeout_ns = t_ns + self.max_inference_ns
            self.inferences.append(call)
            self.pending = call
            if call.timeout_ns is not None and call.timeout_ns <= t_ns:
                self.watchdog(t_ns)
            if latency == 0:
                self.finish_inference(t_ns)

    def run_call(self, call: _Inference) -> float:
        """Run the policy for a scheduled call; returns the wall time it took [s]."""
        assert call.observation is not None
        wall0 = time.perf_counter()
        call.chunk, call.error = run_policy(self.policy, call.observation,
                                            Instruction(call.instruction, call.instruction_stamp))
        measured = time.perf_counter() - wall0
        self.policy_wall_s += measured
        self.policy_runs += 1
        call.ran, call.observation = True, None
        return measured

    def flush(self) -> None:
        """Apply the completed call held back by lazy evaluation (before anything that can see it)."""
        call, self.unapplied = self.unapplied, None
        if call is not None:
            if not call.ran:
                self.run_call(call)
            self._apply(call, call.finish_ns)

    def watchdog(self, t_ns: int) -> None:
        """The worker's watchdog: a call running past max_inference_s is a fault (its chunk is discarded)."""
        self.flush()
        call = self.pending
        assert call is not None and call.timeout_ns is not None
        call.timeout_ns = None
        call.chunk, call.observation = None, None
        call.error = ("policy call running for more than max_inference_s "
                      f"{self.config.policy.max_inference_s:.3f} s (hung or too slow)")
        call.result = "timeout"
        self._fault(call.error)

    def _fault(self, reason: str) -> None:
        self.policy_errors += 1
        self.last_error = reason
        self.faulted = True
        self.core.set_fault(reason)

    def finish_inference(self, t_ns: int) -> None:
        """The pending call returns at t_ns: the chunk goes to the core, or the failure becomes a fault."""
        call = self.pending
        assert call is not None
        self.pending = None
        self.calls_done_in_period += 1
        self.last_latency_s = call.latency_s
        if call.result == "timeout":
            return
        if self.lazy:
            # Until a tick, a status or an input other than an image, nothing can see this chunk; a call
            # that completes before then replaces it entirely, so it need not run at all.
            if self.unapplied is not None:
                self.unapplied.result = "skipped: superseded before any tick"
                self.unapplied.observation = None
            self.unapplied = call
            return
        self._apply(call, t_ns)

    def _apply(self, call: _Inference, t_ns: int) -> None:
        """The call's outcome reaches the core at t_ns: its chunk, or a fault."""
        if call.error is not None:
            call.result = "error: " + call.error
            self._fault(call.error)
            return
        if self.faulted:
            self.faulted = False
            self.core.set_fault(None)
        assert call.chunk is not None
        accepted = self.core.on_chunk(call.chunk, t_ns / NS_PER_S)
        call.result = "accepted" if accepted else "rejected: " + self.core.last_error

    # ----- outputs --------------------------------------------------------------------------------
    def tick(self, t_ns: int) -> Command:
        self.flush()
        cmd = self.core.tick(t_ns / NS_PER_S)
        self.ticks_in_period += 1
        src = cmd.source_stamp
        self.rows.append({
            "t_s": (t_ns - self.t0) / NS_PER_S, "stamp_ns": t_ns,
            "dx": float(cmd.translation[0]), "dy": float(cmd.translation[1]), "dz": float(cmd.translation[2]),
            "droll": float(cmd.rotation[0]), "dpitch": float(cmd.rotation[1]), "dyaw": float(cmd.rotation[2]),
            "gripper": float(cmd.gripper), "hold": bool(cmd.hold), "interventions": int(cmd.interventions),
            "intervention_names": "|".join(intervention_names(cmd.interventions)),
            "source_stamp_ns": int(round(src * NS_PER_S)) if src is not None else 0,
            "state": self.core.state, "instruction": self.core.instruction})
        return cmd

    def command_msg(self, row: dict) -> Any:
        vec = msg_class("geometry_msgs/msg/Vector3")
        return msg_class(END_EFFECTOR_COMMAND)(
            header=header_msg(row["stamp_ns"], self.config.control.frame_id),
            translation=vec(x=row["dx"], y=row["dy"], z=row["dz"]),
            rotation=vec(x=row["droll"], y=row["dpitch"], z=row["dyaw"]),
            gripper=row["gripper"], hold=row["hold"], interventions=row["interventions"],
            intervention_names=row["intervention_names"].split("|") if row["intervention_names"] else [],
            source_stamp=stamp_msg(row["source_stamp_ns"]))

    def status_msg(self, t_ns: int) -> Any:
        self.flush()
        core, period_s = self.core, self.status_ns / NS_PER_S
        now = t_ns / NS_PER_S
        counters = core.counters

        def age(stamp: float | None) -> float:
            return max(0.0, now - stamp) if stamp is not None else -1.0

        state = core.state
        msg = msg_class(VLA_STATUS)(
            header=header_msg(t_ns, self.config.control.frame_id), state=STATE_CODES.get(state, 0),
            state_name=state,
            instruction=core.instruction, backend=self.policy.describe(),
            inference_latency_s=self.last_latency_s,
            model_rate_hz=self.calls_done_in_period / period_s,
            image_age_s=age(core.image_stamp), instruction_age_s=age(core.instruction_stamp),
            action_age_s=age(core.last_chunk_stamp), control_rate_hz=self.ticks_in_period / period_s,
            commands_published=counters["commands"], safety_interventions=counters["interventions"],
            rejected_inputs=self.rejected_inputs, policy_errors=self.policy_errors,
            last_error=core.fault or self.last_error)
        self.calls_done_in_period = 0
        self.ticks_in_period = 0
        return msg

    # ----- the event loop -------------------------------------------------------------------------
    def run(self, bag: BagReader, writer: BagWriter, progress: Progress) -> None:
        """Process the whole bag; commands and status go to `writer`, the inputs are copied to it."""
        topics = [self.camera_topic]
        bag.require(self.camera_topic, (IMAGE, COMPRESSED_IMAGE), role="camera")
        if self.instruction_topic in bag.topics or self.options.instruction is None:
            bag.require(self.instruction_topic, (STRING,), role="instruction")
            topics.append(self.instruction_topic)
        if self.estop_topic in bag.topics:
            bag.require(self.estop_topic, (BOOL,), role="e-stop")
            topics.append(self.estop_topic)
        if self.pose_topic:
            if self.pose_topic in bag.topics:
                bag.require(self.pose_topic, (POSE_STAMPED,), role="pose")
                topics.append(self.pose_topic)
            elif self.config.safety.require_pose:
                bag.require(self.pose_topic, (POSE_STAMPED,), role="pose (safety.require_pose is set)")
        types = {t: bag.topics[t].msgtype for t in topics}
        for t in topics:
            info = bag.topics[t]
            writer.add_topic(t, info.msgtype, info.msgdef, info.digest, info.qos)
        writer.add_topic(self.command_topic, END_EFFECTOR_COMMAND, qos=[qos_profile()])
        writer.add_topic(self.status_topic, VLA_STATUS, qos=[qos_profile()])

        messages = bag.messages(topics)
        nxt = next(messages, None)
        if nxt is None:
            raise ReplayError(f"bag {str(bag.path)!r} has no messages on {', '.join(topics)}")
        self.t0 = t0 = nxt[1]
        progress.total = max(bag.end_ns - t0, 1)
        if self.options.instruction is not None:
            self._set_instruction(self.options.instruction, t0)
        last_msg = t0
        k_tick, k_status = 0, 1
        next_tick, next_status = t0, t0 + self.status_ns
        inf = 2 ** 63
        while True:
            more = nxt is not None
            t_msg = nxt[1] if more else inf
            pending = self.pending
            t_done = inf
            if pending is not None:
                t_done = pending.timeout_ns if pending.timeout_ns is not None else pending.finish_ns
                if not more and t_done > last_msg:
                    t_done = inf
            t_tick = next_tick if (more or next_tick <= last_msg) else inf
            t_stat = next_status if (more or next_status <= last_msg) else inf
            t = min(t_msg, t_done, t_tick, t_stat)
            if t == inf:
                break
            while nxt is not None and nxt[1] == t:
                topic, _, raw = nxt
                writer.write(topic, t, raw)
                self.on_message(topic, types[topic], t, raw)
                last_msg = t
                nxt = next(messages, None)
            if self.pending is not None and t_done == t:
                if self.pending.timeout_ns == t:
                    self.watchdog(t)
                elif self.pending.finish_ns == t:
                    self.finish_inference(t)
            self.maybe_start_inference(t)
            if next_tick == t:
                self.tick(t)
                writer.write_msg(self.command_topic, t, self.command_msg(self.rows[-1]))
                k_tick += 1
                next_tick = t0 + k_tick * self.tick_ns
            if next_status == t:
                writer.write_msg(self.status_topic, t, self.status_msg(t))
                k_status += 1
                next_status = t0 + k_status * self.status_ns
            progress.update(t - t0)
        self.flush()
        if self.pending is not None:
            self.pending.result = self.pending.result or "unfinished at the end of the bag"
        self.t_end = last_msg
        if self.image_count == 0:
            raise ReplayError(f"no camera frame on {self.camera_topic} could be used")

    # ----- reports ----------------------------------------------------------------------------------
    def series(self, source: str) -> CommandSeries:
        rows = self.rows
        return CommandSeries(np.array([r["stamp_ns"] for r in rows], np.int64),
                             np.array([[r[c] for c in DOF_NAMES] for r in rows], np.float64).reshape(-1, 7),
                             np.array([r["hold"] for r in rows], bool),
                             np.array([r["interventions"] for r in rows], np.int64), source,
                             [r["state"] for r in rows])

    def summary(self, bag: BagReader) -> dict:
        rows, core = self.rows, self.core
        n = len(rows)
        duration_s = (self.t_end - self.t0) / NS_PER_S
        counters = core.counters
        by_rule = {name: counters[name] for name in sorted(counters) if name.isupper() and counters[name]}
        lat = np.array([c.latency_s for c in self.inferences], np.float64)
        moving = [r for r in rows if not r["hold"]]
        action_age = np.array([(r["stamp_ns"] - r["source_stamp_ns"]) / NS_PER_S for r in moving], np.float64)
        results = Counter(c.result.split(":")[0] for c in self.inferences)
        cfg = self.config
        return {
            "version": SUMMARY_VERSION,
            "bag": {"name": bag.path.name, "storage": bag.storage, "start_ns": self.t0,
                    "replayed_s": duration_s,
                    "topics": {t.name: {"type": t.msgtype, "messages": t.count}
                               for t in bag.topics.values()}},
            "inputs": {
                "camera_topic": self.camera_topic, "images": self.image_count,
                "image_rate_hz": _rate(self.image_count, duration_s),
                "image_encodings": dict(sorted(self.encodings.items())),
                "instruction_topic": self.instruction_topic,
                "instruction_changes": [{"t_s": (t - self.t0) / NS_PER_S, "text": text}
                                        for t, text in self.instruction_changes],
                "estops": self.estops, "rejected_inputs": self.rejected_inputs,
                "image_stamp_source": self.options.stamp_source},
            "control": {"rate_hz": cfg.control.control_rate_hz, "ticks": n,
                        "achieved_rate_hz": _rate(n - 1, duration_s) if n > 1 else 0.0,
                        "action_period_s": cfg.control.action_period_s, "armed": self.options.armed,
                        "states": dict(sorted(Counter(r["state"] for r in rows).items()))},
            "commands": {"total": n, "hold": n - len(moving), "moving": len(moving),
                         "hold_fraction": (n - len(moving)) / n if n else 0.0,
                         "topic": self.command_topic},
            "interventions": {"commands_changed": counters["interventions"], "by_rule": by_rule,
                              "rejected_chunks": counters["rejected_chunks"],
                              "rejected_chunks_by_reason": {
                                  k[len("rejected_chunks_"):]: v for k, v in sorted(counters.items())
                                  if k.startswith("rejected_chunks_") and v}},
            "inference": {"policy": self.policy.describe(), "latency_model": self.options.latency.describe(),
                          "deterministic": self.options.latency.deterministic,
                          "calls": len(self.inferences), "policy_runs": self.policy_runs,
                          "skip_superseded": self.lazy, "results": dict(sorted(results.items())),
                          "errors": self.policy_errors, "rate_hz": _rate(len(self.inferences), duration_s),
                          "latency_s": _stats(lat)},
            "action_age_s": _stats(action_age),
            "config": {"control": dataclasses.asdict(cfg.control), "safety": dataclasses.asdict(cfg.safety),
                       "policy": {**{k: v for k, v in dataclasses.asdict(cfg.policy).items()
                                     if k in ("backend", "device", "dtype", "unnorm_key", "max_inference_s")},
                                  "checkpoint": Path(cfg.policy.checkpoint).name or "(embedded demo)"}},
        }


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def _stats(values: np.ndarray) -> dict:
    if values.size == 0:
        return {"count": 0}
    return {"count": int(values.size), "mean": float(values.mean()), "p50": float(np.percentile(values, 50)),
            "p90": float(np.percentile(values, 90)), "p99": float(np.percentile(values, 99)),
            "max": float(values.max()), "min": float(values.min())}


def _write_inferences_csv(path: Path, calls: list[_Inference]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(INFERENCE_COLUMNS)
        for c in calls:
            w.writerow([c.index, c.start_ns, c.finish_ns, c.image_stamp_ns, repr(c.latency_s), c.instruction,
                        c.result])


def replay_bag(bag_path: str | Path, out_dir: str | Path, config: NodeConfig, policy: Policy,
               options: ReplayOptions | None = None) -> ReplayResult:
    """Replay `bag_path` into `out_dir` (see the module docstring). Raises BagError / ReplayError."""
    options = options or ReplayOptions()
    out_dir = Path(out_dir)
    wall0 = time.monotonic()
    replayer = Replayer(config, policy, options)
    report: CompareReport | None = None
    with BagReader(bag_path) as bag, AtomicDir(out_dir, overwrite=options.overwrite) as tmp:
        progress = Progress(bag.end_ns - bag.start_ns, options.progress)
        custom = {"generator": "vla_ros replay", "source_bag": bag.path.name,
                  "latency_model": options.latency.describe()}
        writer = BagWriter(tmp / BAG_NAME, storage="mcap", custom_data=custom, atomic=False)
        writer.open()
        try:
            replayer.run(bag, writer, progress)
        except BaseException:
            writer.abort()
            progress.close()
            raise
        writer.close()
        progress.close()
        wall_loop = time.monotonic()
        write_commands_csv(tmp / "commands.csv", replayer.rows)
        _write_inferences_csv(tmp / "inferences.csv", replayer.inferences)
        series = replayer.series(str(out_dir / "commands.csv"))
        summary = replayer.summary(bag)
        summary["outputs"] = {"bag": BAG_NAME, "commands": "commands.csv", "inferences": "inferences.csv",
                              "plot": "plot.png" if options.plot else None, "summary": "summary.json"}
        if options.compare is not None:
            spec = options.compare
            report = compare(series, spec.reference, spec.tolerance, spec.exact, spec.max_violations,
                             spec.max_unmatched, check_hold=spec.exact, t0_ns=replayer.t0)
            (tmp / "compare.txt").write_text(report.table() + "\n", encoding="utf-8")
            (tmp / "compare.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n",
                                              encoding="utf-8")
            summary["compare"] = {"reference": spec.reference.source, "regression": report.regression,
                                  "reasons": report.reasons}
        if options.plot:
            from vla_ros.bag.plot import plot_replay

            ref = None
            if options.compare is not None and len(options.compare.reference):
                r = options.compare.reference
                ref = (relative_seconds(r.stamps_ns, replayer.t0), r.values)
            plot_replay(tmp / "plot.png", relative_seconds(series.stamps_ns, replayer.t0), series.values,
                        series.hold, series.interventions,
                        [((t - replayer.t0) / NS_PER_S, text) for t, text in replayer.instruction_changes],
                        title=f"{bag.path.name}: {policy.describe()}, latency {options.latency.describe()}",
                        reference=ref)
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
    wall_end = time.monotonic()
    timings = {"total": wall_end - wall0, "replay_loop": wall_loop - wall0, "outputs": wall_end - wall_loop,
               "policy_calls": replayer.policy_wall_s}
    return ReplayResult(out_dir, summary, series, report, wall_end - wall0, timings)


# --------------------------------------------------------------------------------------------- CLI

def make_replay_policy(name: str, config: NodeConfig) -> Policy:
    """The policy a replay runs: 'model' (make_policy from the config) or 'synthetic' (test double)."""
    if name == "synthetic":
        from vla_ros.runtime.synthetic import SyntheticPolicy

        return SyntheticPolicy(latency_s=0.0)  # latency is the replay's latency model, not real work
    from vla_ros.model.spec import CheckpointError
    from vla_ros.runtime.factory import BackendUnavailableError, make_policy

    try:
        return make_policy(config.policy)
    except (CheckpointError, BackendUnavailableError) as exc:
        raise ReplayError(f"cannot load the policy: {exc} (or use --policy synthetic)") from None


def _parse_params(items: list[str]) -> dict[str, Any]:
    """--param NAME=VALUE items with YAML-typed values (as `vla-ros node --param`)."""
    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--param {item!r}: expected NAME=VALUE, "
                              "e.g. safety.max_translation_step_m=0.01")
        try:
            overrides[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            overrides[key.strip()] = value
    return overrides


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="vla-ros replay", description="Deterministic offline replay of a rosbag through the policy and "
        "the safety filter; writes a bag, CSV, plot and summary, and compares against a reference.")
    ap.add_argument("bag", help="rosbag2 directory (mcap or sqlite3), or a .mcap / .db3 file")
    ap.add_argument("--out", required=True, help="output directory (must not exist unless --force)")
    ap.add_argument("--config", help="node config YAML (plain or ros__parameters form)")
    ap.add_argument("--param", "--set", dest="param", action="append", default=[], metavar="NAME=VALUE",
                    help="override a config value, e.g. safety.max_translation_step_m=0.01 (repeatable)")
    ap.add_argument("--checkpoint", help="policy.checkpoint override")
    ap.add_argument("--backend", help="policy.backend override (torch, onnxruntime, tensorrt)")
    ap.add_argument("--policy", choices=("model", "synthetic"), default="model",
                    help="model: the configured VLA; synthetic: the deterministic test double")
    ap.add_argument("--latency-model", default="zero", metavar="zero|fixed:S|measured|trace:PATH",
                    help="simulated inference latency (default zero)")
    ap.add_argument("--disarmed", action="store_true", help="do not arm the core (replay a disarmed node)")
    ap.add_argument("--instruction", help="instruction in force from the start (bags without instructions)")
    ap.add_argument("--stamp-source", choices=("receive", "header"), default="receive",
                    help="image stamp: the bag's log time (receipt, as the node does) or header.stamp")
    ap.add_argument("--namespace", default="/", help="namespace resolving the config's relative topic names")
    ap.add_argument("--status-topic", default=STATUS_TOPIC, help="topic of the VlaStatus written to the bag")
    ap.add_argument("--compare", metavar="REF",
                    help="an earlier replay's output dir, or a command topic of the bag (topic:/name)")
    ap.add_argument("--tolerance",
                    help="absolute per-DoF tolerance: 1e-6, or 'trans=0.001,rot=0.01,gripper=0.05'")
    ap.add_argument("--max-violations", type=float, default=0.0,
                    help="allowed fraction of ticks over tolerance per DoF (default 0)")
    ap.add_argument("--max-unmatched", type=float, default=None,
                    help="allowed fraction of ticks without a reference (default 0 for replay outputs, "
                    "1 for topics)")
    ap.add_argument("--skip-superseded", action="store_true",
                    help="skip simulated policy calls whose chunk is replaced before the next control tick "
                    "(faster; exact only when calls take longer than a tick)")
    ap.add_argument("--strict", action="store_true", help="abort on the first rejected input message")
    ap.add_argument("--no-plot", action="store_true", help="skip plot.png")
    ap.add_argument("--force", action="store_true", help="replace an existing output directory")
    prog = ap.add_mutually_exclusive_group()
    prog.add_argument("--progress", dest="progress", action="store_true", default=None,
                      help="progress bar on stderr (default: when stderr is a terminal)")
    prog.add_argument("--no-progress", dest="progress", action="store_false")
    return ap


def main(argv: list[str] | None = None) -> int:
    """CLI entry: 0 = done (and no regression), 1 = regression against --compare, 2 = bad input."""
    args = build_parser().parse_args(argv)
    try:
        overrides = _parse_params(args.param)
        if args.checkpoint is not None:
            overrides["policy.checkpoint"] = args.checkpoint
        if args.backend is not None:
            overrides["policy.backend"] = args.backend
        config = load_config(args.config, overrides)
        latency = LatencyModel.parse(args.latency_model)
        spec = None
        if args.compare:
            tolerance = parse_tolerance(args.tolerance)
            reference, exact = load_reference(args.compare, args.bag)
            max_unmatched = args.max_unmatched if args.max_unmatched is not None else (0.0 if exact else 1.0)
            spec = CompareSpec(reference, exact, tolerance, args.max_violations, max_unmatched)
        options = ReplayOptions(
            latency=latency, armed=not args.disarmed, stamp_source=args.stamp_source,
            namespace=args.namespace,
            status_topic=args.status_topic, instruction=args.instruction,
            progress=sys.stderr.isatty() if args.progress is None else args.progress, strict=args.strict,
            plot=not args.no_plot, overwrite=args.force, compare=spec,
            skip_superseded=args.skip_superseded)
        if Path(args.out).exists() and not args.force:
            raise BagError(f"output {args.out!r} exists already; use --force to replace it")
        policy = make_replay_policy(args.policy, config)
        result = replay_bag(args.bag, args.out, config, policy, options)
    except (BagError, ReplayError, ConfigError, ValueError) as exc:
        print(f"vla-ros replay: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vla-ros replay: interrupted; nothing was written", file=sys.stderr)
        return 130
    s = result.summary
    replayed = s["bag"]["replayed_s"]
    print(f"replayed {replayed:.2f} s of {s['bag']['name']} in {result.wall_s:.2f} s "
          f"({replayed / max(result.wall_s, 1e-9):.1f}x real time): {s['commands']['total']} commands "
          f"({s['commands']['hold']} HOLD), {s['interventions']['commands_changed']} changed by the safety "
          f"filter, {s['inference']['calls']} inferences -> {os.fspath(result.out_dir)}", file=sys.stderr)
    if result.compare is not None:
        print(result.compare.table())
        return 1 if result.compare.regression else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
