"""`vla-ros bench-control`: timing of vla_node's control loop over real DDS while inference keeps a core busy.

    vla-ros bench-control --rate 50 --seconds 10 --json bench_control.json
    vla-ros bench-control --rate 50,100 --busy numpy

Setup per rate: the real lifecycle node (configured, activated, armed) with the synthetic test
policy doing `--busy` work back to back in its worker thread; a camera process publishing 640x480
rgb8 at 30 Hz plus the instruction; a recorder process timing the arrival of every command. All
three talk over Fast DDS on localhost (FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA unless set), in a
private namespace and ROS domain so no real robot sees the bench's commands.

Reported: achieved rate; period error |dt - T| p50/p99/max [ms] of the timer callback (in the node)
and of the received messages (in the recorder); missed ticks (ticks that never happened, or
commands that never arrived: span / T + 1 - count; the JSON also counts "late" intervals > 1.5 T);
command latency (receipt - header stamp); share of non-HOLD commands; the 1-minute load average
(the figures mean little on a machine that other jobs keep busy).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image
from std_msgs.msg import String

from vla_ros.core.stats import distribution
from vla_ros.msg import EndEffectorCommand
from vla_ros.ros.conversions import time_to_seconds
from vla_ros.ros.node import VlaNode
from vla_ros.ros.node_main import DEFAULT_SWITCH_INTERVAL_S
from vla_ros.ros.qos import camera_qos, reliable_qos
from vla_ros.runtime.synthetic import SyntheticPolicy

CAMERA_SIZE = (480, 640)  # rows, columns
INSTRUCTION = "put the red block in the bowl"


def _ros_environment(domain_id: int) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["ROS_LOCALHOST_ONLY"] = "1"
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("ROS_HOME", tempfile.mkdtemp(prefix="vla_bench_ros_home_"))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


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


# ----- helper processes -------------------------------------------------------------------------
def _helper_main(argv: list[str]) -> int:
    """`python -m vla_ros.ros.bench_control --helper camera|recorder ...` (internal)."""
    p = argparse.ArgumentParser()
    p.add_argument("--helper", choices=("camera", "recorder"), required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--camera-hz", type=float, default=30.0)
    p.add_argument("--out", default="")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--stop-file", default="", help="stop early once this file exists")
    a = p.parse_args(argv)
    if a.priority > 0:  # the recorder measures arrival times: let it run as soon as a message lands
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(a.priority))
        except (OSError, AttributeError):
            pass
    rclpy.init()
    node = rclpy.create_node(f"vla_bench_{a.helper}", namespace=a.namespace)
    deadline = time.monotonic() + a.seconds
    stop = Path(a.stop_file) if a.stop_file else None

    def running() -> bool:
        return time.monotonic() < deadline and not (stop is not None and stop.exists())

    try:
        if a.helper == "camera":
            cam = node.create_publisher(Image, "camera/image_raw", camera_qos("reliable"))
            ins = node.create_publisher(String, "vla/instruction", reliable_qos())
            rgb = np.random.default_rng(0).integers(0, 256, (*CAMERA_SIZE, 3), dtype=np.uint8)
            msg = Image(height=CAMERA_SIZE[0], width=CAMERA_SIZE[1], encoding="rgb8",
                        step=CAMERA_SIZE[1] * 3, data=rgb.tobytes())
            period, t_next, n = 1.0 / a.camera_hz, time.monotonic(), 0
            while running():
                msg.header.stamp = node.get_clock().now().to_msg()
                cam.publish(msg)
                if n % int(a.camera_hz) == 0:  # about once a second: late joiners get it too
                    ins.publish(String(data=INSTRUCTION))
                n += 1
                t_next += period
                time.sleep(max(0.0, t_next - time.monotonic()))
            return 0
        arrivals: list[tuple[float, float, float, bool]] = []  # (monotonic, wall, stamp, hold)

        def on_command(m: EndEffectorCommand) -> None:
            arrivals.append((time.monotonic(), time.time(), time_to_seconds(m.header.stamp), m.hold))

        node.create_subscription(EndEffectorCommand, "vla/command", on_command, reliable_qos(100))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while running():
            executor.spin_once(timeout_sec=0.05)
        Path(a.out).write_text(json.dumps(arrivals))
        executor.shutdown()
        return 0
    finally:
        node.destroy_node()
        rclpy.shutdown()


# ----- one measurement --------------------------------------------------------------------------
def bench_rate(rate_hz: float, seconds: float, busy: str, latency_s: float, warmup_s: float,
               domain_id: int, inference_nice: int, control_priority: int = 0,
               inference_process: bool = False) -> dict:
    """Run node + camera + recorder at one control rate; return the figures."""
    namespace = f"/vla_bench_{os.getpid()}_{int(rate_hz)}"
    env = _ros_environment(domain_id)
    os.environ.update({k: env[k] for k in ("FASTDDS_BUILTIN_TRANSPORTS", "ROS_AUTOMATIC_DISCOVERY_RANGE",
                                           "ROS_LOCALHOST_ONLY", "ROS_DOMAIN_ID", "ROS_HOME")})
    total = warmup_s + seconds + 30.0  # helpers stop at the stop file, this is only a backstop
    out = Path(tempfile.mkdtemp(prefix="vla_bench_")) / "arrivals.json"
    helper = [sys.executable, "-m", "vla_ros.ros.bench_control", "--namespace", namespace]
    stop_file = out.with_suffix(".stop")
    helper += ["--stop-file", str(stop_file)]
    recorder = subprocess.Popen(helper + ["--helper", "recorder", "--seconds", str(total + 1.0),
                                          "--out", str(out), "--priority", str(control_priority)], env=env)
    camera = subprocess.Popen(helper + ["--helper", "camera", "--seconds", str(total)], env=env)

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    factory = functools.partial(SyntheticPolicy, latency_s=latency_s, busy=busy, chunk_len=8, step_m=0.002)
    params = [Parameter("control.control_rate_hz", value=float(rate_hz)),
              Parameter("control.action_period_s", value=0.2),
              Parameter("topics.camera_reliability", value="reliable"),
              Parameter("policy.max_inference_s", value=max(5.0, 10 * latency_s)),
              Parameter("execution.inference_process", value=inference_process),
              Parameter("execution.control_priority", value=control_priority)]
    capacity = int(rate_hz * (total + 5))
    node = VlaNode(None, namespace=namespace, context=ctx, parameter_overrides=params, record_ticks=capacity,
                   inference_nice=inference_nice, policy_factory=factory)
    executor = SingleThreadedExecutor(context=ctx)
    spin = threading.Thread(target=executor.spin, daemon=True)
    try:
        node.trigger_configure()
        node.trigger_activate()
        node.core.set_armed(True)
        executor.add_node(node)
        spin.start()
        t_start = time.monotonic()
        # The camera and the recorder run in other processes: start measuring once both are matched.
        while ((node.core.image_stamp is None or node.command_subscription_count() == 0)
               and time.monotonic() - t_start < warmup_s + 15):
            time.sleep(0.05)
        time.sleep(warmup_s)
        window = (time.perf_counter(), None)
        time.sleep(seconds)
        window = (window[0], time.perf_counter())
        time.sleep(0.2)  # let the last commands of the window arrive
        stop_file.touch()
        worker_stats = node.worker.stats
        ticks = node.ticks.recent()
        status = node.status()
        node.trigger_deactivate()
    finally:
        stop_file.touch()
        executor.shutdown()
        spin.join(2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        camera.wait(15)
        recorder.wait(15)
    ticks = ticks[(ticks >= window[0]) & (ticks <= window[1])]
    arrivals = np.array(json.loads(out.read_text()) or [[0, 0, 0, True]], dtype=np.float64)
    # perf_counter and monotonic are both CLOCK_MONOTONIC on Linux: one window for both processes.
    in_window = arrivals[(arrivals[:, 0] >= window[0]) & (arrivals[:, 0] <= window[1])]
    period = 1.0 / rate_hz
    latency_ms = (in_window[:, 1] - in_window[:, 2]) * 1e3
    return {
        "target_hz": rate_hz,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "timer": period_stats(ticks, period),
        "received": period_stats(in_window[:, 0], period),
        "latency_p50_ms": float(np.percentile(latency_ms, 50)) if latency_ms.size else float("nan"),
        "latency_p99_ms": float(np.percentile(latency_ms, 99)) if latency_ms.size else float("nan"),
        "moving_share": float(np.mean(in_window[:, 3] == 0)) if in_window.size else 0.0,
        "inference_calls": int(worker_stats.calls_ok),
        "inference_latency_s": float(worker_stats.last_latency_s),
        "policy_errors": int(worker_stats.errors),
        "final_state": status.state_name,
        "rejected_inputs": int(status.rejected_inputs),
    }


def format_table(results: list[dict]) -> str:
    """The figures as a fixed-width table."""
    head = (f"{'target':>7} {'achieved':>9} | {'timer period error ms':^23} {'missed':>6} | "
            f"{'received period error ms':^24} {'missed':>6} | {'latency ms':^13} {'moving':>6} {'load':>5}")
    sub = (f"{'Hz':>7} {'Hz':>9} | {'p50':>7} {'p99':>7} {'max':>7} {'':>6} | {'p50':>7} {'p99':>7} "
           f"{'max':>8} {'':>6} | {'p50':>6} {'p99':>6} {'':>6} {'1min':>5}")
    lines = [head, sub, "-" * len(head)]
    for r in results:
        t, m = r["timer"], r["received"]
        timer = f"{t['p50_ms']:>7.3f} {t['p99_ms']:>7.3f} {t['max_ms']:>7.3f} {t['missed']:>6d}"
        received = f"{m['p50_ms']:>7.3f} {m['p99_ms']:>7.3f} {m['max_ms']:>8.3f} {m['missed']:>6d}"
        latency = f"{r['latency_p50_ms']:>6.2f} {r['latency_p99_ms']:>6.2f}"
        lines.append(f"{r['target_hz']:>7g} {t['achieved_hz']:>9.2f} | {timer} | {received} | {latency} "
                     f"{r['moving_share']:>6.0%} {r['load_average_1min']:>5.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vla-ros bench-control`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--helper" in argv:
        return _helper_main(argv)
    p = argparse.ArgumentParser(prog="vla-ros bench-control", description=__doc__.split("\n\n")[0])
    p.add_argument("--rate", default="50", help="control rate(s) [Hz], comma separated (default 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per rate [s] (default 10)")
    p.add_argument("--json", default="", help="write the figures to this JSON file")
    p.add_argument("--busy", default="python", choices=("python", "numpy", "sleep"),
                   help="worker load: python (holds the GIL, worst case), numpy (releases it), sleep")
    p.add_argument("--latency", type=float, default=0.2, help="synthetic inference time per call [s]")
    p.add_argument("--warmup", type=float, default=1.5,
                   help="seconds before measuring (discovery, first chunk)")
    p.add_argument("--domain-id", type=int, default=150 + os.getpid() % 80,
                   help="ROS domain of the bench (default: a private one)")
    p.add_argument("--inference-nice", type=int, default=0, help="niceness added to the inference thread")
    p.add_argument("--inference-process", action="store_true",
                   help="run the policy in a child process (as `vla-ros node --inference-process`)")
    p.add_argument("--control-priority", type=int, default=0,
                   help="SCHED_FIFO priority of the control thread (execution.control_priority, 1-99; "
                        "0 = normal scheduling)")
    p.add_argument("--switch-interval", type=float, default=DEFAULT_SWITCH_INTERVAL_S,
                   help=f"GIL switch interval [s] of the node process (default {DEFAULT_SWITCH_INTERVAL_S}, "
                        "as `vla-ros node`; Python's own default is 0.005)")
    a = p.parse_args(argv)
    try:
        rates = [float(r) for r in a.rate.split(",") if r.strip()]
    except ValueError:
        print(f"vla-ros bench-control: --rate {a.rate!r}: expected numbers like 50 or 50,100",
              file=sys.stderr)
        return 2
    if not rates or any(not 1.0 <= r <= 1000.0 for r in rates) or a.seconds <= 0 \
            or not 0 <= a.control_priority <= 99:
        print("vla-ros bench-control: rates must be in [1, 1000] Hz, --seconds > 0 and --control-priority "
              "in [0, 99]", file=sys.stderr)
        return 2
    sys.setswitchinterval(a.switch_interval)
    results = []
    for rate in rates:
        where = "process" if a.inference_process else "thread"
        print(f"[bench-control] {rate:g} Hz for {a.seconds:g} s, inference {where} busy ({a.busy}, "
              f"{a.latency * 1e3:.0f} ms per call) ...", flush=True)
        results.append(bench_rate(rate, a.seconds, a.busy, a.latency, a.warmup, a.domain_id,
                                  a.inference_nice, a.control_priority, a.inference_process))
    print(format_table(results))
    report = {
        "benchmark": "vla-ros bench-control", "seconds": a.seconds, "busy": a.busy,
        "inference": "process" if a.inference_process else "thread", "control_priority": a.control_priority,
        "switch_interval_s": a.switch_interval, "inference_nice": a.inference_nice,
        "inference_latency_s": a.latency, "camera": f"{CAMERA_SIZE[1]}x{CAMERA_SIZE[0]} rgb8 30 Hz",
        "fastdds_builtin_transports": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", ""),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "results": results,
    }
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
        print(f"[bench-control] wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
