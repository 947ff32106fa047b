"""`vla-ros play` and `vla-ros record` over real Fast DDS on localhost (short bags), and the launch file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy")

from vla_ros.bag.io import CLOCK, IMAGE, STRING, BagReader, deserialize, read_metadata, stamp_ns  # noqa: E402
from vla_ros.bag.make_bag import gradient_frames, write_camera_bag  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CAMERA, INSTRUCTION = "/camera/image_raw", "/vla/instruction"


def vla_ros(*args: str) -> list[str]:
    return [sys.executable, "-m", "vla_ros.cli", *args]


def start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} did not finish in {timeout} s:\n{err}")
    return proc.returncode, out + err


def wait_for_line(path_hint: subprocess.Popen, needle: str, timeout: float) -> None:
    """Read the process's stderr until a line contains `needle`."""
    end = time.monotonic() + timeout
    assert path_hint.stderr is not None
    while time.monotonic() < end:
        line = path_hint.stderr.readline()
        if needle in line:
            return
        if not line and path_hint.poll() is not None:
            break
    pytest.fail(f"{path_hint.args}: no '{needle}' within {timeout} s")


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_camera_bag(tmp_path_factory.mktemp("play") / "bag", gradient_frames(), duration_s=2.0)


def test_play_into_record_keeps_bytes_and_timing(bag: Path, tmp_path: Path) -> None:
    out = tmp_path / "recorded"
    recorder = start(vla_ros("record", str(out), "--topics", CAMERA, INSTRUCTION, "/clock",
                             "--seconds", "30"))
    wait_for_line(recorder, "record: waiting", 20)
    stats_path = tmp_path / "stats.json"
    rc, log = finish(start(vla_ros("play", str(bag), "--clock", "--wait-for-subscribers", "20",
                                   "--delay", "0.5", "--stats", str(stats_path))), 60)
    assert rc == 0, log
    recorder.send_signal(subprocess.signal.SIGINT)  # stop early: the bag must still be complete
    rc, log = finish(recorder, 30)
    assert rc == 0, log
    stats = json.loads(stats_path.read_text())
    assert stats["published"] == 62 and stats["timing_error_ms"]["p50"] < 20

    with BagReader(bag) as src, BagReader(out) as rec:
        assert {CAMERA, INSTRUCTION, "/clock"} <= set(rec.topics)
        original = {t: [(ns, raw) for _, ns, raw in src.messages([t])] for t in (CAMERA, INSTRUCTION)}
        recorded = {t: [(ns, raw) for _, ns, raw in rec.messages([t])]
                    for t in (CAMERA, INSTRUCTION, "/clock")}
    # every instruction and (best effort, same machine) nearly every frame arrived, content unchanged
    # (the middleware may pad the CDR to a multiple of 4 bytes, so compare what it decodes to)
    assert [deserialize(raw, STRING).data for _, raw in recorded[INSTRUCTION]] == [
        deserialize(raw, STRING).data for _, raw in original[INSTRUCTION]]
    by_stamp = {stamp_ns(deserialize(raw, IMAGE).header.stamp): (ns, raw) for ns, raw in original[CAMERA]}
    got = [(stamp_ns(deserialize(raw, IMAGE).header.stamp), ns, raw) for ns, raw in recorded[CAMERA]]
    assert len(got) >= 0.9 * len(by_stamp)
    for stamp, _, raw in got:
        a, b = deserialize(raw, IMAGE), deserialize(by_stamp[stamp][1], IMAGE)
        assert (a.encoding, a.width, a.height, a.step) == (b.encoding, b.width, b.height, b.step)
        assert bytes(a.data) == bytes(b.data)
    # original timing: recorded gaps match the bag's gaps
    rec_t = np.array([ns for _, ns, _ in got], np.int64)
    src_t = np.array([by_stamp[stamp][0] for stamp, _, _ in got], np.int64)
    drift_ms = ((rec_t - rec_t[0]) - (src_t - src_t[0])) / 1e6
    assert np.median(np.abs(drift_ms)) < 15 and np.abs(drift_ms).max() < 100
    # /clock carried the bag's time, monotonic, spanning the bag
    clocks = np.array([stamp_ns(deserialize(raw, CLOCK).clock) for _, raw in recorded["/clock"]], np.int64)
    assert len(clocks) > 50 and np.all(np.diff(clocks) >= 0)
    assert clocks[0] >= src_t.min() - 20_000_000 and clocks[-1] == max(ns for ns, _ in original[CAMERA] +
                                                                         original[INSTRUCTION])
    meta = read_metadata(out)
    assert meta["storage_identifier"] == "mcap" and meta["custom_data"]["generator"] == "vla_ros record"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_play_rate_and_topic_filter(bag: Path, tmp_path: Path) -> None:
    stats_path = tmp_path / "stats.json"
    rc, log = finish(start(vla_ros("play", str(bag), "--rate", "4", "--topics", INSTRUCTION, "--delay", "0",
                                   "--stats", str(stats_path))), 60)
    assert rc == 0, log
    stats = json.loads(stats_path.read_text())
    assert stats["topics"] == [INSTRUCTION] and stats["published"] == 2
    # the two instructions are 1 s apart in the bag: 0.25 s at rate 4
    assert 0.2 < stats["wall_s"] < 1.0
    rc, log = finish(start(vla_ros("play", str(bag), "--topics", "/nope")), 60)
    assert rc == 2 and "no topic(s) ['/nope']" in log


def test_record_refuses_an_existing_output(tmp_path: Path) -> None:
    (tmp_path / "exists").mkdir()
    rc, log = finish(start(vla_ros("record", str(tmp_path / "exists"), "--seconds", "0.1")), 60)
    assert rc == 2 and "exists already" in log


def test_record_default_topics_follow_the_config(tmp_path: Path) -> None:
    from vla_ros.ros.bag_record import node_topics

    assert node_topics(None) == ["/camera/image_raw", "/vla/instruction", "/vla/estop", "/vla/command",
                                 "/vla_node/status", "/vla/action_chunk"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text("topics:\n  pose: /arm/pose\n  output_mode: pose\n  command: servo/pose\n")
    topics = node_topics(str(cfg), "/robot1")
    assert "/arm/pose" in topics and "/robot1/servo/pose/gripper" in topics
    assert "/robot1/vla_node/status" in topics  # the status follows the namespace


def test_replay_launch_file_plays_with_clock(bag: Path) -> None:
    import runpy

    launch = runpy.run_path(str(REPO / "launch" / "replay.launch.py"))  # imports launch lazily
    ours = launch["player_command"]({"bag": str(bag), "rate": "2", "play_delay": "1.5"}, use_ros2_bag=False)
    assert ours[:3] == ["vla-ros", "play", str(bag)] and "--clock" in ours
    assert "--wait-for-subscribers" in ours
    assert ours[ours.index("--rate") + 1] == "2.0" and "--loop" not in ours
    real = launch["player_command"]({"bag": str(bag), "loop": "true", "play_delay": "0"}, use_ros2_bag=True)
    assert real[:4] == ["ros2", "bag", "play", str(bag)] and "--clock" in real and real[-1] == "--loop"
    assert "--delay" not in real and real[real.index("--storage") + 1] == "mcap"
    with pytest.raises(ValueError, match="'bag' is required"):
        launch["player_command"]({}, use_ros2_bag=False)


def test_replay_launch_description_builds() -> None:
    import runpy

    pytest.importorskip("launch_ros", reason="launch_ros is not on PyPI; this runs on ROS machines")
    launch = runpy.run_path(str(REPO / "launch" / "replay.launch.py"))
    assert launch["generate_launch_description"]().entities
