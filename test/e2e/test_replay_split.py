"""Split replay: the policy and control halves joined by the vla_ros/ActionChunk message give the single
node's commands byte for byte; a control-only replay of the recorded chunks gives them again, counts lost,
duplicated, reordered, too old and future chunks, and holds where chunks are missing."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from bag_fixtures import make_sim_bag, tree_digest

import vla_ros.bag.chunk_msgs as chunk_msgs
from vla_ros.bag import replay
from vla_ros.bag.chunk_msgs import decode_chunk, encode_chunk
from vla_ros.bag.io import (
    ACTION_CHUNK,
    NS_PER_S,
    VLA_STATUS,
    BagReader,
    deserialize,
    ns_to_seconds,
    seconds_to_ns,
)
from vla_ros.bag.latency import LatencyModel
from vla_ros.bag.replay_types import ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.bag.writer import BagWriter
from vla_ros.control.split import ChunkEnvelope
from vla_ros.core.config import load_config
from vla_ros.core.types import ACTION_DIM, ActionChunk, Instruction, Observation
from vla_ros.runtime.synthetic import SyntheticPolicy

LATENCY = "fixed:0.05"
CHUNKS = "/vla/action_chunk"  # split.chunk_topic's default, resolved in /
COMMANDS = "/vla/command"
STATUS = "/vla_node/status"
# A start whose frame stamps (30 Hz) include some that `round(seconds * 1e9)` does not bring back bit for bit.
TRICKY_START_NS = 1_700_000_018_566_666_481


def run(bag: Path, out: Path, *extra: str) -> int:
    return replay.main([str(bag), "--out", str(out), "--policy", "synthetic", "--latency-model", LATENCY,
                        "--no-plot", *extra])


def control_only(bag: Path, out: Path, *extra: str) -> int:
    return replay.main([str(bag), "--out", str(out), "--control-only", "--no-plot", *extra])


def rows(out: Path) -> list[dict]:
    with open(out / "commands.csv", newline="") as f:
        return list(csv.DictReader(f))


def topic_messages(out: Path, topic: str) -> list[tuple[int, bytes]]:
    with BagReader(out / "replay") as r:
        return [(t, raw) for _, t, raw in r.messages([topic])]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sim_bag(tmp_path_factory.mktemp("split") / "sim_bag")


@pytest.fixture(scope="module")
def single(sim_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    assert run(sim_bag, out) == 0
    return out


@pytest.fixture(scope="module")
def split(sim_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("split_out") / "out"
    assert run(sim_bag, out, "--split") == 0
    return out


# ----- stamps --------------------------------------------------------------------------------------

def test_stamps_come_back_bit_for_bit_where_the_float_product_does_not() -> None:
    rng = random.Random(7)
    epoch = [rng.randrange(1_700_000_000 * NS_PER_S, 1_800_000_000 * NS_PER_S) for _ in range(20000)]
    small = [rng.randrange(0, 10**15) for _ in range(5000)]  # sim time, bag-relative times
    for t_ns in epoch + small:
        seconds = ns_to_seconds(t_ns)
        assert ns_to_seconds(seconds_to_ns(seconds)) == seconds
    naive = sum(int(round(ns_to_seconds(t) * 1e9)) / NS_PER_S != ns_to_seconds(t) for t in epoch)
    assert naive > 0.01 * len(epoch)  # why the exact conversion: ~6% of epoch stamps would move by an ulp
    with pytest.raises(ValueError):
        seconds_to_ns(float("nan"))


def test_chunk_message_round_trip_keeps_every_field() -> None:
    actions = np.arange(3 * ACTION_DIM, dtype=np.float64).reshape(3, ACTION_DIM) / 7.0
    chunk = ActionChunk(actions, ns_to_seconds(TRICKY_START_NS), "pick up", {"vision": 0.01, "llm": 0.02})
    envelope = decode_chunk(encode_chunk(ChunkEnvelope(chunk, 41, 0.2, "synthetic", "openvla"), "base_link"))
    assert envelope.sequence == 41 and envelope.action_period_s == 0.2
    assert (envelope.model, envelope.family) == ("synthetic", "openvla")
    assert envelope.chunk.stamp == chunk.stamp and envelope.chunk.instruction == "pick up"
    assert np.array_equal(envelope.chunk.actions, actions)
    assert envelope.chunk.timings == {"inference": pytest.approx(0.03)}
    msg = deserialize(encode_chunk(ChunkEnvelope(chunk, 41, 0.2), "base_link"), ACTION_CHUNK)
    assert (msg.chunk_length, msg.action_dim, msg.header.frame_id) == (3, ACTION_DIM, "base_link")
    msg.action_dim = 6
    with pytest.raises(ValueError, match="action_dim"):
        chunk_msgs.envelope_from_message(msg, chunk.stamp)


def test_ros_and_bag_sides_read_each_others_chunks() -> None:
    """rclpy reads the replay's chunk messages as the control node will, and the other way round (CDR padding
    differs between the two writers, so the fields are compared, not the bytes)."""
    pytest.importorskip("rclpy")
    import sys

    from rclpy.serialization import deserialize_message, serialize_message
    from vla_ros.msg import ActionChunk as ActionChunkMsg

    from vla_ros.bag.io import typestore
    from vla_ros.ros.chunk_msg import chunk_from_msg, chunk_to_msg

    actions = np.arange(2 * ACTION_DIM, dtype=np.float64).reshape(2, ACTION_DIM) / 3.0
    stamp = ns_to_seconds(1_700_000_000_123_456_789)
    chunk = ActionChunk(actions, stamp, "go", {"vision": 0.01, "llm": 0.02})
    sent = ChunkEnvelope(chunk, 5, 0.2, "tiny", "openvla-oft")
    for received in (chunk_from_msg(deserialize_message(encode_chunk(sent, "base_link"), ActionChunkMsg)),
                     decode_chunk(bytes(serialize_message(chunk_to_msg(sent, "base_link"))))):
        assert (received.sequence, received.action_period_s, received.model, received.family) == (
            5, 0.2, "tiny", "openvla-oft")
        assert received.chunk.stamp == chunk.stamp and received.chunk.instruction == "go"
        assert np.array_equal(received.chunk.actions, actions)
        assert sum(received.chunk.timings.values()) == sum(chunk.timings.values())
    described = Path(sys.prefix) / "share" / "vla_ros" / "msg" / "ActionChunk.json"
    if described.is_file():
        hashes = {h["type_name"]: h["hash_string"] for h in json.loads(described.read_text())["type_hashes"]}
        assert hashes[ACTION_CHUNK] == typestore().hash_rihs01(ACTION_CHUNK)


# ----- split = one process, byte for byte ---------------------------------------------------------------

def test_split_commands_are_byte_identical_to_the_single_node(single: Path, split: Path) -> None:
    assert (split / "commands.csv").read_bytes() == (single / "commands.csv").read_bytes()
    commands = topic_messages(split, COMMANDS)
    assert commands == topic_messages(single, COMMANDS) and len(commands) == 40
    assert sum(r["hold"] == "0" for r in rows(split)) >= 35  # the arm moved: the comparison means something
    chunks = topic_messages(split, CHUNKS)
    with BagReader(single / "replay") as r:
        assert CHUNKS not in r.topics  # a plain replay's outputs are as before
    with open(split / "inferences.csv", newline="") as f:
        calls = list(csv.DictReader(f))
    sent = [c for c in calls if c["result"] != "unfinished at the end of the bag"]
    assert len(chunks) == len(sent) > 30
    envelopes = [decode_chunk(raw) for _, raw in chunks]
    assert [e.sequence for e in envelopes] == list(range(len(chunks)))
    assert [t for t, _ in chunks] == [int(c["finish_ns"]) for c in sent]
    assert all(e.chunk.timings["inference"] == 0.05 for e in envelopes)  # the simulated latency
    link = summary(split)["link"]
    assert (link["mode"], link["received"], link["lost"], link["duplicates"]) == ("split", len(chunks), 0, 0)
    assert link["clock_offset_s"] == pytest.approx(0.001, abs=1e-6)  # the call started with the instruction
    t_status, raw = topic_messages(split, STATUS)[-1]
    status = deserialize(raw, VLA_STATUS)
    received = sum(t <= t_status for t, _ in chunks)
    assert (status.role, status.chunks_received, status.chunks_lost) == ("control", received, 0)
    single_status = deserialize(topic_messages(single, STATUS)[-1][1], VLA_STATUS)
    assert (single_status.role, single_status.chunks_received) == ("both", 0)


@dataclass
class RampPolicy:
    """Chunks of actions that grow along the chunk: the commands depend on the exact chunk stamps."""

    chunk_len: int = 8

    def describe(self) -> str:
        return "ramp test double"

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        k = np.arange(1, self.chunk_len + 1, dtype=np.float64)[:, None]
        actions = np.zeros((self.chunk_len, ACTION_DIM))
        actions[:, :6] = 0.001 * k * np.array([1.0, -0.5, 0.3, 0.1, 0.2, -0.1])
        actions[:, 6] = 1.0
        return ActionChunk(actions, observation.stamp, instruction.text, {})


def test_chunked_policy_split_is_identical_only_with_exact_stamps(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    bag = make_sim_bag(tmp_path / "bag", start_ns=TRICKY_START_NS)
    config = load_config(None, {})

    def commands(name: str, mode: str) -> bytes:
        options = ReplayOptions(latency=LatencyModel.parse("zero"), mode=mode, plot=False)
        replay_bag(bag, tmp_path / name, config, RampPolicy(), options)
        return (tmp_path / name / "commands.csv").read_bytes()

    single = commands("single", "node")
    assert commands("split", "split") == single
    # the conversions ROS code commonly uses (float product, sec + nanosec * 1e-9) move some stamps by an ulp
    monkeypatch.setattr(chunk_msgs, "seconds_to_ns", lambda s: int(round(s * 1e9)))
    monkeypatch.setattr(chunk_msgs, "ns_to_seconds", lambda n: n // NS_PER_S + (n % NS_PER_S) * 1e-9)
    assert commands("naive", "split") != single


def test_policy_errors_fault_one_process_but_not_the_control_half(sim_bag: Path, tmp_path: Path) -> None:
    config = load_config(None, {})
    states = {}
    for mode in ("node", "split"):
        options = ReplayOptions(latency=LatencyModel.parse(LATENCY), mode=mode, plot=False)
        result = replay_bag(sim_bag, tmp_path / mode, config, SyntheticPolicy(0.0, mode="raise"), options)
        states[mode] = result.summary["control"]["states"]
        assert result.summary["inference"]["errors"] > 0
    assert "FAULT" in states["node"] and "FAULT" not in states["split"]
    assert set(states["split"]) <= {"HOLDING", "ARMED"}


# ----- control only ---------------------------------------------------------------------------------

def test_control_only_replays_the_recorded_chunks_deterministically(single: Path, split: Path,
                                                                     tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert control_only(split / "replay", first) == 0
    assert control_only(split / "replay", second) == 0
    assert tree_digest(first) == tree_digest(second)
    # the chunks arrive when they did: the single node's commands again, byte for byte
    assert (first / "commands.csv").read_bytes() == (single / "commands.csv").read_bytes()
    assert topic_messages(first, COMMANDS) == topic_messages(single, COMMANDS)
    assert topic_messages(first, CHUNKS) == topic_messages(split, CHUNKS)  # the input, copied
    s = summary(first)
    assert s["inference"]["policy"] == f"none: action chunks recorded on {CHUNKS}"
    assert s["link"]["received"] == s["inference"]["calls"] == len(topic_messages(split, CHUNKS))
    assert s["link"]["mode"] == "control"
    with open(split / "inferences.csv", newline="") as f, open(first / "inferences.csv", newline="") as g:
        sent = [(c["finish_ns"], c["result"]) for c in csv.DictReader(f) if "unfinished" not in c["result"]]
        assert sent == [(c["finish_ns"], c["result"]) for c in csv.DictReader(g)]  # every verdict again
    assert s["inference"]["results"]["accepted"] > 30


def test_watch_cameras_false_takes_the_image_gate_from_the_chunks(sim_bag: Path, tmp_path: Path) -> None:
    off = ("--param", "split.watch_cameras=false")
    assert run(sim_bag, tmp_path / "split", "--split", *off) == 0
    table = rows(tmp_path / "split")
    assert sum(r["hold"] == "0" for r in table) >= 30
    assert summary(tmp_path / "split")["link"]["watch_cameras"] is False
    # the control half alone on the same chunks, cameras unwatched: the same commands
    assert control_only(tmp_path / "split" / "replay", tmp_path / "control", *off) == 0
    assert rows(tmp_path / "control") == table
    # the first tick (a frame, no chunk yet): HOLD for want of an image in both modes
    assert table[0]["hold"] == "1" and "IMAGE" in table[0]["intervention_names"].upper()


Chunks = list[tuple[int, bytes]]  # (log time [ns], raw ActionChunk)


def edit_chunks(src: Path, dst: Path, edit: Callable[[Chunks], Chunks]) -> None:
    """Copy a replay's output bag with its chunk messages replaced by edit([(log time, raw), ...])."""
    with BagReader(src) as r, BagWriter(dst) as w:
        for info in r.topics.values():
            w.add_topic(info.name, info.msgtype, info.msgdef, info.digest, info.qos)
        messages = list(r.messages())
        chunks = edit([(t, raw) for topic, t, raw in messages if topic == CHUNKS])
        others = [(t, topic, raw) for topic, t, raw in messages if topic != CHUNKS]
        for t, topic, raw in sorted(others + [(t, CHUNKS, raw) for t, raw in chunks], key=lambda m: m[0]):
            w.write(topic, t, raw)


