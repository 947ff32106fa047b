"""The two halves of a split deployment, ROS-free and with time passed in, shared by the policy and
control nodes, the split replay and the simulator's split evaluation.

ChunkSender numbers the chunks the policy half publishes; ControlHalf is what the control half does with
each chunk it receives: the link's verdict (a duplicate is dropped), the action period check, then
ControlCore.on_chunk, and - without camera topics of its own - the accepted chunk's stamp as the
newest image of every camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from vla_ros.control.core import ControlCore
from vla_ros.control.link import ChunkLink, LinkReport
from vla_ros.core.types import ACTION_DIM, ActionChunk, validate_chunk

PERIOD_TOLERANCE_S = 1e-9  # action periods closer than this are the same
INFERENCE_TIMING = "inference"  # the timings key a received chunk's inference time arrives under


@dataclass(frozen=True)
class ChunkEnvelope:
    """A chunk with what travels around it: its sequence number, action period and origin."""

    chunk: ActionChunk
    sequence: int
    action_period_s: float
    model: str = ""
    family: str = ""


def envelope_from_message(msg: Any, stamp: float) -> ChunkEnvelope:
    """The chunk an ActionChunk message carries (rclpy's or rosbags', the same fields; `stamp`: its header
    stamp in seconds); ValueError naming the field when it cannot be played."""
    if msg.action_dim != ACTION_DIM:
        raise ValueError(f"action chunk: action_dim is {msg.action_dim}, the control half drives "
                         f"{ACTION_DIM}")
    if msg.chunk_length < 1:
        raise ValueError("action chunk: chunk_length must be at least 1")
    values = np.asarray(msg.actions, dtype=np.float64)
    if values.size != msg.chunk_length * msg.action_dim:
        raise ValueError(f"action chunk: {values.size} action values, chunk_length x action_dim = "
                         f"{msg.chunk_length} x {msg.action_dim}")
    if not (math.isfinite(msg.action_period_s) and msg.action_period_s > 0.0):
        raise ValueError("action chunk: action_period_s must be a positive number, got "
                         f"{msg.action_period_s}")
    chunk = ActionChunk(actions=values.reshape(msg.chunk_length, msg.action_dim), stamp=stamp,
                        instruction=msg.instruction, timings={INFERENCE_TIMING: float(msg.inference_s)})
    problem = validate_chunk(chunk)
    if problem is not None:
        raise ValueError(f"action chunk: {problem}")
    return ChunkEnvelope(chunk, int(msg.sequence), float(msg.action_period_s), msg.model, msg.family)


class ChunkSender:
    """Wraps each chunk of the policy half in an envelope with the next sequence number (0, 1, ...)."""

    def __init__(self, action_period_s: float, model: str = "", family: str = "") -> None:
        self.action_period_s, self.model, self.family = float(action_period_s), model, family
        self.sent = 0

    def envelope(self, chunk: ActionChunk) -> ChunkEnvelope:
        envelope = ChunkEnvelope(chunk, self.sent, self.action_period_s, self.model, self.family)
        self.sent += 1
        return envelope


class ControlHalf:
    """Chunks received over a link into a ControlCore. Thread-safe as far as ControlCore is; call
    `on_chunk` from one thread."""

    def __init__(self, core: ControlCore, action_period_s: float, watch_cameras: bool = True,
                 link: ChunkLink | None = None) -> None:
        """`watch_cameras`: the caller feeds core.on_image from camera messages; False: each accepted
        chunk's stamp stands for every camera's newest image. `link` default: ChunkLink with the core's
        future tolerance and its max action age as the 'steadily late' threshold."""
        self.core = core
        self.action_period_s = float(action_period_s)
        self.watch_cameras = bool(watch_cameras)
        self.link = link if link is not None else ChunkLink(core.future_tolerance_s, core.max_action_age_s)
        self.remote_model = ""  # the policy's description, from the last chunk that carried one
        self.remote_inference_s = 0.0  # inference time of the last chunk received [s]

    def on_chunk(self, envelope: ChunkEnvelope, now: float) -> str:
        """Receive one chunk at `now`: 'accepted', 'duplicate' (dropped, counted by the link) or
        'rejected' (counted by the core; core.last_error says why)."""
        chunk = envelope.chunk
        inference_s = float(sum(chunk.timings.values()))
        self.remote_model = envelope.model or self.remote_model
        self.remote_inference_s = inference_s
        if self.link.on_chunk(envelope.sequence, float(chunk.stamp), inference_s, now) == "duplicate":
            return "duplicate"
        period = envelope.action_period_s
        if not (math.isfinite(period) and abs(period - self.action_period_s) <= PERIOD_TOLERANCE_S):
            self.core.reject_chunk("invalid", f"action chunk spans {period!r} s per action, this control "
                                   f"half plays {self.action_period_s:g} s (set control.action_period_s "
                                   "the same on both halves)")
            return "rejected"
        if not self.core.on_chunk(chunk, now):
            return "rejected"
        if not self.watch_cameras:
            for camera in self.core.cameras:
                self.core.on_image(float(chunk.stamp), camera)
        return "accepted"

    @property
    def remote_backend(self) -> str:
        """The policy half as status names it: 'remote: <its description>'."""
        return f"remote: {self.remote_model}" if self.remote_model else "remote policy (no chunk yet)"

    def report(self) -> LinkReport:
        return self.link.report()
