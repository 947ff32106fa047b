"""ROS-free decoding of camera frames into RGB uint8 [H, W, 3] arrays.

Raw frames arrive as the fields of sensor_msgs/Image (encoding, height, width, step, is_bigendian,
data); compressed frames as the fields of sensor_msgs/CompressedImage (format, data). Every
malformed frame raises ImageError with a message that says what is wrong; nothing else escapes, and
the native decoders print nothing (JPEG: libjpeg-turbo through simplejpeg in strict mode, so a
damaged scan raises instead of decoding to grey blocks; PNG: chunk CRCs checked here, then Pillow,
because OpenCV's libpng writes "libpng error" lines to stderr).

`check_compressed` / `check_raw` are the cheap checks (header, size, end marker) done when a frame
arrives; `CompressedFrame` / `RawFrame` hold a checked frame until `decode()` makes its Observation,
so only the frame the policy will use is decoded; `MultiFrame` holds one of each camera (and the proprio
vector) for policies that take several cameras.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import simplejpeg
from PIL import Image as PILImage

from vla_ros.core.types import Observation, Pose

# Frames larger than this are refused before any pixel is touched (an 8K frame, 7680x4320, is).
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 8192
MAX_COMPRESSED_BYTES = 32 * 1024 * 1024
TAIL_BYTES = 64 * 1024  # the end of a compressed frame searched for its end marker, zero padding included

# Reduced-scale JPEG decoding keeps each side >= DECODE_MARGIN x the model's input side, so the
# model's own antialiased resize (PIL bicubic / INTER_AREA) still does the last >= 2x shrink and the
# DCT scaling (an ideal low-pass per 8x8 block) only removes detail the model input cannot hold.
DECODE_MARGIN = 2
DEFAULT_MODEL_INPUT = 224  # OpenVLA's 224 x 224; used when the policy does not say
JPEG_SCALES = (8, 4, 2)  # the libjpeg-turbo DCT scales with fast reduced IDCTs, smallest image first

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


def check_raw(encoding: str, height: int, width: int, step: int, data: Any,
              max_pixels: int = MAX_PIXELS) -> str:
    """Check sensor_msgs/Image fields without touching pixels; returns the normalized encoding."""
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
    size = _as_bytes_view(data).size
    if size != step * height:
        raise ImageError(f"data has {size} bytes, expected height * step = {step * height}")
    return enc


def decode_raw(encoding: str, height: int, width: int, step: int, is_bigendian: bool | int,
               data: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode sensor_msgs/Image fields into a new RGB uint8 [H, W, 3] array, honouring `step` padding."""
    enc = check_raw(encoding, height, width, step, data, max_pixels)
    height, width, step = int(height), int(width), int(step)
    channels, depth = RAW_ENCODINGS[enc]
    row_bytes = width * channels * depth
    rows = _as_bytes_view(data).reshape(height, step)[:, :row_bytes]  # drop the row padding
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


def decode_min_size(input_size: int | None = None) -> tuple[int, int]:
    """(width, height) a frame must keep when decoded for a model taking `input_size`^2 pixels."""
    side = (input_size if input_size and input_size > 0 else DEFAULT_MODEL_INPUT) * DECODE_MARGIN
    return side, side


def jpeg_scale(width: int, height: int, min_size: tuple[int, int] | None) -> int:
    """The largest DCT scale denominator (8, 4, 2, else 1) that keeps the image >= min_size."""
    if min_size is None:
        return 1
    min_w, min_h = min_size
    for denom in JPEG_SCALES:
        if math.ceil(width / denom) >= min_w and math.ceil(height / denom) >= min_h:
            return denom
    return 1


