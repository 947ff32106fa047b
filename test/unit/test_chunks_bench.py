"""vla-ros bench-chunks: a row per rule, determinism, the crossfade's smaller jumps, bad flags."""

from __future__ import annotations

import json

from vla_ros.control import bench_chunks
from vla_ros.control.chunks import RULES, ChunkSettings


def run(tmp_path, name: str, *flags: str) -> dict:
    out = tmp_path / name
    assert bench_chunks.main(["--duration", "8", "--json", str(out), *flags]) == 0
    return json.loads(out.read_text())


def test_every_rule_gets_a_row_and_runs_are_deterministic(tmp_path, capsys):
    first = run(tmp_path, "a.json", "--latency", "0.15")
    assert [r["rule"] for r in first["results"]] == list(RULES)
    assert first["settings"]["latency_s"] == 0.15 and first["settings"]["rate_hz"] == 50.0
    printed = capsys.readouterr().out
    assert all(rule in printed for rule in RULES) and "only sensible when inference is faster" in printed
    assert run(tmp_path, "b.json", "--latency", "0.15") == first


def test_crossfade_jumps_less_than_replacement_when_chunks_overlap(tmp_path):
    rows = {r["rule"]: r for r in run(tmp_path, "c.json", "--latency", "0.15")["results"]}
    assert rows["replace"]["switches"] > 20 and rows["crossfade"]["switches"] == rows["replace"]["switches"]
    assert rows["crossfade"]["jump_max"] < 0.5 * rows["replace"]["jump_max"]
    assert rows["replace"]["dropped_actions"] > 0 and rows["replace"]["holds"] < 20


def test_default_latency_is_near_a_chunk_and_says_why_chunks_cannot_overlap(tmp_path, capsys):
    data = run(tmp_path, "d.json", "--rules", "crossfade")
    assert abs(data["settings"]["latency_s"] - 0.9 * 8 * 0.05) < 1e-12
    assert "expect holds" in capsys.readouterr().out
    assert bench_chunks.overlap_note(bench_chunks.BenchSettings(latency_s=0.1), ChunkSettings()) is None


def test_bad_flags_are_refused(capsys):
    assert bench_chunks.main(["--latency", "-1"]) == 2
    assert bench_chunks.main(["--replan-fraction", "2"]) == 2
    assert "bench-chunks" in capsys.readouterr().err
