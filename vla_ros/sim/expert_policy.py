"""The scripted expert as a Policy: on the simulator's true state, or on positions seen with errors."""

from __future__ import annotations

import numpy as np

from vla_ros.core.types import ActionChunk, Instruction, Observation
from vla_ros.sim.expert import ExpertGains, expert_action
from vla_ros.sim.tasks import parse_instruction
from vla_ros.sim.world import TabletopWorld, WorldState


class ExpertPolicy:
    """The scripted expert as a Policy: it reads the instruction and the simulator's true state."""

    def __init__(self, world: TabletopWorld, gains: ExpertGains | None = None) -> None:
        self.world = world
        self.gains = gains or ExpertGains()

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        task = parse_instruction(instruction.text, self.world.state)
        if task is None:  # nothing it understands: stay put, keep the gripper
            action = np.array([0, 0, 0, 0, 0, 0, self.world.state.gripper_opening], np.float64)
        else:
            action = expert_action(self.seen_state(observation), task, self.gains)
        return ActionChunk(action[None, :], observation.stamp, instruction.text)

    def seen_state(self, observation: Observation) -> WorldState:
        """The state the rule acts on: here the simulator's true one."""
        return self.world.state

    def describe(self) -> str:
        return "scripted expert (simulator state)"


class NoisyExpertPolicy(ExpertPolicy):
    """The expert acting on positions seen with errors, as a policy that imitates it from images would.

    Each call, the gripper's and every object's position get fresh Gaussian noise (`noise_m` per axis)
    plus a bias drawn once per episode (`bias_m`, each object its own); the true state is never changed.
    A new episode is detected from the sim's clock going back to zero.
    """

    def __init__(self, world: TabletopWorld, noise_m: float = 0.01, bias_m: float = 0.0, seed: int = 0,
                 gains: ExpertGains | None = None) -> None:
        super().__init__(world, gains)
        self.noise_m, self.bias_m = noise_m, bias_m
        self.rng = np.random.default_rng(seed)
        self.bias = np.zeros((0, 3))
        self.last_stamp = float("inf")

    def seen_state(self, observation: Observation) -> WorldState:
        """A copy of the true state with the positions off by this call's noise and the episode's bias."""
        truth = self.world.state
        if observation.stamp <= self.last_stamp or len(self.bias) != len(truth.objects) + 1:
            self.bias = self.rng.normal(0.0, self.bias_m, (len(truth.objects) + 1, 3))
        self.last_stamp = observation.stamp
        seen = truth.copy()
        seen.gripper_position = truth.gripper_position + self.bias[-1] + self.rng.normal(0.0, self.noise_m, 3)
        for i, (obj, bias) in enumerate(zip(seen.objects, self.bias)):
            if i != seen.held:  # a held object moves with the gripper
                obj.position = obj.position + np.append(bias[:2] + self.rng.normal(0.0, self.noise_m, 2), 0.0)
        return seen

    def describe(self) -> str:
        return (f"scripted expert seeing positions with {100 * self.noise_m:g} cm noise and "
                f"{100 * self.bias_m:g} cm bias")
