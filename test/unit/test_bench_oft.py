"""`vla-ros bench` with OpenVLA-OFT rows: the checkpoint pair, per-stage rows, actions/s of a chunk, the
OFT / autoregressive ratio, ONNX Runtime rows of the OFT checkpoint, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from oft_fixtures import cached_dir
from safetensors import safe_open

from vla_ros.model.loader import scan_shards
from vla_ros.model.settings import read_settings
from vla_ros.runtime import bench
from vla_ros.runtime.bench import format_table, run_bench, synthetic_image
from vla_ros.runtime.bench_pair import PairSpec, write_pair
from vla_ros.runtime.bench_rows import BenchOptions

OFT_STAGES = {"preprocess", "vision", "proprio", "actions", "unnormalize"}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.getbasetemp() / "bench_pairs"
    return write_pair(root, PairSpec(seed=3, real_towers=False), log=lambda _: None)


def tensor(checkpoint, key: str) -> torch.Tensor:
    file, _ = scan_shards(checkpoint)[key]
    with safe_open(str(checkpoint / file), framework="pt") as f:
        return f.get_tensor(key)


def test_pair_shares_the_llm_and_towers_and_is_written_once(pair, tmp_path_factory):
    ar, oft = pair
    settings = read_settings(oft)
    shape = (settings.cameras, settings.chunk, settings.action_dim, settings.proprio_dim)
    assert shape == (("primary",), 8, 7, 8)
    assert not read_settings(ar).parallel
    for key in ("language_model.model.layers.0.self_attn.q_proj.weight", "projector.fc1.weight"):
        assert torch.equal(tensor(ar, key), tensor(oft, key))
    lines: list[str] = []
    again = write_pair(tmp_path_factory.getbasetemp() / "bench_pairs", PairSpec(seed=3, real_towers=False),
                       log=lines.append)
    assert again == pair and lines == [f"[bench] reusing the checkpoint pair in {ar.parent}"]
    with pytest.raises(ValueError, match="proprio length is 0 or 8"):
        write_pair(tmp_path_factory.getbasetemp(), PairSpec(proprio_dim=9))


def test_oft_and_autoregressive_rows_side_by_side(pair):
    ar, oft = pair
    opts = BenchOptions(checkpoint=str(ar), oft_checkpoint=str(oft))
    result = run_bench(opts, ["torch", "oft-torch"], runs=3, warmup=1, rgb=synthetic_image(),
                       text="pick up the red block", log=lambda _: None)
    rows = result["backends"]
    assert set(rows["oft-torch"]["stages"]) == OFT_STAGES and rows["oft-torch"]["decode_steps"] == {}
    assert rows["oft-torch"]["chunk"] == 8 and rows["torch"]["chunk"] == 1
    for row in rows.values():
        assert row["actions_per_s"] == pytest.approx(row["chunk"] * 1e3 / row["end_to_end"]["median_ms"])
        assert row["tokens_match_first"]
    expected = rows["oft-torch"]["actions_per_s"] / rows["torch"]["actions_per_s"]
    assert result["oft_speedup"] == {"oft-torch": pytest.approx(expected)}
    assert result["oft_checkpoint"] == str(oft)
    table = format_table(result)
    assert "OFT / AR actions/s" in table and f"{expected:.2f}x" in table and "actions per call" in table


def test_oft_onnxruntime_row_gives_the_torch_chunk(pair, tmp_path_factory):
    from vla_ros.runtime.export import export_checkpoint

    _, oft = pair
    graphs = cached_dir(tmp_path_factory.getbasetemp(), "bench_pair_onnx",
                        lambda p: export_checkpoint(oft, p, log=lambda _: None))
    opts = BenchOptions(checkpoint=str(oft), oft_checkpoint=str(oft), oft_engine_dir=str(graphs))
    result = run_bench(opts, ["torch", "oft-onnxruntime"], runs=2, warmup=0, rgb=synthetic_image(),
                       text="put the blue cube in the bowl", log=lambda _: None)
    rows = result["backends"]
    assert rows["oft-onnxruntime"]["describe"].startswith("onnxruntime CPUExecutionProvider")
    assert rows["oft-onnxruntime"]["tokens_match_first"]  # same first action as the torch OFT row
    assert np.allclose(rows["torch"]["action"], rows["oft-onnxruntime"]["action"], atol=1e-4)
    assert result["oft_speedup"] == {}  # both rows are OFT: no autoregressive row to divide by


def test_main_builds_the_pair_and_writes_the_ratio(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main(["--oft-pair", str(tmp_path / "pair"), "--tiny-towers", "--oft-proprio", "0",
                     "--runs", "2", "--warmup", "0", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert list(data["backends"]) == ["torch", "oft-torch"] and data["oft_speedup"]["oft-torch"] > 0
    assert data["backends"]["oft-torch"]["describe"].endswith("chunk 8")
    assert read_settings(tmp_path / "pair" / "seed0_proprio0_chunk8_tiny" / "oft").proprio_dim == 0
    assert "OFT / AR actions/s" in capsys.readouterr().out


def test_oft_row_without_an_oft_checkpoint_is_a_clear_error(pair, capsys):
    rc = bench.main(["--checkpoint", str(pair[0]), "--backends", "oft-torch", "--runs", "1",
                     "--json", "/dev/null"])
    assert rc == 1
    assert "give --oft-checkpoint" in capsys.readouterr().err
