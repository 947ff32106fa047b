"""OftPolicy: an OpenVLA-OFT checkpoint as the node's `Policy`: cameras + proprio + instruction -> a chunk.

preprocess (every camera -> pixel_values; prompt + </s> -> ids and embeddings, cached per instruction)
-> vision (all cameras in one batch; FiLM towers take the mean prompt embedding)
-> proprio (normalized with the dataset's bounds, projected to one token)
-> actions (one bidirectional pass over [BOS][patches][proprio][prompt][zero slots][</s>])
-> un-normalize (bounds of the settings file, OFT's +1e-8 span) -> gripper options -> action scale.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from vla_ros.core.types import ACTION_DIM, ActionChunk, Instruction, Observation, PolicyInputs, validate_chunk
from vla_ros.model.action_tokenizer import ActionTokenizer
from vla_ros.model.families import Family
from vla_ros.model.normalization import (
    ActionStats,
    GripperOptions,
    UnnormKeyError,
    action_stats,
    normalize_proprio,
    unnormalize,
)
from vla_ros.model.preprocess import ImagePreprocessor
from vla_ros.model.settings import VlaSettings
from vla_ros.runtime.policy import BackendPolicy, PromptBudget

OFT_SPAN_EPS = 1e-8  # OFT adds it to (high - low) when normalizing and un-normalizing
STAGES = ("preprocess", "vision", "proprio", "actions", "unnormalize")


@dataclass
class _Prompt:
    text: str
    bos: np.ndarray  # f32 [1, 1, D]
    prompt: np.ndarray  # f32 [1, P, D]: the prompt ids after BOS (incl. the trailing "▁")
    stop: np.ndarray  # f32 [1, 1, D]: </s>
    condition: np.ndarray  # f32 [1, D]: FiLM's mean of the BOS, prompt and </s> embeddings


@dataclass
class OftOutput:
    """One call: the chunk in the checkpoint's units before and after un-normalization, and timings."""

    normalized: np.ndarray  # float64 [K, A]
    actions: np.ndarray  # float64 [K, A], un-normalized (no gripper options, no scaling)
    timings: dict[str, float]


def oft_stats(norm_stats: dict, settings: VlaSettings, unnorm_key: str
              ) -> tuple[ActionStats, ActionStats | None]:
    """Action (and, with proprio, proprio) statistics with the settings file's bounds."""
    key = unnorm_key or settings.unnorm_key or None
    actions = action_stats(norm_stats, key, settings.normalization, OFT_SPAN_EPS)
    if actions.dim != settings.action_dim:
        raise UnnormKeyError(f"statistics {actions.key!r} have {actions.dim} action dimensions, the "
                             f"checkpoint {settings.action_dim}")
    if not settings.proprio_dim:
        return actions, None
    proprio = action_stats(norm_stats, actions.key, settings.normalization, OFT_SPAN_EPS, part="proprio")
    proprio = dataclasses.replace(proprio, mask=np.ones(proprio.dim, dtype=bool))  # OFT: no proprio mask
    if proprio.dim != settings.proprio_dim:
        raise UnnormKeyError(f"statistics {actions.key!r} have {proprio.dim} proprio values, the checkpoint "
                             f"{settings.proprio_dim}")
    return actions, proprio


def oft_sequence(bos: np.ndarray, patches: np.ndarray, proprio: np.ndarray | None, prompt: np.ndarray,
                 n_slots: int, stop: np.ndarray) -> np.ndarray:
    """OFT's input: [BOS][patches][proprio?][prompt][n_slots zero vectors][</s>], f32 [1, L, D]."""
    zeros = np.zeros((1, n_slots, prompt.shape[2]), dtype=np.float32)
    parts = [bos, patches] + ([proprio] if proprio is not None else []) + [prompt, zeros, stop]
    return np.concatenate([np.asarray(x, dtype=np.float32) for x in parts], axis=1)


