"""`vla-ros train-demo`: train the tiny embedded demo VLA on simulator demonstrations (OpenVLA recipe).

The recipe: the actions of the demonstrations are normalised with the dataset's q01/q99 (gripper
masked), discretised into 256 bins and mapped to the last 256 ids of the vocabulary; the model reads
[BOS, image patches, prompt] and is trained with teacher forcing and cross entropy on the 7 action
tokens only, AdamW, linear warm-up and cosine decay. The architecture is the real one at a small size
(two ViT towers with per-patch concatenation, fused GELU MLP projector, Llama), started from the
model package's tiny checkpoint factory (which also trains the `tokenizers` BPE tokenizer) and saved
in the OpenVLA HF layout, so the result loads through the same loader and Policy as a released
checkpoint. Unlike OpenVLA, which starts from pretrained towers and LLM, the demo model starts from
random weights, so training-only linear heads and attention targets add auxiliary targets from the
recorded sim state (where each object and the gripper are, which patches the colour word should look
at; `vla_ros.sim.auxiliary`); they are not saved. The ViT position embeddings start as a 2-D
sine-cosine code.

Time-boxed and resumable: `--minutes` bounds the whole run (data collection included); the state
(weights, optimizer, step) is saved in the work directory every few minutes and at the end, and
`--resume` continues from it. Batches are drawn from a stream seeded by (seed, step), so a resumed
run sees the same batches as an uninterrupted one.

The flags are the fields of TrainConfig and TrainRun (vla_ros.sim.train_config); the run itself is
vla_ros.sim.train_loop.
"""

from __future__ import annotations

import argparse
import os
import sys

from vla_ros.core.schema import ConfigError, add_arguments, from_arguments
from vla_ros.sim.train_config import INTERNAL_FIELDS, TrainConfig, TrainRun


def build_parser() -> argparse.ArgumentParser:
    """One flag per TrainRun and TrainConfig field (the recipe constants excepted)."""
    p = argparse.ArgumentParser(prog="vla-ros train-demo", description=__doc__.split("\n\n")[0])
    add_arguments(p.add_argument_group("run (where files go, how the result is checked)"), TrainRun)
    add_arguments(p.add_argument_group("model and training (saved as train_config.json)"), TrainConfig,
                  exclude=INTERNAL_FIELDS)
    return p


def main(argv: list[str]) -> int:
    """Entry point of `vla-ros train-demo`: 0 when trained, 2 for invalid options."""
    args = build_parser().parse_args(argv)
    try:
        cfg, run = from_arguments(TrainConfig, args), from_arguments(TrainRun, args)
    except ConfigError as exc:
        print(f"train-demo: {exc}", file=sys.stderr)
        return 2
    # Threads that sleep instead of spinning while waiting: on a shared CPU, spinning OpenMP threads
    # made a training step 4x slower (measured: 13 s vs 3.2 s with 2 threads under load 5). Only
    # effective before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from vla_ros.sim.train_loop import train  # lazy: loads torch, after OMP_WAIT_POLICY is set

    return train(cfg, run)
