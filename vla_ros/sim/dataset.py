"""Demonstrations for the demo VLA: (image, instruction, action) from the scripted expert, closed loop.

Episodes run through the same harness as the evaluation (ControlCore with the safety filter, sim
time), so the states seen in training are those a deployed policy meets. To cover the states a
slightly wrong policy drifts into, the executed action is the expert's plus noise (DART-style) and
now and then a deliberate mistake (a push aside, an early close); the recorded label is always the
expert's clean action for the frame. Since the expert is a function of the state, a frame can also be
relabelled with another task on the same scene (another target or kind) and the expert's action for
that task: the same image then asks for different actions, so the instruction has to be read (the
gripper's approach alone would otherwise tell which object the episode is about). Each sample keeps
the world state and the target's index: the trainer derives auxiliary targets from them (where
things are), never the model's inputs.
Statistics follow OpenVLA's `dataset_statistics.json`:
q01/q99/min/max/mean/std/mask per action dimension, the gripper masked (not normalised).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vla_ros.core.types import ACTION_DIM, ActionChunk, Instruction, Observation
from vla_ros.model.preprocess import ImagePreprocessor, PreprocessSpec, resolve_resize
from vla_ros.sim.expert import ExpertGains, expert_action
from vla_ros.sim.harness import SimHarness, episode_plan
from vla_ros.sim.tasks import TASK_KINDS, Task, sample_task
from vla_ros.sim.world import TabletopWorld

DATASET_KEY = "vla_ros_sim_tabletop"  # the norm_stats / dataset_statistics key of the demo data
NORMALIZE_MASK = [True, True, True, True, True, True, False]  # gripper absolute, not normalised
DATA_FILE = "demo_data.npz"
STATS_FILE = "dataset_statistics.json"

Resize = Callable[[np.ndarray, int], np.ndarray]  # RGB uint8 [H, W, 3], size -> [size, size, 3]


@dataclass
class NoiseSpec:
    """Perturbations of the executed actions during collection (labels stay clean)."""

    clean_episode_fraction: float = 0.3  # episodes executed exactly as the expert says
    translation_sigma_m: tuple[float, float] = (0.004, 0.012)  # per-episode sigma drawn in this range
    push_probability: float = 0.06  # per action: a 2-4 cm shove in a random horizontal direction
    early_close_probability: float = 0.03  # per action, while open and not at the object: close
    low_close_probability: float = 0.2  # per action, while open, low and not yet centred: close (a miss)
    low_close_height_m: float = 0.035  # "low": fingertips below this
    relabel_probability: float = 0.5  # per frame: one more sample, another task and its expert action


@dataclass
class DemoDataset:
    """Samples in memory: images uint8 [N, S, S, 3], actions float32 [N, 7], one instruction each."""

    images: np.ndarray
    actions: np.ndarray
    instructions: list[str]
    kinds: list[str]
    episode: np.ndarray  # int32 [N], episode index of each sample
    meta: dict = field(default_factory=dict)
    states: np.ndarray | None = None  # float32 [N, 41], WorldState.to_array() of each frame
    targets: np.ndarray | None = None  # int32 [N], index of the task's target object

    def __len__(self) -> int:
        return len(self.actions)

    def statistics(self) -> dict:
        """OpenVLA-style statistics of the actions under DATASET_KEY."""
        return {DATASET_KEY: action_statistics(self.actions, int(self.episode.max(initial=-1)) + 1)}

    def save(self, directory: str | Path) -> Path:
        """Write demo_data.npz (no pickled objects) and dataset_statistics.json into `directory`."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        vocabulary = sorted(set(self.instructions))
        index = {text: i for i, text in enumerate(vocabulary)}
        optional = {name: value for name, value in (("states", self.states), ("targets", self.targets))
                    if value is not None}
        np.savez(out / DATA_FILE, images=self.images, actions=self.actions, episode=self.episode,
                 instruction_index=np.array([index[t] for t in self.instructions], np.int32),
                 instruction_text=np.array(vocabulary, dtype=np.str_),
                 kinds=np.array(self.kinds, dtype=np.str_), meta=np.array(json.dumps(self.meta)),
                 **optional)
        save_statistics(out / STATS_FILE, self.statistics())
        return out

    @staticmethod
    def load(directory: str | Path) -> DemoDataset:
        """Read what `save` wrote; raises ValueError with the reason for a missing or corrupt file."""
        path = Path(directory) / DATA_FILE
        try:
            with np.load(path, allow_pickle=False) as data:
                vocabulary = [str(t) for t in data["instruction_text"]]
                instructions = [vocabulary[i] for i in data["instruction_index"]]
                dataset = DemoDataset(data["images"], data["actions"].astype(np.float32), instructions,
                                      [str(k) for k in data["kinds"]], data["episode"].astype(np.int32),
                                      json.loads(str(data["meta"])),
                                      data["states"] if "states" in data.files else None,
                                      data["targets"] if "targets" in data.files else None)
        except (OSError, KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"cannot read demo data {path}: {exc}") from exc
        n = len(dataset.actions)
        if (dataset.images.ndim != 4 or len(dataset.images) != n or dataset.actions.shape != (n, ACTION_DIM)
                or any(len(extra) != n for extra in (dataset.states, dataset.targets) if extra is not None)):
            raise ValueError(f"demo data {path} is inconsistent: images {dataset.images.shape}, "
                             f"actions {dataset.actions.shape}")
        return dataset


