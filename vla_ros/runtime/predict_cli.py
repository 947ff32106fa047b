"""`vla-ros predict`: actions from image files and an instruction, for one case or a batch of cases.

One case: `--image` once per camera in the checkpoint's camera order (the autoregressive family takes
exactly one), `--instruction`, and `--proprio v1,v2,...` when the checkpoint takes proprio. The
autoregressive family prints its action; OpenVLA-OFT prints its chunk (`--json` for JSON).

A batch: `--batch CASES.jsonl [--output OUT.jsonl]`, one case per line (relative image paths resolve
against the directory of CASES.jsonl):
    {"id": "a", "images": ["primary.png", "wrist.png"], "instruction": "...", "proprio": [...] | null}
gives one line per case, in the same order, with floats at full precision:
    {"id": "a", "actions": [[...] x action_dim] x chunk, "normalized_actions": [[...] x action_dim] x chunk}
(the autoregressive family: chunk 1, its normalized actions are the bin centres of its tokens). The model
loads once. Ids must be unique. A bad case stops the whole batch: every problem found before the model runs
(malformed line, missing image, wrong camera count or proprio length) is listed by line and id, exit 1 and
nothing is written; OUT.jsonl is replaced atomically, so it always holds every case or is left as it was.

Actions are un-normalized; the gripper options and `--action-scale` apply only when given.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vla_ros.core.config import PolicyConfig
from vla_ros.core.inputs import sanitize_instruction
from vla_ros.core.schema import validate
from vla_ros.core.types import ACTION_DIM, Instruction, Observation, Policy, policy_inputs
from vla_ros.runtime.factory import make_policy
from vla_ros.runtime.oft_policy import OftPolicy

ACTION_NAMES = ("dx_m", "dy_m", "dz_m", "droll_rad", "dpitch_rad", "dyaw_rad", "gripper")


class CaseError(ValueError):
    """One or more cases of a batch cannot run; the message lists each by line and id."""


@dataclass(frozen=True)
class Case:
    """One prediction to make: the images in camera order, the instruction, the raw proprio (or None)."""

    id: str
    images: tuple[Path, ...]
    instruction: str
    proprio: tuple[float, ...] | None
    line: int = 0

    def where(self) -> str:
        """E.g. "line 3 (id 'pick-1')" for error messages."""
        return f"line {self.line} (id {self.id!r})"


@dataclass(frozen=True)
class CaseResult:
    """A case's chunk [K, A]: un-normalized actions (with the options asked for) and the model's output."""

    actions: np.ndarray
    normalized: np.ndarray
    timings: dict[str, float]


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


def float_list(text: str) -> tuple[float, ...]:
    """argparse type: "v1,v2,..." -> finite floats."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return values


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vla-ros predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="", help="checkpoint directory (default: the embedded demo)")
    p.add_argument("--image", action="append", default=[],
                   help="image file (PNG, JPEG, ...); once per camera, in the checkpoint's camera order")
    p.add_argument("--instruction", help="what the robot should do")
    p.add_argument("--proprio", type=float_list, metavar="V1,V2,...",
                   help="robot state in the checkpoint's layout (checkpoints with proprio; LIBERO: 8 values)")
    p.add_argument("--batch", type=Path, metavar="CASES.jsonl", help="predict each case of a JSON-lines file")
    p.add_argument("--output", type=Path, metavar="OUT.jsonl", help="with --batch: write here, not to stdout")
    p.add_argument("--unnorm-key", default="", help="dataset statistics to un-normalize with")
    p.add_argument("--backend", default="torch",
                   help="inference backend: torch, onnxruntime or tensorrt (the last two run --engine-dir)")
    p.add_argument("--engine-dir", default="", help="exported ONNX graphs / TensorRT engines")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--dtype", default="fp32", choices=("fp32", "fp16", "bf16"))
    p.add_argument("--center-crop", action="store_true", help="0.9-area centre crop (augmentation-trained)")
    p.add_argument("--gripper-binarize", action="store_true", help="round the gripper to 0 or 1")
    p.add_argument("--gripper-invert", action="store_true", help="use 1 - gripper")
    p.add_argument("--action-scale", type=float_list, metavar="DX,DY,DZ,DROLL,DPITCH,DYAW",
                   help="multiply the 6 motion dimensions (model units -> robot units); default: unscaled")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0 = torch's default; 1 suits tiny models on a busy CPU)")
    p.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="untimed predictions first (the first call is slower)")
    p.add_argument("--json", action="store_true", help="print JSON (one case: actions, tokens, timings)")
    return p


