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
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vla_ros.runtime.factory import DEMO_CHECKPOINT
from vla_ros.sim.dataset import DATASET_KEY, STATS_FILE, DemoDataset, collect, normalize_actions

if TYPE_CHECKING:
    import torch

DEFAULT_OUT = DEMO_CHECKPOINT  # where the node finds the embedded demo model
DEFAULT_WORK = Path("build") / "train_demo"
LOG_FILE = "train_log.csv"
CONFIG_FILE = "train_config.json"
PLOT_FILE = "train_loss.png"
EVAL_FILE = "eval.json"
COPIED_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                "preprocessor_config.json", "generation_config.json")


@dataclass
class TrainConfig:
    """Everything that determines the trained model (saved as train_config.json)."""

    seed: int = 0
    episodes: int = 2400  # demonstrations collected (about 11 frames each)
    image_size: int = 112  # tower input; the camera renders 224 and the preprocessor resizes
    tower_dim: int = 64  # DINOv2-like tower width; the SigLIP-like one is 1.5x (factory convention)
    tower_depth: int = 3  # released depth; the model runs depth - 1 blocks (second-to-last features)
    tower_heads: int = 2
    llm_hidden: int = 192
    llm_layers: int = 3
    llm_heads: int = 3
    batch_size: int = 32
    lr: float = 6e-4
    min_lr_fraction: float = 0.05
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    aux_patch_weight: float = 1.0  # auxiliary per-patch heat-map loss (0 = cross entropy only)
    aux_state_weight: float = 1.0  # auxiliary target/gripper position loss at the last prompt token
    aux_attention_weight: float = 0.5  # attention targets: colour word -> its object, actions -> colour word
    steps: int = 9600  # planned steps (the schedule's horizon unless the time box is shorter)
    minutes: float = 45.0  # wall-clock budget of the whole run
    threads: int = 2
    workers: int = 2  # processes for data collection
    extra: dict = field(default_factory=dict)

    def data_key(self, resize_method: str) -> str:
        """Identifies the demonstrations (cache directory name)."""
        text = json.dumps({"episodes": self.episodes, "seed": self.seed, "image_size": self.image_size,
                           "resize": resize_method, "version": 5})
        return hashlib.sha1(text.encode()).hexdigest()[:10]


# ----------------------------------------------------------------------------- model
class PolicyResize:
    """The policy preprocessor's own resize (whatever method it resolves to), picklable for workers."""

    def __init__(self, preprocess) -> None:
        self.preprocess = preprocess  # vla_ros.model.preprocess.PreprocessSpec (frozen, picklable)
        self._preprocessor = None

    def __getstate__(self) -> dict:
        return {"preprocess": self.preprocess, "_preprocessor": None}

    def __call__(self, rgb: np.ndarray, size: int) -> np.ndarray:
        from vla_ros.model.preprocess import ImagePreprocessor

        if size != self.preprocess.image_size:
            raise ValueError(f"frames are resized to {self.preprocess.image_size}, not {size}")
        if self._preprocessor is None:
            self._preprocessor = ImagePreprocessor(self.preprocess)
        return self._preprocessor.resize(rgb)

    @property
    def method(self) -> str:
        from vla_ros.model.preprocess import resolve_resize

        return resolve_resize(self.preprocess.resize)


def write_template(cfg: TrainConfig, path: Path) -> Path:
    """A checkpoint of the demo's shape from the model package's factory (its weights are re-initialised)."""
    import inspect

    from vla_ros.model.tiny import write_tiny_checkpoint
    from vla_ros.sim.tasks import instruction_corpus

    # A tokenizer that has seen the demo's words gives short prompts; older factories lack `corpus`.
    extra = {"corpus": instruction_corpus()} \
        if "corpus" in inspect.signature(write_tiny_checkpoint).parameters else {}
    return write_tiny_checkpoint(path, family="openvla", seed=cfg.seed, image_size=cfg.image_size,
                                 tower_dim=cfg.tower_dim, tower_depth=cfg.tower_depth,
                                 tower_heads=cfg.tower_heads, llm_hidden=cfg.llm_hidden,
                                 llm_layers=cfg.llm_layers, llm_heads=cfg.llm_heads,
                                 dataset_keys=(DATASET_KEY,), **extra)


