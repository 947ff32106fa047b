"""`vla-ros predict`: one action from an image file and an instruction, printed (or as JSON)."""

from __future__ import annotations

import argparse
import json
import sys

import cv2
import numpy as np

from vla_ros.core.config import PolicyConfig
from vla_ros.core.schema import validate
from vla_ros.core.types import Instruction, Observation
from vla_ros.runtime.factory import make_policy

ACTION_NAMES = ("dx_m", "dy_m", "dz_m", "droll_rad", "dpitch_rad", "dyaw_rad", "gripper")


def read_rgb(path: str) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3] (OpenCV decode; raises ValueError when unreadable)."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ValueError(f"cannot read an image from {path!r}: {exc.strerror or exc}") from exc
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"cannot read an image from {path!r}")
    return np.ascontiguousarray(bgr[:, :, ::-1])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros predict", description=__doc__)
    p.add_argument("--checkpoint", default="", help="checkpoint directory (default: the embedded demo)")
    p.add_argument("--image", required=True, help="image file (PNG, JPEG, ...)")
    p.add_argument("--instruction", required=True, help="what the robot should do")
    p.add_argument("--unnorm-key", default="", help="dataset statistics to un-normalize with")
    p.add_argument("--backend", default="torch", help="inference backend (torch)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--center-crop", action="store_true", help="0.9-area centre crop (augmentation-trained)")
    p.add_argument("--gripper-binarize", action="store_true", help="round the gripper to 0 or 1")
    p.add_argument("--gripper-invert", action="store_true", help="use 1 - gripper")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0 = torch's default; 1 suits tiny models on a busy CPU)")
    p.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="untimed predictions first (the first call is slower)")
    p.add_argument("--json", action="store_true", help="print JSON (action, tokens, timings)")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.threads > 0 and args.backend == "torch":
        import torch  # lazy: only the torch backend needs it

        torch.set_num_threads(args.threads)
    try:
        cfg = validate(PolicyConfig(
            checkpoint=args.checkpoint, backend=args.backend, device=args.device, dtype=args.dtype,
            unnorm_key=args.unnorm_key, center_crop=args.center_crop,
            gripper_binarize=args.gripper_binarize, gripper_invert=args.gripper_invert))
        rgb = read_rgb(args.image)
        policy = make_policy(cfg)
        if args.warmup > 0 and hasattr(policy, "warmup"):
            policy.warmup(args.warmup)
        chunk = policy.predict(Observation(rgb=rgb, stamp=0.0), Instruction(text=args.instruction, stamp=0.0))
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        print(f"vla-ros predict: {exc}", file=sys.stderr)
        return 1
    action = chunk.actions[0]
    tokens = getattr(policy, "last_tokens", np.zeros(0)).tolist()
    if args.json:
        print(json.dumps({"action": dict(zip(ACTION_NAMES, action.tolist())), "tokens": tokens,
                          "timings_s": chunk.timings, "policy": policy.describe()}, indent=2))
        return 0
    print(f"policy: {policy.describe()}")
    print("action: " + "  ".join(f"{n}={v:+.5f}" for n, v in zip(ACTION_NAMES, action)))
    print(f"tokens: {tokens}")
    print("timings: " + "  ".join(f"{k}={v * 1e3:.1f} ms" for k, v in chunk.timings.items()))
    return 0
