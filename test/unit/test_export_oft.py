"""OpenVLA-OFT export: the family's graphs, manifest and settings copy; ONNX Runtime == torch within 1e-4;
mismatched settings refused; TensorRT (RTX builds here, inference on a GPU)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
import torch
from export_fixtures import HAVE_GPU, HAVE_TRT_RTX, NO_TRT_RTX, gpu_engines
from oft_fixtures import cached_dir, oft_cases, oft_checkpoint, oft_export

from vla_ros.core.config import PolicyConfig
from vla_ros.model.settings import SETTINGS_FILE, read_settings
from vla_ros.model.spec import VlaSpec
from vla_ros.runtime import export
from vla_ros.runtime.factory import make_policy
from vla_ros.runtime.graph_dir import GraphDirError

FORMS = ("libero", "aloha")
TOLERANCE = 1e-4


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    torch.set_num_threads(1)


def policies(tmp_path_factory, form: str):
    """(torch policy, ONNX Runtime policy) of the tiny checkpoint of `form`."""
    checkpoint = str(oft_checkpoint(tmp_path_factory, form))
    graphs = str(oft_export(tmp_path_factory, form))
    reference = make_policy(PolicyConfig(checkpoint=checkpoint, warmup_runs=0))
    candidate = make_policy(PolicyConfig(checkpoint=checkpoint, backend="onnxruntime", engine_dir=graphs,
                                         warmup_runs=0))
    return reference, candidate


def max_differences(reference, candidate, cases) -> tuple[float, float]:
    """Largest |difference| of the normalized and of the un-normalized chunks over the cases."""
    normalized = actions = 0.0
    for images, text, proprio in cases:
        a = reference.predict_arrays(images, text, proprio)
        b = candidate.predict_arrays(images, text, proprio)
        shape = (reference.settings.chunk, reference.settings.action_dim)
        assert a.normalized.shape == b.normalized.shape == shape
        normalized = max(normalized, float(np.abs(a.normalized - b.normalized).max()))
        actions = max(actions, float(np.abs(a.actions - b.actions).max()))
    return normalized, actions


def test_libero_export_has_the_oft_graphs_profiles_and_the_settings_file(tmp_path_factory):
    checkpoint, graphs = oft_checkpoint(tmp_path_factory, "libero"), oft_export(tmp_path_factory, "libero")
    manifest = json.loads((graphs / "manifest.json").read_text())
    settings = read_settings(checkpoint)
    assert list(manifest["graphs"]) == ["vision", "embed", "proprio", "actions"] and "kv" not in manifest
    assert read_settings(graphs) == settings and manifest["settings"]["chunk"] == settings.chunk
    for entry in manifest["graphs"].values():
        model = onnx.load(str(graphs / entry["file"]), load_external_data=False)
        assert {o.domain: o.version for o in model.opset_import}[""] <= 20
        assert entry["nodes"] == len(model.graph.node) > 0
    vision, actions = manifest["graphs"]["vision"], manifest["graphs"]["actions"]
    assert vision["inputs"][0]["shape"][0] == "cameras" and len(vision["inputs"]) == 1  # no FiLM
    assert vision["profiles"]["pixel_values"]["max"][0] == len(settings.cameras) == 2
    assert actions["inputs"][0]["shape"][1] == "seq"
    assert actions["outputs"] == [{"name": "actions", "dtype": "float32", "shape": [1, 8, 7]}]
    patches = VlaSpec.from_dir(checkpoint).num_patches
    fixed = 2 * patches + 1 + 8 * 7 + 2  # cameras' patches, proprio token, zero slots, BOS and </s>
    profile = actions["profiles"]["inputs_embeds"]
    max_text = manifest["model"]["max_text_tokens"]
    assert [profile[k][1] for k in ("min", "opt", "max")] == [fixed + 1, fixed + 23, fixed + max_text - 1]
    assert manifest["graphs"]["proprio"]["inputs"][0]["shape"] == [1, 8]


def test_aloha_vision_graph_takes_the_film_condition_per_camera(tmp_path_factory):
    manifest = json.loads((oft_export(tmp_path_factory, "aloha") / "manifest.json").read_text())
    vision = manifest["graphs"]["vision"]
    hidden = manifest["model"]["hidden"]
    assert [i["name"] for i in vision["inputs"]] == ["pixel_values", "condition"]
    assert vision["inputs"][1]["shape"] == ["cameras", hidden]
    assert vision["profiles"]["condition"]["opt"] == [3, hidden]
    assert manifest["graphs"]["actions"]["outputs"][0]["shape"] == [1, 25, 14]


@pytest.mark.parametrize("form", FORMS)
def test_onnxruntime_matches_torch_within_1e_4(tmp_path_factory, form):
    reference, candidate = policies(tmp_path_factory, form)
    described = candidate.describe()
    assert "CPUExecutionProvider" in described and f"chunk {reference.settings.chunk}" in described
    cases = oft_cases(20, reference.inputs.cameras, reference.inputs.proprio_dim, seed=3)
    normalized, actions = max_differences(reference, candidate, cases)
    assert normalized < TOLERANCE and actions < TOLERANCE, (normalized, actions)


def test_discrete_variant_exports_int64_ids_that_match_torch(tmp_path_factory):
    reference, candidate = policies(tmp_path_factory, "discrete")
    manifest = json.loads((oft_export(tmp_path_factory, "discrete") / "manifest.json").read_text())
    assert manifest["graphs"]["actions"]["outputs"][0] == {"name": "action_ids", "dtype": "int64",
                                                           "shape": [1, 56]}
    for images, text, proprio in oft_cases(4, 2, 8, seed=5):
        a = reference.predict_arrays(images, text, proprio)
        ids = reference.last_ids.copy()
        b = candidate.predict_arrays(images, text, proprio)
        assert ids.shape == (56,) and np.array_equal(ids, candidate.last_ids)
        assert np.array_equal(a.normalized, b.normalized)


def test_graphs_with_other_settings_than_the_checkpoint_are_refused(tmp_path_factory, tmp_path):
    graphs = oft_export(tmp_path_factory, "libero")
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(oft_checkpoint(tmp_path_factory, "libero"), checkpoint)
    settings = json.loads((checkpoint / SETTINGS_FILE).read_text())
    (checkpoint / SETTINGS_FILE).write_text(json.dumps({**settings, "chunk": 4}))
    cfg = PolicyConfig(checkpoint=str(checkpoint), backend="onnxruntime", engine_dir=str(graphs),
                       warmup_runs=0)
    with pytest.raises(GraphDirError, match="export this checkpoint again"):
        make_policy(cfg)
    tampered = tmp_path / "graphs"
    shutil.copytree(graphs, tampered)
    (tampered / SETTINGS_FILE).write_text(json.dumps({**settings, "chunk": 4}))
    (checkpoint / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(GraphDirError, match="disagrees with the settings"):
        make_policy(PolicyConfig(checkpoint=str(checkpoint), backend="onnxruntime", engine_dir=str(tampered)))


def test_graphs_run_with_only_tokenizer_and_statistics_next_to_them(tmp_path_factory, tmp_path):
    """The graph directory's settings copy is enough: the checkpoint directory needs no weights."""
    source = oft_checkpoint(tmp_path_factory, "libero")
    files = tmp_path / "files"
    files.mkdir()
    for path in source.iterdir():
        if path.suffix == ".json" and path.name not in (SETTINGS_FILE, "model.safetensors.index.json"):
            shutil.copy(path, files / path.name)
    policy = make_policy(PolicyConfig(checkpoint=str(files), backend="onnxruntime",
                                      engine_dir=str(oft_export(tmp_path_factory, "libero")), warmup_runs=0))
    images, text, proprio = oft_cases(1, 2, 8, seed=9)[0]
    assert policy.predict_arrays(images, text, proprio).normalized.shape == (8, 7)


