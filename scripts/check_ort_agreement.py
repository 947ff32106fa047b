#!/usr/bin/env python3
"""Token-for-token agreement of torch and ONNX Runtime on random images and instructions.

    .venv/bin/python scripts/check_ort_agreement.py --samples 50               # tiny checkpoint
    .venv/bin/python scripts/check_ort_agreement.py --real-towers --samples 50 # real 7B-VLA towers

Writes a random checkpoint (or uses --checkpoint), exports it (or uses --onnx-dir), runs both
policies on the same inputs and prints how many samples gave identical action tokens and the
largest logit difference. Exit status 0 only when every sample agrees.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-towers", action="store_true",
                    help="DINOv2-L/14-reg4 + SigLIP-SO400M/14 shapes (random weights) with a small LLM")
    ap.add_argument("--checkpoint", default="", help="use this checkpoint instead of writing one")
    ap.add_argument("--onnx-dir", default="", help="use this export instead of exporting")
    ap.add_argument("--work-dir", default="", help="where to write the checkpoint and export (default: temp)")
    ap.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    args = ap.parse_args()

    import numpy as np
    import torch

    from vla_ros.core.config import PolicyConfig
    from vla_ros.model.tiny import write_tiny_checkpoint
    from vla_ros.runtime.agreement import compare_policies
    from vla_ros.runtime.export import export_checkpoint
    from vla_ros.runtime.factory import make_policy
    from vla_ros.runtime.graph_dir import policy_for
    from vla_ros.runtime.ort_backend import OrtBackend, OrtOptions

    torch.set_num_threads(args.threads)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="vla_agree_"))
    t0 = time.monotonic()
    ckpt = Path(args.checkpoint) if args.checkpoint else write_tiny_checkpoint(
        work / ("real_towers" if args.real_towers else "tiny"), real_towers=args.real_towers)
    print(f"checkpoint {ckpt} ({time.monotonic() - t0:.0f} s)", flush=True)
    onnx_dir = Path(args.onnx_dir) if args.onnx_dir else work / f"{ckpt.name}_onnx"
    if not args.onnx_dir:
        export_checkpoint(ckpt, onnx_dir)
    cfg = PolicyConfig(checkpoint=str(ckpt))
    reference = make_policy(cfg)
    candidate = policy_for(ckpt, OrtBackend(onnx_dir, OrtOptions(threads=args.threads)), cfg)
    print(f"reference: {reference.describe()}\ncandidate: {candidate.describe()}", flush=True)

    rng = np.random.default_rng(args.seed)
    words = ("pick up the red block put it in bowl open close drawer left right towel carrot pot move "
             "near sink wipe table with sponge").split()
    cases = []
    for _ in range(args.samples):
        h, w = (int(v) for v in rng.integers(32, 640, size=2))
        cases.append((rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8),
                      " ".join(rng.choice(words, size=int(rng.integers(1, 14))))))
    t1 = time.monotonic()
    result = compare_policies(reference, candidate, cases)
    print(f"{result.summary()} ({time.monotonic() - t1:.0f} s for {args.samples} samples)")
    for line in result.mismatches[:10]:
        print("  mismatch:", line)
    return 0 if result.same_tokens == result.samples else 1


if __name__ == "__main__":
    sys.exit(main())
