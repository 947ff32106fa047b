"""Calibration observations for `vla-ros export --quantize w8a8 --calibration BAG`: camera frames of a
recorded session, each with the instruction in force when it was taken."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vla_ros.bag.io import BagError, BagReader, deserialize
from vla_ros.bag.replay_inputs import decode_image
from vla_ros.core.config import load_config
from vla_ros.core.images import ImageError
from vla_ros.runtime.quantize import DEFAULT_CALIBRATION_SAMPLES, CalibrationSample

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STRING = "std_msgs/msg/String"


def is_bag(path: str | Path) -> bool:
    """A rosbag2 directory (metadata.yaml) or a bare .mcap / .db3 file."""
    p = Path(path)
    return (p / "metadata.yaml").is_file() or (p.is_file() and p.suffix in (".mcap", ".db3"))


def bag_calibration(path: str | Path, max_samples: int = DEFAULT_CALIBRATION_SAMPLES,
                    config: str | Path | None = None) -> list[CalibrationSample]:
    """Up to `max_samples` frames of the config's camera topic (topics.camera; the bag's only image topic
    when that one is missing), spread evenly over the frames taken while a non-empty instruction
    (topics.instruction) was in force. BagError says what is missing."""
    cfg = load_config(config)
    with BagReader(path) as bag:
        camera = _pick(bag, cfg.topics.camera, IMAGE_TYPES, "camera")
        instruction = _pick(bag, cfg.topics.instruction, (STRING,), "instruction")
        texts: list[str] = []
        frames: list[tuple[str, bytes, str]] = []  # (msgtype, raw, instruction in force)
        current = ""
        for topic, _, raw in bag.messages([camera, instruction]):
            if topic == instruction:
                current = str(deserialize(raw, STRING).data).strip()
            elif current:
                frames.append((bag.topics[camera].msgtype, raw, current))
                texts.append(current)
    if not frames:
        raise BagError(f"{path}: no frame on {camera} was taken while an instruction was in force on "
                       f"{instruction}: calibration needs the instruction with each frame")
    picks = np.linspace(0, len(frames) - 1, min(max_samples, len(frames))).round().astype(int)
    samples = []
    for i in dict.fromkeys(picks.tolist()):
        msgtype, raw, text = frames[i]
        try:
            samples.append(CalibrationSample([decode_image(raw, msgtype)[1]], text))
        except ImageError:
            continue  # a damaged frame is skipped, as the node rejects it
    if not samples:
        raise BagError(f"{path}: none of the frames picked on {camera} could be decoded")
    return samples


def _pick(bag: BagReader, wanted: str, msgtypes: tuple[str, ...], role: str) -> str:
    """The topic `wanted` (with or without its leading slash), else the bag's only topic of the types."""
    for name in (wanted, "/" + wanted.lstrip("/")):
        if name in bag.topics:
            return bag.require(name, msgtypes, role).name
    candidates = [t.name for t in bag.topics.values() if t.msgtype in msgtypes]
    if len(candidates) == 1:
        return candidates[0]
    return bag.require("/" + wanted.lstrip("/"), msgtypes, role).name  # raises, listing the topics
