"""Generate camera + instruction bags (tests, benchmarks, trying replay without a robot).

Frames come from any callable `frames(index, t_s) -> RGB uint8 [H, W, 3]`: `gradient_frames()` here,
or the tabletop simulator's (`vla_ros.sim.frames.sim_frames`), which callers that may import both
bag/ and sim/ (the CLI, tests) pass in. Times are fixed (not the wall clock), so the same arguments
give byte-identical bags.

    vla-ros make-bag OUT [--seconds 60] [--rate 30] [--storage mcap|sqlite3]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from vla_ros.bag.io import (
    BOOL,
    COMPRESSED_IMAGE,
    IMAGE,
    NS_PER_S,
    STRING,
    BagError,
    header_msg,
    msg_class,
    qos_profile,
    serialize,
)
from vla_ros.bag.writer import BagWriter
from vla_ros.core.images import encode_raw

FrameSource = Callable[[int, float], np.ndarray]  # frames(index, t_s) -> RGB uint8 [H, W, 3]
FrameFactory = Callable[[int, int, int], FrameSource]  # (seed, width, height) -> a FrameSource

DEFAULT_START_NS = 1_700_000_000 * NS_PER_S  # 2023-11-14, a fixed epoch for reproducible bags
DEFAULT_INSTRUCTIONS: tuple[tuple[float, str], ...] = (
    (0.0, "pick up the red cube"),
    (0.5, "put the blue ball in the bowl"),  # changes mid-bag (at half the duration)
)


def gradient_frames(width: int = 64, height: int = 48) -> FrameSource:
    """Cheap moving-gradient frames (no simulator)."""
    yy, xx = np.mgrid[0:height, 0:width]

    def frame(index: int, t_s: float) -> np.ndarray:
        r = (xx * 255 // max(width - 1, 1) + index) % 256
        g = (yy * 255 // max(height - 1, 1)) % 256
        b = np.full_like(r, (index * 7) % 256)
        return np.stack([r, g, b], -1).astype(np.uint8)

    return frame


def image_message(rgb: np.ndarray, t_ns: int, frame_id: str = "camera", encoding: str = "rgb8",
                  compressed: str = "") -> tuple[str, bytes]:
    """(msgtype, CDR bytes) of an Image in `encoding`, or a CompressedImage when compressed='jpeg'|'png'."""
    if compressed:
        ok, buf = cv2.imencode(".jpg" if compressed == "jpeg" else ".png",
                               cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
        if not ok:
            raise BagError(f"cannot encode a frame as {compressed}")
        msg = msg_class(COMPRESSED_IMAGE)(header=header_msg(t_ns, frame_id), format=compressed,
                                          data=np.asarray(buf, np.uint8).reshape(-1))
        return COMPRESSED_IMAGE, serialize(msg)
    try:
        height, width, step, data = encode_raw(rgb, encoding)
    except ValueError:  # an encoding the encoder does not know: keep the pixels, label them as asked
        height, width = rgb.shape[:2]
        step, data = width * 3, np.ascontiguousarray(rgb).tobytes()
    msg = msg_class(IMAGE)(header=header_msg(t_ns, frame_id), height=height, width=width, encoding=encoding,
                           is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))
    return IMAGE, serialize(msg)


def write_camera_bag(path: str | Path, frames: FrameSource, duration_s: float = 4.0, rate_hz: float = 30.0,
                     instructions: Sequence[tuple[float, str]] = DEFAULT_INSTRUCTIONS,
                     instruction_times_are_fractions: bool = True,
                     camera_topic: str = "/camera/image_raw", instruction_topic: str = "/vla/instruction",
                     encoding: str = "rgb8", compressed: str = "", storage: str = "mcap",
                     start_ns: int = DEFAULT_START_NS, estop_at_s: float | None = None,
                     estop_topic: str = "/vla/estop", extra: Callable[[BagWriter], None] | None = None,
                     overwrite: bool = False) -> Path:
    """Write a bag with a camera at `rate_hz` for `duration_s` and the given instructions.

    Instruction times are fractions of the duration by default (0.5 = mid-bag), else seconds.
    `extra(writer)` may add more topics before the bag is closed. An empty instruction_topic leaves
    the instructions out. Returns the bag path.
    """
    path = Path(path)
    n_frames = max(1, int(round(duration_s * rate_hz)))
    period_ns = int(round(NS_PER_S / rate_hz))
    string_cls = msg_class(STRING)
    events: list[tuple[int, int, str, str, bytes]] = []  # (t_ns, order, topic, msgtype, raw)
    for when, text in instructions if instruction_topic else ():
        t_s = when * duration_s if instruction_times_are_fractions else when
        # instructions land 1 ms after a frame so that the order is unambiguous
        events.append((start_ns + int(round(t_s * NS_PER_S)) + 1_000_000, 1, instruction_topic, STRING,
                       serialize(string_cls(data=text))))
    if estop_at_s is not None:
        events.append((start_ns + int(round(estop_at_s * NS_PER_S)) + 2_000_000, 2, estop_topic, BOOL,
                       serialize(msg_class(BOOL)(data=True))))
    events.sort()
    with BagWriter(path, storage=storage, overwrite=overwrite,
                   custom_data={"generator": "vla_ros.bag.make_bag"}) as writer:
        cam_type = COMPRESSED_IMAGE if compressed else IMAGE
        writer.add_topic(camera_topic, cam_type, qos=[qos_profile(reliable=False, depth=5)])
        if instruction_topic:
            writer.add_topic(instruction_topic, STRING, qos=[qos_profile()])
        if estop_at_s is not None:
            writer.add_topic(estop_topic, BOOL, qos=[qos_profile()])
        pending = iter(events)
        nxt = next(pending, None)
        for i in range(n_frames):
            t_ns = start_ns + i * period_ns
            while nxt is not None and nxt[0] <= t_ns:
                writer.write(nxt[2], nxt[0], nxt[4])
                nxt = next(pending, None)
            _, raw = image_message(frames(i, i * period_ns / NS_PER_S), t_ns, encoding=encoding,
                                   compressed=compressed)
            writer.write(camera_topic, t_ns, raw)
        while nxt is not None:
            writer.write(nxt[2], nxt[0], nxt[4])
            nxt = next(pending, None)
        if extra is not None:
            extra(writer)
    return path


def gradient_factory(seed: int, width: int, height: int) -> FrameSource:
    """gradient_frames as a FrameFactory (the seed does not matter)."""
    return gradient_frames(width, height)


def main(argv: list[str] | None = None, frames: FrameFactory = gradient_factory) -> int:
    """CLI: write a camera bag for trying `vla-ros replay`, its pictures from `frames`.

    The simulator's pictures (vla_ros.sim.frames.sim_frames) come from a caller that may import sim/.
    """
    ap = argparse.ArgumentParser(prog="vla-ros make-bag", description=__doc__.splitlines()[0])
    ap.add_argument("out", help="bag directory to create")
    ap.add_argument("--seconds", type=float, default=10.0, help="duration [s]")
    ap.add_argument("--rate", type=float, default=30.0, help="camera rate [Hz]")
    ap.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    ap.add_argument("--size", type=int, default=224, help="square image side [px]")
    ap.add_argument("--compressed", choices=("", "jpeg", "png"), default="", help="CompressedImage format")
    ap.add_argument("--seed", type=int, default=0, help="simulator scene seed")
    args = ap.parse_args(argv)
    try:
        path = write_camera_bag(args.out, frames(args.seed, args.size, args.size), args.seconds, args.rate,
                                storage=args.storage, compressed=args.compressed)
    except BagError as exc:
        print(f"make_bag: {exc}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