def action_statistics(actions: np.ndarray, num_trajectories: int) -> dict:
    """OpenVLA's per-dataset entry: action {mean, std, max, min, q01, q99, mask}, proprio (zeros),
    num_transitions, num_trajectories."""
    a = np.asarray(actions, np.float64).reshape(-1, ACTION_DIM)
    if len(a) == 0 or not np.all(np.isfinite(a)):
        raise ValueError("action statistics need at least one finite action")
    zeros = [0.0] * ACTION_DIM
    return {
        "action": {
            "mean": a.mean(0).tolist(), "std": a.std(0).tolist(),
            "max": a.max(0).tolist(), "min": a.min(0).tolist(),
            "q01": np.quantile(a, 0.01, axis=0).tolist(), "q99": np.quantile(a, 0.99, axis=0).tolist(),
            "mask": list(NORMALIZE_MASK),
        },
        "proprio": {"mean": zeros, "std": zeros, "max": zeros, "min": zeros, "q01": zeros, "q99": zeros},
        "num_transitions": int(len(a)),
        "num_trajectories": int(num_trajectories),
    }


def save_statistics(path: str | Path, statistics: dict) -> None:
    Path(path).write_text(json.dumps(statistics, indent=2))


def normalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    """OpenVLA's BOUNDS_Q99 normalisation to [-1, 1] where masked; dimensions with q01 == q99 map to 0."""
    a = np.asarray(actions, np.float64)
    q01, q99 = np.asarray(stats["q01"], np.float64), np.asarray(stats["q99"], np.float64)
    mask = np.asarray(stats.get("mask", NORMALIZE_MASK), bool)
    span = q99 - q01
    safe = np.where(span > 1e-8, span, 1.0)
    scaled = np.clip(2.0 * (a - q01) / safe - 1.0, -1.0, 1.0)
    scaled = np.where(span > 1e-8, scaled, 0.0)
    return np.where(mask, scaled, a)


