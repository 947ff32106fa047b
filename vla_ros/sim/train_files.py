"""Files of a training run: the resumable state, the checkpoint (OpenVLA layout), the log and its plot."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim import Optimizer

from vla_ros.model.tiny import write_shards
from vla_ros.model.vision import module_to_released_key
from vla_ros.sim.dataset import STATS_FILE

# Files of the template checkpoint the trained one keeps as they are.
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "preprocessor_config.json", "generation_config.json")
LOG_FIELDS = ("step", "loss", "accuracy", "accuracy_xyz", "accuracy_gripper", "aux_patch", "aux_state",
              "aux_attention", "lr", "elapsed_s")


def save_state(path: Path, model: nn.Module, optimizer: Optimizer, meta: dict) -> None:
    """Weights and optimizer moments as safetensors, the rest as JSON (no pickle); files replaced whole."""
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path / "model.tmp"))
    names = {id(p): n for n, p in model.named_parameters()}
    moments = {}
    steps = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state:
                name = names[id(p)]
                moments[f"{name}::exp_avg"] = state["exp_avg"].contiguous()
                moments[f"{name}::exp_avg_sq"] = state["exp_avg_sq"].contiguous()
                steps[name] = float(state["step"])
    save_file(moments, str(path / "optimizer.tmp"))
    (path / "state.tmp").write_text(json.dumps(dict(meta, adam_steps=steps)))
    for stem in ("model", "optimizer"):
        (path / f"{stem}.tmp").replace(path / f"{stem}.safetensors")
    (path / "state.tmp").replace(path / "state.json")


def load_state(path: Path, model: nn.Module, optimizer: Optimizer) -> dict:
    """Restore what `save_state` wrote; returns its meta (step, horizon, log rows)."""
    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    moments = load_file(str(path / "optimizer.safetensors"))
    params = dict(model.named_parameters())
    for name, step in meta.pop("adam_steps").items():
        optimizer.state[params[name]] = {"step": torch.tensor(step),
                                         "exp_avg": moments[f"{name}::exp_avg"],
                                         "exp_avg_sq": moments[f"{name}::exp_avg_sq"]}
    return meta


def save_checkpoint(model: nn.Module, template: Path, out: Path, norm_stats: dict,
                    extra_config: dict) -> None:
    """The trained model in the OpenVLA HF layout: shards + index, config.json with norm_stats, tokenizer."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    tensors = {module_to_released_key(k): v.detach().float().contiguous().clone()
               for k, v in model.state_dict().items()}
    write_shards(out, tensors, save_file)
    config = json.loads((template / "config.json").read_text())
    config["norm_stats"] = norm_stats
    config.pop("vla_ros_tiny", None)
    config["vla_ros_demo"] = extra_config
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in COPIED_FILES:
        if (template / name).is_file():
            shutil.copyfile(template / name, out / name)
    (out / STATS_FILE).write_text(json.dumps(norm_stats, indent=2))


def write_log(rows: list[dict], path: Path) -> None:
    """The training log as CSV, one row per logged step."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(LOG_FIELDS), restval="")
        writer.writeheader()
        writer.writerows(rows)


def plot_log(rows: list[dict], path: Path) -> None:
    """Loss and action-token accuracy against the step."""
    import matplotlib  # lazy: matplotlib is heavy and only needed for this plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: after choosing the Agg backend

    steps = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, [r["loss"] for r in rows], color="tab:blue", label="loss (cross entropy)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    twin = ax.twinx()
    twin.plot(steps, [r["accuracy"] for r in rows], color="tab:orange", label="token accuracy (all 7)")
    twin.plot(steps, [r["accuracy_xyz"] for r in rows], color="tab:green", label="token accuracy (x, y, z)")
    twin.set_ylim(0, 1)
    twin.set_ylabel("accuracy")
    fig.legend(loc="upper center", ncol=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
