"""Offline replay of simulator bags: determinism, outputs, compare mode, latency models, failures."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from bag_fixtures import CAMERA_HZ, DURATION_S, make_sim_bag, tree_digest

from vla_ros.bag import replay
from vla_ros.bag.commands import DOF_NAMES, read_commands_csv
from vla_ros.bag.compare import parse_tolerance
from vla_ros.bag.io import (
    END_EFFECTOR_COMMAND,
    POSE_STAMPED,
    VLA_STATUS,
    BagReader,
    deserialize,
    header_msg,
    msg_class,
    read_metadata,
)
from vla_ros.bag.latency import LatencyModel
from vla_ros.bag.replay_types import CompareSpec, ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.bag.writer import BagWriter
from vla_ros.core.config import load_config
from vla_ros.runtime.synthetic import SyntheticPolicy

LATENCY = "fixed:0.05"  # a 20 Hz model; the tests that need motion use it
N_TICKS = 40  # 10 Hz from the first frame (t=0) to the last (t=3.967 s)


def run(bag: Path, out: Path, *extra: str, plot: bool = False) -> int:
    args = [str(bag), "--out", str(out), "--policy", "synthetic", "--latency-model", LATENCY, *extra]
    return replay.main(args if plot else [*args, "--no-plot"])


def rows(out: Path) -> list[dict]:
    with open(out / "commands.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sim_bag(tmp_path_factory.mktemp("sim") / "sim_bag")


@pytest.fixture(scope="module")
def reference(sim_bag: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref"
    assert run(sim_bag, out, plot=True) == 0
    return out


def test_same_inputs_give_byte_identical_outputs(sim_bag: Path, reference: Path, tmp_path: Path) -> None:
    assert run(sim_bag, tmp_path / "again", plot=True) == 0
    first, second = tree_digest(reference), tree_digest(tmp_path / "again")
    assert sorted(first) == ["commands.csv", "inferences.csv", "plot.png", "replay/metadata.yaml",
                             "replay/replay.mcap", "summary.json"]
    assert first == second


def test_commands_follow_the_bag_clock_and_the_instruction_change(reference: Path) -> None:
    table = rows(reference)
    assert len(table) == N_TICKS
    stamps = np.array([int(r["stamp_ns"]) for r in table])
    assert np.all(np.diff(stamps) == 100_000_000)  # 10 Hz on the bag's clock
    t_change = DURATION_S * 0.5
    before = [r for r in table if float(r["t_s"]) < t_change + 0.05]
    after = [r for r in table if float(r["t_s"]) > t_change + 0.05]
    assert {r["instruction"] for r in before[1:]} == {"pick up the red cube"}
    assert {r["instruction"] for r in after} == {"put the blue ball in the bowl"}
    moving = [r for r in table if r["hold"] == "0"]
    assert len(moving) >= N_TICKS - 3 and all(r["state"] == "ARMED" for r in moving)
    # the first instruction comes 1 ms after the first frame and tick
    assert table[0]["hold"] == "1" and table[0]["intervention_names"] == "NO_INSTRUCTION"
    # the synthetic policy moves along a fixed direction per instruction: the direction changes once
    v = np.array([[float(r[k]) for k in ("dx", "dy", "dz")] for r in moving])
    directions = {tuple(np.round(x / np.linalg.norm(x), 3)) for x in v if np.linalg.norm(x) > 1e-6}
    assert len(directions) == 2


def test_summary_agrees_with_the_csv(reference: Path) -> None:
    s = json.loads((reference / "summary.json").read_text())
    table = rows(reference)
    assert s["commands"]["total"] == len(table) == s["control"]["ticks"]
    assert s["commands"]["hold"] == sum(r["hold"] == "1" for r in table)
    names = [n for r in table for n in r["intervention_names"].split("|") if n]
    assert s["interventions"]["by_rule"] == {n: names.count(n) for n in sorted(set(names))}
    assert s["interventions"]["commands_changed"] == sum(r["interventions"] != "0" for r in table)
    assert [c["text"] for c in s["inputs"]["instruction_changes"]] == ["pick up the red cube",
                                                                       "put the blue ball in the bowl"]
    assert s["inputs"]["images"] == int(DURATION_S * CAMERA_HZ)
    assert s["inputs"]["image_rate_hz"] == pytest.approx(CAMERA_HZ, rel=0.02)
    with open(reference / "inferences.csv", newline="") as f:
        calls = list(csv.DictReader(f))
    assert s["inference"]["calls"] == len(calls) > 0
    assert s["inference"]["latency_s"]["p50"] == pytest.approx(0.05)
    assert s["action_age_s"]["p50"] >= 0.05 and s["inference"]["deterministic"] is True


def test_output_bag_is_complete_and_readable_by_mcap_decoder(reference: Path, sim_bag: Path) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    bag = reference / "replay"
    with BagReader(bag) as r, BagReader(sim_bag) as src:
        assert set(r.topics) == {"/camera/image_raw", "/vla/instruction", "/vla/command", "/vla_node/status"}
        assert r.topics["/camera/image_raw"].count == src.topics["/camera/image_raw"].count
        copied = [raw for _, _, raw in r.messages(["/camera/image_raw"])]
        original = [raw for _, _, raw in src.messages(["/camera/image_raw"])]
        assert copied == original
        assert r.topics["/vla/command"].count == N_TICKS
        assert r.topics["/vla_node/status"].count == int((r.end_ns - r.start_ns) / 1e9 * 2)
        assert r.start_ns == src.start_ns
    meta = read_metadata(bag)
    assert meta["storage_identifier"] == "mcap" and meta["version"] == 9
    counts = {t["topic_metadata"]["name"]: t["message_count"] for t in meta["topics_with_message_count"]}
    assert counts["/vla/command"] == N_TICKS and sum(counts.values()) == meta["message_count"]
    assert meta["custom_data"]["source_bag"] == "sim_bag"
    table = rows(reference)
    decoded = []
    with open(bag / "replay.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        topics = ["/vla/command", "/vla_node/status"]
        for schema, _, message, msg in reader.iter_decoded_messages(topics=topics):
            if schema.name == END_EFFECTOR_COMMAND:
                assert "uint32 TRANSLATION_STEP=64" in schema.data.decode()
                decoded.append((message.log_time, msg))
            else:
                assert schema.name == VLA_STATUS and msg.state_name in ("ARMED", "HOLDING")
    assert len(decoded) == N_TICKS
    for (log_time, msg), row in zip(decoded, table):
        assert log_time == int(row["stamp_ns"])
        assert msg.translation.x == float(row["dx"]) and msg.gripper == float(row["gripper"])
        assert msg.hold == (row["hold"] == "1") and msg.header.frame_id == load_config().control.frame_id


def test_plot_is_a_png_of_the_expected_size(reference: Path) -> None:
    import matplotlib.image

    data = (reference / "plot.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(reference / "plot.png")
    assert image.shape[:2] == (13 * 90, 11 * 90)
    assert image[..., :3].std() > 0.05  # not a blank canvas


def test_compare_with_itself_passes(sim_bag: Path, reference: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert run(sim_bag, tmp_path / "same", "--compare", str(reference)) == 0
    out = capsys.readouterr().out
    assert "result: PASS" in out and f"matched {N_TICKS} ticks (exact stamps)" in out
    report = json.loads((tmp_path / "same" / "compare.json").read_text())
    assert report["regression"] is False and all(r["max_abs"] == 0.0 for r in report["dof"])


def test_compare_catches_a_changed_safety_limit(sim_bag: Path, reference: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    rc = run(sim_bag, tmp_path / "tight", "--compare", str(reference),
             "--param", "safety.max_translation_step_m=0.0005")
    out = capsys.readouterr().out
    assert rc == 1 and "result: REGRESSION" in out
    report = json.loads((tmp_path / "tight" / "compare.json").read_text())
    failing = {r["dof"] for r in report["dof"] if not r["ok"]}
    assert failing and failing <= {"dx", "dy", "dz"}
    assert "TRANSLATION_STEP" in json.loads((tmp_path / "tight" / "summary.json").read_text())[
        "interventions"]["by_rule"]
    # a loose enough tolerance accepts the same difference
    assert run(sim_bag, tmp_path / "loose", "--compare", str(reference), "--tolerance", "trans=0.01",
               "--param", "safety.max_translation_step_m=0.0005") == 0


def test_compare_catches_a_perturbed_policy(sim_bag: Path, reference: Path, tmp_path: Path) -> None:
    config = load_config()
    ref = read_commands_csv(reference / "commands.csv")
    spec = CompareSpec(ref, exact=True, tolerance=parse_tolerance("1e-6"))
    options = ReplayOptions(latency=LatencyModel.parse(LATENCY), plot=False, compare=spec)
    same = replay_bag(sim_bag, tmp_path / "same", config, SyntheticPolicy(latency_s=0.0), options)
    assert same.compare is not None and not same.compare.regression
    perturbed = replay_bag(sim_bag, tmp_path / "perturbed", config,
                           SyntheticPolicy(latency_s=0.0, step_m=0.0042), options)
    assert perturbed.compare is not None and perturbed.compare.regression
    failing = {r["dof"] for r in perturbed.compare.rows if not r["ok"]}
    assert failing == {"dx", "dy", "dz"}
    assert "dx" in (tmp_path / "perturbed" / "compare.txt").read_text()


def test_compare_against_a_command_topic_in_the_bag(reference: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    recorded = reference / "replay"  # has /vla/command: treat it as a recorded session
    assert run(recorded, tmp_path / "vs_topic", "--compare", "/vla/command") == 0
    out = capsys.readouterr().out
    assert "(nearest stamps)" in out and f"matched {N_TICKS} ticks" in out and "PASS" in out
    assert run(recorded, tmp_path / "vs_topic_bad", "--compare", "topic:/vla/command",
               "--param", "safety.max_rotation_step_rad=0.0",
               "--param", "safety.max_translation_step_m=0.0") == 1
    assert run(recorded, tmp_path / "no_topic", "--compare", "/teleop/command") == 2
    assert "neither a replay output directory nor a topic" in capsys.readouterr().err


def test_latency_models(sim_bag: Path, reference: Path, tmp_path: Path) -> None:
    # trace: the reference's latencies replayed give the reference's commands exactly
    assert run(sim_bag, tmp_path / "trace", "--latency-model", f"trace:{reference}") == 0
    assert (tmp_path / "trace" / "commands.csv").read_bytes() == (reference / "commands.csv").read_bytes()
    assert run(sim_bag, tmp_path / "slow", "--latency-model", "fixed:0.3") == 0
    slow = json.loads((tmp_path / "slow" / "summary.json").read_text())
    assert slow["action_age_s"]["min"] >= 0.3 - 1e-6 and slow["inference"]["rate_hz"] < 4.0
    assert run(sim_bag, tmp_path / "measured", "--latency-model", "measured") == 0
    measured = json.loads((tmp_path / "measured" / "summary.json").read_text())
    assert measured["inference"]["deterministic"] is False and measured["inference"]["calls"] > 0
    with pytest.raises(ValueError, match="fixed:SECONDS"):
        LatencyModel.parse("slow")


def test_instruction_change_while_inferring_drops_the_stale_chunk(sim_bag: Path, tmp_path: Path) -> None:
    assert run(sim_bag, tmp_path / "slow", "--latency-model", "fixed:0.4") == 0
    with open(tmp_path / "slow" / "inferences.csv", newline="") as f:
        results = [r["result"] for r in csv.DictReader(f)]
    assert any(r.startswith("rejected") and "instruction" in r for r in results)


@pytest.mark.parametrize("mode", ["raise", "nan", "bad_shape"])
def test_policy_failures_hold_with_fault(sim_bag: Path, tmp_path: Path, mode: str) -> None:
    options = ReplayOptions(latency=LatencyModel.parse(LATENCY), plot=False)
    policy = SyntheticPolicy(latency_s=0.0, mode=mode)
    result = replay_bag(sim_bag, tmp_path / mode, load_config(), policy, options)
    table = rows(tmp_path / mode)
    assert all(r["hold"] == "1" for r in table)
    assert all("FAULT" in r["intervention_names"] for r in table[1:])
    results = result.summary["inference"]["results"]
    assert set(results) <= {"error", "skipped", "unfinished at the end of the bag"}
    assert result.summary["inference"]["errors"] == results["error"] > 0
    with BagReader(tmp_path / mode / "replay") as r:
        statuses = [deserialize(raw, VLA_STATUS) for _, _, raw in r.messages(["/vla_node/status"])]
    assert statuses[-1].state_name == "FAULT" and statuses[-1].policy_errors > 0
    assert statuses[-1].last_error


def test_slow_policy_times_out_into_fault(sim_bag: Path, tmp_path: Path) -> None:
    assert run(sim_bag, tmp_path / "timeout", "--latency-model", "fixed:0.2",
               "--param", "policy.max_inference_s=0.1") == 0
    table = rows(tmp_path / "timeout")
    assert all(r["hold"] == "1" for r in table) and "FAULT" in table[-1]["intervention_names"]
    with open(tmp_path / "timeout" / "inferences.csv", newline="") as f:
        assert {r["result"] for r in csv.DictReader(f)} <= {"timeout", "unfinished at the end of the bag"}


def test_estop_in_the_bag_latches_hold(tmp_path: Path) -> None:
    bag = make_sim_bag(tmp_path / "estop", duration_s=3.0, estop_at_s=1.5)
    assert run(bag, tmp_path / "out") == 0
    table = rows(tmp_path / "out")
    before = [r for r in table if float(r["t_s"]) < 1.5]
    after = [r for r in table if float(r["t_s"]) > 1.5]
    assert any(r["hold"] == "0" for r in before)
    assert after and all(r["hold"] == "1" and "ESTOP" in r["intervention_names"] for r in after)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["inputs"]["estops"] == 1


def test_disarmed_replay_holds(sim_bag: Path, tmp_path: Path) -> None:
    assert run(sim_bag, tmp_path / "out", "--disarmed") == 0
    table = rows(tmp_path / "out")
    assert all(r["hold"] == "1" and "DISARMED" in r["intervention_names"] for r in table)


def test_fixed_instruction_for_a_bag_without_instructions(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    bag = make_sim_bag(tmp_path / "silent", duration_s=1.0, instruction_topic="")
    assert run(bag, tmp_path / "out") == 2
    assert "no instruction topic '/vla/instruction'" in capsys.readouterr().err
    assert run(bag, tmp_path / "out", "--instruction", "pick up the red cube") == 0
    assert {r["instruction"] for r in rows(tmp_path / "out")} == {"pick up the red cube"}


def test_config_file_and_namespace_pick_the_topics(sim_bag: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "vla.yaml"
    cfg.write_text(yaml.safe_dump({"vla_node": {"ros__parameters": {
        "topics": {"camera": "image_raw", "instruction": "/vla/instruction", "command": "cmd"},
        "control": {"control_rate_hz": 20.0}}}}))
    assert run(sim_bag, tmp_path / "out", "--config", str(cfg), "--namespace", "/camera") == 0
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["commands"]["topic"] == "/camera/cmd" and s["commands"]["total"] == 2 * N_TICKS
    assert run(sim_bag, tmp_path / "bad", "--param", "control.control_rate_hz=0") == 2


def test_progress_bar_only_when_asked(sim_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert run(sim_bag, tmp_path / "quiet") == 0
    assert "replay [" not in capsys.readouterr().err  # stderr is not a terminal under pytest
    assert run(sim_bag, tmp_path / "loud", "--progress") == 0
    err = capsys.readouterr().err
    assert "replay [" in err and "100%" in err


def test_tolerance_parsing() -> None:
    tol = parse_tolerance("trans=0.001,rot=0.01,gripper=0.5")
    assert list(tol) == [0.001] * 3 + [0.01] * 3 + [0.5]
    assert list(parse_tolerance("0.2")) == [0.2] * 7
    assert parse_tolerance("dyaw=3")[DOF_NAMES.index("dyaw")] == 3.0
    for bad in ("x=1", "dx=-1", "dx=abc", "dx=nan"):
        with pytest.raises(ValueError):
            parse_tolerance(bad)


def test_pose_topic_feeds_the_workspace_rules(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def poses(writer: BagWriter) -> None:
        point, quat = msg_class("geometry_msgs/msg/Point"), msg_class("geometry_msgs/msg/Quaternion")
        pose_cls = msg_class("geometry_msgs/msg/Pose")
        for i in range(45):  # 30 Hz for 1.5 s, the gripper parked just under the workspace ceiling
            t = 1_700_000_000 * 10**9 + i * 33_333_333 + 500_000
            msg = msg_class(POSE_STAMPED)(header=header_msg(t, "base"), pose=pose_cls(
                position=point(x=0.4, y=0.0, z=0.2995), orientation=quat(x=0.0, y=0.0, z=0.0, w=1.0)))
            writer.write_msg("/arm/pose", t, msg)

    bag = make_sim_bag(tmp_path / "posed", duration_s=1.5, extra=poses,
                       instructions=((0.0, "raise the arm"),))  # the synthetic policy goes up (+z) here
    base = ["--param", "topics.pose=/arm/pose", "--param", "safety.require_pose=true",
            "--param", "safety.workspace_max_m=[0.8, 0.8, 0.3]"]
    assert run(bag, tmp_path / "out", *base) == 0
    table = rows(tmp_path / "out")
    assert not any("STALE_POSE" in r["intervention_names"] for r in table[2:])
    assert all(float(r["dz"]) <= 0.0005 + 1e-12 for r in table)  # never past the ceiling
    assert any("WORKSPACE" in r["intervention_names"] for r in table)
    no_pose = make_sim_bag(tmp_path / "unposed", duration_s=1.0)
    assert run(no_pose, tmp_path / "out2", *base) == 2
    assert "pose (safety.require_pose is set) topic '/arm/pose'" in capsys.readouterr().err


class FlakyPolicy(SyntheticPolicy):
    """The synthetic policy, failing on every fourth frame (by image stamp, so order does not matter)."""

    def predict(self, observation, instruction):  # noqa: ANN001, ANN201 - the Policy protocol
        if round(observation.stamp * CAMERA_HZ) % 4 == 0:
            raise RuntimeError("flaky")
        return super().predict(observation, instruction)


@pytest.mark.parametrize("latency", ["zero", "fixed:0.05", "fixed:0.3"])
def test_skipping_superseded_calls_saves_work(sim_bag: Path, tmp_path: Path, latency: str) -> None:
    """Lazy replay skips calls replaced before a tick; exact when calls are slower than the ticks."""
    config = load_config()
    outs = {}
    for skip in (True, False):
        options = ReplayOptions(latency=LatencyModel.parse(latency), plot=False, skip_superseded=skip)
        policy = FlakyPolicy(latency_s=0.0, chunk_len=1)  # one-action chunks: every frame wants a call
        result = replay_bag(sim_bag, tmp_path / str(skip), config, policy, options)
        outs[skip] = result.summary["inference"]
        assert result.summary["interventions"]["by_rule"].get("FAULT", 0) > 0  # the failures do matter
    lazy, eager = (tmp_path / name / "commands.csv" for name in ("True", "False"))
    if latency == "fixed:0.3":  # no chunk is replaced between two ticks: identical commands
        assert lazy.read_bytes() == eager.read_bytes()
    else:  # a replaced chunk still moves the arm until its replacement: lazy replay loses that share
        assert lazy.read_bytes() != eager.read_bytes()
    assert outs[True]["calls"] == outs[False]["calls"] == outs[False]["policy_runs"]
    if latency != "fixed:0.3":  # faster than the 10 Hz ticks: most chunks are replaced before use
        assert outs[True]["policy_runs"] < 0.7 * outs[True]["calls"]
