"""`vla-ros soak`'s figures: from the recorded commands, statuses, diagnostics and log lines (no ROS)."""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from vla_ros.msg import EndEffectorCommand, VlaStatus
from vla_ros.ros.loadgen import period_stats

GAP_S = 0.030  # a control gap: an interval longer than max(GAP_S, 1.5 periods)
FALSE_WARN_LOOKBACK_S = 3.0  # a control-loop WARN with no real gap in this span before it is false
LEVELS = {0: "OK", 1: "WARN", 2: "ERROR", 3: "STALE"}
SETTINGS = ("seconds", "rate", "camera_size", "camera_rate", "camera_encoding", "camera_reliability",
            "corrupt_share", "instruction_spam", "cpu_hogs", "policy")


def rss_mib(pid: int, children: bool = False) -> float:
    """Resident memory [MiB] of process `pid` (or the sum over its direct children); 0 if unreadable."""
    pids = [pid]
    if children:
        pids = []
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except (OSError, ValueError):
                pass
    total_kib = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total_kib / 1024.0


def _in(times: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    return (times >= window[0]) & (times <= window[1])


def analyse(a: argparse.Namespace, arrivals: list, statuses: list[tuple[float, VlaStatus]],
            diagnostics: list[tuple[float, str, int]], rosout: list[float], output: list[float],
            window: tuple[float, float], rss_start: tuple[float, float], rss_end: tuple[float, float],
            alive: bool) -> dict:
    """The soak's figures over `window` (monotonic start, end) from what the probe recorded."""
    period, minutes = 1.0 / a.rate, max(window[1] - window[0], 1e-9) / 60.0
    arr = np.array(list(arrivals) or [[0.0, 0.0, 0.0, 1, 0]], dtype=np.float64)
    arr = arr[_in(arr[:, 0], window)]
    stamps, received = np.sort(arr[:, 2]), arr[:, 0]
    bits = arr[:, 4].astype(np.int64)
    gap = max(GAP_S, 1.5 * period)
    dt = np.diff(stamps) if stamps.size > 1 else np.zeros(0)
    in_window = [s for t, s in statuses if window[0] <= t <= window[1]]
    first = in_window[0] if in_window else None
    last = in_window[-1] if in_window else (statuses[-1][1] if statuses else None)
    rates = [s.control_rate_hz for s in in_window if s.control_rate_hz > 0]
    diag = [(t, name, level) for t, name, level in diagnostics if window[0] <= t <= window[1]]
    warns = Counter(name for _, name, level in diag if level == 1)
    return {
        "tool": "vla-ros soak",
        "settings": {k: getattr(a, k) for k in SETTINGS},
        "measured_s": round(window[1] - window[0], 2),
        "commands": int(arr.shape[0]),
        "control": period_stats(stamps, period),  # when the node's timer ran (header stamps)
        "received": period_stats(received, period),  # when the commands arrived here
        "control_gap_threshold_ms": gap * 1e3,
        "control_gaps": int(np.sum(dt > gap)),
        "max_gap_ms": float(dt.max() * 1e3) if dt.size else float("nan"),
        "max_received_gap_ms": float(np.diff(received).max() * 1e3) if received.size > 1 else float("nan"),
        "fresh_tick_share": float(np.mean(bits & EndEffectorCommand.STALE_IMAGE == 0)) if bits.size else 0.0,
        "moving_share": float(np.mean(arr[:, 3] == 0)) if arr.size else 0.0,
        "rss_mib": {"node_start": round(rss_start[0], 1), "node_end": round(rss_end[0], 1),
                    "node_growth": round(rss_end[0] - rss_start[0], 1),
                    "inference_start": round(rss_start[1], 1), "inference_end": round(rss_end[1], 1),
                    "inference_growth": round(rss_end[1] - rss_start[1], 1)},
        "log_lines_per_min": round(int(np.sum(_in(np.array(output), window))) / minutes, 1),
        "rosout_per_min": round(int(np.sum(_in(np.array(rosout), window))) / minutes, 1),
        "rejected_inputs": int(last.rejected_inputs) if last else 0,
        "rejected_in_window": int(last.rejected_inputs - first.rejected_inputs) if first else 0,
        "policy_errors": int(last.policy_errors) if last else 0,
        "state": last.state_name if last else "no status",
        "last_error": last.last_error if last else "",
        "status_control_rate_hz": {"min": min(rates), "max": max(rates)} if rates else {},
        "diagnostics_max_level": LEVELS.get(max((lv for _, _, lv in diag), default=0), "?"),
        "diagnostics_warns": dict(warns),
        "false_control_warns": _false_control_warns(diag, arr, gap),
        "node_alive": bool(alive),
    }


def _false_control_warns(diag: list[tuple[float, str, int]], arr: np.ndarray, gap: float) -> int:
    """Control-loop WARNs with no interval longer than `gap` among the commands of the span before."""
    false = 0
    for t, name, level in diag:
        if level != 1 or name != "control loop":
            continue
        recent = np.sort(arr[(arr[:, 0] >= t - FALSE_WARN_LOOKBACK_S) & (arr[:, 0] <= t), 2])
        if recent.size > 2 and not np.any(np.diff(recent) > gap):
            false += 1
    return false


def format_report(r: dict) -> str:
    """The figures as a two-column table."""
    c, m, rss = r["control"], r["received"], r["rss_mib"]
    rates = r["status_control_rate_hz"]
    rows = [
        ("measured", f"{r['measured_s']:.0f} s, {r['commands']} commands"),
        ("achieved rate", f"{c['achieved_hz']:.2f} Hz (received {m['achieved_hz']:.2f} Hz)"),
        ("period error p99 / max", f"{c['p99_ms']:.2f} / {c['max_ms']:.2f} ms (received {m['p99_ms']:.2f} / "
                                   f"{m['max_ms']:.2f} ms)"),
        ("missed ticks", f"{c['missed']} (received {m['missed']})"),
        (f"gaps > {r['control_gap_threshold_ms']:.0f} ms",
         f"{r['control_gaps']} (max gap {r['max_gap_ms']:.1f} ms)"),
        ("fresh-tick share", f"{r['fresh_tick_share']:.1%} (moving {r['moving_share']:.1%})"),
        ("node RSS", f"{rss['node_start']:.1f} -> {rss['node_end']:.1f} MiB ({rss['node_growth']:+.1f})"),
        ("inference RSS", f"{rss['inference_start']:.1f} -> {rss['inference_end']:.1f} MiB "
                          f"({rss['inference_growth']:+.1f})"),
        ("node log lines", f"{r['log_lines_per_min']:.1f} /min (rosout {r['rosout_per_min']:.1f} /min)"),
        ("rejected inputs", f"{r['rejected_inputs']} ({r['rejected_in_window']} in the window)"),
        ("policy errors (synthetic: damaged frames at the model)", str(r["policy_errors"])),
        ("state", f"{r['state']}" + (f" (last error: {r['last_error'][:80]})" if r["last_error"] else "")),
        ("status control rate", f"{rates['min']:.2f} .. {rates['max']:.2f} Hz" if rates else "none"),
        ("diagnostics", f"max {r['diagnostics_max_level']}, WARNs {r['diagnostics_warns'] or 0}, "
                        f"false control-loop WARNs {r['false_control_warns']}"),
        ("node alive", "yes" if r["node_alive"] else "NO"),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
