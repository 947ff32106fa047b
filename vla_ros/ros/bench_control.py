"""`vla-ros bench-control`: timing of vla_node's control loop over real DDS while inference keeps a core busy.

    vla-ros bench-control --rate 50 --seconds 10 --json bench_control.json
    vla-ros bench-control --rate 50,100 --busy numpy

Setup per rate: the real lifecycle node (configured, activated, armed) with its default execution
settings (execution.*: policy in a child process, control thread SCHED_FIFO where permitted) and
the synthetic test policy doing `--busy` work back to back; a camera process publishing 640x480
rgb8 at 30 Hz plus the instruction; a recorder process timing the arrival of every command
(ros/loadgen.py). All three talk over Fast DDS on localhost (FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA
unless set), in a private namespace and ROS domain so no real robot sees the bench's commands.

Reported: achieved rate; period error |dt - T| p50/p99/max [ms] of the timer callback (in the node)
and of the received messages (in the recorder); missed ticks (ticks that never happened, or
commands that never arrived: span / T + 1 - count; the JSON also counts "late" intervals > 1.5 T);
command latency (receipt - header stamp); share of non-HOLD commands; the 1-minute load average
(the figures mean little on a machine that other jobs keep busy).
"""

from __future__ import annotations

import argparse
import dataclasses
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
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from vla_ros.core.config import ExecutionConfig
from vla_ros.ros.control_timer import realtime_refusal
from vla_ros.ros.loadgen import helper_command, period_stats, ros_environment, use_environment
from vla_ros.ros.node import VlaNode
from vla_ros.ros.node_main import DEFAULT_SWITCH_INTERVAL_S
from vla_ros.runtime.synthetic import SyntheticPolicy

__all__ = ["bench_rate", "format_table", "main", "period_stats"]

CAMERA = ("640x480", 30.0)  # size, rate [Hz] of the rgb8 camera


# ----- one measurement --------------------------------------------------------------------------
def bench_rate(rate_hz: float, seconds: float, busy: str, latency_s: float, warmup_s: float,
               domain_id: int, inference_nice: int = 0, control_priority: int | None = None,
               inference_process: bool | None = None) -> dict:
    """Run node + camera + recorder at one control rate; return the figures.

    `control_priority` / `inference_process`: None keeps the node's default (execution.*).
    """
    namespace = f"/vla_bench_{os.getpid()}_{int(rate_hz)}"
    env = ros_environment(domain_id)
    use_environment(env)
    total = warmup_s + seconds + 30.0  # helpers stop at the stop file, this is only a backstop
    out = Path(tempfile.mkdtemp(prefix="vla_bench_")) / "arrivals.json"
    stop_file = out.with_suffix(".stop")
    priority = ExecutionConfig().control_priority if control_priority is None else control_priority
    recorder = subprocess.Popen(helper_command("recorder", namespace, total + 1.0, stop_file, "--out",
                                               str(out), "--priority", str(priority)), env=env)
    camera = subprocess.Popen(helper_command("inputs", namespace, total, stop_file, "--camera-size",
                                             CAMERA[0], "--camera-rate", repr(CAMERA[1])), env=env)

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    factory = functools.partial(SyntheticPolicy, latency_s=latency_s, busy=busy, chunk_len=8, step_m=0.002)
    params = [Parameter("control.control_rate_hz", value=float(rate_hz)),
              Parameter("control.action_period_s", value=0.2),
              Parameter("policy.max_inference_s", value=max(5.0, 10 * latency_s))]
    capacity = int(rate_hz * (total + 5))
    node = VlaNode(None, namespace=namespace, context=ctx, parameter_overrides=params, record_ticks=capacity,
                   inference_nice=inference_nice, policy_factory=factory, control_priority=control_priority,
                   inference_process=inference_process)
    executor = SingleThreadedExecutor(context=ctx)
    spin = threading.Thread(target=executor.spin, daemon=True)
    try:
        ok = TransitionCallbackReturn.SUCCESS
        if node.trigger_configure() != ok or node.trigger_activate() != ok:
            raise RuntimeError(f"vla_node did not start: {node.last_error or 'activate failed'}")
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
        worker_stats = dataclasses.replace(node.worker.stats)  # a copy: stopping may still count
        where = "thread" if node.worker.policy is not None else "process"
        priority = node.config.execution.control_priority
        ticks = node.ticks.recent()
        status = node.status()
        node.trigger_deactivate()
    finally:
        stop_file.touch()
        executor.shutdown()
        if spin.ident is not None:
            spin.join(2.0)
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        camera.wait(15)
        recorder.wait(15)
    ticks = ticks[(ticks >= window[0]) & (ticks <= window[1])]
    arrivals = np.array(json.loads(out.read_text()) or [[0, 0, 0, True, 0]], dtype=np.float64)
    # perf_counter and monotonic are both CLOCK_MONOTONIC on Linux: one window for both processes.
    in_window = arrivals[(arrivals[:, 0] >= window[0]) & (arrivals[:, 0] <= window[1])]
    period = 1.0 / rate_hz
    latency_ms = (in_window[:, 1] - in_window[:, 2]) * 1e3
    return {
        "target_hz": rate_hz,
        "inference": where,
        "control_priority": priority,
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
        "last_error": status.last_error or worker_stats.last_error,
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
    defaults = ExecutionConfig()
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
    p.add_argument("--inference-nice", type=int, default=0,
                   help="niceness added to the inference thread or process (default 0: the node's own "
                        f"execution.inference_nice, {defaults.inference_nice}, for a child process)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--inference-process", action="store_true", default=None,
                       help="run the policy in a child process (the node's default: "
                            f"execution.inference_process = {str(defaults.inference_process).lower()})")
    where.add_argument("--inference-thread", dest="inference_process", action="store_false",
                       help="run the policy in a thread of the node's process")
    p.add_argument("--control-priority", type=int, default=None,
                   help="SCHED_FIFO priority of the control thread, 0 = normal scheduling (default: "
                        f"execution.control_priority = {defaults.control_priority})")
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
            or not 0 <= (a.control_priority or 0) <= 99:
        print("vla-ros bench-control: rates must be in [1, 1000] Hz, --seconds > 0 and --control-priority "
              "in [0, 99]", file=sys.stderr)
        return 2
    sys.setswitchinterval(a.switch_interval)
    priority = defaults.control_priority if a.control_priority is None else a.control_priority
    refused = realtime_refusal(priority) if priority > 0 else None
    results = []
    for rate in rates:
        print(f"[bench-control] {rate:g} Hz for {a.seconds:g} s, synthetic policy busy ({a.busy}, "
              f"{a.latency * 1e3:.0f} ms per call) ...", flush=True)
        try:
            results.append(bench_rate(rate, a.seconds, a.busy, a.latency, a.warmup, a.domain_id,
                                      a.inference_nice, a.control_priority, a.inference_process))
        except RuntimeError as exc:
            print(f"vla-ros bench-control: {exc}", file=sys.stderr)
            return 1
    print(format_table(results))
    report = {
        "benchmark": "vla-ros bench-control", "seconds": a.seconds, "busy": a.busy,
        "inference": results[0]["inference"], "control_priority": priority,
        "control_realtime": priority > 0 and refused is None, "realtime_refused": refused or "",
        "switch_interval_s": a.switch_interval, "inference_nice": a.inference_nice,
        "inference_latency_s": a.latency, "camera": f"{CAMERA[0]} rgb8 {CAMERA[1]:g} Hz",
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
