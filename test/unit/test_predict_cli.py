"""`vla-ros predict` for both families: cameras, proprio, batches of JSON-line cases, bad cases, options."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from export_fixtures import exported

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Instruction, Observation
from vla_ros.model.convert import main as convert_main
from vla_ros.model.tiny import cached_tiny_checkpoint
from vla_ros.model.tiny_oft import write_tiny_oft_release
from vla_ros.runtime import predict_cli
from vla_ros.runtime.factory import make_policy
from vla_ros.runtime.predict_cli import main

torch.set_num_threads(1)
TEXTS = ("pick up the red block", "put the blue cube in the bowl", "open the drawer")


@pytest.fixture(scope="module")
def oft(tmp_path_factory):
    """Converted tiny OFT checkpoints: {"libero": 2 cameras + proprio 8, "aloha": 3 cameras, 14-D, FiLM}."""
    out = {}
    for form in ("libero", "aloha"):
        base = tmp_path_factory.mktemp(form)
        src = write_tiny_oft_release(base / "release", form=form, lora_rank=32)
        assert convert_main([str(src), str(base / "ckpt"), "--preset", form]) == 0
        out[form] = base / "ckpt"
    return out


@pytest.fixture
def loads(monkeypatch):
    """Counts the policies predict builds (each one loads the model)."""
    calls = []

    def counting(cfg):
        calls.append(cfg)
        return make_policy(cfg)

    monkeypatch.setattr(predict_cli, "make_policy", counting)
    return calls


def _write_images(folder, n, seed):
    """n random PNG frames (lossless: the decoded pixels are the written ones); returns names and arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names, arrays = [], []
    for i in range(n):
        rgb = rng.integers(0, 256, (96 + 8 * i, 128, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"cam{i}.png"), rgb[:, :, ::-1])
        names.append(f"{folder.name}/cam{i}.png")
        arrays.append(rgb)
    return names, arrays


def _cases(tmp_path, n_cases, cameras, proprio_dim):
    """A cases file with relative image paths; returns it and the cases as (id, arrays, text, proprio)."""
    rng = np.random.default_rng(7)
    lines, cases = [], []
    for i in range(n_cases):
        names, arrays = _write_images(tmp_path / f"case{i}", cameras, seed=i)
        proprio = rng.normal(size=proprio_dim).tolist() if proprio_dim else None
        case_id = f"case-{i}"
        case = {"id": case_id, "images": names, "instruction": TEXTS[i % 3], "proprio": proprio}
        lines.append(json.dumps(case))
        cases.append((case_id, arrays, TEXTS[i % 3], proprio))
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n\n")  # a trailing blank line is skipped
    return path, cases


@pytest.mark.parametrize("form", ["libero", "aloha"])
def test_batch_of_oft_cases_loads_once_and_matches_the_policy(oft, form, tmp_path, loads):
    checkpoint = oft[form]
    policy = make_policy(PolicyConfig(checkpoint=str(checkpoint), warmup_runs=0))
    s = policy.settings
    path, cases = _cases(tmp_path, 4, len(s.cameras), s.proprio_dim)
    out = tmp_path / "out.jsonl"
    assert main(["--checkpoint", str(checkpoint), "--batch", str(path), "--output", str(out)]) == 0
    assert len(loads) == 1  # one model for the whole batch
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [c[0] for c in cases]
    for row, (_, arrays, text, proprio) in zip(rows, cases):
        expected = policy.predict_arrays(arrays, text, np.asarray(proprio))
        actions, normalized = np.array(row["actions"]), np.array(row["normalized_actions"])
        assert actions.shape == normalized.shape == (s.chunk, s.action_dim)
        # full precision: the JSON floats are the float64 values themselves; un-normalized, no gripper options
        assert np.array_equal(actions, expected.actions) and np.array_equal(normalized, expected.normalized)
    assert not np.array_equal(rows[0]["actions"], rows[1]["actions"])


def test_batch_of_autoregressive_cases_is_chunk_one(tmp_path, loads, capsys):
    checkpoint = cached_tiny_checkpoint()
    path, cases = _cases(tmp_path, 3, 1, 0)
    assert main(["--checkpoint", str(checkpoint), "--batch", str(path)]) == 0  # to stdout
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(loads) == 1 and "3 case(s), model loaded once" in captured.err
    policy = make_policy(PolicyConfig(checkpoint=str(checkpoint), warmup_runs=0))
    centres = (np.linspace(-1, 1, 256)[:-1] + np.linspace(-1, 1, 256)[1:]) / 2
    for row, (case_id, arrays, text, _) in zip(rows, cases):
        chunk = policy.predict(Observation(rgb=arrays[0], stamp=0.0), Instruction(text, 0.0))
        assert row["id"] == case_id and np.array_equal(row["actions"], chunk.actions)
        normalized = np.array(row["normalized_actions"])
        assert normalized.shape == (1, 7)
        assert np.isin(normalized, centres).all()  # the bin centres of its tokens
        assert np.array_equal(normalized[0], policy.action_tokenizer.decode(policy.last_tokens))