def reinitialize(model, seed: int) -> None:
    """Training initialisation: truncated-normal 0.02 linears/embeddings, unit norms, LayerScale 0.1."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d)):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
            elif "rmsnorm" in type(module).__name__.lower():
                module.weight.fill_(1.0)
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if leaf == "pos_embed":
                p.copy_(sincos_position_embedding(p.shape[1], p.shape[2]))
            elif leaf in ("cls_token", "reg_token"):
                nn.init.normal_(p, std=1e-6)
            elif leaf == "gamma":
                p.fill_(0.1)


def sincos_position_embedding(rows: int, dim: int, amplitude: float = 0.5) -> torch.Tensor:
    """2-D sine-cosine position embedding [1, rows, dim] over a square patch grid (a leading class
    row, when rows is one more than a square, gets zeros): coordinates the towers can read at once."""
    import torch

    grid = int(round(math.sqrt(rows)))
    prefix = rows - grid * grid
    quarter = dim // 4
    omega = 1.0 / 100.0 ** (torch.arange(quarter, dtype=torch.float64) / max(1, quarter))  # [D/4]
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                            indexing="ij")
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]  # 4 x [G*G, D/4]
    table = torch.zeros(rows, dim, dtype=torch.float64)
    table[prefix:, :4 * quarter] = torch.cat(parts, dim=1)
    return (amplitude * table)[None].float()


class Batcher:
    """Turns dataset rows into tensors: pixels, ids, mask, labels and, when the dataset has states and
    `auxiliary` is given, heat, vectors and prompt_ends (see vla_ros.sim.auxiliary)."""

    def __init__(self, dataset: DemoDataset, loaded, stats: dict, auxiliary=None) -> None:
        from vla_ros.model.preprocess import ImagePreprocessor

        self.dataset = dataset
        self.preprocessor = ImagePreprocessor(loaded.preprocess)
        self.action_tokenizer = loaded.action_tokenizer
        prompts = {text: loaded.family.prompt_ids(loaded.tokenizer, text)
                   for text in set(dataset.instructions)}
        self.prompt_ids = [prompts[text] for text in dataset.instructions]
        self.colour_index = {text: self._colour_index(loaded, text, ids) for text, ids in prompts.items()}
        self.action_ids = self.action_tokenizer.encode(normalize_actions(dataset.actions, stats))  # [N, 7]
        self.pad_id = int(loaded.config.pad_token_id or 0)
        self.max_prompt = max(len(p) for p in prompts.values())
        self.auxiliary = auxiliary if dataset.states is not None and dataset.targets is not None else None
        self.n_patches = (loaded.preprocess.image_size // 14) ** 2

    @staticmethod
    def _colour_index(loaded, text: str, ids: list[int]) -> int:
        """Prompt index of the colour word's last token (the last prompt token when none is named)."""
        from vla_ros.sim.auxiliary import with_other_colour, word_token_index

        swapped = with_other_colour(text)
        if swapped is None:
            return len(ids) - 1
        return word_token_index(ids, loaded.family.prompt_ids(loaded.tokenizer, swapped))

    def __call__(self, rows: np.ndarray) -> dict:
        import torch

        from vla_ros.model.vla import spliced_index

        n_act = self.action_ids.shape[1]
        length = self.max_prompt + n_act
        b = len(rows)
        ids = np.full((b, length), self.pad_id, np.int64)
        labels = np.full((b, length), -100, np.int64)
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


def action_accuracy(logits, labels, n_patches: int, first_id: int, end_id: int) -> np.ndarray:
    """Per action dimension [7], the share of tokens predicted exactly (argmax over the action ids)
    under teacher forcing."""
    import torch

    ignore = torch.full((labels.shape[0], n_patches), -100, dtype=labels.dtype)
    full = torch.cat([labels[:, :1], ignore, labels[:, 1:]], dim=1)[:, 1:]
    predicted = logits[:, :-1, first_id:end_id].argmax(-1) + first_id
    where = full != -100
    hits = (predicted[where] == full[where]).float().reshape(labels.shape[0], -1)  # [B, 7]
    return hits.mean(0).numpy()


