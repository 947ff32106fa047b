"""Closed-loop harness (ControlCore + safety filter on sim time), eval-demo CLI and demo dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_ros.core.limits import SafetyLimits
from vla_ros.core.types import ActionChunk
from vla_ros.sim import evaluate
from vla_ros.sim.behaviour import image_following, instruction_following
from vla_ros.sim.dataset import (
    DATASET_KEY,
    STATS_FILE,
    DemoDataset,
    NoiseSpec,
    action_statistics,
    collect,
    normalize_actions,
)
from vla_ros.sim.evaluate import results_table
from vla_ros.sim.expert import expert_action
from vla_ros.sim.expert_policy import ExpertPolicy, NoisyExpertPolicy
from vla_ros.sim.harness import SIM_GRIPPER_SPEED_PER_S, SimHarness, episode_plan
from vla_ros.sim.tasks import Task
from vla_ros.sim.world import WorldState


def test_expert_succeeds_on_both_task_kinds_through_the_safety_filter():
    results = evaluate.evaluate(ExpertPolicy, episodes=40, seed=100)
    table = results_table(results)
    assert table["pick"]["episodes"] == 20 and table["move"]["episodes"] == 20
    assert table["pick"]["success_rate"] >= 0.95
    assert table["move"]["success_rate"] >= 0.95


def test_expert_still_succeeds_when_it_sees_positions_a_centimetre_off():
    """What makes it imitable: a policy that reads positions from 112 px images errs by about 1 cm."""
    noisy = lambda world: NoisyExpertPolicy(world, noise_m=0.01, seed=3)  # noqa: E731
    table = results_table(evaluate.evaluate(noisy, episodes=20, seed=100))
    assert table["pick"]["success_rate"] >= 0.8 and table["move"]["success_rate"] >= 0.9, table
    biased = lambda world: NoisyExpertPolicy(world, noise_m=0.005, bias_m=0.005, seed=3)  # noqa: E731
    assert results_table(evaluate.evaluate(biased, episodes=20, seed=100))["pick"]["success_rate"] >= 0.8


def test_the_camera_never_sees_fingers_half_closed_on_nothing_held():
    """With the simulator's gripper speed a close ends within one action: the next frame shows the
    object held (or the fingers shut on nothing), never the ambiguous half-way state."""
    def gripper_at_each_call(harness: SimHarness, seeds) -> tuple[list[tuple[float, int]], list[bool]]:
        """(opening, held index) at every policy call of expert pick episodes, and each one's success."""
        seen: list[tuple[float, int]] = []

        def record(*_) -> None:
            seen.append((harness.world.state.gripper_opening, harness.world.state.held))

        successes = [harness.run_episode(ExpertPolicy(harness.world), harness.reset(seed, "pick"),
                                         on_action=record).success for seed in seeds]
        return seen, successes

    def half_closed_on_nothing(opening: float, held: int) -> bool:
        return held < 0 and 0.3 < opening < 0.95

    harness = SimHarness()
    assert harness.limits.max_gripper_speed_per_s == SIM_GRIPPER_SPEED_PER_S
    seen, successes = gripper_at_each_call(harness, range(6))
    assert all(successes)
    assert any(held >= 0 for _, held in seen)
    assert [opening for opening, held in seen if half_closed_on_nothing(opening, held)] == []
    slow = SimHarness(SafetyLimits(max_gripper_speed_per_s=2.0))  # the default robot limit: it does
    assert any(half_closed_on_nothing(opening, held) for opening, held in gripper_at_each_call(slow, [0])[0])


def test_noisy_expert_never_changes_the_true_state():
    harness = SimHarness()
    task = harness.reset(5, "pick")
    before = harness.world.state.to_array()
    policy = NoisyExpertPolicy(harness.world, noise_m=0.05, bias_m=0.05)
    from vla_ros.core.types import Instruction, Observation

    frame = Observation(np.zeros((4, 4, 3), np.uint8), 0.0)
    chunk = policy.predict(frame, Instruction(task.instruction, 0.0))
    np.testing.assert_array_equal(harness.world.state.to_array(), before)
    assert chunk.actions.shape == (1, 7) and np.isfinite(chunk.actions).all()


def test_commands_reaching_the_world_respect_the_limits():
    limits = SafetyLimits(max_linear_velocity_mps=0.1)
    harness = SimHarness(limits)
    task = harness.reset(3, "pick")
    result = harness.run_episode(ExpertPolicy(harness.world), task, record_commands=True, max_actions=60)
    commands = np.array(result.commands)
    steps = np.linalg.norm(commands[:, :3], axis=1)
    assert steps.max() <= 0.1 * harness.tick_period_s + 1e-9  # the expert asks for up to 0.24 m/s
    assert result.interventions > 0
    assert result.success  # slower, but the closed loop still gets there