def test_malformed_cases_are_all_listed_before_the_model_loads(tmp_path, loads, capsys):
    names, _ = _write_images(tmp_path / "imgs", 1, seed=0)
    good = {"id": "ok", "images": names, "instruction": "pick up the red block", "proprio": None}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "id": "gone", "images": ["imgs/missing.png"]}),
        json.dumps({**good, "id": "ok"}),
        json.dumps({**good, "id": "typo", "propio": [1.0]}),
        json.dumps({**good, "id": "nan", "proprio": [1.0, float("nan")]}),
        json.dumps({**good, "id": "noinstr", "instruction": 5}),
        json.dumps([1, 2]),
        json.dumps({**good, "id": "ctrl", "instruction": "pick\x07up"}),
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    out.write_text("previous run\n")
    assert main(["--checkpoint", str(cached_tiny_checkpoint()), "--batch", str(path), "--output", str(out)]
                ) == 1
    err = capsys.readouterr().err
    assert "8 bad case(s), nothing predicted" in err
    for expected in ("line 2: not a JSON object", "line 3 (id 'gone'): no such image file",
                     "line 4 (id 'ok'): the id is already used on line 1", "line 5 (id 'typo'): unknown keys",
                     "line 6 (id 'nan'): 'proprio' must be a list of finite numbers",
                     "line 7 (id 'noinstr'): 'instruction' must be a string", "line 8: not a JSON object",
                     "line 9 (id 'ctrl'): instruction contains control character U+0007"):
        assert expected in err
    assert loads == []  # nothing loaded for a file that cannot run
    assert out.read_text() == "previous run\n"  # untouched


def test_cases_that_do_not_fit_the_checkpoint_stop_the_batch(oft, tmp_path, loads, capsys):
    names, _ = _write_images(tmp_path / "imgs", 3, seed=0)
    good = {"id": "ok", "images": names[:2], "instruction": "pick up the red block", "proprio": [0.1] * 8}
    lines = [json.dumps(good),
             json.dumps({**good, "id": "one-camera", "images": names[:1]}),
             json.dumps({**good, "id": "short", "proprio": [0.1] * 7}),
             json.dumps({**good, "id": "none", "proprio": None}),
             json.dumps({**good, "id": "long", "instruction": "x " * 2000})]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(lines))
    out = tmp_path / "out.jsonl"
    assert main(["--checkpoint", str(oft["libero"]), "--batch", str(path), "--output", str(out)]) == 1
    err = capsys.readouterr().err
    assert "4 bad case(s)" in err and "(id 'ok')" not in err
    assert "line 2 (id 'one-camera'): the checkpoint takes 2 camera image(s) (primary, wrist), got 1" in err
    assert "line 3 (id 'short'): the checkpoint needs a proprio vector of 8 values, got 7" in err
    assert "line 4 (id 'none'): the checkpoint needs a proprio vector of 8 values, none was given" in err
    assert "line 5 (id 'long'): prompt too long" in err
    assert len(loads) == 1 and not out.exists()


def test_a_case_failing_while_running_stops_the_batch_and_writes_nothing(tmp_path, loads, capsys):
    path, _ = _cases(tmp_path, 3, 1, 0)
    (tmp_path / "case2" / "cam0.png").write_bytes(b"not an image")  # exists, fails to decode
    out = tmp_path / "out.jsonl"
    assert main(["--checkpoint", str(cached_tiny_checkpoint()), "--batch", str(path), "--output", str(out)]
                ) == 1
    err = capsys.readouterr().err
    assert "line 3 (id 'case-2'): cannot read an image" in err and "nothing written" in err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl*"))


def test_single_oft_case_with_cameras_and_proprio(oft, tmp_path, capsys):
    checkpoint = str(oft["libero"])
    names, arrays = _write_images(tmp_path / "imgs", 2, seed=3)
    images = [str(tmp_path / n) for n in names]
    proprio = [0.1, -0.2, 0.3, 0.0, 0.5, -0.6, 0.02, -0.02]
    base = ["--checkpoint", checkpoint, "--instruction", TEXTS[0], "--image", images[0]]
    args = [*base, "--image", images[1], "--proprio", ",".join(map(repr, proprio))]
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    policy = make_policy(PolicyConfig(checkpoint=checkpoint, warmup_runs=0))
    expected = policy.predict_arrays(arrays, TEXTS[0], np.array(proprio))
    assert np.array_equal(data["actions"], expected.actions)
    assert np.array_equal(data["normalized_actions"], expected.normalized)
    assert set(data["timings_s"]) == {"preprocess", "vision", "proprio", "actions", "unnormalize"}
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "chunk: 8 actions x 7 dimensions" in text and "primary, wrist" in text
    assert main([*base, "--proprio", ",".join(map(repr, proprio))]) == 1  # one camera missing
    assert "takes 2 camera image(s) (primary, wrist), got 1" in capsys.readouterr().err
    assert main(args[:-2]) == 1  # no proprio
    assert "needs a proprio vector of 8 values" in capsys.readouterr().err


