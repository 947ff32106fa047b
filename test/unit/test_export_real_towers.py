"""Real DINOv2-L/14-reg4 + SigLIP-SO400M/14 towers (random weights), a small LLM: torch == ONNX Runtime.

Heavy (a 2.8 GB vision graph): CI checks a few samples; scripts/check_ort_agreement.py --real-towers
--samples 50 is the full check (run once, figures in the README).
"""

from __future__ import annotations

import pytest
import torch
from export_fixtures import random_cases, tiny_checkpoint

from vla_ros.core.config import PolicyConfig
from vla_ros.model.loader import load_vla
from vla_ros.runtime.agreement import compare_policies
from vla_ros.runtime.export import export_checkpoint
from vla_ros.runtime.graph_dir import policy_for
from vla_ros.runtime.ort_backend import OrtBackend, OrtOptions
from vla_ros.runtime.policy import VlaPolicy
from vla_ros.runtime.torch_backend import TorchBackend

CI_SAMPLES = 2


@pytest.mark.slow
def test_onnxruntime_reproduces_torch_with_the_real_towers(tmp_path):
    torch.set_num_threads(1)
    ckpt = tiny_checkpoint(real_towers=True)
    loaded = load_vla(ckpt)
    assert loaded.spec.vision_dim == 1024 + 1152 and loaded.spec.num_patches == 256
    manifest = export_checkpoint(ckpt, tmp_path, loaded=loaded, log=lambda _: None)
    vision = manifest["graphs"]["vision"]
    assert vision["inputs"][0]["shape"] == [1, 6, 224, 224] and vision["data_files"]  # > 2 GB: external data
    reference = VlaPolicy.from_loaded(loaded, TorchBackend(loaded.model))
    candidate = policy_for(ckpt, OrtBackend(tmp_path, OrtOptions(threads=1)),
                           PolicyConfig(checkpoint=str(ckpt)))
    result = compare_policies(reference, candidate, random_cases(CI_SAMPLES, seed=11))
    assert result.same_tokens == result.samples == CI_SAMPLES, result.mismatches
    assert result.max_abs_logit_diff < 1e-3 * max(1.0, result.max_logit), result.summary()
