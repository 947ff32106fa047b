"""`vla-ros bench`: rows side by side, per-stage statistics, JSON; our path agrees with generate()."""

import json

import numpy as np
import pytest
import torch

from vla_ros.model.tiny import cached_tiny_checkpoint
from vla_ros.runtime import bench, bench_rows
from vla_ros.runtime.bench import format_table, run_bench, synthetic_image
from vla_ros.runtime.bench_rows import BenchOptions

torch.set_num_threads(1)


@pytest.mark.parametrize("family", ["openvla", "minivla"])
def test_torch_and_generate_rows_agree(family):
    opts = BenchOptions(checkpoint=str(cached_tiny_checkpoint(family=family)))
    result = run_bench(opts, ["torch", "torch-generate"], runs=2, warmup=1, rgb=synthetic_image(),
                       text="pick up the red block", log=lambda s: None)
    rows = result["backends"]
    assert list(rows) == ["torch", "torch-generate"]
    for row in rows.values():
        assert set(row["stages"]) == {"preprocess", "vision", "prefill", "decode", "detokenize"}
        assert list(row["decode_steps"]) == [f"decode_step_{i}" for i in range(1, 7)]
        assert row["end_to_end"]["median_ms"] > 0 and row["actions_per_s"] > 0
        assert row["end_to_end"]["p90_ms"] >= row["end_to_end"]["median_ms"]
        assert row["peak_rss_mb"] > 0 and row["tokens_stable"]
    # transformers generate() on the same spliced embeddings picks the same greedy action tokens
    assert rows["torch-generate"]["tokens"] == rows["torch"]["tokens"]
    assert np.allclose(rows["torch-generate"]["action"], rows["torch"]["action"])
    assert rows["torch-generate"]["tokens_match_first"]
    assert result["speedup_vs_torch_generate"]["torch-generate"] == pytest.approx(1.0)
    table = format_table(result)
    assert "decode_step_6" in table and "speed-up vs generate" in table and "NO" not in table


def test_main_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--checkpoint", str(cached_tiny_checkpoint()), "--backends", "torch", "--runs", "2",
                     "--warmup", "0", "--json", str(out), "--resize", "pil"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data["runs"] == 2 and data["resize"] == "pil" and "torch" in data["backends"]
    assert "end to end" in capsys.readouterr().out


def test_unknown_row_is_a_clear_error(capsys):
    rc = bench.main(["--checkpoint", str(cached_tiny_checkpoint()), "--backends", "nosuch", "--runs", "1",
                     "--json", "/dev/null"])
    assert rc == 1
    assert "unknown backend 'nosuch'" in capsys.readouterr().err


def test_register_row():
    class Fixed(bench_rows.Runner):
        def run(self, rgb, text):
            return bench_rows.RunResult(tokens=[1], stages={"preprocess": 0.001}, steps=[], total=0.002)

        def describe(self):
            return "fixed"

    bench_rows.register_row("fixed-test-row", lambda opts: Fixed())
    try:
        result = run_bench(BenchOptions(), ["fixed-test-row"], runs=3, warmup=0, rgb=synthetic_image(64, 64),
                           text="x", log=lambda s: None)
    finally:
        bench_rows.ROWS.pop("fixed-test-row")
    row = result["backends"]["fixed-test-row"]
    assert row["end_to_end"]["median_ms"] == pytest.approx(2.0)
    assert row["stages"]["preprocess"]["median_ms"] == pytest.approx(1.0)


def test_oft_speedup_divides_the_actions_per_second_of_the_same_backend():
    def row(chunk, wall_ms, cpu_ms):
        return {"chunk": chunk, "end_to_end": {"median_ms": wall_ms},
                "end_to_end_thread_cpu": {"median_ms": cpu_ms}}

    rows = {"torch": row(1, 40.0, 30.0), "oft-torch": row(8, 50.0, 20.0),
            "oft-onnxruntime": row(8, 45.0, 15.0)}  # no onnxruntime row to divide by
    assert bench.oft_speedups(rows) == {"oft-torch": pytest.approx((8 / 50.0) / (1 / 40.0))}
    cpu = bench.oft_speedups(rows, "end_to_end_thread_cpu")
    assert cpu == {"oft-torch": pytest.approx((8 / 20.0) / (1 / 30.0))}


def test_same_result_compares_tokens_else_the_first_action():
    def result(tokens, action):
        return bench_rows.RunResult(tokens=tokens, stages={}, steps=[], total=0.0, actions=action)

    assert bench.same_result(result([1, 2], [0.5]), result([1, 2], [0.9]))
    assert not bench.same_result(result([1, 2], [0.5]), result([1, 3], [0.5]))
    assert bench.same_result(result([], [0.5, 0.1]), result([], [0.50001, 0.1]))
    assert not bench.same_result(result([], [0.5, 0.1]), result([], [0.501, 0.1]))
