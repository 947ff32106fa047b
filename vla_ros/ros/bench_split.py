"""`vla-ros bench-split`: the split deployment over a faulty link: control timing, HOLD on loss and on a
policy killed and restarted.

    vla-ros bench-split --rate 50 --latency-ms 100 --jitter-ms 30 --loss 0.1 --seconds 20 --kill-policy-at 10

Setup, each in a process of its own, over Fast DDS on localhost in a private ROS domain and namespace (as
`vla-ros bench-control`; FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA unless set; every process with the Fast DDS
profile config/fastdds_split.xml, which announces participants every 0.25 s, unless --dds-profile says else):
- policy node (split.role policy, default execution settings unless --policy-inference thread): the
  synthetic test policy, `--policy-latency-ms` of idle work per call, chunks of 8 actions of 0.05 s (0.4 s,
  OpenVLA-OFT-like), published on vla/action_chunk_policy; it starts the next inference once
  control.replan_fraction (default 0.5, i.e. 0.2 s) of the chunk in force has passed;
- relay (`vla_chunk_relay`, ros/relay.py): vla/action_chunk_policy -> vla/action_chunk through the seeded
  fault model (latency, jitter, loss, duplication, reordering);
- control node (split.role control, default execution and safety settings, armed at start):
  control.control_rate_hz = --rate, control.action_period_s 0.05, chunks played from their observation
  stamps (chunk_alignment auto), crossfade at switches; it records its tick times;
- camera (640x480 rgb8, 30 Hz) + instruction (once a second, volatile) publisher and command recorder
  (ros/loadgen.py); this process subscribes to the control node's ~/status. A restarted policy node gets
  the instruction from the control node (held transient local), not from the once-a-second publisher.
The measured window starts `--warmup` s after the control node reports its first chunk. At `--kill-policy-at`
s into it the policy's process group gets SIGKILL; `--restart-after` s later it is started again.

Reported: the control timer's period error p50/p99/max and missed ticks (in the node), commands received
and their share of HOLD (also with the policy up: outside kill -> moving again), chunks received / lost /
duplicated / reordered / rejected (old, future, late from the control node's last VlaStatus; stale from its
counters), the relay's counts, the time from the kill to the HOLD that lasts (next to
safety.max_action_age_s), and from the policy process's start and restart to its node being active, its
first instruction and camera frame, its discovery of the relay's reader, its first chunk at the relay and
the first moving command. On one 2-core machine the restart took 0.5 s (policy in a thread) or 1.2-1.7 s (in
a child process) to an active node, then, with Fast DDS's default announcements (--dds-profile none), 0 to
2.5 s of discovery before camera frames and the relay reached it (about 0.1 s with the shipped profile), then
0.1 s from the first chunk to motion.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter

from vla_ros.control.netem import LinkFaults, add_fault_arguments, faults_from_arguments
from vla_ros.core.config import ExecutionConfig
from vla_ros.core.files import find_shared
from vla_ros.core.limits import SafetyLimits
from vla_ros.msg import VlaStatus
from vla_ros.ros.control_timer import realtime_refusal
from vla_ros.ros.loadgen import helper_command, period_stats, ros_environment, use_environment
from vla_ros.ros.node import VlaNode
from vla_ros.ros.node_main import DEFAULT_SWITCH_INTERVAL_S, ROLE_NAMES
from vla_ros.ros.qos import reliable_qos
from vla_ros.runtime.synthetic import SyntheticPolicy

__all__ = ["SplitSettings", "format_table", "hold_after", "main", "moving_after", "run_split"]

CAMERA = ("640x480", 30.0)  # size, rate [Hz] of the rgb8 camera
CHUNK_LEN = 8  # actions per chunk
ACTION_PERIOD_S = 0.05  # time one action spans [s]
POLICY_TOPIC = "vla/action_chunk_policy"  # the policy publishes here, the relay forwards to split.chunk_topic
SPLIT_PROFILE = "fastdds_split.xml"  # config/: fast re-discovery of a restarted policy
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # Kilted, Humble
STATUS_GRACE_S = 3.0  # how long to wait for a VlaStatus published after the window


@dataclass
class SplitSettings:
    """What one bench-split run does."""

    rate_hz: float = 50.0
    seconds: float = 20.0
    kill_at_s: float | None = 10.0  # into the window; None: never
    restart_after_s: float = 1.0
    faults: LinkFaults = field(default_factory=LinkFaults)
    policy_latency_s: float = 0.05
    seed: int = 0
    warmup_s: float = 1.0
    camera_size: str = CAMERA[0]
    domain_id: int = 150 + os.getpid() % 80
    policy_process: bool = True  # the policy node's execution.inference_process (its default)
    policy_nice: int = 0  # niceness of the policy's processes (they stand in for another computer)


def node_parameters(role: str, rate_hz: float, policy_latency_s: float,
                    policy_process: bool = True) -> list[Parameter]:
    """The bench's parameters of the policy or control node (everything else keeps its default)."""
    params = [Parameter("split.role", value=role),
              Parameter("control.control_rate_hz", value=float(rate_hz)),
              Parameter("control.action_period_s", value=ACTION_PERIOD_S)]
    if role == "policy":
        params += [Parameter("split.chunk_topic", value=POLICY_TOPIC),
                   Parameter("policy.max_inference_s", value=max(5.0, 10 * policy_latency_s)),
                   Parameter("execution.inference_process", value=policy_process)]
    return params


