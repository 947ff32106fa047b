"""`vla-ros soak`: a long-running load test of vla_node (default settings) over real DDS.

    vla-ros soak --seconds 600 --rate 50 --camera-encoding jpeg --corrupt-share 0.3 --instruction-spam 5
    vla-ros soak --seconds 300 --camera-size 1920x1080 --camera-rate 60 --cpu-hogs 2 --json soak.json

Processes (ros/loadgen.py): vla_node in its own process (default parameters except the control rate
and the camera transport; armed; the synthetic CPU-busy policy of bench-control, or the configured
model), a camera + instruction publisher (optionally damaged compressed frames and random, partly
invalid instructions), `--cpu-hogs` busy processes; this process records every command, the status,
/diagnostics and /rosout, and counts the node's own output lines. A private ROS domain on localhost.

Reported over the measured window (after start-up and `--warmup`): achieved rate, p99 period error
and max gap of the control loop (header stamps, i.e. when the node's timer ran) and of the received
commands, missed ticks, control gaps longer than max(30 ms, 1.5 periods), fresh-tick share (commands
without STALE_IMAGE), RSS of the node process (and of its inference process) at start and end, node
log lines per minute (stdout + stderr, and /rosout), rejected inputs, policy errors, state, the
highest /diagnostics level, WARN counts and false control-loop WARNs (no real gap in the 3 s before).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor

from vla_ros.core.config import ExecutionConfig
from vla_ros.msg import VlaStatus
from vla_ros.ros.control_timer import set_realtime_priority
from vla_ros.ros.loadgen import CommandProbe, helper_command, ros_environment, use_environment
from vla_ros.ros.qos import reliable_qos
from vla_ros.ros.soak_report import analyse, format_report, rss_mib

PROGRESS_S = 10.0
READY_TIMEOUT_S = 180.0  # model loading included


class NodeOutput:
    """Counts the node process's output lines (stdout + stderr) with their times; keeps the last ones."""

    def __init__(self, stream) -> None:  # noqa: ANN001 - a text pipe
        self.times: list[float] = []
        self.tail: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:  # noqa: ANN001
        for line in stream:
            self.times.append(time.monotonic())
            self.tail = (self.tail + [line.rstrip()])[-20:]


class Probe:
    """This process's ROS side: commands, status, /diagnostics and /rosout of the node under test."""

    def __init__(self, ctx: rclpy.context.Context, namespace: str) -> None:
        self.node = rclpy.create_node("vla_soak_probe", namespace=namespace, context=ctx)
        self.commands = CommandProbe(self.node)
        self.statuses: list[tuple[float, VlaStatus]] = []
        self.diagnostics: list[tuple[float, str, int]] = []  # (time, entry name, level)
        self.rosout: list[float] = []
        self.node.create_subscription(VlaStatus, "vla_node/status", self._on_status, reliable_qos())
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, reliable_qos(50))
        self.node.create_subscription(Log, "/rosout", self._on_log, reliable_qos(1000))
        self._executor = SingleThreadedExecutor(context=ctx)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, args=(ExecutionConfig().control_priority,),
                                        daemon=True)
        self._thread.start()

    def _spin(self, priority: int) -> None:
        set_realtime_priority(priority)  # arrival times as exact as the node's ticks, where allowed
        try:
            self._executor.spin()
        except (ExternalShutdownException, ShutdownException):
            pass  # the probe is closing

    def _on_status(self, m: VlaStatus) -> None:
        self.statuses.append((time.monotonic(), m))

    def _on_diagnostics(self, m: DiagnosticArray) -> None:
        now = time.monotonic()
        for s in m.status:
            if "vla_node" in s.name:
                level = s.level if isinstance(s.level, int) else s.level[0]
                self.diagnostics.append((now, s.name.split(": ", 1)[-1], level))

    def _on_log(self, m: Log) -> None:
        if "vla_node" in m.name:
            self.rosout.append(time.monotonic())

    def close(self) -> None:
        self._executor.shutdown()
        self.node.destroy_node()


def _progress(t0: float, probe: Probe, output: NodeOutput, pid: int, period: float) -> str:
    now = time.monotonic()
    recent = [c for c in probe.commands.arrivals[-int(PROGRESS_S * 2 / period):] if c[0] >= now - PROGRESS_S]
    fresh = sum(1 for c in recent if not c[4] & 8) / len(recent) if recent else 0.0
    status = probe.statuses[-1][1] if probe.statuses else None
    state = status.state_name if status else "?"
    rejected = status.rejected_inputs if status else 0
    return (f"[soak] {now - t0:6.0f} s  rate {len(recent) / PROGRESS_S:6.1f} Hz  fresh {fresh:4.0%}  "
            f"state {state:<8} rejected {rejected:<6d} RSS {rss_mib(pid):6.1f} MiB  "
            f"log lines {len(output.times)}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros soak", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60.0, help="measured time [s] (default 60)")
    p.add_argument("--rate", type=float, default=50.0, help="control rate [Hz] (default 50)")
    p.add_argument("--camera-size", default="640x480", help="WxH (default 640x480)")
    p.add_argument("--camera-rate", type=float, default=30.0, help="camera frames per second (default 30)")
    p.add_argument("--camera-encoding", choices=("rgb8", "jpeg", "png"), default="rgb8",
                   help="rgb8 (sensor_msgs/Image) or jpeg/png (CompressedImage); default rgb8")
    p.add_argument("--camera-reliability", choices=("reliable", "best_effort"), default="reliable",
                   help="the camera publisher's QoS reliability (the node keeps its default)")
    p.add_argument("--corrupt-share", type=float, default=0.0,
                   help="share 0..1 of damaged compressed frames (bytes in the scan flipped, or truncated)")
    p.add_argument("--instruction-spam", type=float, default=0.0, metavar="HZ",
                   help="random instructions per second, some over-long, invalid UTF-8 or with control "
                        "characters (default 0: one valid instruction, repeated once a second)")
    p.add_argument("--cpu-hogs", type=int, default=0, help="busy processes next to the node (default 0)")
    p.add_argument("--policy", choices=("synthetic", "model"), default="synthetic",
                   help="synthetic: bench-control's CPU-busy 200 ms policy; model: the configured "
                        "(embedded demo) VLA")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds after start-up before measuring")
    p.add_argument("--domain-id", type=int, default=150 + os.getpid() % 80,
                   help="ROS domain of the soak (default: a private one)")
    p.add_argument("--json", default="", help="write the figures to this JSON file")
    return p


