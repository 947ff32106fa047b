"""Behavioural checks of a policy in the simulator: does it follow the instruction? the image?"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from vla_ros.core.types import Policy
from vla_ros.sim.harness import DEFAULT_MAX_ACTIONS, SimHarness
from vla_ros.sim.tasks import Task, make_instruction
from vla_ros.sim.world import TabletopWorld, WorldSpec, WorldState

PolicyFactory = Callable[[TabletopWorld], Policy]


def nearest_object(state: WorldState, xy: np.ndarray) -> int:
    """Index of the object whose centre is horizontally nearest to `xy`."""
    distances = [float(np.hypot(*(o.position[:2] - xy))) for o in state.objects]
    return int(np.argmin(distances))


def instruction_following(policy_factory: PolicyFactory, seeds: Sequence[int],
                          harness: SimHarness | None = None, max_actions: int = DEFAULT_MAX_ACTIONS
                          ) -> list[dict]:
    """Same scene, two different named targets: which object does the policy pick each time?

    Per seed: {"seed", "targets": [a, b], "picked": [held object (or the one under the gripper)
    after each episode], "followed": picked == targets}.
    """
    harness = harness or SimHarness()
    policy = policy_factory(harness.world)
    out = []
    for seed in seeds:
        state = harness.world.reset(seed, n_objects=3)
        targets = [0, 1 + seed % 2]
        picked = []
        for target in targets:
            harness.world.reset(seed, n_objects=3)
            name = state.objects[target].name
            task = Task("pick", target, make_instruction("pick", name, phrasing=seed))
            harness.run_episode(policy, task, seed, max_actions)
            final = harness.world.state
            under = nearest_object(final, final.gripper_position[:2])
            picked.append(final.held if final.held >= 0 else under)
        out.append({"seed": seed, "targets": targets, "picked": picked, "followed": picked == targets})
    return out


def image_following(policy_factory: PolicyFactory, seeds: Sequence[int],
                    harness: SimHarness | None = None, max_actions: int = 15) -> list[dict]:
    """Same instruction, the target object moved: does the gripper go to the new place?

    Per seed, a "move to" episode on the scene, then on the same scene with the target moved to a
    free spot far from where it was; {"seed", "distance_to_new", "distance_to_old",
    "followed": the gripper ends nearer the new place than the old one}.
    """
    harness = harness or SimHarness()
    policy = policy_factory(harness.world)
    out = []
    for seed in seeds:
        state = harness.world.reset(seed, n_objects=3)
        target = seed % 3
        old_xy = state.objects[target].position[:2].copy()
        new_xy = free_spot(state, target, harness.world.spec)
        task = Task("move", target, make_instruction("move", state.objects[target].name, phrasing=seed))
        moved = harness.world.reset(seed, n_objects=3)
        moved.objects[target].position[:2] = new_xy
        harness.run_episode(policy, task, seed, max_actions)
        end = harness.world.state.gripper_position[:2]
        to_new, to_old = float(np.hypot(*(end - new_xy))), float(np.hypot(*(end - old_xy)))
        out.append({"seed": seed, "old_xy": old_xy.tolist(), "new_xy": new_xy.tolist(),
                    "distance_to_new": to_new, "distance_to_old": to_old, "followed": to_new < to_old})
    return out


def free_spot(state: WorldState, target: int, spec: WorldSpec) -> np.ndarray:
    """The spawn-box point farthest from the target's place that keeps clear of the other objects."""
    xs = np.linspace(spec.spawn_min_xy[0], spec.spawn_max_xy[0], 9)
    ys = np.linspace(spec.spawn_min_xy[1], spec.spawn_max_xy[1], 9)
    old = state.objects[target].position[:2]
    others = [o.position[:2] for i, o in enumerate(state.objects) if i != target]
    best, best_score = old, -1.0
    for x in xs:
        for y in ys:
            p = np.array([x, y])
            if all(np.hypot(*(p - q)) >= spec.min_object_separation_m for q in others):
                score = float(np.hypot(*(p - old)))
                if score > best_score:
                    best, best_score = p, score
    return best
