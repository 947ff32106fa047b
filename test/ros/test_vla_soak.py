"""`vla-ros soak`: a short run over real DDS (damaged frames, instruction spam) and its load helpers."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from vla_ros.ros.loadgen import damage, encode, random_instruction, scene  # noqa: E402
from vla_ros.ros.soak import build_parser, check_arguments  # noqa: E402


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_damaged_frames_keep_their_headers(encoding):
    data = encode(scene(160, 120), encoding)
    rng = random.Random(1)
    damaged = [damage(data, encoding, rng) for _ in range(20)]
    assert all(d != data for d in damaged)
    assert all(d[:8] == data[:8] for d in damaged)  # still looks like a JPEG / PNG
    flipped = [d for d in damaged if len(d) == len(data)]
    assert flipped and all(d[-2:] == data[-2:] for d in flipped)  # end marker intact
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)


def test_spam_mixes_valid_and_bad_instructions():
    rng = random.Random(0)
    spam = [random_instruction(rng) for _ in range(300)]
    assert any(isinstance(s, bytes) for s in spam)  # raw CDR with invalid UTF-8
    texts = [s for s in spam if isinstance(s, str)]
    assert any(len(s.encode()) > 4096 for s in texts) and any(600 <= len(s) <= 4096 for s in texts)
    assert any("\x1b" in s for s in texts) and "" in texts
    assert sum(0 < len(s) < 100 and s.isprintable() for s in texts) > 100


@pytest.mark.parametrize("args, words", [
    (["--camera-size", "640"], "WxH"), (["--corrupt-share", "0.5"], "jpeg or png"),
    (["--corrupt-share", "2", "--camera-encoding", "png"], "[0, 1]"), (["--rate", "0"], "--rate"),
])
def test_bad_arguments_are_refused(args, words):
    assert words in check_arguments(build_parser().parse_args(args))


def test_short_soak_with_damaged_frames_and_spam(tmp_path):
    out = tmp_path / "soak.json"
    cmd = [sys.executable, "-m", "vla_ros.cli", "soak", "--seconds", "5", "--warmup", "1", "--rate", "50",
           "--camera-size", "160x120", "--camera-rate", "20", "--camera-encoding", "jpeg",
           "--corrupt-share", "0.3", "--instruction-spam", "4", "--json", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "fresh-tick share" in run.stdout and "node alive" in run.stdout
    r = json.loads(out.read_text())
    assert r["node_alive"] and r["node_exit_code"] == 0  # and it shut down cleanly afterwards
    assert abs(r["control"]["achieved_hz"] - 50.0) < 2.5 and r["commands"] >= 0.8 * 50 * 5
    assert r["received"]["count"] == r["commands"]
    assert r["sent"]["damaged"] > 0 and r["rejected_inputs"] > 0
    assert r["sent"]["instructions"] >= 15
    assert 0.0 <= r["fresh_tick_share"] <= 1.0 and 0.0 <= r["moving_share"] <= 1.0
    assert r["rss_mib"]["node_start"] > 20 and r["rss_mib"]["inference_start"] > 20  # a child process
    assert r["log_lines_per_min"] >= 0 and r["rosout_per_min"] >= 0
    assert r["state"] in ("ARMED", "HOLDING") and r["policy_errors"] == 0
    assert r["diagnostics_max_level"] in ("OK", "WARN", "ERROR")
    assert r["false_control_warns"] >= 0 and r["control_gaps"] >= 0
    for key in ("p99_ms", "max_ms", "missed"):
        assert key in r["control"]
