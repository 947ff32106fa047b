#!/usr/bin/env python3
"""Reference fixtures for OpenVLA-OFT parity, written and run by OFT's own code.

Runs in a separate OFT environment, NOT in the package venv (.venv): it imports
moojink/openvla-oft from a local clone and needs the transformers fork
(moojink/transformers-openvla-oft, 4.40.1 + bidirectional SDPA) with OFT's pins
(timm 0.9.10, tokenizers 0.19.1, peft 0.11.1, draccus 0.8.0, accelerate 0.30.1,
diffusers 0.27.2, huggingface_hub < 0.26, json-numpy, jsonlines, safetensors 0.4.3,
numpy 1.26.4, rich). See docs/ or shared notes `openvla-oft.md` section 15.

    /work/oft_ref/venv/bin/python scripts/oft_reference.py                 # both forms
    /work/oft_ref/venv/bin/python scripts/oft_reference.py --forms libero  # one form
    ... --out /work/oft_fixtures --oft /work/oft_ref/openvla-oft --fork /work/oft_ref/transformers-openvla-oft

For each form (libero: 2 cameras, proprio 8, K=8, A=7, q01/q99; aloha: 3 cameras, proprio 14,
K=25, A=14, min/max, FiLM) it writes OUT/<form>/ with
  run/                 OFT training-output directory written by finetune.save_training_checkpoint
                       (merged HF model, tokenizer/processor files, *--<step>_checkpoint.pt,
                       dataset_statistics.json, lora_adapter/)
  images/*.png         224x224 RGB camera frames
  cases.jsonl          {"id", "images": [primary, wrist...], "instruction", "proprio"}
  reference.jsonl      {"id", "actions": K x A, "normalized_actions": K x A}: OFT get_vla_action, float32
  reference_discrete.jsonl            (libero) discrete parallel decoding (no action head), same
                                      sequence as reference.jsonl (proprio token included)
  reference_discrete_noproprio.jsonl  (libero) discrete via OFT's eval path get_vla_action, which
                                      drops proprio when no action head is given
  trace.jsonl          per case: the input ids OFT fed to predict_action and its normalized proprio
  fixture.json         form constants, commits, timings, float32-vs-float64 differences

--tiny writes the small fixture committed to the repo (test/fixtures/oft_tiny, read by
test/e2e/test_oft_parity.py) through the same OFT code path, with tiny vision towers registered in
timm under the ids vla_ros's tiny checkpoints use (their shapes go into config.json as `tower_specs`),
a Llama with hidden size 32 and 8 cases per form built so that the instruction, the proprio and every
camera each change the actions on their own:

    /work/oft_ref/venv/bin/python scripts/oft_reference.py --tiny   # -> test/fixtures/oft_tiny

It keeps only what the parity test reads: no lora_adapter/, remote-code .py files or traces; both forms
share one tokenizer (OUT/tokenizer.json), which OFT needed inside each run/ while generating.

Each form runs in its own child process because OFT picks its platform constants from sys.argv
at import time; the child sets sys.argv for the import, restores it and asserts the constants.
TensorFlow, dlimp, absl, wandb, libero, fastapi and uvicorn are served as stub modules; the run
asserts that no stub was called after import (so no TF resize or crop touched the images).
"""

from __future__ import annotations

import argparse
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

STUB_ROOTS = ("tensorflow", "tensorflow_datasets", "tensorflow_graphics", "dlimp", "absl", "wandb",
              "libero", "fastapi", "uvicorn")

# ----------------------------------------------------------------------------------------------
# Form definitions

FORMS: dict[str, dict] = {
    "libero": {
        "platform": "libero", "chunk": 8, "action_dim": 7, "proprio_dim": 8, "norm": "bounds_q99",
        "normalization": "q99", "n_cameras": 2, "camera_names": ["full_image", "wrist_image"],
        "unnorm_key": "libero_spatial_no_noops", "film": False, "lora_rank": 32, "step": 150000,
        "n_cases": 24, "seed": 1234,
        "instructions": [
            "pick up the black bowl between the plate and the ramekin and place it on the plate",
            "put both the alphabet soup and the tomato sauce in the basket",
            "open the middle drawer of the cabinet",
            "Turn On The Stove",
            "put the cream cheese in the bowl",
            "push the plate to the front of the stove",
            "put the wine bottle on top of the cabinet, then close the top drawer",
            "place the crème brûlée box next to the 2 mugs",
        ],
    },
    "aloha": {
        "platform": "aloha", "chunk": 25, "action_dim": 14, "proprio_dim": 14, "norm": "bounds",
        "normalization": "minmax", "n_cameras": 3,
        "camera_names": ["cam_high", "cam_left_wrist", "cam_right_wrist"],
        "unnorm_key": "aloha_fixture", "film": True, "lora_rank": 32, "step": 50000,
        "n_cases": 20, "seed": 4321,
        "instructions": [
            "fold the shirt",
            "scoop the raisins into the bowl",
            "put the purple eggplant into the pot",
            "Hand Over The Red Cup To The Left Arm",
            "uncap the pen and put the cap on the table",
            "put the candy into the bag",
        ],
    },
}

# Llama-2 facts OFT hard-codes
BOS_ID, EOS_ID, SPIECE_UNDERLINE_ID, BASE_VOCAB, PAD_MULTIPLE = 1, 2, 29871, 32000, 64
ACTION_TOKENS_BEGIN = BASE_VOCAB - 256  # 31744: the last 256 base ids are the action bins

