"""vla_ros/ActionChunk messages <-> core ActionChunk: the contract between a policy and a control half
that may run on different computers (msg/ActionChunk.msg documents every field).

A received message is checked before it becomes an ActionChunk: 7 values per action, at least one
action, as many values as chunk_length x action_dim, finite values and period; anything else is a
ValueError naming the field (the control half counts it as a rejected chunk, never plays it).
"""

from __future__ import annotations

import numpy as np

from vla_ros.control.split import ChunkEnvelope, envelope_from_message
from vla_ros.msg import ActionChunk as ActionChunkMsg
from vla_ros.ros.conversions import seconds_to_time, time_to_seconds


def held_instruction_topic(chunk_topic: str) -> str:
    """Where the control half holds the instruction in force (std_msgs/String, transient local) for a
    policy half that (re)starts after it was sent: `<split.chunk_topic>/instruction`."""
    return chunk_topic.rstrip("/") + "/instruction"


def chunk_to_msg(envelope: ChunkEnvelope, frame_id: str) -> ActionChunkMsg:
    """The message of a chunk (header stamp = the observation's stamp; actions row-major)."""
    chunk = envelope.chunk
    actions = np.asarray(chunk.actions, dtype=np.float64)
    msg = ActionChunkMsg()
    msg.header.stamp = seconds_to_time(chunk.stamp)
    msg.header.frame_id = frame_id
    msg.instruction = chunk.instruction
    msg.sequence = int(envelope.sequence)
    msg.action_period_s = float(envelope.action_period_s)
    msg.chunk_length, msg.action_dim = (int(n) for n in actions.shape)
    msg.actions = actions.reshape(-1).tolist()
    msg.model, msg.family = envelope.model, envelope.family
    msg.inference_s = float(sum(chunk.timings.values()))
    return msg


def chunk_from_msg(msg: ActionChunkMsg) -> ChunkEnvelope:
    """The chunk a message carries; ValueError naming the field when it cannot be played."""
    return envelope_from_message(msg, time_to_seconds(msg.header.stamp))