class NanPolicy:
    def predict(self, observation, instruction):
        return ActionChunk(np.full((1, 7), np.nan), observation.stamp, instruction.text)

    def describe(self):
        return "nan"


def test_a_policy_producing_nan_never_moves_the_robot():
    harness = SimHarness()
    task = harness.reset(0, "move")
    start = harness.world.state.gripper_position.copy()
    result = harness.run_episode(NanPolicy(), task, max_actions=5, record_commands=True)
    assert not result.success and result.actions == 5
    np.testing.assert_array_equal(harness.world.state.gripper_position, start)


class StraightAheadPolicy:
    """Ignores image and instruction: always forward and down, then closes (a blind policy)."""

    def predict(self, observation, instruction):
        return ActionChunk(np.array([[0.02, 0.0, -0.02, 0, 0, 0, 0.0]]), observation.stamp, instruction.text)

    def describe(self):
        return "blind"


def test_behaviour_checks_pass_for_the_expert_and_fail_for_a_blind_policy():
    assert all(c["followed"] for c in instruction_following(ExpertPolicy, range(3)))
    assert all(c["followed"] for c in image_following(ExpertPolicy, range(3)))
    blind = lambda world: StraightAheadPolicy()  # noqa: E731
    assert not all(c["followed"] for c in instruction_following(blind, range(3), max_actions=10))
    assert not all(c["followed"] for c in image_following(blind, range(3)))


class FailingPolicy:
    def predict(self, observation, instruction):
        raise FloatingPointError("the model produced NaN/Inf logits")

    def describe(self):
        return "failing"


def test_a_failing_policy_holds_the_robot_and_is_reported():
    harness = SimHarness()
    task = harness.reset(1, "pick")
    start = harness.world.state.gripper_position.copy()
    result = harness.run_episode(FailingPolicy(), task, max_actions=3)
    assert result.policy_errors == 3 and "NaN/Inf" in result.last_error
    np.testing.assert_array_equal(harness.world.state.gripper_position, start)


def test_action_period_must_be_whole_ticks():
    with pytest.raises(ValueError, match="whole number"):
        SimHarness(control_rate_hz=12.0, action_period_s=0.2)


def test_episode_plan_is_fixed_by_the_seed():
    assert episode_plan(4, 10, ("pick", "move")) == [(10, "pick"), (11, "move"), (12, "pick"),
                                                              (13, "move")]