def test_export_refuses_graphs_of_the_other_family(tmp_path_factory, tmp_path):
    with pytest.raises(export.ExportError, match=r"do not belong to this checkpoint .*proprio, actions"):
        export.export_checkpoint(oft_checkpoint(tmp_path_factory, "libero"), tmp_path, graphs=["prefill"],
                                 log=lambda _: None)
    with pytest.raises(export.ExportError, match="max_text_tokens"):
        export.export_checkpoint(oft_checkpoint(tmp_path_factory, "aloha"), tmp_path, max_text_tokens=1,
                                 log=lambda _: None)


def rtx_engines(tmp_path_factory, form: str):
    from vla_ros.runtime.trt_build import build_all

    graphs = oft_export(tmp_path_factory, form)
    return cached_dir(tmp_path_factory.getbasetemp(), f"oft_{form}_rtx",
                      lambda p: build_all(graphs, p, flavour="tensorrt_rtx", log=lambda _: None))


@pytest.mark.skipif(not HAVE_TRT_RTX, reason=NO_TRT_RTX)
@pytest.mark.parametrize("form", FORMS)
def test_rtx_engines_pass_validation_then_stop_at_the_missing_gpu(tmp_path_factory, form):
    from vla_ros.runtime.engine_file import read_engine
    from vla_ros.runtime.trt_backend import TrtBackend, TrtBackendError

    engines = rtx_engines(tmp_path_factory, form)
    assert read_settings(engines) == read_settings(oft_checkpoint(tmp_path_factory, form))
    header, _ = read_engine(engines / "actions.engine")
    assert header.profiles["inputs_embeds"]["max"][1] > header.profiles["inputs_embeds"]["min"][1]
    if HAVE_GPU:
        pytest.skip("a GPU is present: test_tensorrt_matches_torch covers this backend")
    with pytest.raises(TrtBackendError, match="needs a CUDA GPU"):
        TrtBackend(engines, flavour="tensorrt_rtx")


@pytest.mark.gpu
@pytest.mark.parametrize("form", FORMS)
def test_tensorrt_matches_torch(tmp_path_factory, form):
    engines = gpu_engines(tmp_path_factory, oft_export(tmp_path_factory, form))
    reference, _ = policies(tmp_path_factory, form)
    candidate = make_policy(PolicyConfig(checkpoint=str(oft_checkpoint(tmp_path_factory, form)),
                                         backend="tensorrt", engine_dir=str(engines), warmup_runs=0))
    cases = oft_cases(4, reference.inputs.cameras, reference.inputs.proprio_dim, seed=7)
    normalized, actions = max_differences(reference, candidate, cases)
    assert normalized < 1e-3 and actions < 1e-3, (normalized, actions)  # TF32 / fused kernels on the GPU
