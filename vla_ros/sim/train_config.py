"""The options of `vla-ros train-demo`: TrainConfig (what determines the model) and TrainRun (where and how).

Both are schema dataclasses: their fields are the command-line flags (vla_ros.core.schema.add_arguments).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from vla_ros.core.schema import ConfigError, param
from vla_ros.runtime.factory import DEMO_CHECKPOINT

PATCH_SIZE = 14  # the towers' patch size: the image size must be a multiple
LOG_FILE = "train_log.csv"
CONFIG_FILE = "train_config.json"
PLOT_FILE = "train_loss.png"
EVAL_FILE = "eval.json"
DEMO_DATA_VERSION = 5  # part of the demonstrations' cache key; bump when collection changes
INTERNAL_FIELDS = ("min_lr_fraction", "weight_decay", "grad_clip")  # recipe constants, no flags


@dataclass
class TrainConfig:
    """Everything that determines the trained model (saved as train_config.json)."""

    seed: int = param(0, "seed of the demonstrations, the initialisation and the batches",
                      range=(0, 2**31 - 1))
    episodes: int = param(2400, "demonstrations to collect (about 11 frames each)", range=(2, 10_000_000))
    image_size: int = param(112, "tower input size [px], a multiple of 14; the camera renders 224 and the "
                            "preprocessor resizes", range=(PATCH_SIZE, 1008))
    tower_dim: int = param(64, "DINOv2-like tower width; the SigLIP-like one is 1.5x", range=(1, 4096))
    tower_depth: int = param(3, "tower depth as released; the model runs depth - 1 blocks (second-to-last "
                             "features)", range=(1, 64))
    tower_heads: int = param(2, "attention heads per tower block", range=(1, 64))
    llm_hidden: int = param(192, "LLM hidden size", range=(1, 16384))
    llm_layers: int = param(3, "LLM decoder layers", range=(1, 256))
    llm_heads: int = param(3, "LLM attention heads", range=(1, 256))
    batch_size: int = param(32, "frames per optimizer step", range=(1, 65536))
    lr: float = param(6e-4, "peak learning rate (AdamW)", range=(0.0, 1.0))
    min_lr_fraction: float = param(0.05, "learning rate at the end of the cosine decay, as a share of lr",
                                   range=(0.0, 1.0))
    warmup_steps: int = param(200, "linear warm-up steps", range=(0, 100_000_000))
    weight_decay: float = param(0.01, "AdamW weight decay of the matrices", range=(0.0, 1.0))
    grad_clip: float = param(1.0, "gradient norm clip", range=(0.0, 1e6))
    aux_patch_weight: float = param(1.0, "weight of the auxiliary per-patch heat-map loss (0 = off)",
                                    range=(0.0, 1000.0))
    aux_state_weight: float = param(1.0, "weight of the auxiliary target/gripper position loss (0 = off)",
                                    range=(0.0, 1000.0))
    aux_attention_weight: float = param(0.5, "weight of the attention targets (colour word -> object, "
                                        "actions -> word; 0 = off)", range=(0.0, 1000.0))
    steps: int = param(9600, "planned optimizer steps (the schedule's horizon unless the time box is "
                       "shorter)", range=(1, 100_000_000))
    minutes: float = param(45.0, "wall-clock budget of the whole run, data collection included [min]",
                           range=(0.01, 1_000_000.0))
    threads: int = param(2, "torch threads (0 = 1)", range=(0, 1024))
    workers: int = param(2, "data collection processes", range=(0, 1024))

    def check(self) -> None:
        """Cross-field rules (called by vla_ros.core.schema.validate)."""
        if self.image_size % PATCH_SIZE:
            raise ConfigError(f"parameter 'image_size' = {self.image_size}: must be a multiple of the patch "
                              f"size {PATCH_SIZE}")

    def data_key(self, resize_method: str) -> str:
        """Identifies the demonstrations (cache directory name)."""
        text = json.dumps({"episodes": self.episodes, "seed": self.seed, "image_size": self.image_size,
                           "resize": resize_method, "version": DEMO_DATA_VERSION})
        return hashlib.sha1(text.encode()).hexdigest()[:10]


@dataclass
class TrainRun:
    """Where a training run keeps its files and how it checks the result (not part of the model)."""

    out: str = param(str(DEMO_CHECKPOINT), "checkpoint directory (where the node finds the embedded demo "
                     "model)")
    work: str = param(str(Path("build") / "train_demo"), "cache of demonstrations and resumable state")
    resume: bool = param(False, "continue from the state in --work")
    eval_episodes: int = param(20, "closed-loop check at the end (0 = none)", range=(0, 1_000_000))
    save_every_min: float = param(5.0, "state saving period [min]", range=(0.0, 1_000_000.0))


def lr_at(step: int, cfg: TrainConfig, horizon: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction at `horizon`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * cosine)
