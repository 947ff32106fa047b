"""vla_ros/ActionChunk messages in bags (rosbags CDR) <-> ChunkEnvelope: the fields vla_ros/ros/chunk_msg.py
writes (msg/ActionChunk.msg), with the same checks on the way back (control.split.envelope_from_message).

Stamps go through seconds_to_ns / ns_to_seconds (bag/io.py), which are exact: a chunk's stamp comes back
bit for bit, so the split replay's control half schedules exactly what the single-node replay schedules.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_ros.bag.io import (
    ACTION_CHUNK,
    deserialize,
    header_msg,
    msg_class,
    ns_to_seconds,
    seconds_to_ns,
    serialize,
    stamp_ns,
)
from vla_ros.control.split import ChunkEnvelope, envelope_from_message


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


def decode_chunk(raw: bytes | memoryview) -> ChunkEnvelope:
    """The envelope of CDR bytes; ValueError when they are not a playable ActionChunk."""
    try:
        msg = deserialize(raw, ACTION_CHUNK)
    except Exception as exc:  # malformed CDR: rosbags raises assorted errors
        raise ValueError(f"action chunk: cannot deserialize: {type(exc).__name__}: {exc}") from None
    return envelope_from_message(msg, ns_to_seconds(stamp_ns(msg.header.stamp)))
