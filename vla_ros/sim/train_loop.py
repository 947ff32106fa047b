"""The training run of `vla-ros train-demo`: demonstrations, time-boxed optimisation, checkpoint, check."""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vla_ros.core.config import PolicyConfig
from vla_ros.model.loader import load_vla
from vla_ros.runtime.factory import make_policy
from vla_ros.sim.auxiliary import AuxiliaryTargets, attention_loss, auxiliary_losses, make_heads
from vla_ros.sim.dataset import DATASET_KEY, DemoDataset, PolicyResize, collect
from vla_ros.sim.evaluate import evaluate, format_table, results_table
from vla_ros.sim.train_batches import Batcher
from vla_ros.sim.train_config import CONFIG_FILE, EVAL_FILE, LOG_FILE, PLOT_FILE, TrainConfig, TrainRun, lr_at
from vla_ros.sim.train_files import load_state, plot_log, save_checkpoint, save_state, write_log
from vla_ros.sim.train_model import action_accuracy, reinitialize, write_template

END_RESERVE_S = 20.0  # kept free at the end of the time box for saving and the log
LOG_EVERY = 25  # steps per log row
PRINT_EVERY = 100  # steps per progress line
FIT_AT = (20, 300)  # steps after which the schedule is fitted to the time box from the measured speed
EVAL_SEED_OFFSET = 10_000  # the closed-loop check's scenes are clear of the demonstrations'
COLLECT_SEED_OFFSET = 1_000_000  # the demonstrations' scene seeds


def load_or_collect(cfg: TrainConfig, work: Path, resize: PolicyResize) -> DemoDataset:
    """The demonstrations of `cfg` from the cache in `work`, collected (and cached) when missing."""
    data_dir = work / f"data_{cfg.data_key(resize.method)}"
    if (data_dir / "demo_data.npz").is_file():
        dataset = DemoDataset.load(data_dir)
        print(f"[train-demo] {len(dataset)} frames from {data_dir}", flush=True)
        return dataset
    print(f"[train-demo] collecting {cfg.episodes} demonstrations ({cfg.workers} workers) ...", flush=True)
    t0 = time.monotonic()
    dataset = collect(cfg.episodes, seed=COLLECT_SEED_OFFSET + cfg.seed, image_size=cfg.image_size,
                      resize=resize, workers=cfg.workers)
    dataset.save(data_dir)
    print(f"[train-demo] {len(dataset)} frames ({dataset.meta['kept']} episodes, "
          f"{dataset.meta['failed']} dropped) in {time.monotonic() - t0:.0f} s", flush=True)
    return dataset