def resize_area(rgb: np.ndarray, size: int) -> np.ndarray:
    """Default storage resize (the trainer passes the model preprocessor's own resize instead)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)


class PolicyResize:
    """The policy preprocessor's own resize (whatever method it resolves to), picklable for workers."""

    def __init__(self, preprocess: PreprocessSpec) -> None:
        self.preprocess = preprocess  # frozen, picklable
        self.preprocessor: ImagePreprocessor | None = None  # built in each process on first use

    def __getstate__(self) -> dict:
        return {"preprocess": self.preprocess, "preprocessor": None}

    def __call__(self, rgb: np.ndarray, size: int) -> np.ndarray:
        if size != self.preprocess.image_size:
            raise ValueError(f"frames are resized to {self.preprocess.image_size}, not {size}")
        if self.preprocessor is None:
            self.preprocessor = ImagePreprocessor(self.preprocess)
        return self.preprocessor.resize(rgb)

    @property
    def method(self) -> str:
        return resolve_resize(self.preprocess.resize)


class CollectingPolicy:
    """The expert as a Policy that records (frame, instruction, clean action) and executes a noisy one."""

    def __init__(self, world: TabletopWorld, noise: NoiseSpec, rng: np.random.Generator,
                 image_size: int | None, resize: Resize, expert: ExpertGains | None = None) -> None:
        """`rng` drives the noise; `start_episode` may replace it with the episode's own stream."""
        self.world, self.noise, self.rng = world, noise, rng
        self.image_size, self.resize = image_size, resize
        self.expert = expert or ExpertGains()
        self.task: Task | None = None
        self.sigma = 0.0
        self.relabel_rng = np.random.default_rng(0)
        self.reset_records()

    def start_episode(self, task: Task, rng: np.random.Generator | None = None) -> None:
        self.task = task
        if rng is not None:
            self.rng = rng
        self.relabel_rng = np.random.default_rng(self.rng.integers(2**63))
        clean = self.rng.random() < self.noise.clean_episode_fraction
        self.sigma = 0.0 if clean else float(self.rng.uniform(*self.noise.translation_sigma_m))

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        assert self.task is not None, "start_episode() first"
        state = self.world.state
        label = expert_action(state, self.task, self.expert)
        image = observation.rgb if self.image_size is None else self.resize(observation.rgb, self.image_size)
        image = np.ascontiguousarray(image, np.uint8)
        self._record(image, self.task, label)
        if len(state.objects) > 1 and self.relabel_rng.random() < self.noise.relabel_probability:
            other = self._other_task()
            self._record(image, other, expert_action(state, other, self.expert))
        executed = label.copy()
        if self.sigma > 0.0:
            executed[:3] += self.rng.normal(0.0, self.sigma, 3)
            if self.rng.random() < self.noise.push_probability:
                angle = self.rng.uniform(0, 2 * math.pi)
                executed[:2] = self.rng.uniform(0.02, 0.04) * np.array([math.cos(angle), math.sin(angle)])
            if state.held < 0 and label[6] > 0.5 and state.gripper_opening > 0.9:
                low = state.gripper_position[2] < self.noise.low_close_height_m
                chance = self.noise.low_close_probability if low else self.noise.early_close_probability
                if self.rng.random() < chance:  # a close the expert would not make: a miss to recover from
                    executed[6] = 0.0
        return ActionChunk(executed[None, :], observation.stamp, instruction.text)

    def _record(self, image: np.ndarray, task: Task, label: np.ndarray) -> None:
        """Keep one sample: the frame, `task`'s instruction and the expert's action for it."""
        self.images.append(image)
        self.actions.append(label.astype(np.float32))
        self.instructions.append(task.instruction)
        self.states.append(self.world.state.to_array())
        self.kinds.append(task.kind)
        self.targets.append(task.target)

    def _other_task(self) -> Task:
        """A random task on the scene that differs from the episode's in target or kind."""
        assert self.task is not None
        while True:
            other = sample_task(self.world.state, self.relabel_rng)
            if (other.kind, other.target) != (self.task.kind, self.task.target):
                return other

    def reset_records(self) -> None:
        """Forget the recorded samples (a new episode starts)."""
        self.images: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.instructions: list[str] = []
        self.states: list[np.ndarray] = []
        self.kinds: list[str] = []
        self.targets: list[int] = []

    def describe(self) -> str:
        return "scripted expert with noise (data collection)"