def check_compressed(fmt: str, data: Any, max_pixels: int = MAX_PIXELS) -> tuple[str, int, int]:
    """The cheap checks of a CompressedImage (format, size, header, end marker): (kind, width, height)."""
    fmt_l = str(fmt).lower()
    if fmt_l and not any(k in fmt_l for k in ("jpeg", "jpg", "png")):
        raise ImageError(f"unsupported compressed format {fmt!r} (supported: jpeg, png)")
    raw = data if isinstance(data, bytes) else _as_bytes_view(data).tobytes()
    if not raw:
        raise ImageError("compressed image has no data")
    if len(raw) > MAX_COMPRESSED_BYTES:
        raise ImageError(f"compressed image of {len(raw)} bytes is too large "
                         f"(limit {MAX_COMPRESSED_BYTES})")
    kind, width, height = probe_compressed_size(raw)
    _check_size(width, height, max_pixels)
    # Some drivers pad the buffer with zeros: strip them from the end only (no copy of the frame).
    tail = raw[-TAIL_BYTES:].rstrip(b"\x00") or raw.rstrip(b"\x00")
    tail = tail[-16:]
    if kind == "jpeg" and not tail.endswith(b"\xff\xd9"):
        raise ImageError("corrupt JPEG: truncated (no end-of-image marker)")
    if kind == "png" and b"IEND" not in tail[-12:]:
        raise ImageError("corrupt PNG: truncated (no IEND chunk)")
    return kind, width, height


def check_png_chunks(raw: bytes) -> None:
    """Walk the PNG chunks: every CRC must match, IHDR first, IEND last (zero padding after it)."""
    pos, first = len(_PNG_MAGIC), True
    while True:
        if pos + 12 > len(raw):
            raise ImageError("corrupt PNG: truncated (no IEND chunk)")
        length, kind = struct.unpack(">I4s", raw[pos:pos + 8])
        end = pos + 12 + length
        if end > len(raw):
            raise ImageError(f"corrupt PNG: chunk {kind!r} runs past the end of the data")
        (crc,) = struct.unpack(">I", raw[end - 4:end])
        if zlib.crc32(raw[pos + 4:end - 4]) != crc:
            raise ImageError(f"corrupt PNG: CRC mismatch in chunk {kind!r} at byte {pos}")
        if first and kind != b"IHDR":
            raise ImageError("corrupt PNG: the first chunk is not IHDR")
        first, pos = False, end
        if kind == b"IEND":
            if raw[pos:].strip(b"\x00"):
                raise ImageError("corrupt PNG: data after the IEND chunk")
            return


def _decode_png(raw: bytes) -> np.ndarray:
    check_png_chunks(raw)
    try:
        with PILImage.open(io.BytesIO(raw), formats=["PNG"]) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grey: keep the 8 high bits
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)
            if image.mode in ("P", "PA"):  # palette (with transparency): its colours, alpha dropped
                image = image.convert("RGBA")
            return np.array(image.convert("RGB"), dtype=np.uint8, order="C")
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, zlib.error, ...
        raise ImageError(f"corrupt PNG: the decoder rejected it ({exc})") from exc


def _decode_jpeg(raw: bytes, width: int, height: int, min_size: tuple[int, int] | None) -> np.ndarray:
    denom = jpeg_scale(width, height, min_size)
    want_w, want_h = math.ceil(width / denom), math.ceil(height / denom)
    try:  # strict: libjpeg warnings ("Corrupt JPEG data: ...") raise instead of printing
        rgb = simplejpeg.decode_jpeg(raw, colorspace="RGB", strict=True, min_width=want_w,
                                     min_height=want_h)
    except (ValueError, RuntimeError) as exc:
        raise ImageError(f"corrupt JPEG: {exc}") from exc
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < want_h or rgb.shape[1] < want_w:
        raise ImageError(f"corrupt JPEG: header says {width}x{height}, decoded "
                         f"{rgb.shape[1]}x{rgb.shape[0]} (scale 1/{denom})")
    return rgb