def check_arguments(a: argparse.Namespace) -> str | None:
    """Why the arguments are unusable, or None."""
    try:
        w, h = (int(v) for v in a.camera_size.lower().split("x"))
    except ValueError:
        return f"--camera-size {a.camera_size!r}: expected WxH, e.g. 640x480"
    checks = [(a.seconds > 0, "--seconds must be > 0"), (1 <= a.rate <= 1000, "--rate must be in [1, 1000]"),
              (16 <= w <= 8192 and 16 <= h <= 8192, "--camera-size must be within 16..8192 per side"),
              (0 < a.camera_rate <= 1000, "--camera-rate must be in (0, 1000]"),
              (0 <= a.corrupt_share <= 1, "--corrupt-share must be in [0, 1]"),
              (0 <= a.instruction_spam <= 1000, "--instruction-spam must be in [0, 1000]"),
              (0 <= a.cpu_hogs <= 64, "--cpu-hogs must be in [0, 64]"),
              (a.corrupt_share == 0 or a.camera_encoding != "rgb8",
               "--corrupt-share needs --camera-encoding jpeg or png")]
    return next((why for ok, why in checks if not ok), None)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vla-ros soak`."""
    a = build_parser().parse_args(argv)
    problem = check_arguments(a)
    if problem:
        print(f"vla-ros soak: {problem}", file=sys.stderr)
        return 2
    env = ros_environment(a.domain_id)
    env["PYTHONUNBUFFERED"] = "1"
    env["RCUTILS_COLORIZED_OUTPUT"] = "0"
    use_environment(env)
    namespace, work = f"/vla_soak_{os.getpid()}", Path(tempfile.mkdtemp(prefix="vla_soak_"))
    stop, backstop = work / "stop", a.seconds + a.warmup + READY_TIMEOUT_S + 60
    transport = "raw" if a.camera_encoding == "rgb8" else "compressed"
    node_proc = subprocess.Popen(
        helper_command("node", namespace, backstop, stop, "--rate", repr(a.rate), "--transport", transport,
                       "--policy", a.policy, "--camera-size", a.camera_size,
                       "--camera-encoding", a.camera_encoding),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    output = NodeOutput(node_proc.stdout)
    inputs = subprocess.Popen(helper_command(
        "inputs", namespace, backstop, stop, "--out", str(work / "inputs.json"),
        "--camera-size", a.camera_size, "--camera-rate", repr(a.camera_rate),
        "--camera-encoding", a.camera_encoding,
        "--camera-reliability", a.camera_reliability, "--corrupt-share", repr(a.corrupt_share),
        "--spam", repr(a.instruction_spam)), env=env)
    hogs = [subprocess.Popen(helper_command("hog", namespace, backstop, stop), env=env)
            for _ in range(a.cpu_hogs)]
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    probe = Probe(ctx, namespace)
    period, result, t0 = 1.0 / a.rate, None, time.monotonic()
    try:
        print(f"[soak] starting vla_node ({a.policy} policy, {a.rate:g} Hz) with a {a.camera_size} "
              f"{a.camera_encoding} camera at {a.camera_rate:g} Hz ...", flush=True)
        while not (probe.commands.arrivals and probe.statuses) and node_proc.poll() is None \
                and time.monotonic() - t0 < READY_TIMEOUT_S:
            time.sleep(0.1)
        if not probe.commands.arrivals:
            print("vla-ros soak: vla_node never published a command; its last output:\n  "
                  + "\n  ".join(output.tail), file=sys.stderr)
            return 1
        time.sleep(a.warmup)
        start = time.monotonic()
        rss_start = (rss_mib(node_proc.pid), rss_mib(node_proc.pid, children=True))
        next_progress = start + PROGRESS_S
        while time.monotonic() < start + a.seconds and node_proc.poll() is None:
            time.sleep(min(0.5, max(0.0, start + a.seconds - time.monotonic())))
            if time.monotonic() >= next_progress:
                print(_progress(start, probe, output, node_proc.pid, period), flush=True)
                next_progress += PROGRESS_S
        end = time.monotonic()
        alive = node_proc.poll() is None
        rss_end = (rss_mib(node_proc.pid), rss_mib(node_proc.pid, children=True))
        time.sleep(0.3)  # the last commands of the window
        result = analyse(a, probe.commands.arrivals, probe.statuses, probe.diagnostics, probe.rosout,
                         output.times, (start, end), rss_start, rss_end, alive)
    finally:
        stop.touch()
        for proc in [inputs, node_proc, *hogs]:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        probe.close()
        rclpy.try_shutdown(context=ctx)
    sent_file = work / "inputs.json"
    result["sent"] = json.loads(sent_file.read_text()) if sent_file.exists() else {}
    result["node_exit_code"] = node_proc.returncode
    result["node_output_tail"] = output.tail
    print(format_report(result))
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=2))
        print(f"[soak] wrote {a.json}")
    return 0 if result["node_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