def test_control_only_counts_link_faults_and_holds_where_chunks_are_missing(single: Path, split: Path,
                                                                             tmp_path: Path) -> None:
    t0 = int(rows(single)[0]["stamp_ns"])
    at = lambda s: t0 + int(s * NS_PER_S)  # noqa: E731
    dropped: list[int] = []

    def faults(chunks: Chunks) -> Chunks:
        kept = [c for c in chunks if not (at(1.0) <= c[0] < at(1.6)) or dropped.append(c[0])]
        i = next(i for i, (t, _) in enumerate(kept) if t >= at(2.5))
        kept.insert(i + 1, kept[i])  # delivered twice
        j = next(j for j, (t, _) in enumerate(kept) if t >= at(3.2))
        (tj, rj), (tk, rk) = kept[j], kept[j + 1]
        kept[j], kept[j + 1] = (tj, rk), (tk, rj)  # the newer one overtakes
        k = next(k for k, (t, _) in enumerate(kept) if t >= at(2.1))
        late = kept.pop(k)
        kept.append((late[0] + int(1.2 * NS_PER_S), late[1]))  # 1.2 s late: older than max_action_age_s
        kept.sort(key=lambda c: c[0])
        last_t, last = kept[-1]
        ahead = decode_chunk(last)  # the policy computer's clock 0.5 s ahead
        ahead = replace(ahead, chunk=replace(ahead.chunk, stamp=ns_to_seconds(last_t) + 0.5))
        kept[-1] = (last_t, encode_chunk(ahead, "base_link"))
        return kept

    edit_chunks(split / "replay", tmp_path / "faulty", faults)
    assert control_only(tmp_path / "faulty", tmp_path / "out") == 0
    link = summary(tmp_path / "out")["link"]
    sent = len(topic_messages(split, CHUNKS))
    assert len(dropped) >= 10
    assert link["received"] == sent - len(dropped) + 1
    assert (link["lost"], link["duplicates"], link["reordered"]) == (len(dropped), 1, 2)
    assert (link["rejected_old"], link["rejected_future"]) == (1, 1)
    assert "clock" in link["clock_problem"] and "future" in link["clock_problem"]
    assert link["clock_offset_s"] == pytest.approx(-0.5, abs=0.06)
    t_status, raw = topic_messages(tmp_path / "out", STATUS)[-1]
    assert t_status < int(rows(single)[-1]["stamp_ns"])  # the last status is older than the future chunk
    status = deserialize(raw, VLA_STATUS)
    assert (status.chunks_lost, status.chunks_duplicated, status.chunks_reordered) == (len(dropped), 1, 2)
    assert (status.rejected_chunks_old, status.rejected_chunks_future) == (1, 0)
    assert status.role == "control" and status.clock_warning == ""
    original, faulty = rows(single), rows(tmp_path / "out")
    assert [r for r in faulty if int(r["stamp_ns"]) < at(1.0)] == [r for r in original
                                                                    if int(r["stamp_ns"]) < at(1.0)]
    gap = [(o, f) for o, f in zip(original, faulty) if at(1.3) <= int(o["stamp_ns"]) < at(1.6)]
    assert gap and all(o["hold"] == "0" and f["hold"] == "1" for o, f in gap)  # HOLD, not a guess
    assert all(float(f[axis]) == 0.0 for _, f in gap for axis in ("dx", "dy", "dz"))
    assert any(f["hold"] == "0" for f in faulty if at(1.8) <= int(f["stamp_ns"]) < at(2.0))  # moving again