def decode_compressed(fmt: str, data: Any, max_pixels: int = MAX_PIXELS,
                      min_size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode sensor_msgs/CompressedImage fields (jpeg or png) into RGB uint8 [H, W, 3].

    `min_size` (width, height): a JPEG is decoded at the smallest DCT scale 1/2, 1/4, 1/8 that keeps
    it at least this large (see decode_min_size); None decodes at full size. PNG is always full size.
    """
    raw = data if isinstance(data, bytes) else _as_bytes_view(data).tobytes()
    kind, width, height = check_compressed(fmt, raw, max_pixels)
    return _decode_checked(kind, raw, width, height, min_size)


def _decode_checked(kind: str, raw: bytes, width: int, height: int,
                    min_size: tuple[int, int] | None) -> np.ndarray:
    """Decode a frame that passed check_compressed (its kind and header size given)."""
    if kind == "png":
        rgb = _decode_png(raw)
        if rgb.shape[:2] != (height, width):
            raise ImageError(f"corrupt PNG: header says {width}x{height}, "
                             f"decoded {rgb.shape[1]}x{rgb.shape[0]}")
        return rgb
    return _decode_jpeg(raw, width, height, min_size)


@dataclass(frozen=True)
class CompressedFrame:
    """A CompressedImage that passed `check_compressed`; `decode()` makes its Observation."""

    kind: str  # jpeg or png, from the header
    width: int
    height: int
    data: bytes
    stamp: float
    pose: Pose | None = None
    min_size: tuple[int, int] | None = None

    @classmethod
    def checked(cls, fmt: str, data: Any, stamp: float, pose: Pose | None = None,
                min_size: tuple[int, int] | None = None) -> CompressedFrame:
        """The frame after the cheap checks (raises ImageError)."""
        raw = data if isinstance(data, bytes) else _as_bytes_view(data).tobytes()
        kind, width, height = check_compressed(fmt, raw)
        return cls(kind, width, height, raw, stamp, pose, min_size)

    def pixels(self) -> np.ndarray:
        """The decoded RGB uint8 [H, W, 3] image (raises ImageError for a damaged frame)."""
        return _decode_checked(self.kind, self.data, self.width, self.height, self.min_size)

    def decode(self) -> Observation:
        """Decode the pixels (raises ImageError for a damaged frame)."""
        return Observation(self.pixels(), self.stamp, self.pose)


@dataclass(frozen=True)
class RawFrame:
    """An Image that passed `check_raw`; `decode()` makes its Observation."""

    encoding: str
    height: int
    width: int
    step: int
    is_bigendian: bool
    data: Any
    stamp: float
    pose: Pose | None = None

    @classmethod
    def checked(cls, encoding: str, height: int, width: int, step: int, is_bigendian: bool | int,
                data: Any, stamp: float, pose: Pose | None = None) -> RawFrame:
        """The frame after the cheap checks (raises ImageError)."""
        check_raw(encoding, height, width, step, data)
        return cls(str(encoding), int(height), int(width), int(step), bool(is_bigendian), data, stamp, pose)

    def pixels(self) -> np.ndarray:
        """The pixels as RGB uint8 [H, W, 3] (raises ImageError)."""
        return decode_raw(self.encoding, self.height, self.width, self.step, self.is_bigendian, self.data)

    def decode(self) -> Observation:
        """Convert the pixels to RGB (raises ImageError)."""
        return Observation(self.pixels(), self.stamp, self.pose)


@dataclass(frozen=True)
class MultiFrame:
    """Checked, undecoded frames of every camera (primary first, the checkpoint's order) with the proprio
    vector; `decode()` makes one Observation of them, stamped and posed as the primary frame."""

    frames: tuple[CompressedFrame | RawFrame, ...]
    cameras: tuple[str, ...]  # the cameras' names (topics), same order: a damaged frame's error names it
    proprio: np.ndarray | None = None

    @property
    def stamp(self) -> float:
        """The primary frame's stamp."""
        return self.frames[0].stamp

    def decode(self) -> Observation:
        """Decode every frame (raises ImageError naming the camera of a damaged one)."""
        images = tuple(_camera_pixels(name, frame) for name, frame in zip(self.cameras, self.frames))
        primary = self.frames[0]
        return Observation(images[0], primary.stamp, primary.pose, images[1:], self.proprio)


def _camera_pixels(camera: str, frame: CompressedFrame | RawFrame) -> np.ndarray:
    try:
        return frame.pixels()
    except Exception as exc:  # ImageError, or any failure of the decoder: that camera's frame is damaged
        raise ImageError(f"camera '{camera}': {exc}") from exc


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
