"""Bag messages (rosbags objects) to vla_ros types: images (vla_ros.core.images), poses, instructions."""

from __future__ import annotations

from typing import Any

import numpy as np

from vla_ros.bag.io import COMPRESSED_IMAGE, IMAGE, stamp_ns
from vla_ros.core.images import RAW_ENCODINGS, ImageError, decode_compressed, decode_raw


def image_rgb(msg: Any, msgtype: str, min_size: tuple[int, int] | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3] of a sensor_msgs/Image or CompressedImage (a large JPEG at the reduced scale
    that keeps `min_size`, as vla_node decodes it); ImageError when malformed."""
    if msgtype == IMAGE:
        return decode_raw(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data)
    if msgtype == COMPRESSED_IMAGE:
        return decode_compressed(msg.format, msg.data, min_size=min_size)
    raise ImageError(f"message type {msgtype} is not an image")


def check_image_format(msg: Any, msgtype: str) -> None:
    """Raise ImageError naming the encoding when a frame's encoding/format is not one we decode."""
    if msgtype == IMAGE:
        enc = str(msg.encoding).strip().lower()
        if enc not in RAW_ENCODINGS:
            raise ImageError(f"unsupported image encoding {msg.encoding!r} (supported: "
                             f"{', '.join(sorted(RAW_ENCODINGS))})")
    elif msgtype == COMPRESSED_IMAGE:
        fmt = str(msg.format).lower()
        if fmt and not any(k in fmt for k in ("jpeg", "jpg", "png")):
            raise ImageError(f"unsupported compressed image format {msg.format!r} (supported: jpeg, png)")


def image_stamp_ns(msg: Any, log_ns: int, source: str) -> int:
    """The frame's stamp [ns]: its header stamp (source 'header', falling back to the log time when
    the header is zero) or the time it was recorded (source 'receive')."""
    if source == "header":
        header_ns = stamp_ns(msg.header.stamp)
        if header_ns > 0:
            return header_ns
    return int(log_ns)