def lr_at(step: int, cfg: TrainConfig, horizon: int) -> float:
    """Linear warm-up, then cosine decay to min_lr_fraction at `horizon`."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, horizon - cfg.warmup_steps))
    cosine = 0.5 * (1 + math.cos(math.pi * progress))
    return cfg.lr * (cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * cosine)


# ----------------------------------------------------------------------------- state files
def save_state(path: Path, model, optimizer, meta: dict) -> None:
    """Weights and optimizer moments as safetensors, the rest as JSON (no pickle)."""
    from safetensors.torch import save_file

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


def load_state(path: Path, model, optimizer) -> dict:
    """Restore what `save_state` wrote; returns its meta (step, horizon, log rows)."""
    import torch
    from safetensors.torch import load_file

    meta = json.loads((path / "state.json").read_text())
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    moments = load_file(str(path / "optimizer.safetensors"))
    params = dict(model.named_parameters())
    for name, step in meta.pop("adam_steps").items():
        optimizer.state[params[name]] = {"step": torch.tensor(step),
                                         "exp_avg": moments[f"{name}::exp_avg"],
                                         "exp_avg_sq": moments[f"{name}::exp_avg_sq"]}
    return meta


def save_checkpoint(model, template: Path, out: Path, norm_stats: dict, extra_config: dict) -> None:
    """The trained model in the OpenVLA HF layout: shards + index, config.json with norm_stats, tokenizer."""
    from vla_ros.model.tiny import _write_shards
    from vla_ros.model.vision import module_to_released_key

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("model*.safetensors*"):
        old.unlink()
    tensors = {module_to_released_key(k): v.detach().float().contiguous().clone()
               for k, v in model.state_dict().items()}
    _write_shards(out, tensors, _save_file())
    config = json.loads((template / "config.json").read_text())
    config["norm_stats"] = norm_stats
    config.pop("vla_ros_tiny", None)
    config["vla_ros_demo"] = extra_config
    (out / "config.json").write_text(json.dumps(config, indent=2))
    for name in COPIED_FILES:
        if (template / name).is_file():
            shutil.copyfile(template / name, out / name)
    (out / STATS_FILE).write_text(json.dumps(norm_stats, indent=2))


def _save_file():
    from safetensors.torch import save_file

    return save_file


def plot_log(rows: list[dict], path: Path) -> None:
    """Loss and action-token accuracy against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def write_log(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        fields = ["step", "loss", "accuracy", "accuracy_xyz", "accuracy_gripper", "aux_patch", "aux_state",
                  "aux_attention", "lr", "elapsed_s"]
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="vla-ros train-demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"checkpoint directory (default {DEFAULT_OUT})")
    p.add_argument("--work", default=str(DEFAULT_WORK),
                   help="cache of demonstrations and resumable state (default build/train_demo)")
    p.add_argument("--minutes", type=float, default=d.minutes, help="wall-clock budget of the whole run")
    p.add_argument("--steps", type=int, default=d.steps, help="planned optimizer steps")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--episodes", type=int, default=d.episodes, help="demonstrations to collect")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--tower-dim", type=int, default=d.tower_dim)
    p.add_argument("--tower-depth", type=int, default=d.tower_depth)
    p.add_argument("--tower-heads", type=int, default=d.tower_heads)
    p.add_argument("--llm-hidden", type=int, default=d.llm_hidden)
    p.add_argument("--llm-layers", type=int, default=d.llm_layers)
    p.add_argument("--llm-heads", type=int, default=d.llm_heads)
    p.add_argument("--aux-patch-weight", type=float, default=d.aux_patch_weight,
                   help="weight of the auxiliary per-patch heat-map loss (0 = off)")
    p.add_argument("--aux-attention-weight", type=float, default=d.aux_attention_weight,
                   help="weight of the attention targets (colour word -> object, actions -> word; 0 = off)")
    p.add_argument("--aux-state-weight", type=float, default=d.aux_state_weight,
                   help="weight of the auxiliary target/gripper position loss (0 = off)")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads")
    p.add_argument("--workers", type=int, default=d.workers, help="data collection processes")
    p.add_argument("--resume", action="store_true", help="continue from the state in --work")
    p.add_argument("--eval-episodes", type=int, default=20, help="closed-loop check at the end (0 = none)")
    p.add_argument("--save-every-min", type=float, default=5.0, help="state saving period [min]")
    return p


