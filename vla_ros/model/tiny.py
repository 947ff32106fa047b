"""Tiny random checkpoints written exactly in the released OpenVLA layout (fixtures, demo, export).

A checkpoint directory holds config.json (with norm_stats), TWO safetensors shards plus
model.safetensors.index.json, tokenizer.json (+ tokenizer_config.json, special_tokens_map.json,
added_tokens.json), preprocessor_config.json (bf16-rounded DINO mean/std, as released) and
generation_config.json. The towers are written as released: all blocks, the final norm, SigLIP's
attention pool, LayerScale as `scale_factor`; so loading exercises the truncation and renaming.

Weights are random but scaled so that every part matters (unit-variance activations, LayerScale
about 0.5-1): the image, the prompt and each block change the actions.

    write_tiny_checkpoint("/tmp/tiny")                        # OpenVLA (Llama), 224 px
    write_tiny_checkpoint("/tmp/mini", family="minivla")      # MiniVLA (Qwen2, GQA, tied embeddings)
    write_tiny_checkpoint("/tmp/real", real_towers=True)      # real DINOv2-L + SigLIP-SO400M shapes
"""

from __future__ import annotations

import argparse
import atexit
import hashlib
import json
import math
import shutil
import string
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, LlamaForCausalLM, Qwen2ForCausalLM

from vla_ros.model.families import get_family
from vla_ros.model.projector import make_projector
from vla_ros.model.spec import IMAGENET_MEAN, IMAGENET_STD, KNOWN_TOWERS, SIGLIP_MEAN, SIGLIP_STD, TowerSpec
from vla_ros.model.vision import full_tower, module_to_released_key

N_BINS = 256
PAD_MULTIPLE = 64
REAL_TIMM_IDS = ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"]

_OBJECTS = ["red block", "blue cube", "green cup", "yellow ball", "drawer", "towel", "carrot", "pot",
            "spoon", "bowl", "can", "sponge"]
_VERBS = ["pick up the", "put the", "move the", "push the", "open the", "close the", "place the",
          "stack the", "wipe the table with the", "lift the"]
_PLACES = ["on the plate", "in the bowl", "to the left", "to the right", "into the sink", "near the pot"]


def tiny_corpus(family: str = "openvla") -> list[str]:
    """Prompts of the family around instruction-like text, for training the tiny tokenizers."""
    fam = get_family(family)
    lines = []
    for verb in _VERBS:
        for obj in _OBJECTS:
            lines.append(fam.prompt(f"{verb} {obj}"))
            for place in _PLACES:
                lines.append(f"{verb} {obj} {place}")
    return lines


