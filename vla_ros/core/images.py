"""ROS-free decoding of camera frames into RGB uint8 [H, W, 3] arrays.

Raw frames arrive as the fields of sensor_msgs/Image (encoding, height, width, step, is_bigendian,
data); compressed frames as the fields of sensor_msgs/CompressedImage (format, data). Every
malformed frame raises ImageError with a message that says what is wrong; nothing else escapes.
"""

from __future__ import annotations

import struct
from typing import Any

import cv2
import numpy as np

# Frames larger than this are refused before any pixel is touched (an 8K frame, 7680x4320, is).
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 8192
MAX_COMPRESSED_BYTES = 32 * 1024 * 1024

# encoding -> (channels, bytes per channel); the channel order is handled in _to_rgb.
RAW_ENCODINGS: dict[str, tuple[int, int]] = {
    "rgb8": (3, 1),
    "bgr8": (3, 1),
    "rgba8": (4, 1),
    "bgra8": (4, 1),
    "mono8": (1, 1),
    "8uc1": (1, 1),
    "mono16": (1, 2),
    "16uc1": (1, 2),
}

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not C4/C8/CC.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageError(ValueError):
    """A camera frame cannot be decoded; the message says why."""


def _as_bytes_view(data: Any) -> np.ndarray:
    """A flat uint8 view of a message's data field (bytes, array.array, list, ndarray)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _check_size(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise ImageError(f"image has zero size ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
        raise ImageError(f"image {width}x{height} is too large (limit {max_pixels} pixels, "
                         f"{MAX_SIDE} per side)")


def decode_raw(encoding: str, height: int, width: int, step: int, is_bigendian: bool | int,
               data: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode sensor_msgs/Image fields into a new RGB uint8 [H, W, 3] array, honouring `step` padding."""
    enc = str(encoding).strip().lower()
    if enc not in RAW_ENCODINGS:
        raise ImageError(f"unsupported encoding {encoding!r} (supported: "
                         f"{', '.join(sorted(RAW_ENCODINGS))})")
    height, width, step = int(height), int(width), int(step)
    _check_size(width, height, max_pixels)
    channels, depth = RAW_ENCODINGS[enc]
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise ImageError(f"step {step} is smaller than width * bytes per pixel = {row_bytes}")
    if step > 2 * row_bytes + 4096:
        raise ImageError(f"step {step} is implausibly large for a {width}-pixel {enc} row")
    buf = _as_bytes_view(data)
    if buf.size != step * height:
        raise ImageError(f"data has {buf.size} bytes, expected height * step = {step * height}")
    rows = buf.reshape(height, step)[:, :row_bytes]  # drop the row padding, [H, row_bytes]
    if depth == 2:
        dtype = np.dtype(">u2" if is_bigendian else "<u2")
        pixels16 = np.ascontiguousarray(rows).view(dtype).reshape(height, width)
        gray = (pixels16 >> 8).astype(np.uint8)  # keep the 8 most significant bits
        return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
    pixels = rows.reshape(height, width, channels)
    if enc == "rgb8":
        return np.array(pixels, dtype=np.uint8, copy=True, order="C")
    if enc == "bgr8":
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGR2RGB)
    if enc == "rgba8":
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGBA2RGB)
    if enc == "bgra8":
        return cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(np.ascontiguousarray(pixels.reshape(height, width)), cv2.COLOR_GRAY2RGB)


def probe_compressed_size(data: bytes) -> tuple[str, int, int]:
    """Read (kind, width, height) from a JPEG or PNG header without decoding pixels."""
    if data.startswith(_PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ImageError("corrupt PNG: missing IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(_JPEG_MAGIC):
        pos = 2
        while pos + 4 <= len(data):
            if data[pos] != 0xFF:
                raise ImageError(f"corrupt JPEG: expected a marker at byte {pos}")
            marker = data[pos + 1]
            if marker == 0xFF:  # fill byte
                pos += 1
                continue
            if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
                pos += 2
                continue
            (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
            if length < 2:
                raise ImageError("corrupt JPEG: bad segment length")
            if marker in _JPEG_SOF:
                if pos + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
                return "jpeg", width, height
            if marker in (0xDA, 0xD9):  # scan data or end before any frame header
                break
            pos += 2 + length
        raise ImageError("corrupt JPEG: no frame header")
    raise ImageError("compressed image is neither JPEG nor PNG (corrupt or unsupported format)")


def decode_compressed(fmt: str, data: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode sensor_msgs/CompressedImage fields (jpeg or png) into RGB uint8 [H, W, 3]."""
    fmt_l = str(fmt).lower()
    if fmt_l and not any(k in fmt_l for k in ("jpeg", "jpg", "png")):
        raise ImageError(f"unsupported compressed format {fmt!r} (supported: jpeg, png)")
    buf = _as_bytes_view(data)
    if buf.size == 0:
        raise ImageError("compressed image has no data")
    if buf.size > MAX_COMPRESSED_BYTES:
        raise ImageError(f"compressed image of {buf.size} bytes is too large "
                         f"(limit {MAX_COMPRESSED_BYTES})")
    raw = buf.tobytes()
    kind, width, height = probe_compressed_size(raw)
    _check_size(width, height, max_pixels)
    tail = raw.rstrip(b"\x00")
    if kind == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise ImageError("corrupt JPEG: truncated (no end-of-image marker)")
    if kind == "png" and b"IEND" not in tail[-12:]:
        raise ImageError("corrupt PNG: truncated (no IEND chunk)")
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ImageError(f"corrupt {kind.upper()}: the decoder rejected it")
    if bgr.shape[:2] != (height, width):
        raise ImageError(f"corrupt {kind.upper()}: header says {width}x{height}, "
                         f"decoded {bgr.shape[1]}x{bgr.shape[0]}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def encode_raw(rgb: np.ndarray, encoding: str = "rgb8", row_padding: int = 0,
               bigendian: bool = False) -> tuple[int, int, int, bytes]:
    """Encode RGB uint8 [H, W, 3] as (height, width, step, data) in `encoding` (tests, simulators)."""
    enc = encoding.lower()
    height, width = rgb.shape[:2]
    if enc == "rgb8":
        pixels = rgb
    elif enc == "bgr8":
        pixels = rgb[..., ::-1]
    elif enc == "rgba8":
        pixels = np.dstack([rgb, np.full((height, width), 255, np.uint8)])
    elif enc == "bgra8":
        pixels = np.dstack([rgb[..., ::-1], np.full((height, width), 255, np.uint8)])
    elif enc in ("mono8", "8uc1"):
        pixels = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    elif enc in ("mono16", "16uc1"):
        gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257
        pixels = gray.astype(">u2" if bigendian else "<u2").view(np.uint8).reshape(height, width * 2)
    else:
        raise ImageError(f"unsupported encoding {encoding!r}")
    rows = np.ascontiguousarray(pixels).reshape(height, -1)
    if row_padding:
        rows = np.hstack([rows, np.zeros((height, row_padding), np.uint8)])
    return height, width, rows.shape[1], rows.tobytes()