TEXT_CONFIG = {
    "model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "vocab_size": BASE_VOCAB + PAD_MULTIPLE,
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
    "pad_token_id": BASE_VOCAB, "bos_token_id": BOS_ID, "eos_token_id": EOS_ID,
    "tie_word_embeddings": False, "initializer_range": 0.02, "torch_dtype": "bfloat16",
}
TINY_TEXT_CONFIG = dict(TEXT_CONFIG, hidden_size=16, intermediate_size=32, num_attention_heads=2,
                        num_key_value_heads=2)
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
# vla_ros.model.tiny.tiny_tower_specs(32, 3, 2), keyed by the timm ids vla_ros's tiny checkpoints use
TINY_TOWERS: dict[str, dict] = {
    "vla_ros_tiny_dinov2": {
        "embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_hidden": 128, "patch_size": 14,
        "class_token": True, "reg_tokens": 4, "no_embed_class": True, "layer_scale": True,
        "pool": "", "act": "gelu", "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
    "vla_ros_tiny_siglip": {
        "embed_dim": 48, "depth": 4, "num_heads": 2, "mlp_hidden": 179, "patch_size": 14,
        "class_token": False, "reg_tokens": 0, "no_embed_class": False, "layer_scale": False,
        "pool": "map", "act": "gelu", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
}
TINY_CASES = 8
TINY_MIN_SENSITIVITY = 1e-2
TINY_PROPRIO_GAIN = 4.0
TINY_ATTENTION_GAIN = 3.0
TINY_KEEP_OUT = ("lora_adapter", "configuration_prismatic.py", "modeling_prismatic.py", "tokenizer.json")
SHARED_TOKENIZER = "tokenizer.json"
REPO_ROOT = Path(__file__).resolve().parent.parent
# Released OpenVLA preprocessor values (DINOv2 mean/std stored bf16-rounded, SigLIP 0.5/0.5)
DINO_MEAN, DINO_STD = [0.484375, 0.455078125, 0.40625], [0.228515625, 0.2236328125, 0.224609375]


def log(msg: str) -> None:
    print(f"[oft_reference {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# Stub modules for the packages OFT imports but this run never needs


class _StubObject:
    """Anything reached through a stub module: records calls, supports typing use."""

    calls: list[str] = []

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _StubObject(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        _StubObject.calls.append(self._name)
        return _StubObject(f"{self._name}()")

    def __getitem__(self, key):
        return _StubObject(f"{self._name}[]")

    def __mro_entries__(self, bases):
        return (object,)

    def __or__(self, other):
        return self

    def __ror__(self, other):
        return self


class _StubModule(types.ModuleType):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__ = []

    def __getattr__(self, attr: str):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _StubObject(f"{self.__name__}.{attr}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in STUB_ROOTS:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        return None


# ----------------------------------------------------------------------------------------------
# Statistics, cases, images


def make_statistics(form: str) -> dict:
    """Plausible, non-degenerate statistics in OFT's dataset_statistics.json layout."""
    if form == "libero":
        a_q01 = np.array([-0.7607, -0.8036, -0.9375, -0.1114, -0.1639, -0.1996, 0.0])
        a_q99 = np.array([0.9375, 0.8705, 0.9375, 0.1446, 0.1789, 0.3214, 1.0])
        a_min = np.array([-0.9375, -0.9375, -0.9375, -0.1875, -0.3675, -0.36, 0.0])
        a_max = np.array([0.9375, 0.9375, 0.9375, 0.1971, 0.3354, 0.375, 1.0])
        a_mask = [True] * 6 + [False]
        p_q01 = np.array([-0.2161, -0.2740, 0.8815, 2.6350, -0.8632, -0.7512, 0.0012, -0.0401])
        p_q99 = np.array([0.1372, 0.2893, 1.3218, 3.3390, 0.8801, 0.5912, 0.0400, -0.0011])
        p_min = p_q01 - np.array([0.04, 0.05, 0.03, 0.2, 0.2, 0.15, 0.0012, 0.0003])
        p_max = p_q99 + np.array([0.03, 0.04, 0.05, 0.25, 0.15, 0.2, 0.0003, 0.0011])
        n_traj, n_trans = 432, 52970
    else:
        arm_lo = np.array([-0.82, -1.21, -0.24, -1.02, -1.18, -1.45, 0.02])
        arm_hi = np.array([0.79, 0.41, 1.52, 0.97, 1.26, 1.49, 0.98])
        a_min = np.concatenate([arm_lo, arm_lo + np.array([-0.03, 0.02, 0.01, -0.05, 0.04, 0.02, 0.0])])
        a_max = np.concatenate([arm_hi, arm_hi + np.array([0.02, -0.03, 0.05, 0.01, -0.02, 0.03, 0.0])])
        span = a_max - a_min
        a_q01, a_q99 = a_min + 0.04 * span, a_max - 0.03 * span
        a_mask = [True] * 14
        p_min, p_max = a_min - 0.02 * span, a_max + 0.015 * span
        p_q01, p_q99 = p_min + 0.05 * span, p_max - 0.04 * span
        n_traj, n_trans = 50, 30000

    def block(lo, hi, q01, q99):
        mean = 0.5 * (q01 + q99) + 0.03 * (q99 - q01) * np.sin(np.arange(len(lo)))
        std = 0.22 * (hi - lo) + 1e-3
        return {"mean": mean, "std": std, "max": hi, "min": lo, "q01": q01, "q99": q99}

    action = block(a_min, a_max, a_q01, a_q99)
    action["mask"] = np.array(a_mask)
    proprio = block(p_min, p_max, p_q01, p_q99)
    return {"action": action, "proprio": proprio,
            "num_transitions": np.array(n_trans), "num_trajectories": np.array(n_traj)}


def decoy_norm_stats() -> dict:
    """Stale OpenVLA-style norm_stats kept in config.json; OFT replaces them with dataset_statistics.json."""
    seven = [0.0] * 7
    return {"bridge_orig": {
        "action": {"mean": seven, "std": [1.0] * 7, "max": [5.0] * 7, "min": [-5.0] * 7,
                   "q01": [-3.0] * 7, "q99": [3.0] * 7, "mask": [True] * 6 + [False]},
        "proprio": {"mean": seven, "std": seven, "max": seven, "min": seven, "q01": seven, "q99": seven},
        "num_transitions": 1, "num_trajectories": 1}}


def draw_image(rng: np.random.Generator, noise: int = 6):
    """224x224 RGB: bilinear colour gradient, random shapes, mild noise (none with noise=0: small PNGs)."""
    from PIL import Image, ImageDraw

    size = 224
    corners = rng.uniform(0, 255, size=(2, 2, 3))
    u = np.linspace(0.0, 1.0, size)[None, :, None]
    v = np.linspace(0.0, 1.0, size)[:, None, None]
    top = corners[0, 0] * (1 - u) + corners[0, 1] * u
    bottom = corners[1, 0] * (1 - u) + corners[1, 1] * u
    base = top * (1 - v) + bottom * v
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.integers(-20, size - 20, size=2)
        w, h = rng.integers(15, 110, size=2)
        color = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = int(rng.integers(0, 3))
        box = [int(x0), int(y0), int(x0 + w), int(y0 + h)]
        if kind == 0:
            draw.ellipse(box, fill=color)
        elif kind == 1:
            draw.rectangle(box, fill=color, outline=(0, 0, 0))
        else:
            pts = [(int(x0 + rng.integers(0, w)), int(y0 + rng.integers(0, h))) for _ in range(3)]
            draw.polygon(pts, fill=color)
    if not noise:
        return img
    arr = np.asarray(img).astype(np.int16) + rng.integers(-noise, noise + 1, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def save_image(rng: np.random.Generator, path: Path, noise: int = 6) -> str:
    """Draw into `path`; returns its path relative to the fixture."""
    img = draw_image(rng, noise)
    img.save(path, optimize=not noise)
    return f"images/{path.name}"


def proprio_bounds(spec: dict, stats: dict) -> tuple[np.ndarray, np.ndarray]:
    """The proprio range the form normalizes with (q01/q99 or min/max)."""
    p = stats["proprio"]
    return (p["q01"], p["q99"]) if spec["normalization"] == "q99" else (p["min"], p["max"])


def make_tiny_cases(form: str, spec: dict, stats: dict, fixture: Path) -> list[dict]:
    """TINY_CASES cases, each after the first few differing from case 0 in ONE input.

    Distinct cases (images, instruction, proprio partly out of bounds) first; then case 0 with another
    instruction, with proprio far out of bounds, and with each camera's image replaced in turn.
    """
    rng = np.random.default_rng(spec["seed"])
    n_distinct = TINY_CASES - 2 - spec["n_cameras"]
    img_dir = fixture / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    lo, hi = proprio_bounds(spec, stats)
    instrs = spec["instructions"]
    cases: list[dict] = []
    for i in range(TINY_CASES):
        cid = f"{form}_{i:03d}"
        if i < n_distinct:
            case = {"id": cid, "images": [save_image(rng, img_dir / f"{cid}_{c}_{cam}.png", noise=0)
                                          for c, cam in enumerate(spec["camera_names"])],
                    "instruction": instrs[i],
                    "proprio": lo + (hi - lo) * rng.uniform(-0.1, 1.1, size=lo.shape)}
        else:
            case = dict(cases[0], id=cid, images=list(cases[0]["images"]))
            k = i - n_distinct
            if k == 0:
                case["instruction"] = instrs[-1]
            elif k == 1:
                case["proprio"] = lo + (hi - lo) * rng.uniform(-1.0, 2.0, size=lo.shape)
            else:
                cam = k - 2
                name = f"{cid}_{cam}_{spec['camera_names'][cam]}.png"
                case["images"][cam] = save_image(rng, img_dir / name, noise=0)
        cases.append(case)
    cases = [dict(c, proprio=[float(x) for x in c["proprio"]]) for c in cases]
    write_jsonl(fixture / "cases.jsonl", cases)
    return cases


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def make_cases(form: str, spec: dict, stats: dict, fixture: Path) -> list[dict]:
    """Cases with controlled variation.

    First 2/3 of the cases: distinct images, instructions cycling, random proprio. Then 4 cases
    re-use case 0's images with other instructions, then the rest re-use case 1's images and
    instruction with other proprio (some far outside the statistics' range).
    """
    rng = np.random.default_rng(spec["seed"])
    n = spec["n_cases"]
    n_instr_var, n_prop_var = 4, n - (2 * n) // 3 - 4
    n_distinct = n - n_instr_var - n_prop_var
    img_dir = fixture / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    p = stats["proprio"]
    lo, hi = (p["q01"], p["q99"]) if spec["normalization"] == "q99" else (p["min"], p["max"])
    span = hi - lo
    instrs = spec["instructions"]
    cases: list[dict] = []
    for i in range(n):
        cid = f"{form}_{i:03d}"
        if i < n_distinct:
            paths = []
            for c, cam in enumerate(spec["camera_names"]):
                path = img_dir / f"{cid}_{c}_{cam}.png"
                draw_image(rng).save(path)
                paths.append(f"images/{path.name}")
            instr = instrs[i % len(instrs)]
            prop = lo + span * rng.uniform(-0.1, 1.1, size=span.shape)
        elif i < n_distinct + n_instr_var:
            paths = list(cases[0]["images"])
            instr = instrs[(i - n_distinct + 1) % len(instrs)]
            prop = np.array(cases[0]["proprio"])
        else:
            paths = list(cases[1]["images"])
            instr = cases[1]["instruction"]
            k = i - n_distinct - n_instr_var
            spread = [(-0.05, 1.05), (-0.4, 1.4), (0.45, 0.55), (-1.0, 2.0)][k % 4]
            prop = lo + span * rng.uniform(*spread, size=span.shape)
        cases.append({"id": cid, "images": paths, "instruction": instr,
                      "proprio": [float(x) for x in prop]})
    with open(fixture / "cases.jsonl", "w") as f:
        for c in cases:
            f.write(json.dumps(c) + "\n")
    return cases


# ----------------------------------------------------------------------------------------------
# Tokenizer: Llama-2-like ids (BOS 1, EOS 2, byte fallback 3..258, "▁" = 29871, 32000 base ids)


def tokenizer_corpus(instructions: list[str]) -> list[str]:
    words = ("pick up place put the a an of in on to into from and then next top bottom left right "
             "front back middle bowl plate ramekin basket drawer cabinet stove mug cup pot pan bag "
             "shirt towel pen cap table box bottle wine soup sauce cheese butter milk ketchup book "
             "caddy tray rack open close turn push pull fold scoop hand over both arm gripper robot "
             "black white red green blue yellow purple orange wooden metal small large "
             "What action should take In Out").split()
    lines = [f"In: What action should the robot take to {t.lower()}?" for t in instructions]
    lines += ["Out:", "In:", " ".join(words), " ".join(reversed(words))]
    lines += [" ".join(words[i:i + 7]) for i in range(0, len(words), 3)]
    # ASCII only: other characters (e.g. "è") must go through the <0xNN> byte fallback, as in Llama-2
    return [line.encode("ascii", "ignore").decode() for line in lines]


def build_tokenizer(out_dir: Path, instructions: list[str]) -> dict:
    """Train a small BPE and lay its tokens out like Llama-2's SentencePiece vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizerFast

    spm = "\u2581"
    alphabet = [chr(c) for c in range(32, 127) if chr(c) != " "] + [spm]
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=spm, prepend_scheme="always")
    trainer = trainers.BpeTrainer(vocab_size=3000, special_tokens=[], initial_alphabet=alphabet,
                                  show_progress=False, min_frequency=1)
    trainer_tok.train_from_iterator(tokenizer_corpus(instructions), trainer=trainer)
    trained = json.loads(trainer_tok.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in trained["merges"]]
    singles = [t for t in trained["vocab"] if len(t) == 1 and t != spm]
    multi = [m.replace(" ", "") for m in merges]
    seen: set[str] = set()
    multi = [t for t in multi if not (t in seen or seen.add(t))]

    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    next_id = 259
    for t in multi:
        vocab[t] = next_id
        next_id += 1
    assert next_id < SPIECE_UNDERLINE_ID - 1, "too many merges"
    filler = 0
    while next_id < SPIECE_UNDERLINE_ID:
        vocab[f"<unused{filler:05d}>"] = next_id
        next_id, filler = next_id + 1, filler + 1
    vocab[spm] = SPIECE_UNDERLINE_ID
    next_id += 1
    for t in singles:
        vocab[t] = next_id
        next_id += 1
    while next_id < BASE_VOCAB:
        vocab[f"<unused{filler:05d}>"] = next_id
        next_id, filler = next_id + 1, filler + 1
    assert len(vocab) == BASE_VOCAB and sorted(vocab.values()) == list(range(BASE_VOCAB))

    def added(tid: int, content: str) -> dict:
        return {"id": tid, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": False, "special": True}

    tok_json = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"), added(BASE_VOCAB, "<PAD>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": spm},
            {"type": "Replace", "pattern": {"String": " "}, "content": spm}]},
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS_ID], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": spm}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                  "vocab": vocab, "merges": merges},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_path = out_dir / "tokenizer.json"
    raw_path.write_text(json.dumps(tok_json, ensure_ascii=False, indent=1))
    tok = LlamaTokenizerFast(tokenizer_file=str(raw_path), bos_token="<s>", eos_token="</s>",
                             unk_token="<unk>", pad_token="<PAD>", add_bos_token=True, add_eos_token=False,
                             legacy=False, clean_up_tokenization_spaces=False, model_max_length=2048,
                             padding_side="right")
    tok.save_pretrained(str(out_dir))

    # Checks: hard-coded ids, round trip, several ids per prompt, raw `tokenizers` agrees with HF
    raw = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    assert tok.convert_tokens_to_ids(["<s>", "</s>", spm, "<PAD>"]) == [BOS_ID, EOS_ID, SPIECE_UNDERLINE_ID,
                                                                         BASE_VOCAB]
    lengths = []
    for text in instructions:
        prompt = f"In: What action should the robot take to {text.lower()}?\nOut:"
        ids = tok(prompt)["input_ids"]
        assert ids[0] == BOS_ID and len(ids) > 8, ids
        assert raw.encode(prompt).ids == ids, (raw.encode(prompt).ids, ids)
        assert tok.decode(ids, skip_special_tokens=True) == prompt, tok.decode(ids, skip_special_tokens=True)
        assert raw.decode(ids, skip_special_tokens=True) == prompt
        assert 13 in ids, "newline must byte-fall-back to <0x0A> = 13 as in Llama-2"
        lengths.append(len(ids))
    return {"n_merges": len(merges), "n_single_chars": len(singles) + 1, "prompt_len_min": min(lengths),
            "prompt_len_max": max(lengths), "len_with_added": len(tok)}


# ----------------------------------------------------------------------------------------------
# Model construction (random, sensitive, bf16-representable)


def bf16_round_(t) -> None:
    import torch

    t.copy_(t.to(torch.bfloat16).to(t.dtype))


def perturb_base(model, gen) -> None:
    """Make a random OpenVLA sensitive to every input and to every parameter kind."""
    import torch
    from torch import nn

    def rn(shape):
        return torch.randn(shape, generator=gen)

    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, nn.LayerNorm) and mod.weight is not None:
                mod.weight.copy_(1.0 + 0.1 * rn(mod.weight.shape))
                if mod.bias is not None:
                    mod.bias.copy_(0.05 * rn(mod.bias.shape))
            elif type(mod).__name__ == "LlamaRMSNorm":
                mod.weight.copy_(1.0 + 0.1 * rn(mod.weight.shape))
            elif isinstance(mod, nn.Linear) and mod.bias is not None and not name.startswith("language_"):
                mod.bias.copy_(0.02 * rn(mod.bias.shape))
        for name, p in model.named_parameters():
            if name.endswith("scale_factor"):  # DINOv2 LayerScale (patched gamma)
                p.copy_(0.05 + 0.2 * torch.rand(p.shape, generator=gen))
            elif name.endswith(("cls_token", "reg_token")):
                p.copy_(0.5 * rn(p.shape))
            elif name.endswith("pos_embed"):
                p.copy_(0.1 * rn(p.shape))
        lm = model.language_model
        for layer in lm.model.layers:
            for mod in layer.modules():
                if isinstance(mod, nn.Linear):
                    mod.weight.mul_(6.0)
        lm.model.embed_tokens.weight.mul_(10.0)
        lm.lm_head.weight[ACTION_TOKENS_BEGIN:BASE_VOCAB].mul_(4.0)
        for p in model.parameters():
            bf16_round_(p)


def build_base_model(base_dir: Path, spec: dict, oft_mods: dict) -> None:
    import torch

    cfg_cls = oft_mods["OpenVLAConfig"]
    model_cls = oft_mods["OpenVLAForActionPrediction"]
    # Tiny: PrismaticConfig derives timm_model_ids from the backbone id, then the extra kwargs override it
    tiny_towers = {"timm_model_ids": list(TINY_TOWERS),
                   "tower_specs": list(TINY_TOWERS.values())} if spec["tiny"] else {}
    config = cfg_cls(
        vision_backbone_id="dinosiglip-vit-so-224px", llm_backbone_id="llama2-7b-pure",
        arch_specifier="no-align+fused-gelu-mlp", use_fused_vision_backbone=True,
        image_resize_strategy="resize-naive", text_config=dict(spec["text_config"]), llm_max_length=2048,
        pad_token_id=BASE_VOCAB, pad_to_multiple_of=PAD_MULTIPLE, n_action_bins=256,
        norm_stats=decoy_norm_stats(), torch_dtype="bfloat16", architectures=["OpenVLAForActionPrediction"],
        **tiny_towers,
    )
    if spec["tiny"]:
        assert config.timm_model_ids == list(TINY_TOWERS), config.timm_model_ids
    torch.manual_seed(spec["seed"])
    model = model_cls(config)
    if spec["tiny"]:
        assert model.vision_backbone.embed_dim == sum(t["embed_dim"] for t in TINY_TOWERS.values())
        perturb_tiny(model, torch.Generator().manual_seed(spec["seed"] + 3))
    perturb_base(model, torch.Generator().manual_seed(spec["seed"] + 1))
    model = model.to(torch.bfloat16)
    model.save_pretrained(str(base_dir), safe_serialization=True)
    del model
    gc.collect()


def build_processor(base_dir: Path, oft_mods: dict):
    from transformers import LlamaTokenizerFast

    image_processor = oft_mods["PrismaticImageProcessor"](
        use_fused_vision_backbone=True, image_resize_strategy="resize-naive",
        input_sizes=[[3, 224, 224], [3, 224, 224]], interpolations=["bicubic", "bicubic"],
        means=[DINO_MEAN, [0.5, 0.5, 0.5]], stds=[DINO_STD, [0.5, 0.5, 0.5]],
    )
    tokenizer = LlamaTokenizerFast.from_pretrained(str(base_dir))
    processor = oft_mods["PrismaticProcessor"](image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(str(base_dir))


# ----------------------------------------------------------------------------------------------
# Tiny towers (--tiny): timm ViTs shaped like DINOv2-with-registers and SigLIP, registered by name


def tiny_vit_kwargs(tower: dict) -> dict:
    """timm VisionTransformer arguments for a TINY_TOWERS entry (timm floors embed_dim * mlp_ratio)."""
    mlp_ratio = tower["mlp_hidden"] / tower["embed_dim"]
    if int(tower["embed_dim"] * mlp_ratio) != tower["mlp_hidden"]:
        mlp_ratio += 1e-9
    return dict(patch_size=tower["patch_size"], embed_dim=tower["embed_dim"], depth=tower["depth"],
                num_heads=tower["num_heads"], mlp_ratio=mlp_ratio, qkv_bias=True,
                init_values=1e-5 if tower["layer_scale"] else None, class_token=tower["class_token"],
                reg_tokens=tower["reg_tokens"], no_embed_class=tower["no_embed_class"],
                global_pool="map" if tower["pool"] == "map" else "token")


def register_tiny_towers() -> None:
    """Make `timm.create_model("vla_ros_tiny_dinov2" | "vla_ros_tiny_siglip", ...)` build the tiny towers."""
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    def entrypoint(name: str, tower: dict):
        def create(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None, **kwargs):
            assert not (pretrained or pretrained_cfg or pretrained_cfg_overlay), "tiny towers have no weights"
            model = VisionTransformer(**dict(tiny_vit_kwargs(tower), **kwargs))
            assert model.blocks[0].mlp.fc1.out_features == tower["mlp_hidden"]
            return model

        create.__name__ = create.__qualname__ = name
        return create

    for name, tower in TINY_TOWERS.items():
        register_model(entrypoint(name, tower))


def perturb_tiny(model, gen) -> None:
    """Unit-gain tower weights (timm's 0.02 init leaves tiny towers almost blind to the pixels) and louder
    token embeddings (a few prompt tokens next to 256 patches per camera)."""
    import torch

    with torch.no_grad():
        for name, p in model.vision_backbone.named_parameters():
            if p.ndim >= 2 and name.endswith("weight"):
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel()))
        for layer in model.language_model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.mul_(TINY_ATTENTION_GAIN)


# ----------------------------------------------------------------------------------------------
# OFT import (platform constants chosen through sys.argv) and helpers


def import_oft(oft_dir: Path, spec: dict) -> dict:
    sys.meta_path.insert(0, _StubFinder())
    os.chdir(oft_dir)  # check_model_logic_mismatch walks ./prismatic
    sys.path.insert(0, str(oft_dir))
    saved_argv = list(sys.argv)
    sys.argv = ["oft_reference", spec["platform"]]
    try:
        import prismatic.vla.constants as constants

        ft_path = oft_dir / "vla-scripts" / "finetune.py"
        ft_spec = importlib.util.spec_from_file_location("oft_finetune", ft_path)
        finetune = importlib.util.module_from_spec(ft_spec)
        ft_spec.loader.exec_module(finetune)
        import experiments.robot.openvla_utils as openvla_utils
        from prismatic.extern.hf.configuration_prismatic import OpenVLAConfig
        from prismatic.extern.hf.modeling_prismatic import OpenVLAForActionPrediction
        from prismatic.extern.hf.processing_prismatic import PrismaticImageProcessor, PrismaticProcessor
        from prismatic.models.action_heads import L1RegressionActionHead
        from prismatic.models.film_vit_wrapper import (
            FiLMedPrismaticVisionBackbone,
            FiLMedVisionTransformerBlock,
        )
        from prismatic.models.projectors import ProprioProjector
    finally:
        sys.argv = saved_argv
    assert sys.argv == saved_argv
    assert constants.NUM_ACTIONS_CHUNK == spec["chunk"], constants.NUM_ACTIONS_CHUNK
    assert constants.ACTION_DIM == spec["action_dim"], constants.ACTION_DIM
    assert constants.PROPRIO_DIM == spec["proprio_dim"], constants.PROPRIO_DIM
    assert constants.ACTION_PROPRIO_NORMALIZATION_TYPE.value == spec["norm"]
    assert (constants.ACTION_TOKEN_BEGIN_IDX, constants.STOP_INDEX) == (31743, 2)
    assert finetune.NUM_ACTIONS_CHUNK == spec["chunk"] and openvla_utils.ACTION_DIM == spec["action_dim"]
    return {
        "constants": constants, "finetune": finetune, "openvla_utils": openvla_utils,
        "OpenVLAConfig": OpenVLAConfig, "OpenVLAForActionPrediction": OpenVLAForActionPrediction,
        "PrismaticImageProcessor": PrismaticImageProcessor, "PrismaticProcessor": PrismaticProcessor,
        "L1RegressionActionHead": L1RegressionActionHead, "ProprioProjector": ProprioProjector,
        "FiLMedPrismaticVisionBackbone": FiLMedPrismaticVisionBackbone,
        "FiLMedVisionTransformerBlock": FiLMedVisionTransformerBlock,
        "import_stub_calls": list(_StubObject.calls),
    }


def register_auto_classes(oft: dict) -> None:
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForVision2Seq, AutoProcessor

    AutoConfig.register("openvla", oft["OpenVLAConfig"], exist_ok=True)
    AutoImageProcessor.register(oft["OpenVLAConfig"], oft["PrismaticImageProcessor"], exist_ok=True)
    AutoProcessor.register(oft["OpenVLAConfig"], oft["PrismaticProcessor"], exist_ok=True)
    AutoModelForVision2Seq.register(oft["OpenVLAConfig"], oft["OpenVLAForActionPrediction"], exist_ok=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_training_checkpoint(fixture: Path, base_dir: Path, spec: dict, oft: dict, stats: dict) -> dict:
    """Follow finetune.py's setup (LoRA, FiLM, DDP) and let OFT's save_training_checkpoint write run/."""
    import torch
    import torch.distributed as dist
    from peft import LoraConfig, get_peft_model
    from torch.nn.parallel import DistributedDataParallel as DDP  # noqa: N817

    ou, ft, const = oft["openvla_utils"], oft["finetune"], oft["constants"]
    register_auto_classes(oft)
    ou.update_auto_map(str(base_dir))
    ou.check_model_logic_mismatch(str(base_dir))
    # OFT's classes from the pinned clone (registered above), never the .py files inside the checkpoint
    processor = oft["PrismaticProcessor"].from_pretrained(str(base_dir))
    vla = oft["OpenVLAForActionPrediction"].from_pretrained(str(base_dir), torch_dtype=torch.bfloat16,
                                                            low_cpu_mem_usage=True)
    vla.vision_backbone.set_num_images_in_input(spec["n_cameras"])
    rank = spec["lora_rank"]
    lora_config = LoraConfig(r=rank, lora_alpha=min(rank, 16), lora_dropout=0.0, target_modules="all-linear",
                             init_lora_weights="gaussian")
    vla = get_peft_model(vla, lora_config)
    if spec["film"]:
        vla.model.vision_backbone = oft["FiLMedPrismaticVisionBackbone"](
            vision_backbone=vla.model.vision_backbone, llm_dim=vla.llm_dim)
    gen = torch.Generator().manual_seed(spec["seed"] + 2)
    info: dict = {"lora_layers": 0, "lora_dtype": None, "film_dtype": None}
    with torch.no_grad():
        for _, mod in vla.named_modules():
            if hasattr(mod, "lora_B") and "default" in getattr(mod, "lora_B", {}):
                w = mod.lora_B["default"].weight
                w.copy_(0.1 * torch.randn(w.shape, generator=gen))
                bf16_round_(w)
                bf16_round_(mod.lora_A["default"].weight)
                info["lora_layers"] += 1
                info["lora_dtype"] = str(w.dtype)
            if isinstance(mod, oft["FiLMedVisionTransformerBlock"]):
                for lin in (mod.scale, mod.shift):
                    lin.weight.mul_(8.0)
                    bf16_round_(lin.weight)
                    bf16_round_(lin.bias)
                info["film_dtype"] = str(mod.scale.weight.dtype)

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ["MASTER_PORT"] = str(free_port())
    dist.init_process_group("gloo", rank=0, world_size=1)
    try:
        vla_ddp = DDP(vla, find_unused_parameters=True, gradient_as_bucket_view=True)
        llm_dim = vla.llm_dim
        proprio_projector = oft["ProprioProjector"](llm_dim=llm_dim, proprio_dim=const.PROPRIO_DIM)
        action_head = oft["L1RegressionActionHead"](input_dim=llm_dim, hidden_dim=llm_dim,
                                                    action_dim=const.ACTION_DIM)
        with torch.no_grad():
            for mod in action_head.modules():
                if isinstance(mod, torch.nn.LayerNorm):
                    mod.weight.copy_(1.0 + 0.1 * torch.randn(mod.weight.shape, generator=gen))
                    mod.bias.copy_(0.05 * torch.randn(mod.bias.shape, generator=gen))
            if spec["tiny"]:  # one token among ~300 in a 32-wide LLM: make it loud
                for lin in (proprio_projector.fc1, proprio_projector.fc2):
                    lin.weight.mul_(TINY_PROPRIO_GAIN)
            for p in proprio_projector.parameters():  # saved fp32 by OFT; inference casts to bf16
                bf16_round_(p)
        action_head = action_head.to(torch.bfloat16)  # init_module(..., to_bf16=True)
        pp_ddp = DDP(proprio_projector, gradient_as_bucket_view=True)
        ah_ddp = DDP(action_head, gradient_as_bucket_view=True)
        cfg = types.SimpleNamespace(
            save_latest_checkpoint_only=False, use_proprio=True, use_diffusion=False, use_l1_regression=True,
            use_film=spec["film"], use_lora=True, merge_lora_during_training=True, vla_path=str(base_dir))
        train_dataset = types.SimpleNamespace(dataset_statistics={spec["unnorm_key"]: stats})
        state = types.SimpleNamespace(is_main_process=True)
        run_stub = fixture / "run"
        ft.save_training_checkpoint(cfg, run_stub, spec["step"], vla_ddp, processor, pp_ddp, None, ah_ddp,
                                    train_dataset, state)
    finally:
        dist.destroy_process_group()
    os.rename(fixture / f"run--{spec['step']}_chkpt", fixture / "run")
    del vla, vla_ddp, pp_ddp, ah_ddp, proprio_projector, action_head
    gc.collect()
    return info


def copy_for_inference(run_dir: Path, dst: Path) -> None:
    """get_vla() rewrites config.json and may copy *.py files: give it a private copy.

    Big files are hardlinked; every file OFT may rewrite in place is a real copy."""
    if dst.exists():
        shutil.rmtree(dst)

    def copy(src, target):
        if src.endswith((".safetensors", ".pt")):
            os.link(src, target)
        else:
            shutil.copy2(src, target)

    shutil.copytree(run_dir, dst, copy_function=copy)


class PinnedDtypeProcessor:
    """OFT's processor, except that get_vla_action's `.to(DEVICE, dtype=torch.bfloat16)` keeps `dtype`."""

    def __init__(self, processor, dtype) -> None:
        self.processor, self.dtype, self.requested = processor, dtype, set()

    def __call__(self, *args, **kwargs):
        import torch
        from transformers.image_processing_utils import BatchFeature

        outer = self

        class _Pinned(BatchFeature):
            def to(self, *a, **kw):
                for x in list(a) + list(kw.values()):
                    if isinstance(x, torch.dtype):
                        outer.requested.add(str(x))
                for k, v in list(self.items()):
                    if torch.is_tensor(v) and torch.is_floating_point(v):
                        self.data[k] = v.to(dtype=outer.dtype)
                return self

        return _Pinned(data=dict(self.processor(*args, **kwargs)))

    def __getattr__(self, name):
        return getattr(self.processor, name)


class VisionCache:
    """Memoizes OFT's vision backbone on (pixels, language embeddings): identical inputs, identical outputs.

    The variants and the controlled cases feed the same images many times; the towers dominate the
    CPU time. `check_next` recomputes once and asserts the cached tensor is bit-identical.
    """

    def __init__(self, backbone) -> None:
        self.orig, self.cache, self.hits, self.misses, self.check_next = backbone.forward, {}, 0, 0, False
        self.verified = 0
        backbone.forward = self.forward

    @staticmethod
    def _key(tensors) -> tuple:
        import hashlib

        return tuple((str(t.dtype), tuple(t.shape), hashlib.sha1(t.detach().contiguous().numpy().tobytes())
                      .hexdigest()) for t in tensors)

    def forward(self, *tensors):
        key = self._key(tensors)
        if key in self.cache:
            self.hits += 1
            if self.check_next:
                import torch

                assert torch.equal(self.orig(*tensors), self.cache[key]), "vision backbone not deterministic"
                self.check_next, self.verified = False, self.verified + 1
            return self.cache[key].clone()
        self.misses += 1
        out = self.orig(*tensors)
        self.cache[key] = out.clone()
        return out


class ProprioInDiscrete:
    """Forwards to the VLA; predict_action also gets the proprio token (get_vla_action drops it when
    there is no action head). The normalized proprio is the one get_vla_action stored in obs['state']."""

    def __init__(self, vla, obs: dict, proprio_projector) -> None:
        self._vla, self._obs, self._pp = vla, obs, proprio_projector

    def __getattr__(self, name):
        return getattr(self._vla, name)

    def predict_action(self, **kwargs):
        return self._vla.predict_action(**kwargs, proprio=self._obs["state"], proprio_projector=self._pp)


def load_case_obs(case: dict, fixture: Path, spec: dict) -> dict:
    from PIL import Image

    imgs = [np.asarray(Image.open(fixture / p).convert("RGB")) for p in case["images"]]
    assert all(im.shape == (224, 224, 3) and im.dtype == np.uint8 for im in imgs)
    if spec["form"] == "libero":
        obs = {"full_image": imgs[0], "wrist_image": imgs[1]}
    else:
        obs = {"full_image": imgs[0], "left_wrist_image": imgs[1], "right_wrist_image": imgs[2]}
    obs["state"] = np.array(case["proprio"], dtype=np.float64)
    return obs


def run_reference(fixture: Path, work: Path, spec: dict, oft: dict, cases: list[dict], args) -> dict:
    import torch

    ou = oft["openvla_utils"]
    infer_dir = work / "infer_ckpt"
    copy_for_inference(fixture / "run", infer_dir)
    cfg = types.SimpleNamespace(
        pretrained_checkpoint=str(infer_dir), use_film=spec["film"], num_images_in_input=spec["n_cameras"],
        load_in_8bit=False, load_in_4bit=False, lora_rank=spec["lora_rank"], use_l1_regression=True,
        use_diffusion=False, use_proprio=True, center_crop=False, unnorm_key=spec["unnorm_key"],
        num_diffusion_steps_train=50, num_diffusion_steps_inference=50)
    register_auto_classes(oft)
    vla = ou.get_vla(cfg)
    processor = ou.get_processor(cfg)
    proprio_projector = ou.get_proprio_projector(cfg, vla.llm_dim, spec["proprio_dim"])
    action_head = ou.get_action_head(cfg, vla.llm_dim)
    loaded_dtypes = {"vla_llm": str(vla.language_model.lm_head.weight.dtype),
                     "vla_vision": str(next(vla.vision_backbone.parameters()).dtype),
                     "proprio_projector": str(proprio_projector.fc1.weight.dtype),
                     "action_head": str(action_head.model.fc1.weight.dtype)}
    attn = vla.language_model.model.layers[0].self_attn
    assert type(attn).__name__ == "LlamaSdpaAttention", type(attn)
    assert "transformers" in type(attn).__module__
    for m in (vla, proprio_projector, action_head):
        m.float()
    assert all(p.dtype == torch.float32 for p in vla.parameters())
    assert set(vla.norm_stats) == {spec["unnorm_key"]}, "dataset_statistics.json must supersede norm_stats"

    captured: list[np.ndarray] = []
    fed_ids: list[list[int]] = []
    orig_unnorm = vla._unnormalize_actions
    orig_predict = vla.predict_action

    def capture_unnorm(normalized_actions, unnorm_key=None):
        captured.append(np.array(normalized_actions, dtype=np.float64))
        return orig_unnorm(normalized_actions, unnorm_key)

    def capture_predict(input_ids=None, **kwargs):
        fed_ids.append([int(x) for x in input_ids[0].tolist()])
        return orig_predict(input_ids=input_ids, **kwargs)

    vla._unnormalize_actions = capture_unnorm
    vla.predict_action = capture_predict
    vision_cache = VisionCache(vla.vision_backbone)
    last_logits: dict = {}
    vla.language_model.register_forward_hook(lambda mod, inp, out: last_logits.update(v=out.logits.detach()))
    k_slots = spec["chunk"] * spec["action_dim"]

    def discrete_trace(ids: list[int], with_proprio: bool, normalized: np.ndarray) -> dict:
        """Argmax token ids and top-2 logit margins at OFT's (shifted) action slice."""
        import torch

        n_prompt = len(ids) - 1 + (0 if ids[-1] == SPIECE_UNDERLINE_ID else 1)
        start = 256 * spec["n_cameras"] + int(with_proprio) + n_prompt
        top2 = last_logits["v"][0, start:start + k_slots].float().topk(2, dim=-1)
        tok = top2.indices[:, 0].numpy()
        bins = np.linspace(-1, 1, 256)
        centers = (bins[:-1] + bins[1:]) / 2.0
        recon = centers[np.clip(BASE_VOCAB - tok - 1, 0, 254)].reshape(normalized.shape)
        assert np.array_equal(recon, normalized), "slice/bin mapping does not reproduce OFT's discrete output"
        margin = (top2.values[:, 0] - top2.values[:, 1]).reshape(normalized.shape)
        return {"token_ids": tok.reshape(normalized.shape).tolist(),
                "top2_logit_margin": margin.tolist(), "min_margin": float(torch.min(margin))}
    pinned = PinnedDtypeProcessor(processor, torch.float32)
    stub_calls_before = len(_StubObject.calls)

    def run_case(case: dict, variant: str):
        obs = load_case_obs(case, fixture, spec)
        captured.clear()
        fed_ids.clear()
        kwargs = {"proprio_projector": proprio_projector, "use_film": spec["film"]}
        target = vla
        if variant == "l1":
            kwargs["action_head"] = action_head
        elif variant == "discrete":
            target = ProprioInDiscrete(vla, obs, proprio_projector)
        actions = ou.get_vla_action(cfg, target, pinned, obs, case["instruction"], **kwargs)
        assert len(captured) == 1 and len(fed_ids) == 1
        return np.stack(actions).astype(np.float64), captured[0], fed_ids[0], obs["state"]

    timings: dict[str, float] = {}
    variants = [("l1", "reference.jsonl")]
    if has_discrete(spec):
        variants += [("discrete", "reference_discrete.jsonl"),
                     ("discrete_noproprio", "reference_discrete_noproprio.jsonl")]
    results: dict[str, list] = {}
    margins: dict[str, float] = {}
    for variant, fname in variants:
        t0 = time.time()
        vision_cache.check_next = True
        rows, traces = [], []
        for i, case in enumerate(cases):
            act, norm, ids, nprop = run_case(case, variant)
            assert act.shape == (spec["chunk"], spec["action_dim"]) == norm.shape
            rows.append({"id": case["id"], "actions": act.tolist(), "normalized_actions": norm.tolist()})
            if variant == "l1":
                traces.append({"id": case["id"], "input_ids": ids,
                               "normalized_proprio": [float(x) for x in nprop]})
            else:
                traces.append({"id": case["id"], **discrete_trace(ids, variant == "discrete", norm)})
            log(f"{spec['form']} {variant} case {i + 1}/{len(cases)} "
                f"norm[0,:3]={np.round(norm[0, :3], 4).tolist()} ({time.time() - t0:.0f}s)")
        with open(fixture / fname, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        trace_name = "trace.jsonl" if variant == "l1" else fname.replace("reference", "trace")
        with open(fixture / trace_name, "w") as f:
            for r in traces:
                f.write(json.dumps(r) + "\n")
        results[variant] = rows
        if variant != "l1":
            margins[variant] = min(t["min_margin"] for t in traces)
        timings[variant] = round(time.time() - t0, 1)

    assert len(_StubObject.calls) == stub_calls_before, _StubObject.calls[stub_calls_before:]
    assert pinned.requested == {"torch.bfloat16"}, pinned.requested

    # float64 rerun of OFT's own path on a few cases
    f64: dict = {"cases": 0}
    if args.f64_cases > 0:
        t0 = time.time()
        for m in (vla, proprio_projector, action_head):
            m.double()
        pinned.dtype = torch.float64
        dn, da = 0.0, 0.0
        for case, row in zip(cases[: args.f64_cases], results["l1"]):
            act, norm, _, _ = run_case(case, "l1")
            dn = max(dn, float(np.abs(norm - np.array(row["normalized_actions"])).max()))
            da = max(da, float(np.abs(act - np.array(row["actions"])).max()))
        f64 = {"cases": args.f64_cases, "max_abs_normalized": dn, "max_abs_actions": da,
               "seconds": round(time.time() - t0, 1)}
        log(f"{spec['form']} float32 vs float64: {f64}")

    assert vision_cache.verified >= 1
    cache_info = {"hits": vision_cache.hits, "misses": vision_cache.misses,
                  "bit_identical_rechecks": vision_cache.verified}
    return {"timings": timings, "loaded_dtypes": loaded_dtypes, "float32_vs_float64": f64,
            "vision_cache": cache_info,
            "sensitivity": (tiny_sensitivity if spec["tiny"] else sensitivity)(cases, results["l1"], spec),
            "discrete_in_action_range": discrete_stats(results.get("discrete"), margins)}


def sensitivity(cases: list[dict], rows: list[dict], spec: dict) -> dict:
    """Largest change of normalized actions when only one input changes (cases are built for this)."""
    norm = {r["id"]: np.array(r["normalized_actions"]) for r in rows}
    ref0, ref1 = cases[0], cases[1]
    instr = [np.abs(norm[c["id"]] - norm[ref0["id"]]).max() for c in cases[2:]
             if c["images"] == ref0["images"] and c["instruction"] != ref0["instruction"]]
    prop = [np.abs(norm[c["id"]] - norm[ref1["id"]]).max() for c in cases[2:]
            if c["images"] == ref1["images"] and c["instruction"] == ref1["instruction"]]
    all_norm = np.stack([norm[c["id"]] for c in cases])
    return {"instruction_only_max_abs": float(max(instr)), "proprio_only_max_abs": float(max(prop)),
            "across_cases_std_mean": float(all_norm.std(axis=0).mean()),
            "normalized_range": [float(all_norm.min()), float(all_norm.max())]}


def differing_inputs(a: dict, b: dict) -> list[str]:
    """Names of the inputs in which two cases differ ("camera_<i>", "instruction", "proprio")."""
    names = [f"camera_{i}" for i, (x, y) in enumerate(zip(a["images"], b["images"])) if x != y]
    return names + [k for k in ("instruction", "proprio") if a[k] != b[k]]


def tiny_sensitivity(cases: list[dict], rows: list[dict], spec: dict) -> dict:
    """Largest change of normalized actions between cases that differ in one input only; each input must
    move them by at least TINY_MIN_SENSITIVITY (100x the parity bound)."""
    norm = {r["id"]: np.array(r["normalized_actions"]) for r in rows}
    found: dict[str, float] = {}
    for i, a in enumerate(cases):
        for b in cases[i + 1:]:
            diff = differing_inputs(a, b)
            if len(diff) == 1:
                change = float(np.abs(norm[a["id"]] - norm[b["id"]]).max())
                found[diff[0]] = max(found.get(diff[0], 0.0), change)
    wanted = {"instruction", "proprio"} | {f"camera_{c}" for c in range(spec["n_cameras"])}
    assert set(found) == wanted, found
    weak = {k: v for k, v in found.items() if v < TINY_MIN_SENSITIVITY}
    assert not weak, f"inputs that barely change the actions: {weak}"
    return {f"{k}_only_max_abs": v for k, v in sorted(found.items())}


def discrete_stats(rows: list[dict] | None, margins: dict[str, float]) -> dict | None:
    if not rows:
        return None
    vals = np.concatenate([np.array(r["normalized_actions"]).ravel() for r in rows])
    edge = np.isclose(np.abs(vals), 1.0 - 1.0 / 255.0)
    return {"distinct_values": int(len(np.unique(vals))), "fraction_clipped_to_edge_bins": float(edge.mean()),
            "min_top2_logit_margin": margins}


def has_discrete(spec: dict) -> bool:
    """The full-size libero form also gets the discrete (no action head) references."""
    return spec["form"] == "libero" and not spec["tiny"]


def tokenizer_instructions(spec: dict) -> list[str]:
    """Tiny forms share one tokenizer, trained on every form's instructions."""
    return [t for f in FORMS.values() for t in f["instructions"]] if spec["tiny"] else spec["instructions"]


def fixture_files(spec: dict) -> dict:
    """The files of a form's fixture, relative to its folder."""
    files = {"run": "run", "cases": "cases.jsonl", "reference": "reference.jsonl"}
    if spec["tiny"]:
        return {**files, "tokenizer": f"../{SHARED_TOKENIZER} (copy it into run/ before loading)"}
    if has_discrete(spec):
        files.update({"reference_discrete": "reference_discrete.jsonl",
                      "reference_discrete_noproprio": "reference_discrete_noproprio.jsonl",
                      "trace_discrete": "trace_discrete.jsonl",
                      "trace_discrete_noproprio": "trace_discrete_noproprio.jsonl"})
    return {**files, "trace": "trace.jsonl"}


def keep_test_files_only(fixture: Path, out: Path) -> None:
    """Tiny fixture: the tokenizer goes to the shared OUT/tokenizer.json; drop what the test never reads."""
    run_dir = fixture / "run"
    shared = out / SHARED_TOKENIZER
    mine = (run_dir / SHARED_TOKENIZER).read_bytes()
    if shared.exists():
        assert shared.read_bytes() == mine, f"{shared} is another tokenizer: regenerate every form together"
    else:
        shared.write_bytes(mine)
    for name in TINY_KEEP_OUT:
        path = run_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    (fixture / "trace.jsonl").unlink()


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def git_commit(path: Path) -> str | None:
    marker = path / ".commit"
    if marker.exists():
        return marker.read_text().strip()
    try:
        return subprocess.check_output(["git", "-C", str(path), "rev-parse", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def worker(form: str, args) -> None:
    t_start = time.time()
    spec = dict(FORMS[form], form=form, tiny=args.tiny,
                text_config=TINY_TEXT_CONFIG if args.tiny else TEXT_CONFIG)
    out = Path(args.out).resolve()
    fixture = out / form
    work = Path(args.work).resolve() / form
    for d in (fixture, work):
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
    os.environ["HF_HOME"] = str(work / "hf_home")

    oft = import_oft(Path(args.oft).resolve(), spec)
    import peft
    import tokenizers
    import torch
    import transformers

    torch.set_num_threads(args.threads)
    torch.manual_seed(spec["seed"])
    log(f"{form}: OFT imported, constants K={spec['chunk']} A={spec['action_dim']} P={spec['proprio_dim']} "
        f"norm={spec['norm']}; import-time stub calls {oft['import_stub_calls']}")

    base_dir = work / "base"
    t0 = time.time()
    if spec["tiny"]:
        register_tiny_towers()
    tok_info = build_tokenizer(base_dir, tokenizer_instructions(spec))
    build_processor(base_dir, oft)
    build_base_model(base_dir, spec, oft)
    t_base = time.time() - t0
    log(f"{form}: base model written ({t_base:.0f}s), tokenizer {tok_info}")

    stats = make_statistics(form)
    t0 = time.time()
    lora_info = write_training_checkpoint(fixture, base_dir, spec, oft, stats)
    t_ckpt = time.time() - t0
    log(f"{form}: OFT training checkpoint written ({t_ckpt:.0f}s): {sorted(os.listdir(fixture / 'run'))}")

    if spec["tiny"]:
        assert read_json(fixture / "run" / "config.json")["tower_specs"] == list(TINY_TOWERS.values())
    cases = (make_tiny_cases if spec["tiny"] else make_cases)(form, spec, make_statistics(form), fixture)
    log(f"{form}: {len(cases)} cases, {len(os.listdir(fixture / 'images'))} images")
    ref = run_reference(fixture, work, spec, oft, cases, args)
    if spec["tiny"]:
        keep_test_files_only(fixture, out)

    fixture_json = {
        "form": form, "chunk": spec["chunk"], "action_dim": spec["action_dim"],
        "proprio_dim": spec["proprio_dim"], "normalization": spec["normalization"],
        "unnorm_key": spec["unnorm_key"], "lora_rank": spec["lora_rank"],
        "lora_alpha": min(spec["lora_rank"], 16),
        "film": spec["film"], "n_cameras": spec["n_cameras"], "camera_names": spec["camera_names"],
        "checkpoint_step": spec["step"], "head": "l1_regression", "use_proprio": True,
        "center_crop": False, "compute_dtype": "float32",
        "files": fixture_files(spec),
        "discrete_notes": ("reference_discrete.jsonl: predict_action without action head, proprio token "
                           "included (same sequence as reference.jsonl); reference_discrete_noproprio.jsonl: "
                           "OFT's get_vla_action eval path, which passes no proprio when action_head is None")
        if has_discrete(spec) else None,
        "llm": {k: spec["text_config"][k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                                      "num_attention_heads", "vocab_size", "rms_norm_eps")},
        **({"tiny_towers": TINY_TOWERS,
            "regenerate": "/work/oft_ref/venv/bin/python scripts/oft_reference.py --tiny"}
           if spec["tiny"] else {}),
        "tokenizer": tok_info, "lora": lora_info,
        "oft_commit": git_commit(Path(args.oft)), "fork_commit": git_commit(Path(args.fork)),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "peft": peft.__version__, "numpy": np.__version__,
        "import_stub_calls": oft["import_stub_calls"],
        "seconds": {"base_model": round(t_base, 1), "oft_checkpoint": round(t_ckpt, 1), **ref["timings"],
                    "total": round(time.time() - t_start, 1)},
        "float32_vs_float64": ref["float32_vs_float64"],
        "loaded_dtypes_before_float32_cast": ref["loaded_dtypes"],
        "sensitivity": ref["sensitivity"], "discrete_values": ref["discrete_in_action_range"],
        "vision_feature_cache": ref["vision_cache"],
    }
    (fixture / "fixture.json").write_text(json.dumps(fixture_json, indent=2) + "\n")
    if not args.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    log(f"{form}: done in {time.time() - t_start:.0f}s -> {fixture}")


def default_dirs(tiny: bool) -> tuple[str, str]:
    """(fixture root, scratch folder) of a mode."""
    if tiny:
        return str(REPO_ROOT / "test" / "fixtures" / "oft_tiny"), "/work/oft_ref/work_tiny"
    return "/work/oft_fixtures", "/work/oft_ref/work"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true",
                    help="tiny towers and LLM, 8 cases per form: the fixture committed to the repo")
    ap.add_argument("--out", help="fixture root, one folder per form (default: /work/oft_fixtures; "
                                  "with --tiny: test/fixtures/oft_tiny in this repo)")
    ap.add_argument("--forms", nargs="+", default=["libero", "aloha"], choices=sorted(FORMS))
    ap.add_argument("--oft", default="/work/oft_ref/openvla-oft", help="clone of moojink/openvla-oft")
    ap.add_argument("--fork", default="/work/oft_ref/transformers-openvla-oft",
                    help="clone of moojink/transformers-openvla-oft (for its commit id)")
    ap.add_argument("--work", help="scratch folder: base model, copies (default: /work/oft_ref/work; "
                                   "with --tiny: /work/oft_ref/work_tiny)")
    ap.add_argument("--f64-cases", type=int, default=2, help="cases re-run in float64 (0: skip)")
    ap.add_argument("--threads", type=int, default=max(1, os.cpu_count() or 1))
    ap.add_argument("--keep-work", action="store_true")
    ap.add_argument("--worker", choices=sorted(FORMS), help=argparse.SUPPRESS)
    args = ap.parse_args()
    default_out, default_work = default_dirs(args.tiny)
    args.out, args.work = args.out or default_out, args.work or default_work
    if args.worker:
        worker(args.worker, args)
        return 0
    shared_tokenizer = Path(args.out) / SHARED_TOKENIZER
    if args.tiny and set(args.forms) == set(FORMS) and shared_tokenizer.exists():
        shared_tokenizer.unlink()  # every form is rewritten: the first one writes the shared tokenizer
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="disabled", PYTHONWARNINGS="ignore")
    t0 = time.time()
    for form in args.forms:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", form, "--out", args.out,
               "--oft", args.oft, "--fork", args.fork, "--work", args.work,
               "--f64-cases", str(args.f64_cases),
               "--threads", str(args.threads)] + (["--keep-work"] if args.keep_work else [])
        cmd += ["--tiny"] if args.tiny else []
        log(f"starting {form}")
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            log(f"{form} failed with exit status {rc}")
            return rc
    log(f"all done in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
