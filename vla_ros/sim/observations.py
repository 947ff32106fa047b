"""Realistic observations from the tabletop simulator for offline measurements, and the entry point of
`vla-ros quant-accuracy`, which runs vla_ros.runtime.quant_accuracy on them (runtime/ may not import sim/).
"""

from __future__ import annotations

import numpy as np

from vla_ros.runtime.quant_accuracy import Case, uniform_proprio
from vla_ros.runtime.quant_accuracy import main as quant_accuracy_main
from vla_ros.sim.expert_policy import ExpertPolicy
from vla_ros.sim.harness import SimHarness
from vla_ros.sim.render import CameraSpec, Renderer
from vla_ros.sim.world import WorldState

# Extra cameras of multi-camera (OFT) checkpoints: side and top views of the same scene [m].
EXTRA_CAMERA_POSITIONS_M = ((0.45, 0.60, 0.45), (0.30, 0.0, 0.95), (0.45, -0.60, 0.45))


def simulator_cases(n: int, seed: int = 0, cameras: int = 1,
                    proprio_bounds: tuple[np.ndarray, np.ndarray] | None = None) -> list[Case]:
    """n frames the policy would see: one random step of each scripted-expert episode (scene seeds seed,
    seed+1, ...; random task kind, target and phrasing) with its instruction. Extra cameras see the same
    scene from the side and above; proprio is uniform within `proprio_bounds` (low, high)."""
    harness = SimHarness()
    extra = [Renderer(CameraSpec(position_m=EXTRA_CAMERA_POSITIONS_M[i % len(EXTRA_CAMERA_POSITIONS_M)]))
             for i in range(cameras - 1)]
    rng = np.random.default_rng([seed, 18])
    cases: list[Case] = []
    for episode in range(n):
        scene_seed = seed + episode
        task = harness.reset(scene_seed)
        seen: list[tuple[np.ndarray, WorldState]] = []

        def keep(observation, *_, seen: list = seen) -> None:
            seen.append((observation.rgb, harness.world.state.copy()))

        harness.run_episode(ExpertPolicy(harness.world), task, scene_seed, on_action=keep)
        rgb, state = seen[int(rng.integers(len(seen)))]
        cases.append(Case([rgb] + [r.render(state) for r in extra], task.instruction,
                          uniform_proprio(rng, proprio_bounds)))
    return cases


def quant_accuracy(argv: list[str]) -> int:
    """`vla-ros quant-accuracy`: vla_ros.runtime.quant_accuracy on simulator observations."""
    return quant_accuracy_main(argv, simulator_cases, "simulator")