def _bpe_tokenizer(vocab_size: int, byte_level: bool, specials: list[str], family: str,
                   corpus: list[str] | None = None):
    """A BPE tokenizer trained on `tiny_corpus` + `corpus` (Llama-like metaspace or Qwen-like byte level)."""
    tok = Tokenizer(models.BPE(unk_token=None if byte_level else "<unk>"))
    if byte_level:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece-like: words start with "▁", pieces do not cross words
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
        alphabet = list(string.ascii_letters + string.digits + string.punctuation) + ["\u2581", "\n"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(tiny_corpus(family) + list(corpus or []), trainer)
    return tok


def build_tokenizer(family: str, base_vocab: int | None = None, corpus: list[str] | None = None):
    """(tokenizer, facts) for a family: OpenVLA-like (action ids = last 256 of the unpadded vocabulary,
    then `<PAD>`) or MiniVLA-like (256 added `<|extra_i|>` tokens at the end)."""
    if family == "openvla":
        tok = _bpe_tokenizer(base_vocab or 320, byte_level=False, specials=["<unk>", "<s>", "</s>"],
                             family=family, corpus=corpus)
        data = json.loads(tok.to_str())
        vocab = data["model"]["vocab"]
        for i in range(_padded(len(vocab)) - len(vocab)):  # filler: the unpadded vocabulary is 64k long
            vocab[chr(0x3400 + i)] = len(vocab)
        start = len(vocab)
        for i in range(N_BINS):  # rarely used single characters, like Llama's last ids
            vocab[chr(0x4E00 + i)] = start + i
        tok = Tokenizer.from_str(json.dumps(data))
        tok.add_special_tokens(["<PAD>"])
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        vocab_end = start + N_BINS
        facts = dict(vocab_end=vocab_end, pad_id=vocab_end, bos="<s>", eos="</s>", pad="<PAD>", unk="<unk>",
                     n_tokens=vocab_end + 1, tokenizer_class="LlamaTokenizerFast")
    elif family == "minivla":
        tok = _bpe_tokenizer(base_vocab or 640, byte_level=True, specials=[], family=family, corpus=corpus)
        tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
        tok.add_tokens([f"<|extra_{i}|>" for i in range(N_BINS)])
        n_tokens = tok.get_vocab_size(with_added_tokens=True)
        facts = dict(vocab_end=n_tokens, pad_id=tok.token_to_id("<|endoftext|>"), bos=None,
                     eos="<|im_end|>", pad="<|endoftext|>", unk=None, n_tokens=n_tokens,
                     tokenizer_class="Qwen2TokenizerFast")
    else:
        raise ValueError(f"tiny checkpoints exist for families 'openvla' and 'minivla', not {family!r}")
    return tok, facts


def _padded(n: int) -> int:
    return int(math.ceil(n / PAD_MULTIPLE) * PAD_MULTIPLE)


def tiny_tower_specs(dim: int, depth: int, heads: int) -> list[TowerSpec]:
    """A DINOv2-like tower (cls + 4 registers, LayerScale) and a SigLIP-like one (no cls, attention pool)."""
    dino = TowerSpec(embed_dim=dim, depth=depth, num_heads=heads, mlp_hidden=4 * dim, patch_size=14,
                     class_token=True, reg_tokens=4, no_embed_class=True, layer_scale=True)
    siglip_dim = dim + dim // 2
    siglip = TowerSpec(embed_dim=siglip_dim, depth=depth + 1, num_heads=heads,
                       mlp_hidden=int(siglip_dim * 3.7362), patch_size=14, class_token=False, pool="map",
                       mean=SIGLIP_MEAN, std=SIGLIP_STD)
    return [dino, siglip]


def _text_config(family: str, hidden: int, layers: int, heads: int, kv_heads: int, vocab: int,
                 facts: dict) -> dict:
    common = dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab,
                  max_position_embeddings=2048, rms_norm_eps=1e-6, hidden_act="silu",
                  initializer_range=0.02, pad_token_id=facts["pad_id"], torch_dtype="float32")
    if family == "openvla":
        return dict(model_type="llama", architectures=["LlamaForCausalLM"], rope_theta=10000.0,
                    tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, **common)
    return dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], rope_theta=1000000.0,
                tie_word_embeddings=True, use_sliding_window=False, max_window_layers=layers,
                eos_token_id=facts["pad_id"], **common)


def _norm_stats(keys: tuple[str, ...]) -> dict:
    """Plausible Bridge-like statistics (m, rad per step; gripper 0..1 not normalized)."""
    stats = {}
    for j, key in enumerate(keys):
        s = 1.0 + 0.5 * j
        q01 = [-0.02 * s, -0.03 * s, -0.025 * s, -0.1 * s, -0.12 * s, -0.15 * s, 0.0]
        q99 = [0.025 * s, 0.03 * s, 0.02 * s, 0.11 * s, 0.1 * s, 0.16 * s, 1.0]
        action = dict(mask=[True] * 6 + [False], q01=q01, q99=q99, min=[2 * v for v in q01],
                      max=[2 * v for v in q99], mean=[(a + b) / 2 for a, b in zip(q01, q99)],
                      std=[(b - a) / 4 for a, b in zip(q01, q99)])
        stats[key] = dict(action=action, proprio=dict(mean=[0.0] * 7, std=[1.0] * 7, q01=[0.0] * 7,
                                                      q99=[0.0] * 7, min=[0.0] * 7, max=[0.0] * 7),
                          num_trajectories=100 + j, num_transitions=3000 + j)
    return stats


