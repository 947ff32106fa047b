"""VlaPolicy: the node's `Policy` on top of a Backend: RGB + instruction -> one 7-DoF action.

preprocess (image -> pixel_values; prompt -> ids, cached per instruction)
-> vision (patches) -> prefill ([BOS, patches, prompt] -> logits + K/V)
-> decode (6 cached steps; each token is the argmax over the ACTION ids only)
-> detokenize (ids -> bin centres -> un-normalized with the dataset's q01/q99 -> gripper options).

Anything non-finite or malformed raises (ValueError / FloatingPointError with the reason): the node
turns exceptions into FAULT; an action is never clipped into shape silently. An instruction whose
prompt does not fit the model's positions is refused on arrival by `check_instruction` (PromptBudget,
the same rule predict enforces), so it becomes a HOLD with a reason instead of a FAULT on every frame.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from vla_ros.core.types import ACTION_DIM, ActionChunk, Instruction, Observation, validate_chunk
from vla_ros.model.action_tokenizer import ActionTokenizer
from vla_ros.model.families import Family
from vla_ros.model.normalization import ActionStats, GripperOptions, action_stats, unnormalize
from vla_ros.model.preprocess import ImagePreprocessor
from vla_ros.runtime.backend import Backend

STAGES = ("preprocess", "vision", "prefill", "decode", "detokenize")


@dataclass
class _PromptCache:
    text: str
    ids: np.ndarray  # int64 [S]
    first: np.ndarray  # f32 [1, 1, D]: embedding of the first token (BOS)
    rest: np.ndarray  # f32 [1, S - 1, D]


@dataclass(frozen=True)
class PromptBudget:
    """The prompt-length rule: BOS + image patches + prompt + the decoded action tokens must fit the
    model's positions. Callable as the policy's `check_instruction` (small and picklable)."""

    tokenizer: object
    family: Family
    n_patches: int | None  # None until known (then every instruction passes the check)
    n_actions: int
    max_positions: int
    tail: str = "action tokens"  # what the positions after the prompt are (OFT: slots, </s>, proprio)

    def positions(self, n_prompt_ids: int, n_patches: int) -> int:
        """Positions a prompt of `n_prompt_ids` ids (BOS included) takes with the patches and actions."""
        return n_prompt_ids + n_patches + self.n_actions - 1

    def problem(self, n_prompt_ids: int, n_patches: int) -> str | None:
        """Why a prompt of `n_prompt_ids` ids does not fit, or None."""
        length = self.positions(n_prompt_ids, n_patches)
        if length <= self.max_positions:
            return None
        return (f"prompt too long: {length} positions ({n_prompt_ids} prompt tokens + {n_patches} image "
                f"patches + {self.n_actions - 1} {self.tail}), the model has {self.max_positions}")

    def __call__(self, text: str) -> str | None:
        """Why the model cannot run instruction `text`, or None."""
        if self.n_patches is None:
            return None
        ids = self.family.prompt_ids(self.tokenizer, text)
        return self.problem(len(ids), self.n_patches)


class BackendPolicy:
    """What the policies over a Backend share: the prompt-length check, the description, the warm-up.
    A subclass sets backend, label, preprocessor, _budget and _prompt, and defines `_warm_once`."""

    backend: Backend
    label: str
    preprocessor: ImagePreprocessor
    _budget: PromptBudget
    _prompt: object

    @property
    def check_instruction(self) -> PromptBudget:
        """`check_instruction(text) -> str | None` (core.types.Policy): does the prompt fit the model?"""
        return self._budget

    def describe(self) -> str:
        """E.g. "torch cpu fp32 openvla demo_vla [bridge_orig]"."""
        return f"{self.backend.describe()} {self.label}".strip()

    def warmup(self, runs: int = 1) -> float:
        """Predict on grey frames `runs` times (the first call of a backend is several times slower:
        lazy kernels, allocations); returns the last call's seconds. Call before going live."""
        seconds = 0.0
        size = self.preprocessor.cfg.image_size
        for _ in range(max(1, runs)):
            t0 = time.perf_counter()
            self._warm_once(np.full((size, size, 3), 128, np.uint8))
            seconds = time.perf_counter() - t0
        self._prompt = None
        return seconds

    def _warm_once(self, grey: np.ndarray) -> None:
        """One prediction on the grey frame."""
        raise NotImplementedError


