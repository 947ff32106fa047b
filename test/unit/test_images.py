"""vla_ros.core.images: raw and compressed frame decoding, row padding, endianness, size limits."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from vla_ros.core.images import (
    MAX_PIXELS,
    ImageError,
    decode_compressed,
    decode_raw,
    encode_raw,
    probe_compressed_size,
)

RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)  # odd sizes catch stride bugs


def gray_of(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8"])
@pytest.mark.parametrize("padding", [0, 3, 64])
def test_colour_round_trip_with_row_padding(encoding, padding):
    h, w, step, data = encode_raw(RGB, encoding, row_padding=padding)
    assert step == w * (3 if encoding.endswith("8") and len(encoding) == 4 else 4) + padding
    out = decode_raw(encoding, h, w, step, False, data)
    assert out.dtype == np.uint8 and out.shape == RGB.shape and out.flags.c_contiguous
    np.testing.assert_array_equal(out, RGB)


def test_padding_bytes_are_ignored():
    h, w, step, data = encode_raw(RGB, "rgb8", row_padding=5)
    rows = np.frombuffer(data, np.uint8).reshape(h, step).copy()
    rows[:, -5:] = 255  # garbage in the padding must not leak into pixels
    np.testing.assert_array_equal(decode_raw("rgb8", h, w, step, 0, rows.tobytes()), RGB)


@pytest.mark.parametrize("encoding", ["mono8", "8UC1"])
def test_mono8_becomes_grey_rgb(encoding):
    h, w, step, data = encode_raw(RGB, encoding, row_padding=2)
    out = decode_raw(encoding, h, w, step, 0, data)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray_of(RGB))


@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_mono16_honours_is_bigendian(encoding, bigendian):
    h, w, step, data = encode_raw(RGB, encoding, row_padding=4, bigendian=bigendian)
    np.testing.assert_array_equal(decode_raw(encoding, h, w, step, bigendian, data)[..., 0], gray_of(RGB))
    # Low byte 7 everywhere: reading with the wrong byte order would give 7 instead of the high byte.
    values = gray_of(RGB).astype(np.uint16) * 256 + 7
    raw = values.astype(">u2" if bigendian else "<u2").tobytes()
    out = decode_raw(encoding, h, w, w * 2, bigendian, raw)
    np.testing.assert_array_equal(out[..., 1], gray_of(RGB))
    wrong = decode_raw(encoding, h, w, w * 2, not bigendian, raw)
    assert np.all(wrong[..., 1] == 7)


def test_accepts_array_array_and_list_data():
    import array

    h, w, step, data = encode_raw(RGB, "rgb8")
    np.testing.assert_array_equal(decode_raw("rgb8", h, w, step, 0, array.array("B", data)), RGB)
    np.testing.assert_array_equal(decode_raw("rgb8", h, w, step, 0, list(data)), RGB)


def test_output_does_not_alias_the_message_buffer():
    h, w, step, data = encode_raw(RGB, "rgb8")
    buf = bytearray(data)
    out = decode_raw("rgb8", h, w, step, 0, buf)
    buf[:] = bytes(len(buf))
    np.testing.assert_array_equal(out, RGB)


@pytest.mark.parametrize("encoding", ["yuv422", "32FC1", "", "rgb16", "bayer_rggb8"])
def test_unsupported_encoding(encoding):
    with pytest.raises(ImageError, match="unsupported encoding"):
        decode_raw(encoding, 2, 2, 6, 0, bytes(12))


def test_data_shorter_than_height_times_step():
    h, w, step, data = encode_raw(RGB, "rgb8", row_padding=8)
    with pytest.raises(ImageError, match="expected height \\* step"):
        decode_raw("rgb8", h, w, step, 0, data[:-1])
    with pytest.raises(ImageError, match="expected height \\* step"):
        decode_raw("rgb8", h, w, step, 0, data + b"\0")


def test_step_smaller_than_row():
    with pytest.raises(ImageError, match="step 5 is smaller"):
        decode_raw("rgb8", 2, 2, 5, 0, bytes(10))


@pytest.mark.parametrize("h, w", [(0, 10), (10, 0), (0, 0), (-1, 4)])
def test_zero_size(h, w):
    with pytest.raises(ImageError, match="zero size"):
        decode_raw("rgb8", h, w, max(w, 0) * 3, 0, b"")


def test_8k_frame_is_refused_by_its_size():
    h, w = 4320, 7680
    data = np.zeros(h * w * 3, np.uint8)  # a complete, well-formed 8K frame
    assert h * w > MAX_PIXELS
    with pytest.raises(ImageError, match="too large"):
        decode_raw("rgb8", h, w, w * 3, 0, data)


def jpeg_bytes(rgb: np.ndarray, quality: int = 95) -> bytes:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    return buf.tobytes()


def test_png_is_lossless_and_rgb_ordered():
    np.testing.assert_array_equal(decode_compressed("png", png_bytes(RGB)), RGB)
    np.testing.assert_array_equal(decode_compressed("bgr8; png compressed bgr8", png_bytes(RGB)), RGB)


def test_jpeg_decodes_close_to_source():
    smooth = cv2.GaussianBlur(RGB, (9, 9), 3)
    out = decode_compressed("rgb8; jpeg compressed bgr8", jpeg_bytes(smooth))
    assert out.shape == smooth.shape
    assert np.abs(out.astype(int) - smooth.astype(int)).mean() < 4.0  # channel order kept


def test_probe_reads_header_sizes():
    assert probe_compressed_size(png_bytes(RGB)) == ("png", 53, 37)
    assert probe_compressed_size(jpeg_bytes(RGB)) == ("jpeg", 53, 37)


@pytest.mark.parametrize("mutate, words", [
    (lambda b: b[: len(b) // 2], "truncated"),
    (lambda b: b[:2] + bytes(len(b) - 2), "neither JPEG nor PNG|corrupt JPEG"),
    (lambda b: b[:20] + b"\x00\x13" * 40 + b"\xff\xd9", "corrupt JPEG"),
    (lambda b: b"not an image at all", "neither JPEG nor PNG"),
    (lambda b: b"", "no data"),
])
def test_corrupt_jpeg(mutate, words):
    with pytest.raises(ImageError, match=words):
        decode_compressed("jpeg", mutate(jpeg_bytes(RGB)))


def test_corrupt_png_truncated():
    with pytest.raises(ImageError, match="truncated"):
        decode_compressed("png", png_bytes(RGB)[:-30])


def test_huge_png_header_refused_before_decoding():
    # A "decompression bomb": a valid header claiming 20000 x 20000 pixels.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    with pytest.raises(ImageError, match="too large"):
        decode_compressed("png", png + b"\0\0\0\0IEND\xaeB`\x82")


def test_unsupported_compressed_format():
    with pytest.raises(ImageError, match="unsupported compressed format"):
        decode_compressed("tiff", png_bytes(RGB))


def test_agrees_with_ros_cv_bridge_where_available():
    cv_bridge = pytest.importorskip("cv_bridge", reason="ROS cv_bridge is not installed here")
    try:
        from sensor_msgs.msg import Image
    except ImportError:
        pytest.skip("sensor_msgs is not installed")
    h, w, step, data = encode_raw(RGB, "bgr8", row_padding=0)
    msg = Image(height=h, width=w, encoding="bgr8", step=step, is_bigendian=0, data=data)
    try:
        theirs = cv_bridge.CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception as exc:  # PyPI's cv-bridge (a ROS 1 port) is broken on numpy 2
        pytest.skip(f"cv_bridge importable but unusable here: {exc!r}")
    np.testing.assert_array_equal(decode_raw("bgr8", h, w, step, 0, data), theirs)
