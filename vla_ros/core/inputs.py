"""Rules for incoming instructions and poses, shared by vla_node and offline replay (no ROS)."""

from __future__ import annotations

import struct

import numpy as np

from vla_ros.core.types import InstructionCheck, Pose

MAX_INSTRUCTION_BYTES = 4096  # UTF-8 bytes; longer instructions are rejected, not truncated
QUATERNION_NORM_TOLERANCE = 0.1  # |q| must be within 1 +- this; it is then normalized

# CDR encapsulation identifiers: (big endian CDR, little endian CDR, XCDR2 BE, XCDR2 LE).
_CDR_BIG, _CDR_LITTLE = {0x0000, 0x0006}, {0x0001, 0x0007}


class InputError(ValueError):
    """An incoming message is malformed; the message says why."""


def decode_string_cdr(raw: bytes, max_bytes: int = MAX_INSTRUCTION_BYTES) -> str:
    """Text of a serialized std_msgs/String, with strict UTF-8 and a size limit.

    rclpy decodes invalid UTF-8 with replacement characters, so the node subscribes to the raw
    bytes and decodes them here instead.
    """
    if len(raw) > max_bytes + 64:
        raise InputError(f"instruction message of {len(raw)} bytes is too long (limit {max_bytes} bytes)")
    if len(raw) < 8:
        raise InputError("instruction message is truncated")
    (encapsulation,) = struct.unpack(">H", raw[:2])
    if encapsulation in _CDR_LITTLE:
        (length,) = struct.unpack("<I", raw[4:8])
    elif encapsulation in _CDR_BIG:
        (length,) = struct.unpack(">I", raw[4:8])
    else:
        raise InputError(f"instruction message has an unknown CDR encapsulation 0x{encapsulation:04x}")
    if length < 1 or 8 + length > len(raw) or raw[8 + length - 1] != 0:
        raise InputError("instruction message is malformed (bad string length)")
    return sanitize_instruction(raw[8:8 + length - 1], max_bytes)


def decode_instruction(raw: bytes, check: InstructionCheck | None = None) -> str:
    """Text of a serialized std_msgs/String that the policy can run: decode_string_cdr, then the
    policy's check (see core.types.instruction_check; the empty text means HOLD and is always fine).

    Raises InputError with the reason; the node and replay then HOLD as for an empty instruction.
    """
    text = decode_string_cdr(raw)
    if text and check is not None:
        try:
            problem = check(text)
        except Exception as exc:  # the check is the policy's code: a failure makes the text unusable
            problem = f"the policy's check failed: {type(exc).__name__}: {exc}"
        if problem:
            raise InputError(f"instruction not usable by the model: {problem}")
    return text


def loggable(text: str, limit: int = 80) -> str:
    """`text` for a log line: quoted, control and non-printable characters escaped (repr style), at most
    `limit` characters of it (then "... (N characters)")."""
    more = f"... ({len(text)} characters)" if len(text) > limit else ""
    return repr(text[:limit]) + more


def sanitize_instruction(data: bytes | str, max_bytes: int = MAX_INSTRUCTION_BYTES) -> str:
    """Validated instruction text: strict UTF-8, at most `max_bytes`, no control characters; stripped."""
    if isinstance(data, str):
        if "\ufffd" in data:
            raise InputError("instruction is not valid UTF-8 (replacement characters)")
        try:
            data = data.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(f"instruction is not valid text: {exc.reason}") from exc
    if len(data) > max_bytes:
        raise InputError(f"instruction of {len(data)} bytes is too long (limit {max_bytes} bytes)")
    try:
        text = data.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise InputError(f"instruction is not valid UTF-8 (byte {exc.start})") from exc
    bad = [c for c in text if (ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) < 0xA0]
    if bad:
        raise InputError(f"instruction contains control character U+{ord(bad[0]):04X}")
    return text.strip()


def pose_from_fields(position_xyz, orientation_xyzw, stamp: float) -> Pose:
    """Pose (unit quaternion) from raw fields; `stamp` is the receipt time on the control clock."""
    position = np.array(position_xyz, dtype=np.float64)
    orientation = np.array(orientation_xyzw, dtype=np.float64)
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(orientation))):
        raise InputError("pose contains NaN or Inf")
    norm = float(np.linalg.norm(orientation))
    if abs(norm - 1.0) > QUATERNION_NORM_TOLERANCE:
        raise InputError(f"pose orientation is not a unit quaternion (|q| = {norm:.3f})")
    return Pose(position=position, orientation=orientation / norm, stamp=float(stamp))
