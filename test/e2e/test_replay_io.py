"""Bag files people can trust: round trips, metadata, read-back by mcap's decoder, atomic writes,
and clear errors for corrupt bags, missing topics, unknown encodings and unreadable storage plugins."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from bag_fixtures import make_sim_bag

from vla_ros.bag import replay
from vla_ros.bag.io import (
    END_EFFECTOR_COMMAND,
    IMAGE,
    STRING,
    VLA_STATUS,
    BagError,
    BagReader,
    deserialize,
    header_msg,
    msg_class,
    read_metadata,
    serialize,
    typestore,
)
from vla_ros.bag.make_bag import gradient_frames, write_camera_bag
from vla_ros.bag.replay_types import ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.bag.writer import BagWriter
from vla_ros.core.config import NodeConfig
from vla_ros.core.types import ActionChunk, Instruction, Observation


def _command(t_ns: int, dx: float) -> object:
    vec = msg_class("geometry_msgs/msg/Vector3")
    return msg_class(END_EFFECTOR_COMMAND)(
        header=header_msg(t_ns, "tool0"), translation=vec(x=dx, y=0.0, z=-dx),
        rotation=vec(x=0.0, y=0.1, z=0.0), gripper=0.5, hold=False, interventions=64 | 16384,
        intervention_names=["TRANSLATION_STEP", "GRIPPER_SLEW"],
        source_stamp=msg_class("builtin_interfaces/msg/Time")(sec=1, nanosec=2))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_keeps_bytes_topics_and_definitions(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    raws = {}
    with BagWriter(path, storage=storage, custom_data={"k": "v"}) as w:
        for i in range(5):
            t = 1_000_000_000 + i * 100_000_000
            raws[("/vla/command", t)] = serialize(_command(t, 0.001 * i))
            w.write_msg("/vla/command", t, _command(t, 0.001 * i))
        w.write_msg("/vla/instruction", 1_050_000_000, msg_class(STRING)(data="pick up"))
    with BagReader(path) as r:
        assert r.storage == storage
        assert set(r.topics) == {"/vla/command", "/vla/instruction"}
        assert r.topics["/vla/command"].count == 5
        assert r.topics["/vla/command"].msgtype == END_EFFECTOR_COMMAND
        assert "uint32 TRANSLATION_STEP=64" in r.topics["/vla/command"].msgdef
        assert r.topics["/vla/command"].digest == typestore().hash_rihs01(END_EFFECTOR_COMMAND)
        got = list(r.messages(["/vla/command"]))
        assert [(t, raw) for _, t, raw in got] == [(t, raws[(topic, t)]) for topic, t in sorted(raws)]
        msg = deserialize(got[2][2], END_EFFECTOR_COMMAND)
        assert msg.translation.x == pytest.approx(0.002) and msg.intervention_names[1] == "GRIPPER_SLEW"
        assert r.start_ns == 1_000_000_000 and r.end_ns == 1_400_000_000
    meta = read_metadata(path)
    assert meta["version"] == 9 and meta["storage_identifier"] == storage
    assert meta["message_count"] == 6 and meta["custom_data"] == {"k": "v"}
    assert meta["relative_file_paths"] == [f"bag.{'mcap' if storage == 'mcap' else 'db3'}"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_hashes_equal_the_ones_rosidl_generated() -> None:
    share = Path(sys.prefix) / "share" / "vla_ros" / "msg"
    if not (share / "EndEffectorCommand.json").is_file():
        pytest.skip(f"messages not built into {sys.prefix} (run `make setup`)")
    for name, msgtype in (("EndEffectorCommand", END_EFFECTOR_COMMAND), ("VlaStatus", VLA_STATUS)):
        desc = json.loads((share / f"{name}.json").read_text())
        hashes = {h["type_name"]: h["hash_string"] for h in desc["type_hashes"]}
        assert hashes[msgtype] == typestore().hash_rihs01(msgtype)


def test_mcap_ros2_decoder_and_rclpy_read_what_we_write(tmp_path: Path) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path = tmp_path / "bag"
    with BagWriter(path) as w:
        for i in range(3):
            w.write_msg("/vla/command", 10 + i, _command(10 + i, 0.01 * i))
        status = msg_class(VLA_STATUS)(
            header=header_msg(20, "tool0"), state=1, state_name="ARMED", instruction="go", backend="x",
            inference_latency_s=0.1, model_rate_hz=2.0, image_age_s=0.01, instruction_age_s=1.0,
            action_age_s=0.2, control_rate_hz=10.0, commands_published=3, safety_interventions=1,
            rejected_inputs=0, policy_errors=0, last_error="", chunk_switches=2, chunk_jump_last=0.1,
            chunk_jump_max=0.3, chunk_delay_last_s=0.12, dropped_actions=1, rejected_chunks_late=0,
            stale_camera="", role="control", chunks_received=5, chunks_lost=1, chunks_duplicated=0,
            chunks_reordered=0, policy_restarts=0, rejected_chunks_old=1, rejected_chunks_future=0,
            clock_offset_s=0.004, clock_warning="")
        w.write_msg("/vla_node/status", 20, status)
    seen = []
    with open(path / "bag.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            seen.append((schema.name, channel.topic, message.log_time, decoded))
    assert [s[0] for s in seen] == [END_EFFECTOR_COMMAND] * 3 + [VLA_STATUS]
    assert seen[2][3].translation.x == pytest.approx(0.02) and seen[2][3].intervention_names == [
        "TRANSLATION_STEP", "GRIPPER_SLEW"]
    assert seen[3][3].state_name == "ARMED" and seen[3][3].commands_published == 3
    from rclpy.serialization import deserialize_message
    from vla_ros.msg import EndEffectorCommand

    with BagReader(path) as r:
        raw = next(raw for topic, _, raw in r.messages(["/vla/command"]))
    assert deserialize_message(raw, EndEffectorCommand).header.frame_id == "tool0"


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="boom"), BagWriter(path) as w:
        w.write_msg("/vla/command", 1, _command(1, 0.0))
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    path.mkdir()
    with pytest.raises(BagError, match="exists already"):
        BagWriter(path).open()


def _replay_cli(bag: Path, out: Path, *extra: str) -> int:
    return replay.main([str(bag), "--out", str(out), "--policy", "synthetic", "--no-plot", *extra])


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_camera_bag(tmp_path_factory.mktemp("io") / "small", gradient_frames(), duration_s=1.0)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "sqlite_garbage", "no_metadata"])
def test_corrupt_bag_gives_a_clear_error(tmp_path: Path, small_bag: Path, capsys: pytest.CaptureFixture,
                                        damage: str) -> None:
    bag = tmp_path / "bad"
    shutil.copytree(small_bag, bag)
    data_file = bag / "small.mcap"
    if damage == "truncate":
        data = data_file.read_bytes()
        data_file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        data_file.write_bytes(b"\x00not an mcap file at all" * 100)
    elif damage == "empty":
        data_file.write_bytes(b"")
    elif damage == "sqlite_garbage":
        meta = yaml.safe_load((bag / "metadata.yaml").read_text())
        meta["rosbag2_bagfile_information"]["storage_identifier"] = "sqlite3"
        meta["rosbag2_bagfile_information"]["relative_file_paths"] = ["small.db3"]
        (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
        (bag / "small.db3").write_bytes(b"SQLite format 3\x00" + b"\xff" * 2000)
    else:
        (bag / "metadata.yaml").unlink()
    with pytest.raises(BagError) as info:
        with BagReader(bag) as r:
            list(r.messages())
    text = str(info.value)
    assert "bad" in text and ("corrupt" in text or "metadata.yaml" in text)
    assert _replay_cli(bag, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_missing_topic_lists_the_bag_topics(tmp_path: Path, small_bag: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    rc = _replay_cli(small_bag, tmp_path / "out", "--param", "topics.camera=/wrist/image_raw")
    err = capsys.readouterr().err
    assert rc == 2
    assert "no camera topic '/wrist/image_raw'" in err and "/camera/image_raw  [sensor_msgs/msg/Image]" in err
    with BagReader(small_bag) as r, pytest.raises(BagError, match="expected std_msgs/msg/String"):
        r.require("/camera/image_raw", (STRING,), role="instruction")


def test_unknown_image_encoding_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bag = write_camera_bag(tmp_path / "yuv", gradient_frames(), duration_s=0.5, encoding="yuv422_weird")
    with BagReader(bag) as r:
        _, _, raw = next(r.messages(["/camera/image_raw"]))
        assert deserialize(raw, IMAGE).encoding == "yuv422_weird"
    assert _replay_cli(bag, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "'yuv422_weird'" in err and "unsupported image encoding" in err and "rgb8" in err


def test_bad_frame_mid_bag_is_counted_or_fatal_with_strict(tmp_path: Path) -> None:
    def extra(writer: BagWriter) -> None:
        bad = msg_class(IMAGE)(header=header_msg(0, "camera"), height=4, width=4, encoding="rgb8",
                               is_bigendian=0, step=12, data=np.zeros(7, np.uint8))  # 4x4 rgb8 needs 48
        writer.write("/camera/image_raw", 1_700_000_000_500_000_000, serialize(bad))

    bag = write_camera_bag(tmp_path / "mixed", gradient_frames(), duration_s=1.0, extra=extra)
    assert _replay_cli(bag, tmp_path / "out") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inputs"]["rejected_inputs"] == 1 and summary["inputs"]["images"] == 30
    assert _replay_cli(bag, tmp_path / "out_strict", "--strict") == 2
    assert not (tmp_path / "out_strict").exists()


def test_unreadable_storage_plugin_is_named(tmp_path: Path, small_bag: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    bag = tmp_path / "hdf5"
    shutil.copytree(small_bag, bag)
    meta = yaml.safe_load((bag / "metadata.yaml").read_text())
    meta["rosbag2_bagfile_information"]["storage_identifier"] = "hdf5"
    (bag / "metadata.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(BagError, match="storage plugin 'hdf5'"):
        BagReader(bag).open()
    assert _replay_cli(bag, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "storage plugin 'hdf5'" in err and "mcap, sqlite3" in err


def test_existing_output_needs_force(tmp_path: Path, small_bag: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert _replay_cli(small_bag, out) == 2
    assert "exists already" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert _replay_cli(small_bag, out, "--force") == 0
    assert (out / "summary.json").exists() and not (out / "keep.txt").exists()


def test_sqlite3_input_replays_like_mcap(tmp_path: Path) -> None:
    outs = []
    for storage in ("mcap", "sqlite3"):
        bag = make_sim_bag(tmp_path / f"bag_{storage}", storage=storage, duration_s=1.5)
        assert _replay_cli(bag, tmp_path / f"out_{storage}") == 0
        outs.append((tmp_path / f"out_{storage}" / "commands.csv").read_bytes())
    assert outs[0] == outs[1] and outs[0].count(b"\n") == 16  # header + 15 ticks at 10 Hz over 1.5 s


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_compressed_camera_replays(tmp_path: Path, fmt: str) -> None:
    bag = make_sim_bag(tmp_path / "bag", duration_s=1.0, compressed=fmt)
    with BagReader(bag) as r:
        assert r.topics["/camera/image_raw"].msgtype == "sensor_msgs/msg/CompressedImage"
    assert _replay_cli(bag, tmp_path / "out", "--stamp-source", "header") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["inputs"]["image_encodings"] == {fmt: 30} and summary["inputs"]["rejected_inputs"] == 0
    assert summary["inputs"]["image_stamp_source"] == "header" and summary["inference"]["calls"] == 31


class ShapeRecorder:
    """A policy double for a 224-pixel model that records the size of every frame it is given."""

    input_size = 224

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        self.shapes.append(observation.rgb.shape)
        return ActionChunk(np.zeros((1, 7)), observation.stamp, instruction.text)

    def describe(self) -> str:
        return "shape recorder"


def test_large_jpeg_frames_replay_at_the_node_s_reduced_scale(tmp_path: Path) -> None:
    bag = write_camera_bag(tmp_path / "bag", gradient_frames(1920, 1080), duration_s=0.5, rate_hz=10.0,
                           compressed="jpeg")
    policy = ShapeRecorder()
    replay_bag(bag, tmp_path / "out", NodeConfig(), policy, ReplayOptions(plot=False))
    # 1/2 scale keeps >= 2 x 224 = 448 pixels per side (1/4 would not), as vla_node decodes it
    assert policy.shapes and set(policy.shapes) == {(540, 960, 3)}
