"""vla_ros/ActionChunk messages in bags (rosbags CDR) <-> ChunkEnvelope: the fields vla_ros/ros/chunk_msg.py
writes (msg/ActionChunk.msg), with the same checks on the way back.

Stamps go through seconds_to_ns / ns_to_seconds (bag/io.py), which are exact: a chunk's stamp comes back
bit for bit, so the split replay's control half schedules exactly what the single-node replay schedules.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from vla_ros.bag.io import ACTION_CHUNK, deserialize, header_msg, msg_class, ns_to_seconds, seconds_to_ns, serialize
from vla_ros.bag.io import stamp_ns as time_ns
from vla_ros.control.split import ChunkEnvelope
from vla_ros.core.types import ACTION_DIM, ActionChunk, validate_chunk

INFERENCE_TIMING = "inference"  # the timings key a received chunk's inference time arrives under


def chunk_message(envelope: ChunkEnvelope, frame_id: str) -> Any:
    """The rosbags ActionChunk of an envelope (header stamp = the observation's stamp, actions row-major,
    inference_s = the sum of the chunk's timings)."""
    chunk = envelope.chunk
    actions = np.asarray(chunk.actions, dtype=np.float64)
    length, dim = (int(n) for n in actions.shape)
    return msg_class(ACTION_CHUNK)(
        header=header_msg(seconds_to_ns(float(chunk.stamp)), frame_id), instruction=chunk.instruction,
        sequence=int(envelope.sequence), action_period_s=float(envelope.action_period_s), action_dim=dim,
        chunk_length=length, actions=actions.reshape(-1), model=envelope.model, family=envelope.family,
        inference_s=float(sum(chunk.timings.values())))


def encode_chunk(envelope: ChunkEnvelope, frame_id: str) -> bytes:
    """CDR bytes of the envelope's ActionChunk message."""
    return serialize(chunk_message(envelope, frame_id), ACTION_CHUNK)


def envelope_from_message(msg: Any) -> ChunkEnvelope:
    """The chunk a message carries; ValueError naming the field when it cannot be played (the checks of
    vla_ros.ros.chunk_msg.chunk_from_msg)."""
    if msg.action_dim != ACTION_DIM:
        raise ValueError(f"action chunk: action_dim is {msg.action_dim}, the control half drives {ACTION_DIM}")
    if msg.chunk_length < 1:
        raise ValueError("action chunk: chunk_length must be at least 1")
    values = np.asarray(msg.actions, dtype=np.float64)
    if values.size != msg.chunk_length * msg.action_dim:
        raise ValueError(f"action chunk: {values.size} action values, chunk_length x action_dim = "
                         f"{msg.chunk_length} x {msg.action_dim}")
    if not (math.isfinite(msg.action_period_s) and msg.action_period_s > 0.0):
        raise ValueError(f"action chunk: action_period_s must be a positive number, got {msg.action_period_s}")
    chunk = ActionChunk(actions=values.reshape(msg.chunk_length, msg.action_dim),
                        stamp=ns_to_seconds(time_ns(msg.header.stamp)), instruction=msg.instruction,
                        timings={INFERENCE_TIMING: float(msg.inference_s)})
    problem = validate_chunk(chunk)
    if problem is not None:
        raise ValueError(f"action chunk: {problem}")
    return ChunkEnvelope(chunk, int(msg.sequence), float(msg.action_period_s), msg.model, msg.family)


def decode_chunk(raw: bytes | memoryview) -> ChunkEnvelope:
    """The envelope of CDR bytes; ValueError when they are not a playable ActionChunk."""
    try:
        msg = deserialize(raw, ACTION_CHUNK)
    except Exception as exc:  # malformed CDR: rosbags raises assorted errors
        raise ValueError(f"action chunk: cannot deserialize: {type(exc).__name__}: {exc}") from None
    return envelope_from_message(msg)