class VlaPolicy(BackendPolicy):
    """Policy over any Backend. `last_tokens` / `last_step_times` describe the latest call (bench, tests)."""

    def __init__(self, backend: Backend, tokenizer, family: Family, action_tokenizer: ActionTokenizer,
                 preprocessor: ImagePreprocessor, stats: ActionStats,
                 gripper: GripperOptions | None = None, label: str = "",
                 n_patches: int | None = None) -> None:
        if stats.dim != ACTION_DIM:
            raise ValueError(f"the checkpoint's actions have {stats.dim} dimensions; vla_ros drives "
                             f"{ACTION_DIM} (dx, dy, dz, droll, dpitch, dyaw, gripper)")
        self.backend = backend
        self.tokenizer = tokenizer
        self.family = family
        self.action_tokenizer = action_tokenizer
        self.preprocessor = preprocessor
        self.stats = stats
        self.gripper = gripper or GripperOptions()
        self.label = label
        self.n_actions = stats.dim
        self._budget = PromptBudget(tokenizer, family, n_patches, self.n_actions, backend.max_positions)
        self._prompt: _PromptCache | None = None
        self.last_tokens: np.ndarray = np.zeros(0, dtype=np.int64)
        self.last_step_times: list[float] = []

    @classmethod
    def from_loaded(cls, loaded, backend: Backend, unnorm_key: str = "",
                    gripper: GripperOptions | None = None) -> VlaPolicy:
        """Policy for a `vla_ros.model.loader.LoadedVla` run by `backend`."""
        stats = action_stats(loaded.norm_stats, unnorm_key or None)
        label = f"{loaded.family.name} {loaded.path.name} [{stats.key}]"
        return cls(backend, loaded.tokenizer, loaded.family, loaded.action_tokenizer,
                   ImagePreprocessor(loaded.preprocess), stats, gripper, label, loaded.spec.num_patches)

    def _warm_once(self, grey: np.ndarray) -> None:
        self.predict_tokens(grey, "warm up")

    def _prompt_for(self, text: str) -> _PromptCache:
        if self._prompt is None or self._prompt.text != text:
            ids = np.asarray(self.family.prompt_ids(self.tokenizer, text), dtype=np.int64)
            emb = self.backend.embed(ids[None])
            self._prompt = _PromptCache(text, ids, emb[:, :1], emb[:, 1:])
        return self._prompt

    def predict_tokens(self, rgb: np.ndarray, text: str) -> tuple[np.ndarray, dict[str, float]]:
        """Action token ids [n_actions] and per-stage seconds (no un-normalization)."""
        if not text or not text.strip():
            raise ValueError("empty instruction: nothing to predict (empty text means hold)")
        t0 = time.perf_counter()
        pixels = self.preprocessor(rgb)
        prompt = self._prompt_for(text)
        t1 = time.perf_counter()
        patches = self.backend.vision(pixels)
        if not np.all(np.isfinite(patches)):
            raise FloatingPointError("the vision stage produced NaN/Inf patch embeddings")
        t2 = time.perf_counter()
        if self._budget.n_patches != patches.shape[1]:  # learnt from the model when not given
            self._budget = dataclasses.replace(self._budget, n_patches=int(patches.shape[1]))
        problem = self._budget.problem(prompt.ids.shape[0], patches.shape[1])
        if problem is not None:
            raise ValueError(problem)
        embeds = np.concatenate([prompt.first, patches.astype(np.float32), prompt.rest], axis=1)
        logits, state = self.backend.prefill(embeds)
        tokens = np.empty(self.n_actions, dtype=np.int64)
        tokens[0] = self.action_tokenizer.argmax(logits)[0]
        t3 = time.perf_counter()
        steps = []
        for i in range(1, self.n_actions):
            s0 = time.perf_counter()
            logits, state = self.backend.decode(tokens[i - 1:i].reshape(1, 1), state)
            tokens[i] = self.action_tokenizer.argmax(logits)[0]
            steps.append(time.perf_counter() - s0)
        t4 = time.perf_counter()
        self.last_tokens, self.last_step_times = tokens.copy(), steps
        return tokens, {"preprocess": t1 - t0, "vision": t2 - t1, "prefill": t3 - t2, "decode": t4 - t3}

    def tokens_to_actions(self, tokens: np.ndarray) -> np.ndarray:
        """Action ids -> float64 [1, 7] in robot units (un-normalized, gripper options applied)."""
        normalized = self.action_tokenizer.decode(tokens)
        actions = self.gripper.apply(unnormalize(normalized, self.stats))[None, :]
        if not np.all(np.isfinite(actions)):
            raise FloatingPointError(f"non-finite action {actions.tolist()} from tokens {tokens.tolist()}")
        return actions

    def predict(self, observation: Observation, instruction: Instruction) -> ActionChunk:
        """One action [1, 7] for the observation, stamped with the observation's stamp."""
        tokens, timings = self.predict_tokens(observation.rgb, instruction.text)
        t0 = time.perf_counter()
        actions = self.tokens_to_actions(tokens)
        timings["detokenize"] = time.perf_counter() - t0
        chunk = ActionChunk(actions=actions, stamp=observation.stamp, instruction=instruction.text,
                            timings=timings)
        problem = validate_chunk(chunk)
        if problem is not None:
            raise ValueError(f"policy produced an unusable chunk: {problem}")
        return chunk
