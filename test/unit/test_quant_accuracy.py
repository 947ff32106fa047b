"""quant-accuracy (token agreement, action error, the CLI on the tiny checkpoint with int8) and eval-demo's
--engine-dir (exported graphs in the closed loop, refused when they are another checkpoint's)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from export_fixtures import exported, tiny_checkpoint

from vla_ros.runtime import quant_accuracy as qa
from vla_ros.sim import evaluate
from vla_ros.sim.observations import quant_accuracy as quant_accuracy_verb
from vla_ros.sim.observations import simulator_cases


@pytest.fixture(scope="module")
def ckpt():
    return tiny_checkpoint()


@pytest.fixture(scope="module")
def onnx32(tmp_path_factory, ckpt):
    return exported(tmp_path_factory, ckpt, "fp32")


# ----------------------------------------------------------------------------- the computations
def test_token_agreement_counts_equal_tokens_and_fully_equal_cases():
    reference = np.tile(np.arange(100, 107), (4, 1))
    candidate = reference.copy()
    candidate[1, 6] += 1  # case 1: one token off
    candidate[3, [0, 2]] -= 1  # case 3: two tokens off
    result = qa.token_agreement(reference, candidate)
    assert result["tokens_equal"] == pytest.approx(25 / 28)
    assert result["cases_all_equal"] == pytest.approx(2 / 4)
    assert result["per_position_equal"] == pytest.approx([0.75, 1, 0.75, 1, 1, 1, 0.75])
    assert result["cases_differing"] == [1, 3]
    assert qa.token_agreement(reference, reference)["cases_all_equal"] == 1.0
    with pytest.raises(ValueError):
        qa.token_agreement(reference, reference[:, :6])


def test_action_error_is_per_dimension_over_cases_and_the_whole_chunk():
    reference = np.zeros((3, 2))
    candidate = np.array([[0.1, -0.2], [0.0, 0.4], [0.2, 0.0]])
    result = qa.action_error(reference, candidate)
    assert result["mean_abs"] == pytest.approx([0.1, 0.2])
    assert result["max_abs"] == pytest.approx([0.2, 0.4])
    assert result["mean_abs_all"] == pytest.approx(0.15)
    assert result["max_abs_all"] == pytest.approx(0.4)
    chunks = np.zeros((2, 3, 2))  # [N, K, A]: the largest error is on the chunk's last step
    moved = chunks.copy()
    moved[1, 2, 0] = -0.9
    moved[0, 0, 1] = 0.3
    result = qa.action_error(chunks, moved)
    assert result["max_abs"] == pytest.approx([0.9, 0.3])
    assert result["mean_abs"] == pytest.approx([0.9 / 6, 0.3 / 6])
    with pytest.raises(ValueError):
        qa.action_error(chunks, moved[:, :2])


def test_simulator_cases_are_fixed_by_the_seed_and_shaped_for_the_checkpoint():
    bounds = (np.array([-1.0, 0.0, 2.0]), np.array([1.0, 0.5, 3.0]))
    first = simulator_cases(3, seed=4, cameras=2, proprio_bounds=bounds)
    again = simulator_cases(3, seed=4, cameras=2, proprio_bounds=bounds)
    assert [c.text for c in first] == [c.text for c in again] and all(c.text for c in first)
    for a, b in zip(first, again):
        assert len(a.images) == 2 and a.images[0].dtype == np.uint8 and a.images[0].shape[2] == 3
        assert all(np.array_equal(x, y) for x, y in zip(a.images, b.images))
        assert not np.array_equal(a.images[0], a.images[1])  # the second camera sees another view
        assert np.all(a.proprio >= bounds[0]) and np.all(a.proprio <= bounds[1])
    assert simulator_cases(1, seed=0)[0].proprio is None


# ----------------------------------------------------------------------------- the verb
def test_bad_options_are_refused_before_any_work(tmp_path, capsys):
    for flags in (["--modes", "int3"], ["--modes", "int8,int8"], ["--block-size", "100"], ["--cases", "0"]):
        assert quant_accuracy_verb([str(tmp_path / "no_checkpoint"), *flags]) == 2
        assert "vla-ros quant-accuracy:" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_quant_accuracy_with_int8_writes_the_report_and_eval_demo_runs_the_graphs(tmp_path, ckpt, onnx32,
                                                                                  capsys):
    work, out = tmp_path / "work", tmp_path / "report.json"
    shutil.copytree(onnx32, work / "fp32")  # the session's export stands in for the fp32 one (cache path)
    (work / "fp32" / qa.MARKER).write_text(json.dumps(qa.export_record(ckpt, "fp32", 64)))
    code = quant_accuracy_verb([str(ckpt), "--modes", "int8", "--cases", "5", "--block-size", "64",
                                "--work", str(work), "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "[fp32] reusing the export" in printed and "[int8] 5/5 cases" in printed
    assert "tokens eq" in printed and "int8" in printed.split("mode")[-1]
    report = json.loads(out.read_text())
    assert report["observations"] == "simulator" and report["family"] == "autoregressive"
    assert list(report["modes"]) == ["fp32", "int8"] and report["block_size"] == 64
    fp32, int8 = report["modes"]["fp32"], report["modes"]["int8"]
    assert fp32["token_agreement"] is None and fp32["action_error"] is None
    tokens, error = int8["token_agreement"], int8["action_error"]
    assert 0.0 <= tokens["cases_all_equal"] <= tokens["tokens_equal"] <= 1.0
    assert len(tokens["per_position_equal"]) == 7
    assert len(error["mean_abs"]) == len(error["max_abs"]) == 7
    assert 0.0 <= error["mean_abs_all"] <= error["max_abs_all"] <= 2.0
    assert all(row["latency"]["median_ms"] > 0 for row in report["modes"].values())
    assert int8["graph_bytes"] < fp32["graph_bytes"]  # the LLM's weights really are 8-bit
    assert int8["describe"] != fp32["describe"]  # and the backend says so

    # The same quantized graphs closed loop: eval-demo --engine-dir.
    code = evaluate.main(["--checkpoint", str(ckpt), "--backend", "onnxruntime", "--engine-dir",
                          str(work / "int8"), "--episodes", "1", "--max-actions", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"eval-demo: {int8['describe']}" in printed


def test_eval_demo_engine_dir_runs_the_exported_graphs_and_refuses_another_checkpoints(
        tmp_path, ckpt, onnx32, capsys):
    out = tmp_path / "eval.json"
    code = evaluate.main(["--checkpoint", str(ckpt), "--backend", "onnxruntime", "--engine-dir", str(onnx32),
                          "--episodes", "2", "--max-actions", "2", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "eval-demo: onnxruntime CPUExecutionProvider fp32" in printed
    payload = json.loads(out.read_text())
    assert payload["args"]["engine_dir"] == str(onnx32)
    assert payload["summary"]["all"]["episodes"] == 2
    assert all(e["policy_errors"] == 0 for e in payload["episodes"])
    # The embedded demo model with the tiny checkpoint's graphs: refused by the backend's manifest check.
    assert evaluate.main(["--backend", "onnxruntime", "--engine-dir", str(onnx32), "--episodes", "1"]) == 2
    assert "was exported from" in capsys.readouterr().err
    # Exported graphs need a backend that runs them.
    assert evaluate.main(["--checkpoint", str(ckpt), "--backend", "torch", "--engine-dir", str(onnx32)]) == 2
    assert "--backend onnxruntime or tensorrt" in capsys.readouterr().err
    assert evaluate.main(["--checkpoint", str(ckpt), "--backend", "onnxruntime", "--engine-dir",
                          str(tmp_path / "nothing_here"), "--episodes", "1"]) == 2
    assert "cannot read" in capsys.readouterr().err