def main(argv: list[str]) -> int:
    # Threads that sleep instead of spinning while waiting: on a shared CPU, spinning OpenMP threads
    # made a training step 4x slower (measured: 13 s vs 3.2 s with 2 threads under load 5). Only
    # effective before torch is first imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    if args.minutes <= 0 or args.steps < 1 or args.episodes < 2 or args.batch_size < 1:
        print("train-demo: --minutes, --steps, --episodes and --batch-size must be positive", file=sys.stderr)
        return 2
    if args.aux_patch_weight < 0 or args.aux_state_weight < 0 or args.aux_attention_weight < 0:
        print("train-demo: the auxiliary loss weights must be >= 0", file=sys.stderr)
        return 2
    if args.image_size % 14:
        print("train-demo: --image-size must be a multiple of the patch size 14", file=sys.stderr)
        return 2
    cfg = TrainConfig(seed=args.seed, episodes=args.episodes, image_size=args.image_size,
                      tower_dim=args.tower_dim, tower_depth=args.tower_depth, tower_heads=args.tower_heads,
                      llm_hidden=args.llm_hidden, llm_layers=args.llm_layers, llm_heads=args.llm_heads,
                      batch_size=args.batch_size, lr=args.lr, warmup_steps=args.warmup_steps,
                      steps=args.steps, minutes=args.minutes, aux_patch_weight=args.aux_patch_weight,
                      aux_state_weight=args.aux_state_weight, aux_attention_weight=args.aux_attention_weight,
                      threads=args.threads, workers=args.workers)
    return train(cfg, Path(args.out), Path(args.work), args.resume, args.eval_episodes, args.save_every_min)


