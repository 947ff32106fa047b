"""Replay refuses an instruction the model cannot run exactly as vla_node does: HOLD with a reason,
never a FAULT per frame (core.inputs.decode_instruction with the policy's check_instruction)."""

from __future__ import annotations

import csv
from pathlib import Path

from bag_fixtures import make_sim_bag

from vla_ros.bag.io import VLA_STATUS, BagReader, deserialize
from vla_ros.bag.latency import LatencyModel
from vla_ros.bag.replay_types import ReplayOptions
from vla_ros.bag.replayer import replay_bag
from vla_ros.core.config import load_config
from vla_ros.runtime.synthetic import SyntheticPolicy

LONG = "pick up the red cube " * 20


class ShortPromptPolicy(SyntheticPolicy):
    """The synthetic policy with a model that takes at most 100 characters (and fails past them)."""

    def check_instruction(self, text: str) -> str | None:
        return f"prompt too long: {len(text)} > 100" if len(text) > 100 else None

    def predict(self, observation, instruction):  # noqa: ANN001, ANN201 - the Policy protocol
        if len(instruction.text) > 100:
            raise ValueError("prompt too long")
        return super().predict(observation, instruction)


def test_over_long_instruction_in_a_bag_holds_then_the_next_one_moves(tmp_path: Path) -> None:
    bag = make_sim_bag(tmp_path / "bag", duration_s=3.0,
                       instructions=((0.0, "raise the arm"), (1.0, LONG), (2.0, "pick up the red cube")),
                       instruction_times_are_fractions=False)
    options = ReplayOptions(latency=LatencyModel.parse("fixed:0.05"), plot=False)
    result = replay_bag(bag, tmp_path / "out", load_config(), ShortPromptPolicy(latency_s=0.0), options)
    with open(tmp_path / "out" / "commands.csv", newline="") as f:
        table = list(csv.DictReader(f))
    middle = [r for r in table if 1.05 < float(r["t_s"]) < 2.0]
    assert middle and all(r["hold"] == "1" and r["instruction"] == "" for r in middle)
    assert not any("FAULT" in r["intervention_names"] for r in table)
    assert any(r["hold"] == "0" for r in table if float(r["t_s"]) > 2.1)
    assert result.summary["inference"]["errors"] == 0
    assert result.summary["inputs"]["rejected_inputs"] == 1
    with BagReader(tmp_path / "out" / "replay") as r:
        statuses = [deserialize(raw, VLA_STATUS) for _, _, raw in r.messages(["/vla_node/status"])]
    assert all(s.state_name != "FAULT" and s.policy_errors == 0 for s in statuses)
    assert any("prompt too long: " in s.last_error for s in statuses)