class OftPolicy(BackendPolicy):
    """Policy over an OFT-capable Backend (vision with FiLM input, proprio, actions)."""

    def __init__(self, backend, tokenizer, family: Family, settings: VlaSettings,
                 action_tokenizer: ActionTokenizer, preprocessor: ImagePreprocessor, stats: ActionStats,
                 proprio_stats: ActionStats | None, gripper: GripperOptions | None = None,
                 action_scale: np.ndarray | None = None, label: str = "", n_patches: int | None = None
                 ) -> None:
        self.backend = backend
        self.tokenizer = tokenizer
        self.family = family
        self.settings = settings
        self.action_tokenizer = action_tokenizer
        self.preprocessor = preprocessor
        self.stats = stats
        self.proprio_stats = proprio_stats
        self.gripper = gripper or GripperOptions()
        self.action_scale = _scale(action_scale)
        self.label = label
        self.inputs = PolicyInputs(cameras=len(settings.cameras), proprio_dim=settings.proprio_dim,
                                   chunk=settings.chunk)
        self.stop_id = _stop_id(tokenizer)
        extra = settings.n_slots + 1 + (1 if settings.proprio_dim else 0)  # slots, </s>, proprio token
        patches = None if n_patches is None else n_patches * len(settings.cameras)
        tail = "action slots, </s>" + (" and proprio token" if settings.proprio_dim else "")
        self._budget = PromptBudget(tokenizer, family, patches, extra + 1, backend.max_positions, tail)
        self._prompt: _Prompt | None = None
        self.last_ids: np.ndarray = np.zeros(0, dtype=np.int64)  # discrete variant: the argmax ids

    @classmethod
    def from_loaded(cls, loaded, backend, unnorm_key: str = "", gripper: GripperOptions | None = None,
                    action_scale: np.ndarray | None = None) -> OftPolicy:
        """Policy for a `LoadedVla` of an OFT checkpoint run by `backend`."""
        settings = loaded.settings
        stats, proprio = oft_stats(loaded.norm_stats, settings, unnorm_key)
        label = f"{loaded.family.name} {loaded.path.name} [{stats.key}] chunk {settings.chunk}"
        return cls(backend, loaded.tokenizer, loaded.family, settings, loaded.action_tokenizer,
                   ImagePreprocessor(loaded.preprocess), stats, proprio, gripper, action_scale, label,
                   loaded.spec.num_patches)

    def _warm_once(self, grey: np.ndarray) -> None:
        proprio = np.zeros(self.settings.proprio_dim) if self.settings.proprio_dim else None
        self.predict_arrays([grey] * self.inputs.cameras, "warm up", proprio)

    def _prompt_for(self, text: str) -> _Prompt:
        if self._prompt is None or self._prompt.text != text:
            ids = self.family.prompt_ids(self.tokenizer, text) + [self.stop_id]
            emb = self.backend.embed(np.asarray(ids, dtype=np.int64)[None])
            self._prompt = _Prompt(text, emb[:, :1], emb[:, 1:-1], emb[:, -1:], emb.mean(axis=1))
        return self._prompt

    def _check_inputs(self, images: list[np.ndarray], proprio: np.ndarray | None) -> np.ndarray | None:
        if len(images) != self.inputs.cameras:
            raise ValueError(f"the checkpoint takes {self.inputs.cameras} camera image(s) "
                             f"({', '.join(self.settings.cameras)}), got {len(images)}")
        if not self.settings.proprio_dim:
            return None
        if proprio is None:
            raise ValueError(f"the checkpoint needs a proprio vector of {self.settings.proprio_dim} values")
        p = np.asarray(proprio, dtype=np.float64)
        if p.shape != (self.settings.proprio_dim,) or not np.all(np.isfinite(p)):
            raise ValueError(f"proprio must be {self.settings.proprio_dim} finite values, got shape "
                             f"{p.shape}")
        return p

    def predict_arrays(self, images: list[np.ndarray], text: str, proprio: np.ndarray | None = None
                       ) -> OftOutput:
        """Images (camera order of the checkpoint) + instruction (+ raw proprio) -> the chunk [K, A]."""
        if not text or not text.strip():
            raise ValueError("empty instruction: nothing to predict (empty text means hold)")
        raw_proprio = self._check_inputs(images, proprio)
        s = self.settings
        t0 = time.perf_counter()
        pixels = np.concatenate([self.preprocessor(rgb) for rgb in images], axis=0)  # [n, 6, S, S]
        prompt = self._prompt_for(text)
        t1 = time.perf_counter()
        condition = np.repeat(prompt.condition, len(images), axis=0) if s.film else None
        patches = self.backend.vision(pixels, condition) if s.film else self.backend.vision(pixels)
        if not np.all(np.isfinite(patches)):
            raise FloatingPointError("the vision stage produced NaN/Inf patch embeddings")
        patches = patches.reshape(1, -1, patches.shape[-1]).astype(np.float32)
        t2 = time.perf_counter()
        token = None
        if raw_proprio is not None:
            normalized_proprio = normalize_proprio(raw_proprio, self.proprio_stats)
            token = self.backend.proprio(normalized_proprio[None].astype(np.float32))
        t3 = time.perf_counter()
        self._check_length(prompt, patches.shape[1])
        embeds = oft_sequence(prompt.bos, patches, token, prompt.prompt, s.n_slots, prompt.stop)
        out = self.backend.actions(embeds)
        normalized = self._normalized(out)
        t4 = time.perf_counter()
        actions = unnormalize(normalized, self.stats)
        if not (np.all(np.isfinite(normalized)) and np.all(np.isfinite(actions))):
            raise FloatingPointError("the action head produced NaN/Inf actions")
        timings = {"preprocess": t1 - t0, "vision": t2 - t1, "proprio": t3 - t2, "actions": t4 - t3,
                   "unnormalize": time.perf_counter() - t4}
        return OftOutput(normalized=normalized, actions=actions, timings=timings)

    def _check_length(self, prompt: _Prompt, n_patches: int) -> None:
        if self._budget.n_patches != n_patches:  # learnt from the model when not given
            self._budget = dataclasses.replace(self._budget, n_patches=n_patches)
        problem = self._budget.problem(prompt.prompt.shape[1] + 1, n_patches)
        if problem is not None:
            raise ValueError(problem)

    def _normalized(self, out: np.ndarray) -> np.ndarray:
        """The backend's output as normalized actions float64 [K, A] (discrete: OFT's clipped bins)."""
        s = self.settings
        if s.action_head == "discrete":
            ids = np.asarray(out, dtype=np.int64).reshape(-1)
            self.last_ids = ids
            act = self.action_tokenizer
            bins = np.clip(act.vocab_end - ids - 1, 0, len(act.bin_centers) - 1)  # as OFT: no id check
            return act.bin_centers[bins].reshape(s.chunk, s.action_dim).astype(np.float64)
        return np.asarray(out, dtype=np.float64).reshape(s.chunk, s.action_dim)

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        """The chunk [K, 7] in robot units, stamped with the observation's stamp."""
        if self.settings.action_dim != ACTION_DIM:
            raise ValueError(f"the checkpoint's actions have {self.settings.action_dim} dimensions; the node "
                             f"drives {ACTION_DIM} (end-effector deltas + gripper); use `vla-ros predict`")
        out = self.predict_arrays(list(observation.images), instruction.text, observation.proprio)
        actions = self.gripper.apply(out.actions)
        actions[:, :6] *= self.action_scale
        chunk = ActionChunk(actions=actions, stamp=observation.stamp, instruction=instruction.text,
                            timings=out.timings)
        problem = validate_chunk(chunk)
        if problem is not None:
            raise ValueError(f"policy produced an unusable chunk: {problem}")
        return chunk


def _scale(action_scale: np.ndarray | None) -> np.ndarray:
    """Model units -> robot units for the 6 motion dimensions (None or empty = 1)."""
    if action_scale is None or len(action_scale) == 0:
        return np.ones(6)
    scale = np.asarray(action_scale, dtype=np.float64)
    if scale.shape != (6,) or not np.all(np.isfinite(scale)):
        raise ValueError(f"action_scale must be 6 finite numbers (dx, dy, dz, droll, dpitch, dyaw), got "
                         f"{list(np.ravel(scale))}")
    return scale


def _stop_id(tokenizer) -> int:
    stop = tokenizer.special_id("eos_token", "</s>")
    if stop is None:
        raise ValueError("the tokenizer has no end-of-sequence token </s> (OFT's stop token)")
    return int(stop)