def make_optimizer(trainee: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only (not on norms, biases or position embeddings)."""
    def decays(name: str, p: torch.Tensor) -> bool:
        return p.ndim >= 2 and "pos_embed" not in name

    decay = [p for n, p in trainee.named_parameters() if decays(n, p)]
    no_decay = [p for n, p in trainee.named_parameters() if not decays(n, p)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))


def train(cfg: TrainConfig, run: TrainRun) -> int:
    """Collect (or reuse) the demonstrations, train within the time box, save the checkpoint."""
    out, work = Path(run.out), Path(run.work)
    started = time.monotonic()
    deadline = started + 60.0 * cfg.minutes
    torch.set_num_threads(max(1, cfg.threads))
    work.mkdir(parents=True, exist_ok=True)

    template = write_template(cfg, work / "template")
    loaded = load_vla(template)
    dataset = load_or_collect(cfg, work, PolicyResize(loaded.preprocess))  # frames as the policy sees them
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
    optimizer = make_optimizer(trainee, cfg)
    state_dir = work / "state"
    step, horizon, rows, trained_s = 0, cfg.steps, [], 0.0
    if run.resume and (state_dir / "state.json").is_file():
        meta = load_state(state_dir, trainee, optimizer)
        step, rows, trained_s = meta["step"], meta["rows"], meta["trained_s"]
        print(f"[train-demo] resumed at step {step} of {horizon}", flush=True)
    print(f"[train-demo] {n_params / 1e6:.2f} M parameters, {cfg.image_size} px towers, "
          f"{len(dataset)} frames, batch {cfg.batch_size}, up to {cfg.steps} steps, "
          f"{(deadline - time.monotonic()) / 60:.1f} min left", flush=True)

    n_patches = (cfg.image_size // 14) ** 2
    last_save = time.monotonic()
    loop_start, loop_step0 = time.monotonic(), step
    window_loss, window_acc, window_aux = [], [], []
    while step < horizon:
        now = time.monotonic()
        if now > deadline - END_RESERVE_S:
            print(f"[train-demo] time box reached at step {step}", flush=True)
            break
        # Fit the schedule into the time box from the measured speed (early, then once more when the
        # first steps' start-up costs no longer weigh in); never beyond the planned steps.
        if step - loop_step0 in FIT_AT and step < horizon:
            per_step = (now - loop_start) / (step - loop_step0)
            affordable = step + int((deadline - END_RESERVE_S - now) / per_step)
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
        if step % LOG_EVERY == 0 or step == horizon or step == 1:
            elapsed = trained_s + time.monotonic() - loop_start
            rows.append(log_row(step, window_loss, window_acc, window_aux, lr, elapsed))
            window_loss, window_acc, window_aux = [], [], []
            if step % PRINT_EVERY == 0 or step == horizon:
                rate = (step - loop_step0) / max(1e-9, time.monotonic() - loop_start)
                print_progress(rows[-1], horizon, rate)
        if time.monotonic() - last_save > 60.0 * run.save_every_min:
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
    if run.eval_episodes > 0:
        run_check(out, run.eval_episodes, cfg.seed)
    return 0


def log_row(step: int, losses: list[float], accuracies: list[np.ndarray], aux: list[tuple[float, ...]],
            lr: float, elapsed_s: float) -> dict:
    """One row of the training log: the means over the steps since the last row."""
    acc = np.mean(accuracies, axis=0)  # [7]
    aux_mean = np.mean(aux, axis=0) if aux else (float("nan"),) * 3
    return {"step": step, "loss": float(np.mean(losses)), "accuracy": float(acc.mean()),
            "accuracy_xyz": float(acc[:3].mean()), "accuracy_gripper": float(acc[6]),
            "aux_patch": float(aux_mean[0]), "aux_state": float(aux_mean[1]),
            "aux_attention": float(aux_mean[2]), "lr": lr, "elapsed_s": round(elapsed_s, 1)}


def print_progress(row: dict, horizon: int, rate: float) -> None:
    """One progress line: step, loss, accuracies, auxiliary losses, learning rate, speed, time left."""
    print(f"[train-demo] step {row['step']}/{horizon} loss {row['loss']:.4f} "
          f"acc {row['accuracy']:.3f} (xyz {row['accuracy_xyz']:.3f}, gripper "
          f"{row['accuracy_gripper']:.3f}) aux {row['aux_patch']:.3f}/"
          f"{row['aux_state']:.3f}/{row['aux_attention']:.3f} lr {row['lr']:.2e} "
          f"{rate:.2f} steps/s "
          f"eta {(horizon - row['step']) / max(rate, 1e-9) / 60:.1f} min", flush=True)


def run_check(checkpoint: Path, episodes: int, seed: int) -> dict:
    """Closed-loop success of the saved checkpoint through the regular loader and Policy."""
    policy = make_policy(PolicyConfig(checkpoint=str(checkpoint)))
    results = evaluate(lambda world: policy, episodes, seed=EVAL_SEED_OFFSET + seed)
    table = results_table(results)
    print(format_table(table), flush=True)
    (checkpoint / EVAL_FILE).write_text(json.dumps({"episodes": episodes, "seed": EVAL_SEED_OFFSET + seed,
                                                    "summary": table}, indent=2))
    return table