def collect(episodes: int, seed: int = 0, image_size: int | None = None, resize: Resize = resize_area,
            kinds: Sequence[str] = TASK_KINDS, noise: NoiseSpec | None = None,
            max_actions: int = 40, settle_actions: int = 2, workers: int = 1,
            progress: Callable[[int, int], None] | None = None) -> DemoDataset:
    """Run `episodes` noisy-expert episodes (seeds seed, seed+1, ...) and keep every policy frame.

    Failed episodes (the noise can make one time out) are dropped. `image_size` stores the frames
    already resized by `resize` (what the model's preprocessor does), which keeps memory small.
    The result does not depend on `workers` (each episode has its own random stream); with
    workers > 1, `resize` must be picklable (a module-level function).
    """
    noise = noise or NoiseSpec()
    plan = episode_plan(episodes, seed, kinds)
    if workers <= 1 or episodes < 2 * workers:
        parts = [_collect_part(plan, seed, image_size, resize, noise, max_actions, settle_actions, progress)]
    else:
        bounds = np.linspace(0, len(plan), workers + 1).astype(int)
        jobs = [(plan[a:b], seed, image_size, resize, noise, max_actions, settle_actions, None)
                for a, b in zip(bounds[:-1], bounds[1:])]
        with multiprocessing.get_context("spawn").Pool(workers, initializer=_single_threaded) as pool:
            parts = pool.starmap(_collect_part, jobs)
    images = [im for part in parts for im in part["images"]]
    if not images:
        raise RuntimeError("no successful demonstration was collected")
    episode_index, kept = [], 0
    for part in parts:
        for length in part["lengths"]:
            episode_index += [kept] * length
            kept += 1
    failed = sum(part["failed"] for part in parts)
    meta = {"episodes": episodes, "kept": kept, "failed": failed, "seed": seed, "kinds": list(kinds),
            "image_size": image_size or int(images[0].shape[0]), "settle_actions": settle_actions,
            "action_period_s": parts[0]["action_period_s"], "control_rate_hz": parts[0]["control_rate_hz"]}
    return DemoDataset(np.stack(images), np.stack([a for part in parts for a in part["actions"]]),
                       [t for part in parts for t in part["instructions"]],
                       [k for part in parts for k in part["kinds"]], np.array(episode_index, np.int32), meta,
                       np.stack([s for part in parts for s in part["states"]]),
                       np.array([t for part in parts for t in part["targets"]], np.int32))


def _single_threaded() -> None:
    """Collection workers share the cores: keep numerical libraries to one thread each."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def _collect_part(plan: list[tuple[int, str]], seed: int, image_size: int | None, resize: Resize,
                  noise: NoiseSpec, max_actions: int, settle_actions: int,
                  progress: Callable[[int, int], None] | None) -> dict:
    """Collect the episodes of `plan` in this process."""
    harness = SimHarness()
    policy = CollectingPolicy(harness.world, noise, np.random.default_rng(0), image_size, resize)
    out: dict = {"images": [], "actions": [], "instructions": [], "kinds": [], "lengths": [], "failed": 0,
                 "states": [], "targets": [],
                 "action_period_s": harness.action_period_s, "control_rate_hz": 1.0 / harness.tick_period_s}
    for i, (scene_seed, kind) in enumerate(plan):
        task = harness.reset(scene_seed, kind)
        policy.reset_records()
        policy.start_episode(task, np.random.default_rng([seed, 12345, scene_seed]))
        result = harness.run_episode(policy, task, scene_seed, max_actions, settle_actions=settle_actions)
        if result.success:
            out["images"] += policy.images
            out["actions"] += policy.actions
            out["instructions"] += policy.instructions
            out["kinds"] += policy.kinds
            out["states"] += policy.states
            out["targets"] += policy.targets
            out["lengths"].append(len(policy.actions))
        else:
            out["failed"] += 1
        if progress is not None:
            progress(i + 1, len(out["actions"]))
    return out