@torch.no_grad()
def _randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random weights with unit-variance activations; LayerScale in [0.5, 1]; norms near 1."""
    for name, p in module.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "gamma":
            p.uniform_(0.5, 1.0, generator=gen)
        elif p.ndim >= 2 and leaf == "weight":
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
        elif "norm" in name and leaf == "weight":
            p.normal_(1.0, 0.1, generator=gen)
        elif leaf in ("pos_embed", "cls_token", "reg_token", "latent"):
            p.normal_(0.0, 0.5, generator=gen)
        else:  # biases
            p.normal_(0.0, 0.1, generator=gen)


def _fresh(factory, gen: torch.Generator) -> torch.nn.Module:
    """Build on the meta device (no init cost), allocate, then fill with `_randomize`."""
    with torch.device("meta"):
        module = factory()
    module.to_empty(device="cpu")
    _randomize(module, gen)
    return module


def write_tiny_checkpoint(path: str | Path, family: str = "openvla", seed: int = 0, image_size: int = 224,
                          tower_dim: int = 32, tower_depth: int = 3, tower_heads: int = 2,
                          llm_hidden: int = 64, llm_layers: int = 2, llm_heads: int = 4,
                          llm_kv_heads: int | None = None, real_towers: bool = False,
                          dataset_keys: tuple[str, ...] = ("tiny_dataset",), dtype: str | None = None,
                          corpus: list[str] | None = None) -> Path:
    """Write a random checkpoint in the released layout and return its directory.

    real_towers: the real DINOv2-L/14-reg4 + SigLIP-SO400M/14 shapes (random weights, about 0.7 B
    parameters, stored in bf16 unless `dtype` says otherwise) named by their timm ids, with the small LLM.
    corpus: extra text the tiny tokenizer is trained on (e.g. a demo's instructions: shorter prompts).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if real_towers:
        specs = [KNOWN_TOWERS[i.split(".")[0]] for i in REAL_TIMM_IDS]
        if image_size % 14:
            raise ValueError("image_size must be a multiple of 14")
    else:
        specs = tiny_tower_specs(tower_dim, tower_depth, tower_heads)
    store = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[
        dtype or ("bf16" if real_towers else "fp32")]
    gen = torch.Generator().manual_seed(seed)
    tok, facts = build_tokenizer(family, corpus=corpus)
    padded_vocab = _padded(facts["n_tokens"])
    kv_heads = llm_kv_heads or (llm_heads if family == "openvla" else 1)
    text_config = _text_config(family, llm_hidden, llm_layers, llm_heads, kv_heads, padded_vocab, facts)

    tensors: dict[str, torch.Tensor] = {}
    for prefix, spec in zip(["vision_backbone.featurizer.", "vision_backbone.fused_featurizer."], specs):
        tower = _fresh(lambda spec=spec: full_tower(spec, image_size), gen)
        for key, value in tower.state_dict().items():  # convert now: one fp32 tower alive at a time
            tensors[module_to_released_key(prefix + key)] = value.detach().to(store).contiguous()
        del tower
    vision_dim = sum(s.embed_dim for s in specs)
    projector = _fresh(lambda: make_projector(True, vision_dim, llm_hidden), gen)
    tensors.update({f"projector.{k}": v for k, v in projector.state_dict().items()})
    llm_cls = LlamaForCausalLM if family == "openvla" else Qwen2ForCausalLM
    lm_cfg = AutoConfig.for_model(text_config["model_type"],
                                  **{k: v for k, v in text_config.items() if k != "model_type"})
    lm = _fresh(lambda: llm_cls(lm_cfg), gen)
    for key, value in lm.state_dict().items():
        if text_config["tie_word_embeddings"] and key == "lm_head.weight":
            continue  # tied to embed_tokens, not stored (as transformers saves it)
        tensors[f"language_model.{key}"] = value
    tensors = {k: v.detach().to(store).contiguous() for k, v in tensors.items()}
    write_shards(path, tensors, save_file)

    config = {
        "model_type": "openvla", "architectures": ["OpenVLAForActionPrediction"],
        "vision_backbone_id": "dinosiglip-vit-so-224px" if real_towers else "vla-ros-tiny-dinosiglip",
        "use_fused_vision_backbone": True,
        "timm_model_ids": REAL_TIMM_IDS if real_towers else ["vla_ros_tiny_dinov2", "vla_ros_tiny_siglip"],
        "timm_override_act_layers": [None, None], "image_sizes": [image_size, image_size],
        "image_resize_strategy": "resize-naive",
        "llm_backbone_id": "llama2-tiny-pure" if family == "openvla" else "qwen25-tiny-extra",
        "llm_max_length": 2048, "arch_specifier": "no-align+fused-gelu-mlp", "n_action_bins": N_BINS,
        "pad_token_id": facts["pad_id"], "pad_to_multiple_of": PAD_MULTIPLE, "text_config": text_config,
        "norm_stats": _norm_stats(tuple(dataset_keys)), "torch_dtype": str(store).replace("torch.", ""),
        "vla_ros_tiny": {"family": family, "seed": seed},
    }
    if not real_towers:
        config["tower_specs"] = [s.to_dict() for s in specs]
    (path / "config.json").write_text(json.dumps(config, indent=2))
    _write_tokenizer(path, tok, facts)
    _write_preprocessor(path, specs, image_size)
    (path / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1 if family == "openvla" else None, "eos_token_id": tok.token_to_id(facts["eos"]),
         "pad_token_id": facts["pad_id"]}, indent=2))
    return path


