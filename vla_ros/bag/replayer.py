"""Running a replay: the bag's inputs drive a ControlCore and one simulated inference worker.

The camera and instruction topics (plus the e-stop and pose topics when the bag has them, the extra
cameras and the joint states when configured) drive the same ControlCore the node uses, on a control
clock derived from the bag: ticks at control_rate_hz from the first input message to the last one.
As in the node, each primary frame (and each new instruction) offers the worker a new observation when
`ControlCore.wants_inference` says a chunk is due: every camera's newest frame, stamped as the primary,
with the proprio vector (core/proprio.py); none while a camera is stale or the proprio is missing.
One simulated inference worker runs the policy: whenever it is idle and a newer observation (or a new
instruction) is there, it starts on the newest one; the chunk reaches the core `latency` later (see
LatencyModel). Events at the same bag time are handled in a fixed order: input messages, a finishing
inference, a starting inference (with zero latency it finishes at once), the control tick, the status.
Nothing reads the wall clock except the `measured` latency model, so the same inputs give
byte-identical outputs.

Split (options.mode "split"): the policy half numbers each chunk (ChunkSender), writes it to the output
bag as a vla_ros/ActionChunk on split.chunk_topic, and the control half receives the message's bytes
deserialized, at the same bag time (zero link latency), through ControlHalf (link verdict, period check,
ControlCore). The chunk's inference_s is the simulated latency. The control half sees no policy fault (a
failed call sends nothing; it holds once the last chunk is played or too old). With split.watch_cameras
the camera frames feed its image watchdog as in one process, so the commands are byte-identical to the
single-node replay; without, each accepted chunk's stamp does, and the policy half keeps its own view of
the cameras. Control-only (mode "control"): no policy; the ActionChunk messages recorded on
split.chunk_topic reach the ControlHalf at their log (receive) times, in the bag's order; the camera
topics are read when present (required with split.watch_cameras) and the ticks run as above.

Work: the simulated worker is scheduled from the latency model alone. Every call runs, as in the node.
With skip_superseded only calls whose chunk is still in force at the next tick run (with a 30 Hz
camera, 10 Hz ticks and zero latency: one call in three): faster, exact when calls take longer than a
tick, otherwise it misses the motion a replaced chunk makes between its arrival and its replacement.
A held-back chunk of several actions is applied before the next offer (it decides wants_inference):
for chunked policies (of a fixed chunk length) skipping then saves nothing but stays exact.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.bag.chunk_msgs import decode_chunk, encode_chunk
from vla_ros.bag.convert import image_stamp_ns
from vla_ros.bag.io import NS_PER_S, BagReader, seconds_to_ns
from vla_ros.bag.replay_inputs import (
    ReplayTopics,
    decode_estop,
    decode_image,
    decode_joint_positions,
    decode_pose,
    image_encoding,
    input_topics,
)
from vla_ros.bag.replay_outputs import (
    BAG_NAME,
    add_topics,
    command_msg,
    command_row,
    status_msg,
    write_reports,
)
from vla_ros.bag.replay_types import (
    REPLAY_MODES,
    Inference,
    ReplayError,
    ReplayOptions,
    ReplayRecord,
    ReplayResult,
)
from vla_ros.bag.writer import AtomicDir, BagWriter
from vla_ros.control.chunks import chunk_settings
from vla_ros.control.core import ControlCore
from vla_ros.control.split import ChunkEnvelope, ChunkSender, ControlHalf
from vla_ros.control.status import Counters, status_fields
from vla_ros.core.cameras import camera_settings, inputs_problem
from vla_ros.core.config import NodeConfig
from vla_ros.core.images import ImageError, decode_min_size
from vla_ros.core.inputs import decode_instruction
from vla_ros.core.proprio import ProprioError, current_proprio, proprio_spec
from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy, instruction_check, policy_inputs
from vla_ros.runtime.worker import policy_input_size, run_policy

NEVER = 2 ** 63  # a bag time after every event [ns]


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


class Replayer:
    """Runs one bag through a policy and a ControlCore; see the module docstring for the timeline.
    `policy` is None for a control-only replay (options.mode "control") and required otherwise."""

    def __init__(self, config: NodeConfig, policy: Policy | None, options: ReplayOptions) -> None:
        mode = options.mode
        if mode not in REPLAY_MODES:
            raise ValueError(f"replay mode must be one of {REPLAY_MODES}, got {mode!r}")
        if (policy is None) != (mode == "control"):
            raise ValueError("a control-only replay runs no policy; the other replays need one")
        self.config = config
        self.policy = policy
        self.mode = mode
        self.decode_min_size = decode_min_size(policy_input_size(policy))  # as the node decodes frames
        self.options = options
        ctl = config.control
        self.tick_ns = int(round(NS_PER_S / ctl.control_rate_hz))
        self.status_ns = int(round(NS_PER_S / ctl.status_rate_hz))
        cameras = camera_settings(config.topics, config.safety.max_image_age_s)  # the node's, as named there
        self.proprio = proprio_spec(config.policy.proprio_source if policy is not None else "none",
                                    config.policy.proprio_joints, config.policy.proprio_gripper_joints,
                                    config.topics.pose)
        if policy is not None:
            problem = inputs_problem(policy_inputs(policy), cameras, self.proprio)
            if problem is not None:
                raise ReplayError(f"the configured inputs do not fit the policy: {problem}")
        camera_limits = {c.topic: c.max_age_s for c in cameras}
        self.core = ControlCore(config.safety, self.tick_ns / NS_PER_S, ctl.action_period_s,
                                chunking=chunk_settings(ctl), cameras=camera_limits,
                                future_tolerance_s=config.split.clock_tolerance_s)
        self.core.set_armed(options.armed)
        # the chunk link (split and control-only): the control half and the numbering of the policy half
        self.watch_cameras = mode == "node" or config.split.watch_cameras
        self.half: ControlHalf | None = None
        self.sender: ChunkSender | None = None
        if mode != "node":
            self.half = ControlHalf(self.core, ctl.action_period_s, config.split.watch_cameras)
        if mode == "split":
            assert policy is not None
            family = getattr(getattr(policy, "family", None), "name", "")
            self.sender = ChunkSender(ctl.action_period_s, policy.describe(), str(family))
        # the cameras as the policy half sees them: the control core's, unless that one watches none
        self.camera_view = self.core
        if not self.watch_cameras and policy is not None:
            self.camera_view = ControlCore(config.safety, self.tick_ns / NS_PER_S, ctl.action_period_s,
                                           cameras=camera_limits)
        self.writer: BagWriter | None = None  # the output bag while run() goes (the chunks are written to it)
        self.chunks_in_period = 0  # chunks received in the status period (role control's model rate)
        self.max_inference_ns = int(round(config.policy.max_inference_s * NS_PER_S))
        self.topics = ReplayTopics.resolve(config, options.namespace, options.status_topic)
        if policy is None:
            self.topics = dataclasses.replace(self.topics, joint_states="")  # no proprio without a policy
        self.camera_names = tuple(c.topic for c in cameras)
        self.camera_index = {topic: i for i, topic in enumerate(self.topics.cameras)}
        if len(self.camera_index) != len(cameras):
            raise ReplayError(f"camera topics {list(self.topics.cameras)} name the same topic twice")
        self.record = ReplayRecord()
        # the inputs as the node keeps them: each camera's newest frame (posed at its arrival), the joints
        self.latest: list[Observation | None] = [None] * len(cameras)
        self.joints: tuple[np.ndarray, float] | None = None  # proprio joint positions, receipt time [s]
        # state of the simulated worker: `newest` is the observation waiting for it (the node's slot)
        self.newest: Observation | None = None
        self.newest_seq = 0
        self.used_seq = 0
        self.instruction_gen = 0  # counts instruction changes: each one reaches the next call
        self.used_gen = 0
        self.pending: Inference | None = None
        self.calls_done_in_period = 0
        self.ticks_in_period = 0
        self.last_latency_s = 0.0
        self.last_error = ""
        self.faulted = False
        # Lazy evaluation: run a call only when its result can matter (not for the measured model).
        self.lazy = options.lazy
        self.unapplied: Inference | None = None
        self.chunk_length = 0  # actions in the last chunk the policy returned (0 = none yet)
        # the node's check on arrival (prompt fits the model); the control half alone has no model to ask
        self.check = instruction_check(policy) if policy is not None else None

    # ----- inputs ---------------------------------------------------------------------------------
    def _reject(self, what: str, reason: str, t_ns: int) -> None:
        self.flush()  # the rejection changes last_error: keep the order of events
        self.record.rejected_inputs += 1
        self.last_error = f"{what}: {reason}"
        if self.options.strict:
            raise ReplayError(f"{what} at t={(t_ns - self.record.t0) / NS_PER_S:.3f} s rejected: {reason} "
                              "(--strict)")

    def on_message(self, topic: str, msgtype: str, t_ns: int, raw: bytes) -> None:
        """Feed one input message to the core (as the node's subscription callbacks do)."""
        topics, record = self.topics, self.record
        camera = self.camera_index.get(topic)
        if camera is None and topic != topics.joint_states:
            self.flush()  # instructions, e-stops and poses change what a held-back chunk would do
        if camera is not None:
            self._on_camera(camera, topic, msgtype, t_ns, raw)
        elif self.mode == "control" and topic == topics.chunk:
            self._on_chunk_message(topic, t_ns, raw)
        elif topic == topics.joint_states:
            try:
                positions = decode_joint_positions(raw, msgtype, self.proprio.joints)
            except Exception as exc:  # ProprioError (a joint missing, non-finite), bad CDR
                self._reject(f"joint state on {topic}", str(exc), t_ns)
                return
            self.joints = (positions, t_ns / NS_PER_S)
            record.joint_states += 1
        elif topic == topics.instruction:
            try:
                text = decode_instruction(raw, self.check)  # decoded and checked exactly as the node does
            except Exception as exc:  # InputError, bad CDR: an unusable instruction means HOLD
                self._reject(f"instruction on {topic}", str(exc), t_ns)
                text = ""
            self._set_instruction(text, t_ns)
        elif topic == topics.estop:
            try:
                if decode_estop(raw, msgtype):
                    self.core.estop()
                    record.estops += 1
            except Exception as exc:
                self._reject(f"e-stop on {topic}", str(exc), t_ns)
        elif topic == topics.pose:
            try:
                pose = decode_pose(raw, msgtype, t_ns)
            except Exception as exc:
                self._reject(f"pose on {topic}", str(exc), t_ns)
                return
            if not self.core.on_pose(pose):
                self._reject(f"pose on {topic}", self.core.last_error, t_ns)

    def _on_camera(self, index: int, topic: str, msgtype: str, t_ns: int, raw: bytes) -> None:
        """A frame of camera `index` (0 = primary): decoded, its stamp fed to that camera's age gate; a
        primary frame offers the worker a new observation. Control-only without watch_cameras: counted."""
        record = self.record
        if self.policy is None and not self.watch_cameras:
            if index:
                record.extra_images[topic] += 1
            else:
                record.image_count += 1
            return
        try:
            msg, rgb = decode_image(raw, msgtype, self.decode_min_size)
        except ImageError as exc:
            if (record.extra_images[topic] if index else record.image_count) == 0:
                raise ReplayError(f"camera topic {topic}: the first frame cannot be decoded: {exc}") from None
            self._reject(f"camera frame on {topic}", str(exc), t_ns)
            return
        except Exception as exc:  # malformed CDR
            self._reject(f"camera frame on {topic}", f"cannot deserialize: {exc}", t_ns)
            return
        if index:
            record.extra_images[topic] += 1
        else:
            record.image_count += 1
            record.encodings[image_encoding(msg)] += 1
        stamp = image_stamp_ns(msg, t_ns, self.options.stamp_source) / NS_PER_S
        if self.camera_view.on_image(stamp, camera=self.camera_names[index]) and self.policy is not None:
            self.latest[index] = Observation(rgb=rgb, stamp=stamp, pose=self.core.pose)
            if index == 0:  # the primary camera paces inference, as in the node
                self._offer(t_ns)

    def _offer(self, t_ns: int) -> None:
        """The node's submission: when the core wants a chunk, the newest observation replaces the one
        waiting for the worker."""
        if self.unapplied is not None and self.chunk_length != 1:
            self.flush()  # a held-back chunk of several actions decides wants_inference
        now = t_ns / NS_PER_S
        if not self.core.wants_inference(now):
            return
        observation = self._observation(now)
        if observation is not None:
            self.newest = observation
            self.newest_seq += 1

    def _observation(self, now: float) -> Observation | None:
        """What the node would submit at `now`: the primary frame alone (one camera, no proprio), else
        every camera's newest frame with the proprio vector; None while a camera has no fresh frame or
        the proprio vector is missing (counted in record.not_ready)."""
        latest = self.latest
        primary = latest[0]
        if primary is None or any(frame is None for frame in latest):
            return None
        if len(latest) == 1 and not self.proprio.dim:
            return primary
        if self.camera_view.stale_camera(now) is not None:
            self.record.not_ready["stale_camera"] += 1
            return None
        try:
            proprio = current_proprio(self.proprio, self.joints, self.core.pose, now,
                                      self.config.safety.max_pose_age_s)
        except ProprioError as exc:
            self.flush()  # the error changes last_error: keep the order of events
            self.record.not_ready["proprio"] += 1
            self.last_error = f"no inference: {exc}"
            return None
        extras = tuple(frame.rgb for frame in latest[1:] if frame is not None)
        return Observation(primary.rgb, primary.stamp, primary.pose, extras, proprio)

    def _set_instruction(self, text: str, t_ns: int) -> None:
        if self.core.on_instruction(text, t_ns / NS_PER_S):
            self.record.instruction_changes.append((t_ns, text))
            self.instruction_gen += 1
            if text.strip():
                self._offer(t_ns)  # the new instruction reaches the very next call, with the newest frames

    # ----- the simulated worker -------------------------------------------------------------------
    def maybe_start_inference(self, t_ns: int) -> None:
        """Start a call when idle and something new is there; with zero latency it also finishes now."""
        while self.pending is None and self.newest is not None and self.core.instruction.strip():
            if self.newest_seq == self.used_seq and self.instruction_gen == self.used_gen:
                return  # nothing new since the last call started
            self.used_seq, self.used_gen = self.newest_seq, self.instruction_gen
            stamp = self.core.instruction_stamp
            calls = self.record.inferences
            call = Inference(len(calls), t_ns, t_ns, int(round(self.newest.stamp * NS_PER_S)), 0.0,
                             self.core.instruction, self.newest,
                             instruction_stamp=stamp if stamp is not None else t_ns / NS_PER_S)
            measured = 0.0
            if not self.lazy:  # the measured model needs the call's wall time now
                measured = self.run_call(call)
            latency = self.options.latency.latency_ns(call.index, measured)
            call.finish_ns, call.latency_s = t_ns + latency, latency / NS_PER_S
            if latency > self.max_inference_ns:
                call.timeout_ns = t_ns + self.max_inference_ns
            calls.append(call)
            self.pending = call
            if call.timeout_ns is not None and call.timeout_ns <= t_ns:
                self.watchdog(t_ns)
            if latency == 0:
                self.finish_inference(t_ns)

    def run_call(self, call: Inference) -> float:
        """Run the policy for a scheduled call; returns the wall time it took [s]."""
        assert call.observation is not None
        wall0 = time.perf_counter()
        call.chunk, call.error = run_policy(self.policy, call.observation,
                                            Instruction(call.instruction, call.instruction_stamp))
        measured = time.perf_counter() - wall0
        self.record.policy_wall_s += measured
        self.record.policy_runs += 1
        if call.chunk is not None:
            self.chunk_length = len(call.chunk.actions)
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
        """A failed or hung call: in one process the worker's fault holds the arm at once; a split's
        control half never hears of it (no chunk is sent; counted in summary.json only)."""
        self.record.policy_errors += 1
        if self.half is None:
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

    def _apply(self, call: Inference, t_ns: int) -> None:
        """The call's outcome reaches the core at t_ns: its chunk, or a fault."""
        if call.error is not None:
            call.result = "error: " + call.error
            self._fault(call.error)
            return
        if self.faulted:
            self.faulted = False
            self.core.set_fault(None)
        assert call.chunk is not None
        if self.sender is None:
            accepted = self.core.on_chunk(call.chunk, t_ns / NS_PER_S)
            call.result = "accepted" if accepted else "rejected: " + self.core.last_error
        else:
            call.result = self._send(call.chunk, call.latency_s, t_ns)
            accepted = call.result == "accepted"
        if accepted:
            self.record.chunk_delays.append(self.core.chunk_report.delay_last_s)

    # ----- the chunk link (split, control-only) ---------------------------------------------------
    def _send(self, chunk: ActionChunk, latency_s: float, t_ns: int) -> str:
        """Split: the chunk as an ActionChunk message into the output bag and, deserialized, into the
        control half at once; its outcome ('accepted', 'duplicate' or 'rejected: why')."""
        assert self.sender is not None and self.writer is not None
        # inference_s is the call's simulated latency on the bag's clock (deterministic), not its wall time
        envelope = self.sender.envelope(dataclasses.replace(chunk, timings={"inference": latency_s}))
        raw = encode_chunk(envelope, self.config.control.frame_id)
        self.writer.write(self.topics.chunk, t_ns, raw)
        return self._receive(decode_chunk(raw), t_ns)

    def _receive(self, envelope: ChunkEnvelope, t_ns: int) -> str:
        """The control half receives a chunk at t_ns; its outcome."""
        assert self.half is not None
        self.chunks_in_period += 1
        verdict = self.half.on_chunk(envelope, t_ns / NS_PER_S)
        return "rejected: " + self.core.last_error if verdict == "rejected" else verdict

    def _on_chunk_message(self, topic: str, t_ns: int, raw: bytes) -> None:
        """Control-only: a recorded ActionChunk arrives; it is listed in inferences.csv (index = its
        sequence number, start = finish = arrival, latency = its inference_s)."""
        try:
            envelope = decode_chunk(raw)
        except ValueError as exc:  # the node counts an unplayable message as a rejected chunk
            self.core.reject_chunk("invalid", f"{exc} (on {topic})")
            self.last_error = self.core.last_error
            if self.options.strict:
                raise ReplayError(f"action chunk on {topic} at t={(t_ns - self.record.t0) / NS_PER_S:.3f} s "
                                  f"rejected: {exc} (--strict)") from None
            return
        chunk = envelope.chunk
        result = self._receive(envelope, t_ns)
        self.record.inferences.append(Inference(
            envelope.sequence, t_ns, t_ns, seconds_to_ns(float(chunk.stamp)), self.half.remote_inference_s,
            chunk.instruction, None, ran=True, result=result))
        if result == "accepted":
            self.record.chunk_delays.append(self.core.chunk_report.delay_last_s)

    # ----- the control loop's outputs -------------------------------------------------------------
    def tick(self, t_ns: int) -> dict:
        """One control tick; returns its commands.csv row."""
        self.flush()
        switches = self.core.chunk_report.switches
        cmd = self.core.tick(t_ns / NS_PER_S)
        report = self.core.chunk_report
        if report.switches > switches:
            self.record.switch_jumps.append(report.jump_last)
        self.ticks_in_period += 1
        row = command_row(cmd, t_ns, self.record.t0, self.core.state, self.core.instruction)
        self.record.rows.append(row)
        return row

    def status(self, t_ns: int) -> Any:
        """The VlaStatus at t_ns; the rates are over the status period that ends now. Split and
        control-only: the control node's (role control: the policy as its chunks describe it)."""
        self.flush()
        period_s = self.status_ns / NS_PER_S
        link = self.half.report() if self.half is not None else None
        if link is None:  # one process: the policy is here
            assert self.policy is not None
            backend, latency_s = self.policy.describe(), self.last_latency_s
            model_rate_hz, errors = self.calls_done_in_period / period_s, self.record.policy_errors
        else:
            backend, latency_s = self.half.remote_backend, self.half.remote_inference_s
            model_rate_hz, errors = self.chunks_in_period / period_s, 0
        counters = Counters(
            backend=backend, inference_latency_s=latency_s, model_rate_hz=model_rate_hz,
            control_rate_hz=self.ticks_in_period / period_s,
            commands_published=self.core.counters["commands"], rejected_inputs=self.record.rejected_inputs,
            policy_errors=errors, last_error=(link.clock_problem if link else "") or self.last_error)
        self.calls_done_in_period = self.chunks_in_period = 0
        self.ticks_in_period = 0
        fields = status_fields(self.core, t_ns / NS_PER_S, counters, link=link,
                               role="both" if self.half is None else "control")
        return status_msg(t_ns, self.config.control.frame_id, fields)

    # ----- the event loop -------------------------------------------------------------------------
    def run(self, bag: BagReader, writer: BagWriter, progress: Progress) -> None:
        """Process the whole bag; commands and status go to `writer`, the inputs are copied to it."""
        topics, record = self.topics, self.record
        fixed_instruction = self.options.instruction is not None
        control_only = self.mode == "control"
        types = input_topics(bag, topics, self.config.safety.require_pose, fixed_instruction,
                             self.proprio.source, cameras_required=self.watch_cameras or not control_only,
                             read_chunks=control_only)
        add_topics(writer, bag, types, topics, chunks=self.mode == "split")
        self.writer = writer
        messages = bag.messages(list(types))
        nxt = next(messages, None)
        if nxt is None:
            raise ReplayError(f"bag {str(bag.path)!r} has no messages on {', '.join(types)}")
        record.t0 = t0 = nxt[1]
        progress.total = max(bag.end_ns - t0, 1)
        if self.options.instruction is not None:
            self._set_instruction(self.options.instruction, t0)
        frame_id = self.config.control.frame_id
        last_msg = t0
        k_tick, k_status = 0, 1
        next_tick, next_status = t0, t0 + self.status_ns
        while True:
            more = nxt is not None
            t_msg = nxt[1] if more else NEVER
            pending = self.pending
            t_done = NEVER
            if pending is not None:
                t_done = pending.timeout_ns if pending.timeout_ns is not None else pending.finish_ns
                if not more and t_done > last_msg:
                    t_done = NEVER
            t_tick = next_tick if (more or next_tick <= last_msg) else NEVER
            t_stat = next_status if (more or next_status <= last_msg) else NEVER
            t = min(t_msg, t_done, t_tick, t_stat)
            if t == NEVER:
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
                writer.write_msg(topics.command, t, command_msg(self.tick(t), frame_id))
                k_tick += 1
                next_tick = t0 + k_tick * self.tick_ns
            if next_status == t:
                writer.write_msg(topics.status, t, self.status(t))
                k_status += 1
                next_status = t0 + k_status * self.status_ns
            progress.update(t - t0)
        self.flush()
        if self.pending is not None:
            self.pending.result = self.pending.result or "unfinished at the end of the bag"
        record.t_end = last_msg
        if record.image_count == 0 and self.watch_cameras:
            raise ReplayError(f"no camera frame on {topics.camera} could be used")


def replay_bag(bag_path: str | Path, out_dir: str | Path, config: NodeConfig, policy: Policy | None,
               options: ReplayOptions | None = None) -> ReplayResult:
    """Replay `bag_path` into `out_dir` (written under a temporary name, renamed when complete); `policy`
    None for a control-only replay (options.mode "control").

    Outputs: replay/ (mcap: the input topics, the commands as EndEffectorCommand, VlaStatus; split: the
    ActionChunk messages), commands.csv, inferences.csv, plot.png, summary.json (split and control-only:
    with "link"), and with options.compare compare.txt and compare.json. Raises BagError / ReplayError.
    """
    options = options or ReplayOptions()
    out_dir = Path(out_dir)
    wall0 = time.monotonic()
    replayer = Replayer(config, policy, options)
    with BagReader(bag_path) as bag, AtomicDir(out_dir, overwrite=options.overwrite) as tmp:
        progress = Progress(bag.end_ns - bag.start_ns, options.progress)
        custom = {"generator": "vla_ros replay", "source_bag": bag.path.name,
                  "latency_model": options.latency.describe()}
        if options.mode != "node":
            custom["mode"] = options.mode
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
        described = (policy.describe() if policy is not None
                     else f"none: action chunks recorded on {replayer.topics.chunk}")
        link = replayer.half.report() if replayer.half is not None else None
        summary, series, report = write_reports(tmp, out_dir, bag, replayer.record, replayer.topics,
                                                replayer.core.counters, config, options, described, link)
    wall_end = time.monotonic()
    timings = {"total": wall_end - wall0, "replay_loop": wall_loop - wall0, "outputs": wall_end - wall_loop,
               "policy_calls": replayer.record.policy_wall_s}
    return ReplayResult(out_dir, summary, series, report, wall_end - wall0, timings)
