"""Load and probes shared by `vla-ros bench-control` and `vla-ros soak`: helper processes over real DDS.

    python -m vla_ros.ros.loadgen --helper inputs|recorder|node|hog --namespace NS --seconds S ...

- inputs: a camera (size, rate, rgb8/jpeg/png, reliable/best-effort, a share of damaged compressed
  frames) and the instruction topic (one instruction once a second, or random ones at a spam rate,
  some over-long, some invalid UTF-8, some with control characters);
- recorder: arrival time, stamp, HOLD and safety bits of every command (written as JSON at the end);
- node: vla_node with its default settings, armed, in a process of its own (synthetic CPU-busy
  policy or the configured model);
- hog: a pure-Python busy loop.

Every helper stops at `--seconds` or as soon as `--stop-file` exists. `ros_environment` keeps the
graph on localhost in a private ROS domain, so no real robot sees these commands.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from vla_ros.core.images import decode_compressed, decode_min_size
from vla_ros.core.stats import distribution
from vla_ros.core.types import ActionChunk, Instruction, Observation, Policy
from vla_ros.msg import EndEffectorCommand
from vla_ros.ros.control_timer import set_realtime_priority
from vla_ros.ros.conversions import time_to_seconds
from vla_ros.ros.node import VlaNode
from vla_ros.ros.node_main import DEFAULT_SWITCH_INTERVAL_S
from vla_ros.ros.qos import camera_qos, reliable_qos
from vla_ros.runtime.synthetic import SyntheticPolicy

INSTRUCTION = "put the red block in the bowl"
SPAM_WORDS = ("pick up", "move to", "put", "the", "red", "green", "blue", "cube", "ball", "bowl", "left")
ENV_KEYS = ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY",
            "ROS_DOMAIN_ID", "ROS_HOME")


def ros_environment(domain_id: int) -> dict[str, str]:
    """This process's environment for a private, localhost-only ROS graph in `domain_id`."""
    env = dict(os.environ)
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOCALHOST_ONLY"] = "1"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_HOME", tempfile.mkdtemp(prefix="vla_load_ros_home_"))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def use_environment(env: dict[str, str]) -> None:
    """Put the ROS variables of `env` into this process's environment (before rclpy.init)."""
    os.environ.update({k: env[k] for k in ENV_KEYS})


def period_stats(times: np.ndarray, period_s: float) -> dict[str, float]:
    """Achieved rate, |dt - T| percentiles [ms], missed and late ticks of sorted event times [s].

    missed: ticks that never happened (span / T + 1 - count); late: intervals longer than 1.5 T.
    """
    times = np.asarray(times, dtype=np.float64)
    if times.size < 3:
        return {"count": int(times.size), "achieved_hz": 0.0, "p50_ms": float("nan"),
                "p99_ms": float("nan"), "max_ms": float("nan"), "missed": 0, "late": 0}
    dt = np.diff(times)
    err_ms = distribution(np.abs(dt - period_s) * 1e3)
    expected = int(round((times[-1] - times[0]) / period_s)) + 1
    return {"count": int(times.size), "achieved_hz": float((times.size - 1) / (times[-1] - times[0])),
            "p50_ms": err_ms["p50"], "p99_ms": err_ms["p99"], "max_ms": err_ms["max"],
            "missed": max(0, expected - int(times.size)), "late": int(np.sum(dt > 1.5 * period_s))}


def helper_command(kind: str, namespace: str, seconds: float, stop_file: Path, *extra: str) -> list[str]:
    """The command line of one helper process."""
    return [sys.executable, "-m", "vla_ros.ros.loadgen", "--helper", kind, "--namespace", namespace,
            "--seconds", repr(float(seconds)), "--stop-file", str(stop_file), *extra]


# ----- camera frames -----------------------------------------------------------------------------
def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A camera-like RGB image: smooth gradients, a few blocks and mild noise (compresses as photos do)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    rgb = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 120], axis=-1)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        rgb[y0:y0 + height // 6, x0:x0 + width // 8] = rng.integers(0, 256, 3)
    rgb += rng.normal(0, 6, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def encode(rgb: np.ndarray, encoding: str) -> bytes:
    """JPEG (quality 90) or PNG bytes of an RGB image."""
    ok, buf = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90] if encoding == "jpeg" else [])
    if not ok:
        raise RuntimeError(f"cannot encode a {encoding} test frame")
    return buf.tobytes()