def usage_problem(args: argparse.Namespace) -> str | None:
    """Why the flags do not make one case or one batch, or None."""
    if args.action_scale is not None and len(args.action_scale) != 6:
        n = len(args.action_scale)
        return f"--action-scale takes 6 values (dx, dy, dz, droll, dpitch, dyaw), got {n}"
    if args.batch is not None:
        given = [f for f, v in (("--image", args.image), ("--instruction", args.instruction),
                                ("--proprio", args.proprio), ("--json", args.json)) if v]
        return f"--batch takes its cases from the file; drop {', '.join(given)}" if given else None
    if args.output is not None:
        return "--output needs --batch"
    if not args.image or args.instruction is None:
        return "give --image (once per camera) and --instruction, or --batch CASES.jsonl"
    return None


def _finite_numbers(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


# key of a case -> (check of its value, what the value must be)
CASE_FIELDS = {
    "id": (lambda v: isinstance(v, str) and v != "", "a non-empty string"),
    "images": (lambda v: isinstance(v, list) and v != [] and all(isinstance(p, str) and p for p in v),
               "a non-empty list of image paths"),
    "instruction": (lambda v: isinstance(v, str), "a string"),
    "proprio": (lambda v: v is None or _finite_numbers(v), "a list of finite numbers or null"),
}


def _case_value(raw: dict, key: str, where: str) -> object:
    """raw[key] (missing = null) when it passes its check, else CaseError."""
    check, wanted = CASE_FIELDS[key]
    value = raw.get(key)
    if not check(value):
        raise CaseError(f"{where}: {key!r} must be {wanted}, got {json.dumps(value)[:80]}")
    return value


def parse_case(text: str, line: int, base: Path) -> Case:
    """One line of a cases file -> Case (relative images against `base`); CaseError naming the line."""
    where = f"line {line}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CaseError(f"{where}: not a JSON object ({exc.msg})") from exc
    if not isinstance(raw, dict):
        raise CaseError(f"{where}: not a JSON object")
    if isinstance(raw.get("id"), str):
        where = f"line {line} (id {raw['id']!r})"
    unknown = set(raw) - set(CASE_FIELDS)
    if unknown:
        raise CaseError(f"{where}: unknown keys {sorted(unknown)}; a case has {sorted(CASE_FIELDS)}")
    case_id = _case_value(raw, "id", where)
    images = tuple(base / p for p in _case_value(raw, "images", where))
    try:
        instruction = sanitize_instruction(_case_value(raw, "instruction", where))
    except ValueError as exc:
        raise CaseError(f"{where}: {exc}") from exc
    if not instruction:
        raise CaseError(f"{where}: empty instruction")
    proprio = _case_value(raw, "proprio", where)
    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise CaseError(f"{where}: no such image file: {', '.join(missing)}")
    return Case(case_id, images, instruction, None if proprio is None else tuple(map(float, proprio)), line)


def read_cases(path: Path) -> list[Case]:
    """Every case of a JSON-lines file (blank lines skipped); CaseError listing every bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CaseError(f"cannot read {path}: {exc}") from exc
    cases, problems, seen = [], [], {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            case = parse_case(text, number, path.parent)
        except CaseError as exc:
            problems.append(str(exc))
            continue
        if case.id in seen:
            problems.append(f"{case.where()}: the id is already used on line {seen[case.id]}")
        seen.setdefault(case.id, number)
        cases.append(case)
    if not cases and not problems:
        problems.append("no cases")
    if problems:
        raise CaseError(_problem_list(path, problems))
    return cases


def _problem_list(path: Path, problems: list[str]) -> str:
    return f"{path}: {len(problems)} bad case(s), nothing predicted:\n  " + "\n  ".join(problems)


def camera_names(policy: Policy) -> tuple[str, ...]:
    """The checkpoint's cameras, primary first."""
    return policy.settings.cameras if isinstance(policy, OftPolicy) else ("primary",)


def input_problem(policy: Policy, n_images: int, proprio: tuple[float, ...] | None) -> str | None:
    """Why `n_images` images and `proprio` do not fit the checkpoint, or None."""
    inputs = policy_inputs(policy)
    if n_images != inputs.cameras:
        names = ", ".join(camera_names(policy))
        return f"the checkpoint takes {inputs.cameras} camera image(s) ({names}), got {n_images}"
    if not inputs.proprio_dim:
        return None if proprio is None else f"the checkpoint takes no proprio, got {len(proprio)} values"
    if proprio is None:
        return f"the checkpoint needs a proprio vector of {inputs.proprio_dim} values, none was given"
    if len(proprio) != inputs.proprio_dim:
        return f"the checkpoint needs a proprio vector of {inputs.proprio_dim} values, got {len(proprio)}"
    return None


def action_dim(policy: Policy) -> int:
    """Dimensions of one action of the checkpoint."""
    return policy.settings.action_dim if isinstance(policy, OftPolicy) else ACTION_DIM


def options_problem(policy: Policy, cfg: PolicyConfig, action_scale: tuple[float, ...] | None) -> str | None:
    """The gripper options and the action scale are for 7-D end-effector actions; None when they fit."""
    asked = cfg.gripper_binarize or cfg.gripper_invert or action_scale is not None
    dim = action_dim(policy)
    if asked and dim != ACTION_DIM:
        return (f"the gripper options and --action-scale apply to {ACTION_DIM}-D end-effector actions; this "
                f"checkpoint's actions have {dim} dimensions")
    return None


def predict_case(policy: Policy, images: list[np.ndarray], text: str, proprio: tuple[float, ...] | None,
                 action_scale: tuple[float, ...] | None = None) -> CaseResult:
    """One prediction of either family as a chunk [K, A] (autoregressive: K = 1)."""
    if isinstance(policy, OftPolicy):
        out = policy.predict_arrays(images, text, None if proprio is None else np.asarray(proprio))
        actions, normalized, timings = policy.gripper.apply(out.actions), out.normalized, out.timings
    else:
        tokens, timings = policy.predict_tokens(images[0], text)
        normalized = policy.action_tokenizer.decode(tokens)[None, :]
        actions = policy.tokens_to_actions(tokens)
    if action_scale is not None:
        actions = actions.copy()
        actions[:, :6] *= np.asarray(action_scale)
    return CaseResult(actions=actions, normalized=np.asarray(normalized, dtype=np.float64), timings=timings)


def result_line(case_id: str, result: CaseResult) -> str:
    """The output line of one case (json writes floats with repr: full precision)."""
    return json.dumps({"id": case_id, "actions": result.actions.tolist(),
                       "normalized_actions": result.normalized.tolist()})


def write_atomic(path: Path, text: str) -> None:
    """Write `text` so that a reader sees the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def load_policy(cfg: PolicyConfig, warmup: int) -> Policy:
    """The policy of `cfg`, warmed up `warmup` times."""
    policy = make_policy(cfg)
    if warmup > 0 and hasattr(policy, "warmup"):
        policy.warmup(warmup)
    return policy


def check_batch(policy: Policy, cases: list[Case], path: Path) -> None:
    """CaseError listing every case whose inputs do not fit the checkpoint."""
    problems = []
    for case in cases:
        problem = input_problem(policy, len(case.images), case.proprio)
        check = getattr(policy, "check_instruction", None)
        problem = problem or (check(case.instruction) if check is not None else None)
        if problem is not None:
            problems.append(f"{case.where()}: {problem}")
    if problems:
        raise CaseError(_problem_list(path, problems))


def run_batch(args: argparse.Namespace, cfg: PolicyConfig) -> int:
    """Every case of --batch through one loaded policy; all lines written at the end or none."""
    t0 = time.perf_counter()
    cases = read_cases(args.batch)
    policy = load_policy(cfg, args.warmup)
    problem = options_problem(policy, cfg, args.action_scale)
    if problem is not None:
        raise CaseError(problem)
    check_batch(policy, cases, args.batch)
    t1 = time.perf_counter()
    lines = []
    for case in cases:
        try:
            images = [read_rgb(str(p)) for p in case.images]
            result = predict_case(policy, images, case.instruction, case.proprio, args.action_scale)
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise CaseError(f"{args.batch}: {case.where()}: {exc}; nothing written") from exc
        lines.append(result_line(case.id, result) + "\n")
    text = "".join(lines)
    if args.output is not None:
        write_atomic(args.output, text)
    else:
        sys.stdout.write(text)
    per_case = (time.perf_counter() - t1) / len(cases)
    print(f"vla-ros predict: {len(cases)} case(s), model loaded once (with warm-up) in {t1 - t0:.1f} s, "
          f"{per_case * 1e3:.1f} ms per case; {policy.describe()}", file=sys.stderr)
    return 0


def print_action(policy: Policy, args: argparse.Namespace, images: list[np.ndarray]) -> None:
    """The autoregressive family's single-case output (text or --json), as before chunks existed."""
    observation = Observation(rgb=images[0], stamp=0.0)
    chunk = policy.predict(observation, Instruction(text=args.instruction, stamp=0.0))
    action = chunk.actions[0]
    if args.action_scale is not None:
        action = action.copy()
        action[:6] *= np.asarray(args.action_scale)
    tokens = getattr(policy, "last_tokens", np.zeros(0)).tolist()
    if args.json:
        print(json.dumps({"action": dict(zip(ACTION_NAMES, action.tolist())), "tokens": tokens,
                          "timings_s": chunk.timings, "policy": policy.describe()}, indent=2))
        return
    print(f"policy: {policy.describe()}")
    print("action: " + "  ".join(f"{n}={v:+.5f}" for n, v in zip(ACTION_NAMES, action)))
    print(f"tokens: {tokens}")
    print("timings: " + "  ".join(f"{k}={v * 1e3:.1f} ms" for k, v in chunk.timings.items()))


def print_chunk(policy: OftPolicy, args: argparse.Namespace, images: list[np.ndarray]) -> None:
    """An OFT chunk: one row per action (text), or actions, normalized actions and timings (--json)."""
    result = predict_case(policy, images, args.instruction, args.proprio, args.action_scale)
    if args.json:
        print(json.dumps({"actions": result.actions.tolist(),
                          "normalized_actions": result.normalized.tolist(),
                          "timings_s": result.timings, "policy": policy.describe()}, indent=2))
        return
    k, a = result.actions.shape
    print(f"policy: {policy.describe()}")
    print(f"chunk: {k} actions x {a} dimensions (un-normalized), cameras {', '.join(camera_names(policy))}")
    for i, row in enumerate(result.actions):
        print(f"  {i:3d}: " + " ".join(f"{v:+.5f}" for v in row))
    print("timings: " + "  ".join(f"{k}={v * 1e3:.1f} ms" for k, v in result.timings.items()))


def run_single(args: argparse.Namespace, cfg: PolicyConfig) -> int:
    """One case from --image/--instruction/--proprio."""
    images = [read_rgb(path) for path in args.image]
    policy = load_policy(cfg, args.warmup)
    problem = input_problem(policy, len(images), args.proprio)
    problem = problem or options_problem(policy, cfg, args.action_scale)
    if problem is not None:
        raise ValueError(problem)
    if isinstance(policy, OftPolicy):
        print_chunk(policy, args, images)
    else:
        print_action(policy, args, images)
    return 0


def main(argv: list[str]) -> int:
    p = parser()
    args = p.parse_args(argv)
    problem = usage_problem(args)
    if problem is not None:
        p.error(problem)
    if args.threads > 0 and args.backend == "torch":
        import torch  # lazy: only the torch backend needs it

        torch.set_num_threads(args.threads)
    try:
        cfg = validate(PolicyConfig(
            checkpoint=args.checkpoint, backend=args.backend, engine_dir=args.engine_dir, device=args.device,
            dtype=args.dtype, unnorm_key=args.unnorm_key, center_crop=args.center_crop,
            gripper_binarize=args.gripper_binarize, gripper_invert=args.gripper_invert))
        return run_batch(args, cfg) if args.batch is not None else run_single(args, cfg)
    except BrokenPipeError:  # the reader went away: the verb dispatcher ends quietly
        raise
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        print(f"vla-ros predict: {exc}", file=sys.stderr)
        return 1