def test_eval_demo_cli_with_the_expert(tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = evaluate.main(["--policy", "expert", "--episodes", "4", "--seed", "5", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "pick" in printed and "move" in printed and "rate" in printed
    payload = json.loads(out.read_text())
    assert payload["summary"]["all"]["episodes"] == 4
    assert [e["seed"] for e in payload["episodes"]] == [5, 6, 7, 8]
    assert payload["summary"]["all"]["success_rate"] == 1.0


def test_eval_demo_cli_rejects_bad_arguments(capsys):
    assert evaluate.main(["--policy", "expert", "--tasks", "dance"]) == 2
    assert "unknown task kind" in capsys.readouterr().err
    assert evaluate.main(["--policy", "expert", "--episodes", "0"]) == 2
    assert evaluate.main(["--policy", "expert", "--robot-profile", "no_such_robot"]) == 2
    assert evaluate.main(["--checkpoint", "/nonexistent/checkpoint", "--episodes", "1"]) == 2
    assert "does not exist" in capsys.readouterr().err


# ----------------------------------------------------------------------------- dataset
@pytest.fixture(scope="module")
def small_dataset() -> DemoDataset:
    return collect(12, seed=3, image_size=64)


def test_collected_samples_pair_frames_instructions_and_clean_expert_actions(small_dataset):
    d = small_dataset
    n = len(d)
    assert n > 12 * 3
    assert d.images.shape == (n, 64, 64, 3) and d.images.dtype == np.uint8
    assert d.actions.shape == (n, 7) and d.actions.dtype == np.float32
    assert len(d.instructions) == len(d.kinds) == n
    assert set(d.kinds) == {"pick", "move"}
    assert np.abs(d.actions[:, :3]).max() <= 0.028 + 1e-6
    assert set(np.unique(d.actions[:, 6])) <= {0.0, 1.0}
    pick = np.array(d.kinds) == "pick"
    assert (d.actions[pick, 6] == 0.0).any() and (d.actions[~pick, 6] == 1.0).all()


def test_each_frame_keeps_its_world_state_and_the_named_target(small_dataset):
    d = small_dataset
    assert d.states.shape == (len(d), 41) and d.targets.shape == (len(d),)
    for row in range(0, len(d), 7):
        state = WorldState.from_array(d.states[row])
        assert 0 <= d.targets[row] < len(state.objects)
        assert state.objects[d.targets[row]].name in d.instructions[row]  # the instruction names the target
        # the recorded label is the expert's action in the recorded state
        task = Task(d.kinds[row], int(d.targets[row]), d.instructions[row])
        np.testing.assert_allclose(expert_action(state, task)[:3], d.actions[row, :3], atol=1e-6)


def test_relabelled_samples_repeat_a_frame_with_another_task_and_its_expert_action(small_dataset):
    d = small_dataset
    same_frame = [row for row in range(1, len(d)) if np.array_equal(d.images[row], d.images[row - 1])
                  and d.episode[row] == d.episode[row - 1]]
    frames = len(d) - len(same_frame)
    assert 0.35 < len(same_frame) / frames < 0.65  # relabel_probability 0.5
    for row in same_frame:
        first, second = (d.kinds[row - 1], d.targets[row - 1]), (d.kinds[row], d.targets[row])
        assert first != second  # another target or another kind
        state = WorldState.from_array(d.states[row])
        task = Task(d.kinds[row], int(d.targets[row]), d.instructions[row])
        assert state.objects[task.target].name in task.instruction
        expected = expert_action(state, task)  # from the float32 state: may round to the next quantum
        np.testing.assert_allclose(expected[:3], d.actions[row, :3], atol=0.004 + 1e-6)
        assert expected[6] == d.actions[row, 6]
    plain = collect(4, seed=3, image_size=64, noise=NoiseSpec(relabel_probability=0.0))
    tasks = {(int(e), k, int(t)) for e, k, t in zip(plain.episode, plain.kinds, plain.targets)}
    assert len(tasks) == len(set(plain.episode.tolist()))  # one task per episode, no extra samples


def test_statistics_have_the_openvla_layout(small_dataset):
    stats = small_dataset.statistics()
    assert list(stats) == [DATASET_KEY]
    entry = stats[DATASET_KEY]
    action = entry["action"]
    for key in ("mean", "std", "max", "min", "q01", "q99", "mask"):
        assert len(action[key]) == 7, key
    assert action["mask"] == [True] * 6 + [False]
    assert np.all(np.array(action["q01"]) <= np.array(action["q99"]))
    assert entry["num_transitions"] == len(small_dataset)
    assert entry["num_trajectories"] == len(set(small_dataset.episode.tolist()))
    assert set(entry["proprio"]) == {"mean", "std", "max", "min", "q01", "q99"}


def test_normalisation_maps_q01_q99_to_minus_one_one_and_leaves_the_gripper():
    stats = action_statistics(np.array([[0.0, -1, 0, 0, 0, 0, 0.0], [0.1, 1, 0, 0, 0, 0, 1.0]] * 50), 1)
    action = stats["action"]
    normalised = normalize_actions(np.array([action["q01"], action["q99"]]), action)
    np.testing.assert_allclose(normalised[:, :2], [[-1, -1], [1, 1]])
    np.testing.assert_array_equal(normalised[:, 2:6], 0.0)  # constant dimensions map to 0
    np.testing.assert_array_equal(normalised[:, 6], [0.0, 1.0])  # gripper masked: unchanged
    with pytest.raises(ValueError):
        action_statistics(np.array([[np.nan] * 7]), 1)


def test_collection_does_not_depend_on_the_number_of_workers(small_dataset):
    again = collect(12, seed=3, image_size=64, workers=2)
    np.testing.assert_array_equal(again.actions, small_dataset.actions)
    np.testing.assert_array_equal(again.images, small_dataset.images)
    assert again.instructions == small_dataset.instructions
    np.testing.assert_array_equal(again.episode, small_dataset.episode)


def test_dataset_round_trips_and_rejects_corrupt_files(small_dataset, tmp_path):
    small_dataset.save(tmp_path)
    loaded = DemoDataset.load(tmp_path)
    np.testing.assert_array_equal(loaded.images, small_dataset.images)
    np.testing.assert_array_equal(loaded.actions, small_dataset.actions)
    np.testing.assert_array_equal(loaded.states, small_dataset.states)
    np.testing.assert_array_equal(loaded.targets, small_dataset.targets)
    assert loaded.instructions == small_dataset.instructions
    stats = json.loads((tmp_path / STATS_FILE).read_text())
    assert stats[DATASET_KEY]["num_transitions"] == len(small_dataset)
    (tmp_path / "demo_data.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read demo data"):
        DemoDataset.load(tmp_path)


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`vla-ros eval-demo ... | head -1`: no BrokenPipeError traceback, exit status 141 (SIGPIPE)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "vla_ros.cli", "eval-demo", "--policy", "expert", "--episodes", "50"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader is gone
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, stderr
    assert first.startswith(b"eval-demo:") and "Traceback" not in stderr