def test_control_only_counts_a_restarted_policy(single: Path, split: Path, tmp_path: Path) -> None:
    t_restart = int(rows(single)[0]["stamp_ns"]) + int(2.6 * NS_PER_S)

    def restart(chunks: Chunks) -> Chunks:
        first = next(i for i, (t, _) in enumerate(chunks) if t >= t_restart)
        again = [(t, encode_chunk(replace(decode_chunk(raw), sequence=i), "base_link"))
                 for i, (t, raw) in enumerate(chunks[first:])]  # numbered from 0 again
        return chunks[:first] + again

    edit_chunks(split / "replay", tmp_path / "restarted", restart)
    assert control_only(tmp_path / "restarted", tmp_path / "out") == 0
    link = summary(tmp_path / "out")["link"]
    assert (link["restarts"], link["lost"], link["duplicates"], link["reordered"]) == (1, 0, 0, 0)
    assert rows(tmp_path / "out") == rows(single)  # the chunks kept coming: nothing else changes


def test_control_only_needs_the_chunk_topic_and_no_policy_options(sim_bag: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    assert control_only(sim_bag, tmp_path / "a") == 2
    err = capsys.readouterr().err
    assert "split.chunk_topic" in err and CHUNKS in err
    assert control_only(sim_bag, tmp_path / "b", "--latency-model", "fixed:0.1") == 2
    assert "--latency-model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        control_only(sim_bag, tmp_path / "c", "--split")
    assert not any(tmp_path.iterdir())
