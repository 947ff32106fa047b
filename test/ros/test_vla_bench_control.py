"""`vla-ros bench-control`: the statistics, and a short real run over DDS (the figures are its job)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vla_ros.ros.bench_control import format_table, period_stats


def test_period_stats_of_a_perfect_clock():
    s = period_stats(np.arange(101) * 0.02, 0.02)
    assert s["count"] == 101 and s["achieved_hz"] == pytest.approx(50.0)
    assert s["p50_ms"] < 1e-9 and s["max_ms"] < 1e-9 and s["missed"] == 0 and s["late"] == 0


def test_a_late_tick_is_not_a_missed_one():
    t = np.arange(50) * 0.02
    t[20] += 0.015  # 15 ms late: dt of 35 ms then 5 ms, nothing skipped
    s = period_stats(t, 0.02)
    assert s["missed"] == 0 and s["late"] == 1 and s["max_ms"] == pytest.approx(15.0)


def test_period_stats_counts_missed_ticks_and_errors():
    t = list(np.arange(50) * 0.02)
    t = t[:10] + t[13:]  # three ticks missing: one gap of 4 periods
    t[20] += 0.003  # one late tick: errors of +3 ms and -3 ms
    s = period_stats(np.array(t), 0.02)
    assert s["missed"] == 3 and s["late"] == 1
    assert s["max_ms"] == pytest.approx(60.0)
    assert s["p50_ms"] < 1e-9
    assert s["achieved_hz"] == pytest.approx(46 / 0.98)


def test_period_stats_of_too_few_events():
    assert period_stats(np.array([1.0]), 0.02)["count"] == 1


def test_bench_control_runs_over_dds_and_writes_json(tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "vla_ros.cli", "bench-control", "--rate", "50", "--seconds", "1.5",
           "--busy", "sleep", "--latency", "0.05", "--warmup", "0.5", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "achieved" in run.stdout and "timer period error ms" in run.stdout
    report = json.loads(out.read_text())
    r = report["results"][0]
    assert r["target_hz"] == 50.0
    assert r["timer"]["count"] >= 0.7 * 50 * 1.5  # ticks recorded in the window
    assert r["received"]["count"] >= 0.6 * 50 * 1.5  # commands arrived in the other process
    assert r["moving_share"] > 0.5 and r["policy_errors"] == 0 and r["final_state"] == "ARMED"
    assert format_table(report["results"]).count("\n") == 3