# ----- the node processes --------------------------------------------------------------------------
class Milestones:
    """When a node process reached each stage (monotonic [s]); written to `path` at each one, so that a
    process killed later leaves them too."""

    def __init__(self, path: str, started: float) -> None:
        self.path = Path(path) if path else None
        self.seen: dict = {}
        self.mark("started", started)

    def mark(self, name: str, at: float | None = None, **extra: object) -> None:
        if name in self.seen:
            return
        self.seen[name] = time.monotonic() if at is None else at
        self.save(**extra)

    def save(self, **extra: object) -> None:
        self.seen.update(extra)
        if self.path is not None:  # whole or not at all: the process may be killed at any time
            partial = self.path.with_suffix(".part")
            partial.write_text(json.dumps(self.seen))
            os.replace(partial, self.path)


def _run_node(ctx: rclpy.context.Context, a: argparse.Namespace, running, seen: Milestones) -> None:
    """The policy or control node until `running()` is false; its milestones (control: also its tick times,
    counters and max action age) go to `seen`."""
    sys.setswitchinterval(DEFAULT_SWITCH_INTERVAL_S)  # as `vla-ros node`
    role = a.helper
    factory = None
    if role == "policy":
        factory = functools.partial(SyntheticPolicy, latency_s=a.policy_latency, busy="sleep",
                                    chunk_len=CHUNK_LEN, step_m=0.002)
    capacity = int(a.rate * (a.seconds + 5)) if role == "control" else 0
    node = VlaNode(None, node_name=ROLE_NAMES[role], namespace=a.namespace, context=ctx,
                   parameter_overrides=node_parameters(role, a.rate, a.policy_latency,
                                                       a.policy_inference == "process"),
                   record_ticks=capacity, policy_factory=factory)
    executor = SingleThreadedExecutor(context=ctx)
    try:
        ok = TransitionCallbackReturn.SUCCESS
        if node.trigger_configure() != ok or node.trigger_activate() != ok:
            print(f"[bench-split {role}] start failed: {node.last_error}", file=sys.stderr, flush=True)
            return
        seen.mark("active")
        if role == "control":
            node.core.set_armed(True)
        executor.add_node(node)
        chunk_topic = node.resolve_topic_name(POLICY_TOPIC)
        while running():
            executor.spin_once(timeout_sec=0.02)
            if role == "policy" and "relay_matched" not in seen.seen and node.count_subscribers(chunk_topic):
                seen.mark("relay_matched")  # the policy's participant has discovered the relay's reader
            core = node.core
            if core is not None and core.instruction:
                seen.mark("instruction")
            if core is not None and core.image_stamp is not None:
                seen.mark("camera")
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if role == "control" and node.core is not None:
            seen.save(ticks=node.ticks.recent().tolist(), counters=dict(node.core.counters),
                      max_action_age_s=node.config.safety.max_action_age_s)
        node.trigger_shutdown()
        executor.shutdown()
        node.destroy_node()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def helper_main(argv: list[str]) -> int:
    """`python -m vla_ros.ros.bench_split --helper policy|control ...` (internal to bench-split)."""
    started = time.monotonic()
    p = argparse.ArgumentParser(prog="vla_ros.ros.bench_split --helper")
    p.add_argument("--helper", choices=("policy", "control"), required=True)
    p.add_argument("--namespace", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--stop-file", required=True)
    p.add_argument("--out", default="")
    p.add_argument("--rate", type=float, default=50.0)
    p.add_argument("--policy-latency", type=float, default=0.05)
    p.add_argument("--policy-inference", choices=("process", "thread"), default="process")
    a = p.parse_args(argv)
    deadline = started + a.seconds
    stop = Path(a.stop_file)

    def running() -> bool:
        return time.monotonic() < deadline and not stop.exists()

    signal.signal(signal.SIGTERM, _interrupt)
    seen = Milestones(a.out, started)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        _run_node(ctx, a, running, seen)
    except KeyboardInterrupt:
        pass
    finally:
        rclpy.try_shutdown(context=ctx)
    return 0


def _node_command(role: str, namespace: str, seconds: float, stop_file: Path, out: Path,
                  s: SplitSettings) -> list[str]:
    nice = ["nice", "-n", str(s.policy_nice)] if role == "policy" and s.policy_nice else []
    return [*nice, sys.executable, "-m", "vla_ros.ros.bench_split", "--helper", role,
            "--namespace", namespace, "--seconds", repr(float(seconds)), "--stop-file", str(stop_file),
            "--out", str(out),
            "--rate", repr(float(s.rate_hz)), "--policy-latency", repr(float(s.policy_latency_s)),
            "--policy-inference", "process" if s.policy_process else "thread"]


def _relay_command(namespace: str, seconds: float, stop_file: Path, out: Path, s: SplitSettings) -> list[str]:
    f = s.faults
    return [sys.executable, "-m", "vla_ros.ros.relay", "--namespace", namespace, "--from", POLICY_TOPIC,
            "--to", "vla/action_chunk", "--latency-ms", repr(f.latency_s * 1e3),
            "--jitter-ms", repr(f.jitter_s * 1e3), "--loss", repr(f.loss), "--duplicate", repr(f.duplicate),
            "--reorder", repr(f.reorder), "--reorder-ms", repr(f.reorder_s * 1e3), "--seed", str(s.seed),
            "--seconds", repr(float(seconds)), "--stop-file", str(stop_file), "--out", str(out)]


class StatusWatch:
    """The newest VlaStatus of the control node, with its arrival time (monotonic)."""

    def __init__(self, node: rclpy.node.Node, topic: str) -> None:
        self.last: VlaStatus | None = None
        self.arrived = 0.0
        node.create_subscription(VlaStatus, topic, self._on_status, reliable_qos())

    def _on_status(self, msg: VlaStatus) -> None:
        self.last, self.arrived = msg, time.monotonic()


def _stop(process: subprocess.Popen, group: bool = False, timeout_s: float = 15.0) -> None:
    """Wait for a helper that was told to stop; end it (its group) if it does not."""
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(process.pid, signal.SIGKILL)
        else:
            process.kill()
        process.wait(5.0)


def _read_json(path: Path) -> object:
    """The JSON a helper wrote, or None when it wrote none."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _wait_until(predicate, deadline: float) -> bool:
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def dds_profile(given: str) -> str | None:
    """Put the Fast DDS profile of the run in this process's environment (the helpers inherit it) and
    return it ('' = Fast DDS's defaults); None when the file does not exist."""
    if given == "none":
        return ""
    if not given and os.environ.get(PROFILE_VARIABLES[0]):
        return os.environ[PROFILE_VARIABLES[0]]
    path = Path(given) if given else find_shared("config", SPLIT_PROFILE)
    if path is None or not path.is_file():
        return None
    for name in PROFILE_VARIABLES:
        os.environ[name] = str(path.resolve())
    return str(path.resolve())


# ----- one run -------------------------------------------------------------------------------------
def run_split(s: SplitSettings) -> dict:
    """Start everything, kill and restart the policy, collect the figures (see `summarize`)."""
    namespace = f"/vla_split_{os.getpid()}"
    env = ros_environment(s.domain_id)
    use_environment(env)
    work = Path(tempfile.mkdtemp(prefix="vla_bench_split_"))
    stop_file = work / "stop"
    total = s.seconds + 60.0  # the helpers stop at the stop file; this is only a backstop
    priority = ExecutionConfig().control_priority
    files = {name: work / f"{name}.json" for name in ("arrivals", "relay", "control", "policy0", "policy1")}
    processes: list[tuple[subprocess.Popen, bool]] = []

    def start(command: list[str], group: bool = False) -> subprocess.Popen:
        process = subprocess.Popen(command, env=env, start_new_session=group)
        processes.append((process, group))
        return process

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("vla_bench_split", namespace=namespace, context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    spin = threading.Thread(target=executor.spin, daemon=True)
    events: dict[str, float] = {}
    try:
        watch = StatusWatch(node, f"{namespace}/{ROLE_NAMES['control']}/status")
        executor.add_node(node)
        spin.start()
        start(helper_command("recorder", namespace, total + 1.0, stop_file, "--out", str(files["arrivals"]),
                             "--priority", str(priority)))
        start(helper_command("inputs", namespace, total, stop_file, "--camera-size", s.camera_size,
                             "--camera-rate", repr(CAMERA[1])))
        start(_relay_command(namespace, total, stop_file, files["relay"], s))
        start(_node_command("control", namespace, total, stop_file, files["control"], s))
        events["policy_started"] = time.monotonic()
        policy = start(_node_command("policy", namespace, total, stop_file, files["policy0"], s), group=True)
        command_topic = f"{namespace}/vla/command"
        if not _wait_until(lambda: watch.last is not None and watch.last.chunks_received > 0
                           and node.count_subscribers(command_topic) > 0, time.monotonic() + 60.0):
            raise RuntimeError("the control node reported no chunk within 60 s (did the policy node, relay "
                               "or camera start? see their output above)")
        time.sleep(s.warmup_s)
        t0 = events["window_start"] = time.monotonic()
        if s.kill_at_s is not None:
            time.sleep(max(0.0, t0 + s.kill_at_s - time.monotonic()))
            events["kill"] = time.monotonic()
            os.killpg(policy.pid, signal.SIGKILL)  # the policy's computer is gone: the node and its child
            policy.wait(5.0)
            restart_at = events["kill"] + s.restart_after_s
            if restart_at < t0 + s.seconds:
                time.sleep(max(0.0, restart_at - time.monotonic()))
                events["restart"] = time.monotonic()
                start(_node_command("policy", namespace, total, stop_file, files["policy1"], s), group=True)
        time.sleep(max(0.0, t0 + s.seconds - time.monotonic()))
        events["window_end"] = time.monotonic()
        # The node's counts up to the end of the window: a status published after it.
        _wait_until(lambda: watch.arrived > events["window_end"], time.monotonic() + STATUS_GRACE_S)
        status = watch.last
    finally:
        stop_file.touch()
        for process, group in processes:
            _stop(process, group)
        executor.shutdown()
        if spin.ident is not None:
            spin.join(2.0)
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
    loaded = {name: _read_json(path) for name, path in files.items()}
    shutil.rmtree(work, ignore_errors=True)
    if loaded["control"] is None or loaded["arrivals"] is None or loaded["relay"] is None:
        missing = [name for name in ("control", "arrivals", "relay") if loaded[name] is None]
        raise RuntimeError(f"no results from the {', '.join(missing)} process(es)")
    return summarize(s, events, status, loaded)


# ----- the figures ---------------------------------------------------------------------------------
def hold_after(times: np.ndarray, hold: np.ndarray, start: float, end: float) -> float | None:
    """Seconds from `start` to the HOLD that lasts until `end`: the first HOLD command after the last moving
    one in (start, end]; None when the commands in that span end moving (or there are none)."""
    inside = (times > start) & (times <= end)
    t, h = times[inside], hold[inside]
    moving = np.flatnonzero(~h)
    first = int(moving[-1]) + 1 if moving.size else 0
    return float(t[first] - start) if first < t.size else None


def moving_after(times: np.ndarray, hold: np.ndarray, start: float) -> float | None:
    """Seconds from `start` to the first moving (non-HOLD) command after it; None when there is none."""
    later = np.flatnonzero((times > start) & ~hold)
    return float(times[later[0]] - start) if later.size else None


def _after(times: list[float], start: float) -> float | None:
    later = [t for t in times if t > start]
    return min(later) - start if later else None


def startup(at: float | None, seen: dict, times: np.ndarray, hold: np.ndarray,
            chunk_times: list[float]) -> dict:
    """Seconds from a policy process's start `at` to its node being active, its first instruction and camera
    frame, its discovery of the relay's chunk reader, its first chunk at the relay and the first moving
    command; all None when it never started."""
    figures = {"moving_after_s": None, "node_active_after_s": None, "instruction_after_s": None,
               "camera_after_s": None, "relay_matched_after_s": None, "first_chunk_after_s": None,
               "first_chunk_to_moving_s": None}
    if at is None:
        return figures
    moving, first_chunk = moving_after(times, hold, at), _after(chunk_times, at)
    figures.update({f"{name}_after_s": seen[key] - at
                    for name, key in (("node_active", "active"), ("instruction", "instruction"),
                                      ("camera", "camera"), ("relay_matched", "relay_matched"))
                    if key in seen})
    figures.update(moving_after_s=moving, first_chunk_after_s=first_chunk)
    if moving is not None and first_chunk is not None:
        figures["first_chunk_to_moving_s"] = moving - first_chunk
    return figures


def summarize(s: SplitSettings, events: dict[str, float], status: VlaStatus | None, loaded: dict) -> dict:
    """The report: control timing, commands, chunks, the kill and the restart."""
    t0, t1 = events["window_start"], events["window_end"]
    period = 1.0 / s.rate_hz
    control = loaded["control"]
    ticks = np.asarray(control.get("ticks", []), dtype=np.float64)
    ticks = ticks[(ticks >= t0) & (ticks <= t1)]
    every = np.asarray(loaded["arrivals"] or np.zeros((0, 5)), dtype=np.float64).reshape(-1, 5)
    arrivals = every[(every[:, 0] >= t0) & (every[:, 0] <= t1)]
    times, hold = arrivals[:, 0], arrivals[:, 3] != 0
    max_age = float(control.get("max_action_age_s", SafetyLimits().max_action_age_s))
    counters = control.get("counters", {})
    relay = loaded["relay"]
    relay_arrivals = [t for t, _ in relay.get("arrivals", [])]

    kill, restart = events.get("kill"), events.get("restart")
    killed: dict = {"at_s": None, "hold_after_s": None, "max_action_age_s": max_age, "hold_in_time": None}
    if kill is not None:
        after = hold_after(times, hold, kill, restart if restart is not None else t1)
        killed.update(at_s=kill - t0, hold_after_s=after, hold_in_time=after is not None and after <= max_age)
    # start and restart: over every command recorded, the window's edges do not cut them short
    started = startup(events["policy_started"], loaded.get("policy0") or {}, every[:, 0], every[:, 3] != 0,
                      relay_arrivals)
    restarted = startup(restart, loaded.get("policy1") or {}, every[:, 0], every[:, 3] != 0, relay_arrivals)
    restarted["at_s"] = restart - t0 if restart is not None else None
    outage = np.zeros(times.shape, dtype=bool)
    if kill is not None:
        back = restart + restarted["moving_after_s"] if restarted["moving_after_s"] is not None else t1
        outage = (times > kill) & (times < back)
    up = ~outage
    link = {
        "received": status.chunks_received if status else None,
        "lost": status.chunks_lost if status else None,
        "duplicated": status.chunks_duplicated if status else None,
        "reordered": status.chunks_reordered if status else None,
        "rejected_old": status.rejected_chunks_old if status else None,
        "rejected_future": status.rejected_chunks_future if status else None,
        "rejected_late": status.rejected_chunks_late if status else None,
        "rejected_stale": counters.get("rejected_chunks_stale"),
        "rejected_total": counters.get("rejected_chunks"),
        "dropped_actions": status.dropped_actions if status else None,
        "clock_offset_s": status.clock_offset_s if status else None,
        "clock_warning": status.clock_warning if status else None,
        "final_state": status.state_name if status else None,
    }
    return {
        "settings": {"rate_hz": s.rate_hz, "seconds": s.seconds, "kill_at_s": s.kill_at_s,
                     "restart_after_s": s.restart_after_s, "policy_latency_s": s.policy_latency_s,
                     "chunk_len": CHUNK_LEN, "action_period_s": ACTION_PERIOD_S, "seed": s.seed,
                     "policy_inference": "process" if s.policy_process else "thread",
                     "policy_nice": s.policy_nice,
                     "camera": f"{s.camera_size} rgb8 {CAMERA[1]:g} Hz", "link": asdict(s.faults)},
        "timer": period_stats(ticks, period),
        "received": period_stats(times, period),
        "commands": int(times.size),
        "hold_share": float(np.mean(hold)) if times.size else None,
        "hold_share_policy_up": float(np.mean(hold[up])) if up.any() else None,
        "chunks": link,
        "relay": {k: relay.get(k) for k in ("received", "lost", "duplicated", "reordered", "delivered")},
        "start": started,
        "kill": killed,
        "restart": restarted,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f}"


def format_table(r: dict) -> str:
    """The figures of one run as a fixed-width table (figure, value, target, verdict)."""
    st, t, c, k, rel = r["settings"], r["timer"], r["chunks"], r["kill"], r["relay"]
    first, again = r["start"], r["restart"]
    link = st["link"]
    moving = again["moving_after_s"]

    def verdict(ok: bool | None) -> str:
        return "" if ok is None else ("ok" if ok else "MISSED")

    def both(key: str) -> str:
        return f"{_num(first[key], 2)} / {_num(again[key], 2)}"

    rows = [
        ("control timer period error p50 [ms]", _num(t["p50_ms"]), "", ""),
        ("control timer period error p99 [ms]", _num(t["p99_ms"]), "<= 2", verdict(t["p99_ms"] <= 2.0)),
        ("control timer period error max [ms]", _num(t["max_ms"]), "", ""),
        ("control ticks / missed", f"{t['count']} / {t['missed']}", "0 missed", verdict(t["missed"] == 0)),
        ("commands received (HOLD share)", f"{r['commands']} ({_percent(r['hold_share'])} %)", "", ""),
        ("HOLD share with the policy up [%]", _percent(r["hold_share_policy_up"]), "", ""),
        ("relay: chunks in / lost / dup / reordered",
         f"{rel['received']} / {rel['lost']} / {rel['duplicated']} / {rel['reordered']}", "", ""),
        ("control: received / lost / dup / reordered",
         f"{c['received']} / {c['lost']} / {c['duplicated']} / {c['reordered']}", "", ""),
        ("control: rejected old / future / late / stale",
         " / ".join(str(c[key]) for key in ("rejected_old", "rejected_future", "rejected_late",
                                            "rejected_stale")), "", ""),
        ("HOLD after the kill [s]", _num(k["hold_after_s"]),
         f"<= {k['max_action_age_s']:g} (max_action_age_s)",
         verdict(None if k["hold_after_s"] is None else k["hold_in_time"])),
        ("moving after the restart [s]", _num(moving), "<= 2",
         verdict(None if moving is None else moving <= 2.0)),
        ("policy start / restart -> node active [s]", both("node_active_after_s"), "", ""),
        ("  -> first instruction [s]", both("instruction_after_s"), "", ""),
        ("  -> first camera frame [s]", both("camera_after_s"), "", ""),
        ("  -> relay's chunk reader discovered [s]", both("relay_matched_after_s"), "", ""),
        ("  -> first chunk at the relay [s]", both("first_chunk_after_s"), "", ""),
        ("  -> first moving command [s]", both("moving_after_s"), "", ""),
        ("  first chunk -> moving [s]", both("first_chunk_to_moving_s"), "", ""),
    ]
    head = (f"bench-split: control {st['rate_hz']:g} Hz, chunks of {st['chunk_len']} x "
            f"{st['action_period_s']:g} s, policy {st['policy_latency_s'] * 1e3:g} ms "
            f"({st['policy_inference']}); link {link['latency_s'] * 1e3:g} +- {link['jitter_s'] * 1e3:g} ms, "
            f"loss {link['loss']:.0%}, duplicate {link['duplicate']:.0%}, reorder {link['reorder']:.0%}; "
            f"load {r['load_average_1min']:g}")
    width = max(len(row[0]) for row in rows)
    lines = [head, f"{'figure':<{width}}  {'value':>15}  {'target':<30}", "-" * (width + 52)]
    lines += [f"{name:<{width}}  {value:>15}  {target:<30} {ok}".rstrip() for name, value, target, ok in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `vla-ros bench-split`."""
    p = argparse.ArgumentParser(prog="vla-ros bench-split", description=__doc__.split("\n\n")[0])
    add_fault_arguments(p)
    p.add_argument("--rate", type=float, default=50.0, help="control rate [Hz] (default 50)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured time [s] (default 20)")
    p.add_argument("--kill-policy-at", type=float, default=None, metavar="S",
                   help="SIGKILL the policy this long into the measured time [s] (default: half of it)")
    p.add_argument("--no-kill", action="store_true", help="leave the policy running")
    p.add_argument("--restart-after", type=float, default=1.0, help="restart the policy this long after "
                   "the kill [s] (default 1)")
    p.add_argument("--policy-latency-ms", type=float, default=50.0,
                   help="synthetic inference time per chunk [ms] (default 50)")
    p.add_argument("--policy-inference", choices=("process", "thread"), default="process",
                   help="where the policy node runs its policy (execution.inference_process; default "
                        "process, the node's default)")
    p.add_argument("--policy-nice", type=int, default=0,
                   help="niceness of the policy node's processes, which stand in for another computer "
                        "(default 0)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds between the control node's first chunk and the measured time (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the link's faults (default 0)")
    p.add_argument("--camera-size", default=CAMERA[0], help=f"camera frame size WxH (default {CAMERA[0]})")
    p.add_argument("--domain-id", type=int, default=150 + os.getpid() % 80,
                   help="ROS domain of the bench (default: a private one)")
    p.add_argument("--dds-profile", default="",
                   help="Fast DDS XML profile for every process (default: config/fastdds_split.xml, fast "
                        "re-discovery of a restarted policy; 'none': Fast DDS's defaults; an already set "
                        "FASTDDS_DEFAULT_PROFILES_FILE wins over the default)")
    p.add_argument("--json", default="", help="write the figures to this JSON file")
    a = p.parse_args(argv)
    profile = dds_profile(a.dds_profile)
    if profile is None:
        print(f"vla-ros bench-split: no Fast DDS profile {a.dds_profile or SPLIT_PROFILE!r}", file=sys.stderr)
        return 2
    try:
        faults = faults_from_arguments(a)
    except ValueError as exc:
        print(f"vla-ros bench-split: {exc}", file=sys.stderr)
        return 2
    kill_at = None if a.no_kill else (a.seconds / 2 if a.kill_policy_at is None else a.kill_policy_at)
    if not (1.0 <= a.rate <= 1000.0 and a.seconds > 0 and a.restart_after >= 0 and a.policy_latency_ms >= 0
            and (kill_at is None or 0 <= kill_at < a.seconds)):
        print("vla-ros bench-split: --rate must be in [1, 1000] Hz, --seconds > 0, --kill-policy-at in "
              "[0, --seconds), --restart-after and --policy-latency-ms >= 0", file=sys.stderr)
        return 2
    settings = SplitSettings(rate_hz=a.rate, seconds=a.seconds, kill_at_s=kill_at,
                             restart_after_s=a.restart_after, faults=faults,
                             policy_latency_s=a.policy_latency_ms * 1e-3, seed=a.seed, warmup_s=a.warmup,
                             camera_size=a.camera_size, domain_id=a.domain_id,
                             policy_process=a.policy_inference == "process", policy_nice=a.policy_nice)
    print(f"[bench-split] {a.seconds:g} s at {a.rate:g} Hz over {faults} ...", flush=True)
    try:
        result = run_split(settings)
    except RuntimeError as exc:
        print(f"vla-ros bench-split: {exc}", file=sys.stderr)
        return 1
    print(format_table(result))
    priority = ExecutionConfig().control_priority
    refused = realtime_refusal(priority) if priority > 0 else None
    report = {
        "benchmark": "vla-ros bench-split", **result,
        "control_priority": priority, "control_realtime": priority > 0 and refused is None,
        "realtime_refused": refused or "",
        "fastdds_builtin_transports": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", ""),
        "fastdds_profile": profile,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
    }
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=2))
        print(f"[bench-split] wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(helper_main(sys.argv[1:]) if "--helper" in sys.argv[1:2] else main())