def write_shards(path: Path, tensors: dict[str, torch.Tensor], save_file) -> None:
    """Two shards split at half the bytes, plus the index (as transformers' save_pretrained)."""
    keys = sorted(tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    first, acc = [], 0
    for key in keys:
        if acc >= total / 2 and first:
            break
        first.append(key)
        acc += tensors[key].numel() * tensors[key].element_size()
    groups = [first, keys[len(first):]]
    names = [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    weight_map = {}
    for name, group in zip(names, groups):
        save_file({k: tensors[k] for k in group}, str(path / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in group})
    (path / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))


def _write_tokenizer(path: Path, tok, facts: dict) -> None:
    tok.save(str(path / "tokenizer.json"))
    special = {k: facts[k] for k in ("bos", "eos", "pad", "unk") if facts[k] is not None}
    special_map = {f"{k}_token": v for k, v in special.items()}
    (path / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2))
    cfg = dict(special_map, tokenizer_class=facts["tokenizer_class"], model_max_length=2048,
               add_bos_token=facts["bos"] is not None, add_eos_token=False)
    (path / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    if facts["pad"] == "<PAD>":
        (path / "added_tokens.json").write_text(json.dumps({"<PAD>": facts["pad_id"]}, indent=2))


def bf16_round(values: tuple[float, ...]) -> list[float]:
    """Values as the released processor configs store them (rounded to bfloat16)."""
    return [float(v) for v in torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).float()]


def _write_preprocessor(path: Path, specs: list[TowerSpec], image_size: int) -> None:
    """preprocessor_config.json as OpenVLA's PrismaticImageProcessor saves it."""
    means = [bf16_round(s.mean) if tuple(s.mean) == IMAGENET_MEAN else list(s.mean) for s in specs]
    stds = [bf16_round(s.std) if tuple(s.std) == IMAGENET_STD else list(s.std) for s in specs]
    n = len(specs)
    pre = {
        "image_processor_type": "PrismaticImageProcessor", "image_resize_strategy": "resize-naive",
        "input_sizes": [[3, image_size, image_size]] * n, "interpolations": ["bicubic"] * n,
        "means": means, "stds": stds,
        "tvf_resize_params": [{"size": [image_size, image_size], "interpolation": 3, "max_size": None,
                               "antialias": True}] * n,
        "tvf_crop_params": [{"output_size": [image_size, image_size]}] * n,
        "tvf_normalize_params": [{"mean": m, "std": s, "inplace": False} for m, s in zip(means, stds)],
        "tvf_do_letterbox": False, "tvf_letterbox_fill": None, "use_fused_vision_backbone": n == 2,
    }
    (path / "preprocessor_config.json").write_text(json.dumps(pre, indent=2))


_CACHE_DIR: Path | None = None


def cached_tiny_checkpoint(**kwargs) -> Path:
    """`write_tiny_checkpoint(**kwargs)` once per process (tests share them); removed at exit.

    Treat the directory as read-only: copy it before corrupting it in a test.
    """
    global _CACHE_DIR
    if _CACHE_DIR is None:
        _CACHE_DIR = Path(tempfile.mkdtemp(prefix="vla_ros_tiny_"))
        atexit.register(shutil.rmtree, _CACHE_DIR, True)
    key = hashlib.sha1(json.dumps(kwargs, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = _CACHE_DIR / key
    if not (path / "config.json").is_file():
        write_tiny_checkpoint(path, **kwargs)
    return path


def main(argv: list[str] | None = None) -> int:
    """`python -m vla_ros.model.tiny OUT_DIR [--family F] [--image-size S] [--real-towers] [--seed N]`."""
    p = argparse.ArgumentParser(prog="python -m vla_ros.model.tiny",
                                description="Write a random checkpoint in the released OpenVLA layout.")
    p.add_argument("out_dir")
    p.add_argument("--family", default="openvla", choices=("openvla", "minivla"))
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real-towers", action="store_true", help="DINOv2-L + SigLIP-SO400M shapes (~1.5 GB)")
    p.add_argument("--datasets", default="tiny_dataset", help="comma-separated norm_stats keys")
    args = p.parse_args(argv)
    path = write_tiny_checkpoint(args.out_dir, family=args.family, seed=args.seed, image_size=args.image_size,
                                 real_towers=args.real_towers, dataset_keys=tuple(args.datasets.split(",")))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
