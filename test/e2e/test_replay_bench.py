"""The replay benchmark runs end to end on a short bag and reports consistent figures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vla_ros.bag import bench_replay
from vla_ros.sim.frames import sim_frames


def test_benchmark_reports_real_time_factor(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bench.json"
    assert bench_replay.main(["--seconds", "1.5", "--size", "64", "--json", str(out),
                              "--workdir", str(tmp_path)], frames=sim_frames) == 0
    table = capsys.readouterr().out
    assert "x real time" in table and "faster than real time" in table
    r = json.loads(out.read_text())
    assert r["replayed_s"] == pytest.approx(1.5 - 1 / 30, abs=1e-6)
    # zero latency: every frame is inferred, plus the newest frame again when the instruction changes
    assert r["commands"] == 15 and r["inferences"] == 45 + 1
    wall = r["wall_s"]
    assert 0 < wall["replay_loop"] <= wall["total"] and wall["policy_calls"] <= wall["replay_loop"]
    assert r["real_time_factor"]["total"] == pytest.approx(r["replayed_s"] / wall["total"])
    assert list(tmp_path.glob("vla_replay_bench_*")) == []  # the temporary bag is removed