def train(cfg: TrainConfig, out: Path, work: Path, resume: bool = False, eval_episodes: int = 20,
          save_every_min: float = 5.0) -> int:
    """Collect (or reuse) the demonstrations, train within the time box, save the checkpoint."""
    import torch
    from torch import nn

    from vla_ros.model.loader import load_vla
    from vla_ros.sim.auxiliary import AuxiliaryTargets, attention_loss, auxiliary_losses, make_heads

    started = time.monotonic()
    deadline = started + 60.0 * cfg.minutes
    torch.set_num_threads(max(1, cfg.threads))
    work.mkdir(parents=True, exist_ok=True)

    template = write_template(cfg, work / "template")
    loaded = load_vla(template)
    resize = PolicyResize(loaded.preprocess)  # frames stored exactly as the policy will see them
    data_dir = work / f"data_{cfg.data_key(resize.method)}"
    if (data_dir / "demo_data.npz").is_file():
        dataset = DemoDataset.load(data_dir)
        print(f"[train-demo] {len(dataset)} frames from {data_dir}", flush=True)
    else:
        print(f"[train-demo] collecting {cfg.episodes} demonstrations ({cfg.workers} workers) ...",
              flush=True)
        t0 = time.monotonic()
        dataset = collect(cfg.episodes, seed=1_000_000 + cfg.seed, image_size=cfg.image_size,
                          resize=resize, workers=cfg.workers)
        dataset.save(data_dir)
        print(f"[train-demo] {len(dataset)} frames ({dataset.meta['kept']} episodes, "
              f"{dataset.meta['failed']} dropped) in {time.monotonic() - t0:.0f} s", flush=True)
    norm_stats = dataset.statistics()
    stats = norm_stats[DATASET_KEY]["action"]

    model = loaded.model
    model.requires_grad_(True)
    model.train()
    reinitialize(model, cfg.seed)
    first_id, end_id = loaded.action_tokenizer.first_id, loaded.action_tokenizer.vocab_end
    use_aux = (cfg.aux_patch_weight > 0 or cfg.aux_state_weight > 0 or cfg.aux_attention_weight > 0) \
        and dataset.states is not None
    use_attention = use_aux and cfg.aux_attention_weight > 0
    if use_attention:  # attention weights are only returned by the eager implementation
        model.language_model.set_attn_implementation("eager")
    batcher = Batcher(dataset, loaded, stats, AuxiliaryTargets(cfg.image_size) if use_aux else None)
    n_params = sum(p.numel() for p in model.parameters())
    # What the optimizer trains and the state files hold: the model plus the training-only heads.
    trainee = nn.ModuleDict({"vla": model, "aux": make_heads(cfg.llm_hidden)})
    decay = [p for n, p in trainee.named_parameters() if p.ndim >= 2 and "pos_embed" not in n]
    no_decay = [p for n, p in trainee.named_parameters() if not (p.ndim >= 2 and "pos_embed" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.lr, betas=(0.9, 0.95))
    state_dir = work / "state"
    step, horizon, rows, trained_s = 0, cfg.steps, [], 0.0
    if resume and (state_dir / "state.json").is_file():
        meta = load_state(state_dir, trainee, optimizer)
        step, rows, trained_s = meta["step"], meta["rows"], meta["trained_s"]
        print(f"[train-demo] resumed at step {step} of {horizon}", flush=True)
    print(f"[train-demo] {n_params / 1e6:.2f} M parameters, {cfg.image_size} px towers, "
          f"{len(dataset)} frames, batch {cfg.batch_size}, up to {cfg.steps} steps, "
          f"{(deadline - time.monotonic()) / 60:.1f} min left", flush=True)

    n_patches = (cfg.image_size // 14) ** 2
    last_save = time.monotonic()
    loop_start, loop_step0 = time.monotonic(), step
    end_reserve_s = 20.0  # saving and the log at the end
    window_loss, window_acc, window_aux = [], [], []
    while step < horizon:
        now = time.monotonic()
        if now > deadline - end_reserve_s:
            print(f"[train-demo] time box reached at step {step}", flush=True)
            break
        # Fit the schedule into the time box from the measured speed (early, then once more when the
        # first steps' start-up costs no longer weigh in); never beyond the planned steps.
        if step - loop_step0 in (20, 300) and step < horizon:
            per_step = (now - loop_start) / (step - loop_step0)
            affordable = step + int((deadline - end_reserve_s - now) / per_step)
            if affordable != horizon and (affordable < horizon or horizon < cfg.steps):
                horizon = max(step + 1, min(cfg.steps, affordable))
                print(f"[train-demo] {per_step:.2f} s/step: schedule fitted to {horizon} steps", flush=True)
        lr = lr_at(step, cfg, horizon)
        for group in optimizer.param_groups:
            group["lr"] = lr
        rows_idx = np.random.default_rng([cfg.seed, step]).integers(0, len(dataset), cfg.batch_size)
        batch = batcher(rows_idx)
        output = model(batch["pixels"], batch["ids"], batch["mask"], batch["labels"], hidden=use_aux,
                       attentions=use_attention)
        loss = output.loss
        if use_aux:
            patch_loss, state_loss = auxiliary_losses(trainee["aux"], output.patches, output.hidden, batch,
                                                     output.layers)
            loss = loss + cfg.aux_patch_weight * patch_loss + cfg.aux_state_weight * state_loss
            att_loss = attention_loss(output.attentions, batch, n_patches) if use_attention \
                else torch.zeros(())
            loss = loss + cfg.aux_attention_weight * att_loss
            window_aux.append(tuple(float(x.detach()) for x in (patch_loss, state_loss, att_loss)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainee.parameters(), cfg.grad_clip)
        optimizer.step()
        window_loss.append(float(output.loss.detach()))
        window_acc.append(action_accuracy(output.logits.detach(), batch["labels"], n_patches, first_id,
                                          end_id))
        step += 1
        if step % 25 == 0 or step == horizon or step == 1:
            elapsed = trained_s + time.monotonic() - loop_start
            acc = np.mean(window_acc, axis=0)  # [7]
            aux = np.mean(window_aux, axis=0) if window_aux else (float("nan"),) * 3
            rows.append({"step": step, "loss": float(np.mean(window_loss)), "accuracy": float(acc.mean()),
                         "accuracy_xyz": float(acc[:3].mean()), "accuracy_gripper": float(acc[6]),
                         "aux_patch": float(aux[0]), "aux_state": float(aux[1]),
                         "aux_attention": float(aux[2]),
                         "lr": lr, "elapsed_s": round(elapsed, 1)})
            window_loss, window_acc, window_aux = [], [], []
            if step % 100 == 0 or step == horizon:
                rate = (step - loop_step0) / max(1e-9, time.monotonic() - loop_start)
                print(f"[train-demo] step {step}/{horizon} loss {rows[-1]['loss']:.4f} "
                      f"acc {rows[-1]['accuracy']:.3f} (xyz {rows[-1]['accuracy_xyz']:.3f}, gripper "
                      f"{rows[-1]['accuracy_gripper']:.3f}) aux {rows[-1]['aux_patch']:.3f}/"
                      f"{rows[-1]['aux_state']:.3f}/{rows[-1]['aux_attention']:.3f} lr {lr:.2e} "
                      f"{rate:.2f} steps/s "
                      f"eta {(horizon - step) / max(rate, 1e-9) / 60:.1f} min", flush=True)
        if time.monotonic() - last_save > 60.0 * save_every_min:
            save_state(state_dir, trainee, optimizer, {"step": step, "horizon": horizon, "rows": rows,
                                                     "trained_s": trained_s + time.monotonic() - loop_start})
            last_save = time.monotonic()
    trained_s += time.monotonic() - loop_start
    if use_attention:
        model.language_model.set_attn_implementation("sdpa")
    save_state(state_dir, trainee, optimizer, {"step": step, "horizon": horizon, "rows": rows,
                                             "trained_s": trained_s})

    model.eval()
    extra = {"train_config": asdict(cfg), "steps_done": step, "horizon": horizon,
             "train_seconds": round(trained_s),
             "frames": len(dataset), "episodes_kept": dataset.meta.get("kept"),
             "final_loss": rows[-1]["loss"] if rows else None,
             "final_accuracy": rows[-1]["accuracy"] if rows else None,
             "torch": torch.__version__, "python": platform.python_version()}
    save_checkpoint(model, template, out, norm_stats, extra)
    (out / CONFIG_FILE).write_text(json.dumps(dict(extra, parameters=n_params), indent=2))
    write_log(rows, out / LOG_FILE)
    if rows:
        plot_log(rows, out / PLOT_FILE)
    size_mb = sum(f.stat().st_size for f in out.glob("*.safetensors")) / 1e6
    print(f"[train-demo] saved {out} ({size_mb:.1f} MB of weights) after {step} steps, "
          f"{(time.monotonic() - started) / 60:.1f} min", flush=True)
    if eval_episodes > 0:
        run_check(out, eval_episodes, cfg.seed)
    return 0


def run_check(checkpoint: Path, episodes: int, seed: int) -> dict:
    """Closed-loop success of the saved checkpoint through the regular loader and Policy."""
    from vla_ros.core.config import PolicyConfig
    from vla_ros.runtime.factory import make_policy
    from vla_ros.sim.evaluate import evaluate, format_table, summarize

    policy = make_policy(PolicyConfig(checkpoint=str(checkpoint)))
    results = evaluate(lambda world: policy, episodes, seed=10_000 + seed)
    table = summarize(results)
    print(format_table(table), flush=True)
    (checkpoint / EVAL_FILE).write_text(json.dumps({"episodes": episodes, "seed": 10_000 + seed,
                                                    "summary": table}, indent=2))
    return table