def damage(data: bytes, encoding: str, rng: random.Random) -> bytes:
    """A damaged copy of a JPEG/PNG: bytes flipped inside the compressed data (headers and end
    marker intact), or the file truncated."""
    if rng.random() < 0.5:
        return data[:rng.randint(len(data) // 4, 3 * len(data) // 4)]
    start = data.find(b"\xff\xda") + 20 if encoding == "jpeg" else data.find(b"IDAT") + 8
    end = len(data) - (2 if encoding == "jpeg" else 16)  # keep EOI / the last CRC and IEND
    out = bytearray(data)
    for _ in range(8):  # a few bursts of flipped bytes in the scan
        i = rng.randint(start, max(start, end - 64))
        for j in range(i, min(i + 32, end)):
            b = out[j] ^ 0x5A
            out[j] = 0xFE if b == 0xFF else b  # never create a JPEG marker
    return bytes(out)


def frame_digest(rgb: np.ndarray) -> str:
    """SHA-1 of an RGB frame's pixels."""
    return hashlib.sha1(np.ascontiguousarray(rgb).tobytes()).hexdigest()


def expected_digest(width: int, height: int, encoding: str) -> str:
    """Digest of the good camera frame as the node decodes it (the soak's only good frame)."""
    rgb = scene(width, height)
    if encoding != "rgb8":
        rgb = decode_compressed(encoding, encode(rgb, encoding), min_size=decode_min_size(None))
    return frame_digest(rgb)


class FrameCheckingPolicy:
    """A policy that raises when the observation is not the good frame: a damaged frame that reached
    the model then counts as a policy error (the soak's "damaged frames at the model" figure)."""

    def __init__(self, make_inner: Callable[[], Policy], digest: str) -> None:
        self.inner = make_inner()
        self.digest = digest

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        if frame_digest(observation.rgb) != self.digest:
            raise RuntimeError("a damaged camera frame reached the model")
        return self.inner.predict(observation, instruction)

    def describe(self) -> str:
        return f"frame-checking {self.inner.describe()}"


def random_instruction(rng: random.Random) -> str | bytes:
    """Teleop-style garbage: mostly short valid instructions; some long (within 4096 bytes but more
    than a small model's positions) or over-long, with control characters, empty (HOLD), or (as raw
    CDR bytes) invalid UTF-8."""
    r = rng.random()
    words = " ".join(rng.choice(SPAM_WORDS) for _ in range(rng.randint(2, 8)))
    if r < 0.55:
        return words
    if r < 0.65:
        return ((words + " ") * 200)[:rng.randint(600, 4000)]
    if r < 0.7:
        return "x" * rng.randint(4097, 20000)
    if r < 0.8:
        return "\x1b[31m" + words + "\r\n\x00\x07"
    if r < 0.9:
        return string_cdr(words.encode() + b"\xff\xfe\xc3(")  # invalid UTF-8
    return ""  # HOLD


def string_cdr(text: bytes) -> bytes:
    """The serialized std_msgs/String (CDR little endian) with these exact bytes."""
    return b"\x00\x01\x00\x00" + (len(text) + 1).to_bytes(4, "little") + text + b"\x00"


# ----- helper processes --------------------------------------------------------------------------
def _run_inputs(node: Node, a: argparse.Namespace, running: Callable[[], bool]) -> None:
    width, height = (int(v) for v in a.camera_size.lower().split("x"))
    rgb = scene(width, height)
    rng = random.Random(a.seed)
    if a.camera_encoding == "rgb8":
        cam = node.create_publisher(Image, "camera/image_raw", camera_qos(a.camera_reliability))
        frames = [Image(height=height, width=width, encoding="rgb8", step=width * 3, data=rgb.tobytes())]
        bad: list = []
    else:
        cam = node.create_publisher(CompressedImage, "camera/image_raw/compressed",
                                    camera_qos(a.camera_reliability))
        data = encode(rgb, a.camera_encoding)
        frames = [CompressedImage(format=a.camera_encoding, data=data)]
        bad = [CompressedImage(format=a.camera_encoding, data=damage(data, a.camera_encoding, rng))
               for _ in range(16)]
    ins = node.create_publisher(String, "vla/instruction", reliable_qos())
    t0 = time.monotonic()
    next_frame = next_text = t0
    sent = {"frames": 0, "damaged": 0, "instructions": 0}
    while running():
        now = time.monotonic()
        if now >= next_frame:
            damaged = bool(bad) and rng.random() < a.corrupt_share
            msg = rng.choice(bad) if damaged else frames[0]
            msg.header.stamp = node.get_clock().now().to_msg()
            cam.publish(msg)
            sent["frames"] += 1
            sent["damaged"] += damaged
            next_frame += 1.0 / a.camera_rate
        if now >= next_text:  # the instruction: once a second (late joiners get it), or spam
            text = random_instruction(rng) if a.spam > 0 else INSTRUCTION
            ins.publish(text if isinstance(text, bytes) else String(data=text))
            sent["instructions"] += 1
            next_text += 1.0 / a.spam if a.spam > 0 else 1.0
        time.sleep(max(0.0, min(next_frame, next_text) - time.monotonic()))
    if a.out:
        Path(a.out).write_text(json.dumps(sent))


class CommandProbe:
    """Every EndEffectorCommand on `topic`: (monotonic arrival, wall arrival, header stamp, hold,
    interventions), appended by the callback (list appends are atomic: readers take a slice)."""

    def __init__(self, node: Node, topic: str = "vla/command") -> None:
        self.arrivals: list[tuple[float, float, float, bool, int]] = []
        node.create_subscription(EndEffectorCommand, topic, self._on_command, reliable_qos(100))

    def _on_command(self, m: EndEffectorCommand) -> None:
        self.arrivals.append((time.monotonic(), time.time(), time_to_seconds(m.header.stamp), m.hold,
                              m.interventions))


def _run_recorder(node: Node, a: argparse.Namespace, running: Callable[[], bool]) -> None:
    probe = CommandProbe(node)
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    while running():
        executor.spin_once(timeout_sec=0.05)
    Path(a.out).write_text(json.dumps(probe.arrivals))
    executor.shutdown()


def _run_node(node_ctx: rclpy.context.Context, a: argparse.Namespace, running: Callable[[], bool]) -> None:
    """vla_node with default settings (but rate, transport and policy), armed; SIGTERM ends it."""
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)  # as `vla-ros node`
    params = [Parameter("control.control_rate_hz", value=float(a.rate)),
              Parameter("topics.camera_transport", value=a.transport)]
    if a.transport == "compressed":
        params.append(Parameter("topics.camera", value="camera/image_raw/compressed"))
    factory = None  # the configured model (policy.* defaults: the embedded demo VLA)
    if a.policy == "synthetic":
        inner = functools.partial(SyntheticPolicy, latency_s=a.latency, busy=a.busy, chunk_len=8,
                                  step_m=0.002)
        width, height = (int(v) for v in a.camera_size.lower().split("x"))
        factory = functools.partial(FrameCheckingPolicy, inner,
                                    expected_digest(width, height, a.camera_encoding))
    node = VlaNode(None, node_name="vla_node", namespace=a.namespace, context=node_ctx,
                   parameter_overrides=params, policy_factory=factory)
    executor = SingleThreadedExecutor(context=node_ctx)
    try:
        ok = TransitionCallbackReturn.SUCCESS
        if node.trigger_configure() != ok or node.trigger_activate() != ok:
            print(f"[loadgen node] start failed: {node.last_error}", file=sys.stderr, flush=True)
            return
        node.core.set_armed(True)
        executor.add_node(node)
        while running():
            executor.spin_once(timeout_sec=0.1)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()


def _run_hog(a: argparse.Namespace, running: Callable[[], bool]) -> None:
    x = 0
    while running():
        for i in range(20000):  # pure Python: one core busy, as a second program would keep it
            x = (x + i * i) % 1000003


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def helper_main(argv: list[str]) -> int:
    """`python -m vla_ros.ros.loadgen --helper ...` (internal to bench-control and soak)."""
    p = argparse.ArgumentParser(prog="vla_ros.ros.loadgen")
    p.add_argument("--helper", choices=("inputs", "recorder", "node", "hog"), required=True)
    p.add_argument("--namespace", default="/vla_load")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--stop-file", default="", help="stop early once this file exists")
    p.add_argument("--out", default="")
    p.add_argument("--priority", type=int, default=0, help="SCHED_FIFO priority of the helper, if allowed")
    p.add_argument("--camera-size", default="640x480")
    p.add_argument("--camera-rate", type=float, default=30.0)
    p.add_argument("--camera-encoding", choices=("rgb8", "jpeg", "png"), default="rgb8")
    p.add_argument("--camera-reliability", choices=("reliable", "best_effort"), default="reliable")
    p.add_argument("--corrupt-share", type=float, default=0.0)
    p.add_argument("--spam", type=float, default=0.0, help="random instructions per second (0: steady)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=50.0, help="node: control rate [Hz]")
    p.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    p.add_argument("--policy", choices=("synthetic", "model"), default="synthetic")
    p.add_argument("--busy", choices=("python", "numpy", "sleep"), default="python")
    p.add_argument("--latency", type=float, default=0.2)
    a = p.parse_args(argv)
    if a.priority > 0:  # a probe measuring arrival times: let it run as soon as a message lands
        set_realtime_priority(a.priority)
    deadline = time.monotonic() + a.seconds
    stop = Path(a.stop_file) if a.stop_file else None

    def running() -> bool:
        return time.monotonic() < deadline and not (stop is not None and stop.exists())

    signal.signal(signal.SIGTERM, _interrupt)  # the parent ends a helper like Ctrl-C
    if a.helper == "hog":
        try:
            _run_hog(a, running)
        except KeyboardInterrupt:
            pass
        return 0
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        if a.helper == "node":
            _run_node(ctx, a, running)
            return 0
        node = rclpy.create_node(f"vla_load_{a.helper}", namespace=a.namespace, context=ctx)
        try:
            (_run_inputs if a.helper == "inputs" else _run_recorder)(node, a, running)
        finally:
            node.destroy_node()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        rclpy.try_shutdown(context=ctx)


if __name__ == "__main__":
    sys.exit(helper_main(sys.argv[1:]))
