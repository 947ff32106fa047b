"""`vla-ros bench-split`: the kill / restart figures from command streams, and one short real run over DDS
(policy node, relay, control node, camera, recorder; the policy killed and restarted). Timing goals are
the bench's job, not the test's."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from vla_ros.ros.bench_split import format_table, hold_after, moving_after

T = np.arange(20) * 0.1  # command times [s]


def _holds(*spans: tuple[int, int]) -> np.ndarray:
    hold = np.zeros(T.shape, dtype=bool)
    for start, stop in spans:
        hold[start:stop] = True
    return hold


def test_hold_after_the_kill_is_the_hold_that_lasts():
    hold = _holds((5, 7), (9, 15))  # a short HOLD (a lost chunk) after the kill, then the chunk plays out
    assert hold_after(T, hold, 0.45, 1.45) == pytest.approx(0.45)  # 0.9 - 0.45
    assert hold_after(T, _holds((3, 20)), 0.45, 1.45) == pytest.approx(0.05)  # HOLD already: the next command


def test_no_hold_after_the_kill_when_the_commands_keep_moving():
    assert hold_after(T, _holds((5, 7)), 0.45, 1.45) is None
    assert hold_after(T, _holds(), 5.0, 6.0) is None  # no command in the span at all


def test_moving_after_the_restart():
    hold = _holds((5, 15))
    assert moving_after(T, hold, 1.0) == pytest.approx(0.5)
    assert moving_after(T, _holds((5, 20)), 1.0) is None


def test_bench_split_kills_and_restarts_the_policy_over_dds(tmp_path):
    pytest.importorskip("rclpy")
    out = tmp_path / "split.json"
    cmd = [sys.executable, "-m", "vla_ros.cli", "bench-split", "--seconds", "8", "--kill-policy-at", "2.5",
           "--restart-after", "0.5", "--latency-ms", "40", "--jitter-ms", "10", "--loss", "0.2",
           "--duplicate", "0.2", "--reorder", "0.1", "--policy-inference", "thread",
           "--camera-size", "320x240",
           "--warmup", "0.5", "--seed", "16", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "HOLD after the kill" in run.stdout and "moving after the restart" in run.stdout
    r = json.loads(out.read_text())
    assert r["benchmark"] == "vla-ros bench-split" and r["settings"]["link"]["loss"] == 0.2
    assert r["timer"]["count"] >= 0.7 * 50 * 8 and r["commands"] >= 0.6 * 50 * 8
    relay, chunks = r["relay"], r["chunks"]
    # seeded link (seed 16): of the first 5 chunks, the 2nd and 4th are duplicated, the 3rd and 5th lost
    assert relay["lost"] >= 2 and relay["duplicated"] >= 2
    in_flight = relay["received"] - relay["lost"] + relay["duplicated"] - relay["delivered"]
    assert 0 <= in_flight <= 2  # the last ones may still have been on the link at the end
    assert 0 < chunks["received"] <= relay["delivered"] and chunks["duplicated"] >= 1 and chunks["lost"] >= 1
    for key in ("rejected_old", "rejected_future", "rejected_late", "rejected_stale", "reordered"):
        assert chunks[key] >= 0
    # the kill: the chunk in force plays out, then HOLD until the restarted policy's chunks arrive
    kill, restart = r["kill"], r["restart"]
    assert kill["at_s"] == pytest.approx(2.5, abs=0.1) and restart["at_s"] == pytest.approx(3.0, abs=0.1)
    assert kill["hold_after_s"] is not None and kill["hold_after_s"] < kill["max_action_age_s"] == 1.0
    assert kill["hold_in_time"] is True
    assert 0.0 < r["hold_share"] < 1.0
    assert restart["moving_after_s"] is not None, run.stdout  # moving again within the window
    assert 0 < restart["node_active_after_s"] < restart["first_chunk_after_s"] < restart["moving_after_s"]
    assert restart["first_chunk_to_moving_s"] == pytest.approx(
        restart["moving_after_s"] - restart["first_chunk_after_s"])
    assert format_table({k: r[k] for k in r}).count("\n") >= 15
