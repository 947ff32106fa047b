"""Training batches of the demo model: pixels, prompt + action tokens, labels and auxiliary targets."""

from __future__ import annotations

import numpy as np
import torch

from vla_ros.model.loader import LoadedVla
from vla_ros.model.preprocess import ImagePreprocessor
from vla_ros.model.vla import spliced_index
from vla_ros.sim.auxiliary import AuxiliaryTargets, with_other_colour, word_token_index
from vla_ros.sim.dataset import DemoDataset, normalize_actions

IGNORE_INDEX = -100  # labels the cross entropy skips (prompt and padding)


def colour_word_index(loaded: LoadedVla, text: str, ids: list[int]) -> int:
    """Prompt index of the colour word's last token (the last prompt token when none is named)."""
    swapped = with_other_colour(text)
    if swapped is None:
        return len(ids) - 1
    return word_token_index(ids, loaded.family.prompt_ids(loaded.tokenizer, swapped))


class Batcher:
    """Turns dataset rows into tensors: pixels, ids, mask, labels and, when the dataset has states and
    `auxiliary` is given, heat, vectors, prompt_ends and colour_ends (see vla_ros.sim.auxiliary)."""

    def __init__(self, dataset: DemoDataset, loaded: LoadedVla, stats: dict,
                 auxiliary: AuxiliaryTargets | None = None) -> None:
        self.dataset = dataset
        self.preprocessor = ImagePreprocessor(loaded.preprocess)
        self.action_tokenizer = loaded.action_tokenizer
        prompts = {text: loaded.family.prompt_ids(loaded.tokenizer, text)
                   for text in set(dataset.instructions)}
        self.prompt_ids = [prompts[text] for text in dataset.instructions]
        self.colour_index = {text: colour_word_index(loaded, text, ids) for text, ids in prompts.items()}
        self.action_ids = self.action_tokenizer.encode(normalize_actions(dataset.actions, stats))  # [N, 7]
        self.pad_id = int(loaded.spec.pad_token_id or 0)
        self.max_prompt = max(len(p) for p in prompts.values())
        self.auxiliary = auxiliary if dataset.states is not None and dataset.targets is not None else None
        self.n_patches = (loaded.preprocess.image_size // 14) ** 2

    def __call__(self, rows: np.ndarray) -> dict:
        n_act = self.action_ids.shape[1]
        length = self.max_prompt + n_act
        b = len(rows)
        ids = np.full((b, length), self.pad_id, np.int64)
        labels = np.full((b, length), IGNORE_INDEX, np.int64)
        mask = np.zeros((b, length), np.int64)
        pixels = np.empty((b, 6, *self.dataset.images.shape[1:3]), np.float32)
        for j, row in enumerate(rows):
            prompt = self.prompt_ids[row]
            k = len(prompt)
            ids[j, :k] = prompt
            ids[j, k:k + n_act] = self.action_ids[row]
            labels[j, k:k + n_act] = self.action_ids[row]
            mask[j, :k + n_act] = 1
            pixels[j] = self.preprocessor(self.dataset.images[row])[0]
        batch = {"pixels": torch.from_numpy(pixels), "ids": torch.from_numpy(ids),
                 "mask": torch.from_numpy(mask), "labels": torch.from_numpy(labels)}
        if self.auxiliary is not None:
            targets = self.auxiliary.batch(self.dataset.states[rows], self.dataset.targets[rows])
            batch.update({name: torch.from_numpy(value) for name, value in targets.items()})
            last = [len(self.prompt_ids[row]) - 1 for row in rows]
            colour = [self.colour_index[self.dataset.instructions[row]] for row in rows]
            batch["prompt_ends"] = torch.tensor([spliced_index(i, self.n_patches) for i in last])
            batch["colour_ends"] = torch.tensor([spliced_index(i, self.n_patches) for i in colour])
        return batch
