"""The simulator with the split deployment's link between the policy and control halves (SplitLink)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vla_ros.control.netem import LinkFaults
from vla_ros.core.types import ActionChunk, Instruction, Observation
from vla_ros.sim import evaluate
from vla_ros.sim.expert_policy import ExpertPolicy
from vla_ros.sim.harness import EpisodeResult, SimHarness, SplitLink

SEEDS = (3, 4, 5)


class OpenLoopPolicy:
    """Call k returns one fixed action of its own, whatever it sees: commands then depend only on timing."""

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        k = self.calls
        self.calls += 1
        action = np.array([0.001 * (1 + k % 3), 0.0005 * (-1) ** k, 0.0, 0.0, 0.0, 0.002 * (k % 2), 1.0])
        return ActionChunk(action[None, :], observation.stamp, instruction.text)

    def describe(self) -> str:
        return "open loop"


def open_loop_episode(link: SplitLink | None, actions: int = 8, seed: int = 3) -> EpisodeResult:
    harness = SimHarness()
    task = harness.reset(seed, "move")
    result = harness.run_episode(OpenLoopPolicy(), task, seed, max_actions=actions, record_commands=True,
                                 link=link)
    assert result.actions == actions and not result.success  # the whole plan ran: runs compare tick by tick
    return result


def expected_commands(latency_s: float, actions: list[np.ndarray], ticks: int, dt: float = 0.1,
                      period: float = 0.2) -> np.ndarray:
    """Translation/rotation per tick when action k plays over [k * period + latency, + period) (one-action
    chunks from their arrival, each replacing the last): its share of the window (t - dt, t]."""
    out = np.zeros((ticks, 6))
    for j in range(ticks):
        lo, hi = j * dt, (j + 1) * dt
        for k, action in enumerate(actions):
            start = k * period + latency_s
            overlap = max(0.0, min(hi, start + period) - max(lo, start))
            out[j] += action[:6] * overlap / period
    return out


@pytest.mark.parametrize("watch_cameras", [True, False])
def test_a_perfect_link_gives_exactly_the_single_process_commands(watch_cameras):
    for seed in SEEDS:
        runs = []
        for link in (None, SplitLink(watch_cameras=watch_cameras)):
            harness = SimHarness()
            task = harness.reset(seed, "pick")
            runs.append(harness.run_episode(ExpertPolicy(harness.world), task, seed, record_commands=True,
                                            link=link))
        single, split = runs
        assert single.success and split.success
        assert split.commands == single.commands  # bit for bit
        assert split.chunks_accepted == single.chunks_accepted == single.actions
        assert split.split is not None and split.split.sent == single.actions and single.split is None
        assert split.split.mean_delay_s == 0.0


@pytest.mark.parametrize("latency_s", [0.1, 0.3])
def test_a_latency_of_whole_ticks_shifts_the_commands_by_that_many_ticks(latency_s):
    single = np.array(open_loop_episode(None).commands)
    split = np.array(open_loop_episode(SplitLink(LinkFaults(latency_s=latency_s))).commands)
    shift = round(latency_s / 0.1)
    assert len(split) == len(single)
    assert np.abs(single[:, :6]).sum() > 0.0
    np.testing.assert_allclose(split[:shift, :6], 0.0, atol=1e-12)  # HOLD until the first chunk arrives
    np.testing.assert_allclose(split[shift:], single[:-shift], atol=1e-9)


def test_a_latency_between_ticks_is_not_rounded_to_ticks():
    policy, frame = OpenLoopPolicy(), Observation(np.zeros((1, 1, 3), np.uint8), 0.0)
    actions = [policy.predict(frame, Instruction("x", 0.0)).actions[0] for _ in range(8)]
    for latency_s in (0.0, 0.05, 0.13):
        result = open_loop_episode(SplitLink(LinkFaults(latency_s=latency_s)))
        commands = np.array(result.commands)
        assert result.interventions == 0
        np.testing.assert_allclose(commands[:, :6], expected_commands(latency_s, actions, len(commands)),
                                   atol=1e-9, err_msg=f"latency {latency_s} s")


def test_lost_chunks_show_in_the_link_report_and_fewer_chunks_are_accepted():
    single = open_loop_episode(None, actions=30)
    result = open_loop_episode(SplitLink(LinkFaults(latency_s=0.1, loss=0.3), seed=2), actions=30)
    stats = result.split
    assert stats is not None and stats.sent == 30 and single.chunks_accepted == 30
    assert stats.lost_on_link > 0
    assert result.chunks_accepted == 30 - stats.lost_on_link - stats.in_flight < single.chunks_accepted
    assert 1 <= stats.link_lost <= stats.lost_on_link  # the control half counts the gaps it saw
    assert result.chunks_rejected == 0 and stats.duplicates == 0


def test_duplicates_are_dropped_and_change_nothing():
    plain = open_loop_episode(SplitLink(LinkFaults(latency_s=0.1)))
    doubled = open_loop_episode(SplitLink(LinkFaults(latency_s=0.1, duplicate=1.0)))
    stats = doubled.split
    assert stats is not None and stats.duplicated_on_link == stats.sent == 8
    assert stats.duplicates == stats.delivered // 2 > 0
    assert doubled.commands == plain.commands and doubled.chunks_accepted == plain.chunks_accepted


def test_a_chunk_overtaken_on_the_link_is_rejected_as_stale():
    faults = LinkFaults(latency_s=0.1, reorder=0.5, reorder_s=0.25)  # held back longer than an action period
    result = open_loop_episode(SplitLink(faults, seed=1), actions=20)
    stats = result.split
    assert stats is not None and stats.reordered_on_link > 0
    assert stats.rejected_by_reason.get("stale", 0) > 0
    assert result.chunks_rejected == sum(stats.rejected_by_reason.values())
    assert result.chunks_accepted + result.chunks_rejected == stats.delivered


def test_the_same_link_seed_gives_the_same_episode_and_another_seed_another():
    faults = LinkFaults(latency_s=0.1, jitter_s=0.03, loss=0.2, duplicate=0.1, reorder=0.1)
    first, again, other = (open_loop_episode(SplitLink(faults, seed=s), actions=20) for s in (7, 7, 8))
    assert first.commands == again.commands and first.split == again.split
    assert first.commands != other.commands
    # each episode's faults come from its scene seed too: two scenes differ on the same link seed
    assert open_loop_episode(SplitLink(faults, seed=7), actions=20, seed=4).commands != first.commands


def test_eval_demo_compares_single_process_and_split_on_the_same_seeds(tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = evaluate.main(["--policy", "expert", "--episodes", "4", "--seed", "5", "--compare-split",
                          "--latency-ms", "100", "--jitter-ms", "30", "--loss", "0.2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "single" in printed and "split" in printed and "lost on the link" in printed
    payload = json.loads(out.read_text())
    single, split = payload["single"], payload["split"]
    assert [e["seed"] for e in single["episodes"]] == [e["seed"] for e in split["episodes"]] == [5, 6, 7, 8]
    assert all(e["split"] is None for e in single["episodes"])
    assert all(e["split"]["sent"] == e["actions"] for e in split["episodes"])
    assert split["chunks"]["sent"] == sum(e["actions"] for e in split["episodes"])
    assert 0.07 <= split["chunks"]["mean_delay_s"] <= 0.13
    assert payload["link"]["faults"]["latency_s"] == pytest.approx(0.1)
    assert payload["success_rate_difference_points"] == pytest.approx(
        100 * (split["summary"]["all"]["success_rate"] - single["summary"]["all"]["success_rate"]))


def test_eval_demo_rejects_bad_link_values(capsys):
    assert evaluate.main(["--policy", "expert", "--episodes", "1", "--loss", "1.5"]) == 2
    assert "loss" in capsys.readouterr().err
    assert evaluate.main(["--policy", "expert", "--episodes", "1", "--latency-ms", "-5"]) == 2
