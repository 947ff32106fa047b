"""The embedded demo VLA in closed loop (reduced eval-demo) and the two behavioural checks.

The full figures (`vla-ros eval-demo --episodes 50`) are in the training note; here a fixed, small
set of seeds keeps CI fast. Everything is deterministic (greedy decoding, seeded scenes).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from vla_ros.config import PolicyConfig  # noqa: E402
from vla_ros.runtime.factory import DEMO_CHECKPOINT, make_policy  # noqa: E402
from vla_ros.sim.evaluate import (  # noqa: E402
    evaluate,
    image_following,
    instruction_following,
    summarize,
)

# Issue 5 is open: the model trained in 43.2 min (5,975 steps) picks up the named object in 48% of
# `eval-demo --episodes 50` pick episodes (12/25; 30% of 50 pick-only episodes from seed 1000) and 5/10
# here, below the 80% target. The pick test states the target and is expected to fail until a retrained
# model meets it; strict, so a model that passes turns it red for an update. The other three pass.
PICK_SHORTFALL = pytest.mark.xfail(
    strict=True, reason="issue 5 open: the embedded demo model picks up 5/10 here, not >= 8/10")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DEMO_CHECKPOINT / "config.json").is_file(),
                       reason=f"the embedded demo model ({DEMO_CHECKPOINT}) is not trained yet: "
                              "run `vla-ros train-demo`"),
]


@pytest.fixture(scope="module")
def demo_policy():
    import torch

    torch.set_num_threads(1)
    return make_policy(PolicyConfig())


@PICK_SHORTFALL
def test_demo_model_picks_up_the_named_object(demo_policy):
    results = evaluate(lambda world: demo_policy, episodes=10, seed=500, kinds=("pick",))
    assert summarize(results)["pick"]["success_rate"] >= 0.8  # issue 5: >= 80% on pick-up tasks


def test_demo_model_moves_to_the_named_object(demo_policy):
    results = evaluate(lambda world: demo_policy, episodes=6, seed=600, kinds=("move",))
    assert summarize(results)["move"]["success_rate"] >= 0.5


def test_changing_the_named_target_changes_the_picked_object(demo_policy):
    """Same scene, two instructions naming different objects: each picks its own object."""
    checks = instruction_following(lambda world: demo_policy, seeds=range(700, 704))
    assert sum(c["followed"] for c in checks) >= 3, checks


def test_moving_the_target_moves_where_the_gripper_goes(demo_policy):
    """Same instruction, the target object moved across the table: the gripper goes to the new place."""
    checks = image_following(lambda world: demo_policy, seeds=range(800, 804))
    assert sum(c["followed"] for c in checks) >= 3, checks