def test_single_aloha_case_has_14_dimensions(oft, tmp_path, capsys):
    names, _ = _write_images(tmp_path / "imgs", 3, seed=4)
    args = ["--checkpoint", str(oft["aloha"]), "--instruction", TEXTS[1], "--proprio", ",".join(["0.1"] * 14)]
    for name in names:
        args += ["--image", str(tmp_path / name)]
    assert main([*args, "--json"]) == 0
    actions = np.array(json.loads(capsys.readouterr().out)["actions"])
    assert actions.shape == (25, 14) and np.all(np.isfinite(actions))
    assert main([*args, "--gripper-invert"]) == 1  # one gripper column is not ALOHA's two
    assert "apply to 7-D end-effector actions; this checkpoint's actions have 14" in capsys.readouterr().err


def test_gripper_options_and_action_scale_apply_only_when_asked(oft, tmp_path, capsys):
    names, _ = _write_images(tmp_path / "imgs", 2, seed=5)
    args = ["--checkpoint", str(oft["libero"]), "--instruction", TEXTS[2], "--proprio", ",".join(["0"] * 8),
            "--image", str(tmp_path / names[0]), "--image", str(tmp_path / names[1]), "--json"]
    results = {}
    for name, extra in (("plain", []), ("invert", ["--gripper-invert"]),
                        ("scale", ["--action-scale", "0.05,0.05,0.05,0.5,0.5,0.5"])):
        assert main([*args, *extra]) == 0
        results[name] = np.array(json.loads(capsys.readouterr().out)["actions"])
    plain = results["plain"]
    assert np.allclose(results["invert"][:, -1], 1.0 - plain[:, -1]) and np.array_equal(
        results["invert"][:, :6], plain[:, :6])
    scale = np.array([0.05] * 3 + [0.5] * 3)
    assert np.array_equal(results["scale"][:, :6], plain[:, :6] * scale)
    assert np.array_equal(results["scale"][:, 6], plain[:, 6])


def test_autoregressive_family_takes_one_camera_and_no_proprio(tmp_path, capsys):
    names, _ = _write_images(tmp_path / "imgs", 2, seed=6)
    base = ["--checkpoint", str(cached_tiny_checkpoint()), "--instruction", TEXTS[0],
            "--image", str(tmp_path / names[0])]
    assert main([*base, "--image", str(tmp_path / names[1])]) == 1
    assert "takes 1 camera image(s) (primary), got 2" in capsys.readouterr().err
    assert main([*base, "--proprio", "1,2"]) == 1
    assert "takes no proprio, got 2 values" in capsys.readouterr().err
    assert main([*base, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert list(data) == ["action", "tokens", "timings_s", "policy"]  # the existing output, unchanged


@pytest.mark.parametrize("argv, message", [
    (["--batch", "c.jsonl", "--image", "a.png"], "--batch takes its cases from the file; drop --image"),
    (["--image", "a.png", "--instruction", "x", "--output", "o.jsonl"], "--output needs --batch"),
    (["--instruction", "x"], "give --image"),
    (["--image", "a.png", "--instruction", "x", "--proprio", "1,nan"], "expected finite numbers"),
    (["--image", "a.png", "--instruction", "x", "--proprio", "1,a"], "expected comma-separated numbers"),
    (["--image", "a.png", "--instruction", "x", "--action-scale", "1,2"], "--action-scale takes 6 values"),
])
def test_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        main(argv)
    assert raised.value.code == 2 and message in capsys.readouterr().err


def test_engine_dir_runs_the_batch_on_onnx_runtime(tmp_path_factory, tmp_path, capsys):
    checkpoint = cached_tiny_checkpoint()
    engine_dir = exported(tmp_path_factory, checkpoint, "fp32")
    path, _ = _cases(tmp_path, 2, 1, 0)
    common = ["--checkpoint", str(checkpoint), "--batch", str(path)]
    assert main([*common, "--backend", "onnxruntime", "--engine-dir", str(engine_dir)]) == 0
    ort_run = capsys.readouterr()
    assert "onnxruntime" in ort_run.err
    assert main(common) == 0
    torch_rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    ort_rows = [json.loads(line) for line in ort_run.out.splitlines()]
    for ort_row, torch_row in zip(ort_rows, torch_rows, strict=True):
        assert ort_row["id"] == torch_row["id"]
        assert np.allclose(ort_row["actions"], torch_row["actions"], atol=1e-6)
