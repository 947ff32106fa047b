"""Parity with OpenVLA-OFT's own code: `vla-ros convert` + `vla-ros predict` against the float32 outputs that
OFT's `get_vla_action` gave for the same checkpoint and cases (written by scripts/oft_reference.py).

The committed tiny fixture (test/fixtures/oft_tiny: tiny towers and LLM, the LIBERO and ALOHA/FiLM forms)
runs through torch and ONNX Runtime; the full-size fixtures (real tower shapes, 1.5 GB each, made with
`scripts/oft_reference.py` into $VLA_ROS_OFT_FIXTURES, default /work/oft_fixtures) through torch only.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from vla_ros.model import convert
from vla_ros.runtime import export, predict_cli

TINY_ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "oft_tiny"
SHARED_TOKENIZER = "tokenizer.json"  # one tokenizer for both tiny forms, copied into each run dir
FORMS = ("libero", "aloha")
FULL_ROOT_ENV = "VLA_ROS_OFT_FIXTURES"
FULL_ROOT_DEFAULT = "/work/oft_fixtures"
BOUND = 1e-4  # OFT's own float32 vs float64 differ by ~2e-6 here (fixture.json)
MIN_CHANGE = 100 * BOUND  # what changing one input must move the normalized actions by, at least
OUTPUT_KEYS = ("normalized_actions", "actions")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def convert_run(run: Path, dst: Path, form: str) -> Path:
    """`vla-ros convert RUN DST --preset FORM` (aloha: the preset's LoRA rank 32, FiLM)."""
    assert convert.main([str(run), str(dst), "--preset", form]) == 0
    return dst


def predict(checkpoint: Path, cases: Path, out: Path, *backend: str) -> list[dict]:
    """`vla-ros predict --batch` with the given backend flags; the rows it wrote."""
    argv = ["--checkpoint", str(checkpoint), "--batch", str(cases), "--output", str(out), *backend]
    assert predict_cli.main(argv) == 0
    return read_jsonl(out)


def max_diffs(rows: list[dict], reference: list[dict]) -> dict[str, float]:
    """Largest |ours - OFT's| over every case, per output; the cases must match one to one."""
    assert [r["id"] for r in rows] == [r["id"] for r in reference]
    diffs = {}
    for key in OUTPUT_KEYS:
        ours = np.array([r[key] for r in rows], dtype=np.float64)
        theirs = np.array([r[key] for r in reference], dtype=np.float64)
        assert ours.shape == theirs.shape, (key, ours.shape, theirs.shape)
        diffs[key] = float(np.abs(ours - theirs).max())
    return diffs


def differing_inputs(a: dict, b: dict) -> list[str]:
    """The inputs two cases differ in: "camera_<i>", "instruction", "proprio"."""
    names = [f"camera_{i}" for i, (x, y) in enumerate(zip(a["images"], b["images"])) if x != y]
    return names + [k for k in ("instruction", "proprio") if a[k] != b[k]]


def one_input_changes(cases: list[dict], rows: list[dict]) -> dict[str, float]:
    """For each input: the largest change of our normalized actions between two cases differing only there."""
    norm = {r["id"]: np.array(r["normalized_actions"]) for r in rows}
    changes: dict[str, float] = {}
    for i, a in enumerate(cases):
        for b in cases[i + 1:]:
            diff = differing_inputs(a, b)
            if len(diff) == 1:
                change = float(np.abs(norm[a["id"]] - norm[b["id"]]).max())
                changes[diff[0]] = max(changes.get(diff[0], 0.0), change)
    return changes


def check_parity(fixture: Path, rows: list[dict]) -> None:
    """Every output within BOUND of OFT's on every case (the figures print; `pytest -rP` shows them)."""
    diffs = max_diffs(rows, read_jsonl(fixture / "reference.jsonl"))
    print(f"{fixture.name}: max |ours - OFT| {diffs}")
    assert all(d <= BOUND for d in diffs.values()), f"{fixture.name}: max |ours - OFT| {diffs} > {BOUND}"


def check_sensitivity(fixture: Path, rows: list[dict], inputs: set[str]) -> None:
    """Changing any one of `inputs` alone moves the actions far more than BOUND (parity is not vacuous)."""
    changes = one_input_changes(read_jsonl(fixture / "cases.jsonl"), rows)
    assert inputs <= set(changes), f"{fixture.name}: no case pair varies only {inputs - set(changes)}"
    weak = {k: v for k, v in changes.items() if v < MIN_CHANGE}
    assert not weak, f"{fixture.name}: these inputs barely change the actions: {weak}"


def all_inputs(fixture: Path) -> set[str]:
    n_cameras = len(read_jsonl(fixture / "cases.jsonl")[0]["images"])
    return {"instruction", "proprio"} | {f"camera_{i}" for i in range(n_cameras)}


@pytest.fixture(scope="module", params=FORMS)
def tiny(request, tmp_path_factory) -> tuple[Path, Path]:
    """(fixture folder, converted checkpoint) of one tiny form; the run dir is copied, never touched."""
    fixture = TINY_ROOT / request.param
    work = tmp_path_factory.mktemp(f"oft_tiny_{request.param}")
    run = work / "run"
    shutil.copytree(fixture / "run", run)
    shutil.copy2(TINY_ROOT / SHARED_TOKENIZER, run / SHARED_TOKENIZER)
    return fixture, convert_run(run, work / "checkpoint", request.param)


def test_tiny_torch_matches_oft(tiny, tmp_path):
    fixture, checkpoint = tiny
    rows = predict(checkpoint, fixture / "cases.jsonl", tmp_path / "out.jsonl")
    check_parity(fixture, rows)
    check_sensitivity(fixture, rows, all_inputs(fixture))


def test_tiny_onnxruntime_matches_oft(tiny, tmp_path):
    fixture, checkpoint = tiny
    graphs = tmp_path / "graphs"
    assert export.main([str(checkpoint), str(graphs)]) == 0
    rows = predict(checkpoint, fixture / "cases.jsonl", tmp_path / "out.jsonl",
                   "--backend", "onnxruntime", "--engine-dir", str(graphs))
    check_parity(fixture, rows)
    check_sensitivity(fixture, rows, all_inputs(fixture))


def full_fixture(form: str) -> Path:
    """The full-size fixture of `form`, or a skip saying where it was looked for."""
    fixture = Path(os.environ.get(FULL_ROOT_ENV, FULL_ROOT_DEFAULT)) / form
    needed = [fixture / "run" / "config.json", fixture / "cases.jsonl", fixture / "reference.jsonl"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        pytest.skip(f"no full-size OFT fixture ({', '.join(missing)} missing): make it with "
                    f"scripts/oft_reference.py and point ${FULL_ROOT_ENV} at its --out folder")
    return fixture


@pytest.mark.slow
@pytest.mark.parametrize("form", FORMS)
def test_full_size_torch_matches_oft(form, tmp_path):
    fixture = full_fixture(form)
    checkpoint = convert_run(fixture / "run", tmp_path / "checkpoint", form)  # reads run/, writes only dst
    rows = predict(checkpoint, fixture / "cases.jsonl", tmp_path / "out.jsonl")
    check_parity(fixture, rows)
    check_sensitivity(fixture, rows, {"instruction", "proprio"})
