"""VlaPolicy on tiny checkpoints: the Policy contract, the vision path, errors, factory and CLI."""

import json

import cv2
import numpy as np
import pytest
import torch

from vla_ros.core.config import PolicyConfig
from vla_ros.core.types import Instruction, Observation, Policy
from vla_ros.model.loader import load_vla
from vla_ros.model.normalization import GripperOptions, UnnormKeyError, action_stats, unnormalize
from vla_ros.model.preprocess import ImageInputError
from vla_ros.model.tiny import cached_tiny_checkpoint
from vla_ros.runtime import factory
from vla_ros.runtime.backend import Backend
from vla_ros.runtime.factory import BackendUnavailableError, make_policy
from vla_ros.runtime.policy import STAGES, VlaPolicy
from vla_ros.runtime.torch_backend import TorchBackend

torch.set_num_threads(1)
TEXT = "pick up the red block"


def _policy(checkpoint=None, **kwargs) -> VlaPolicy:
    cfg = PolicyConfig(checkpoint=str(checkpoint or cached_tiny_checkpoint()), **kwargs)
    return make_policy(cfg)


def _obs(value=None, shape=(480, 640, 3), stamp=12.5, seed=0):
    if value is None:
        rgb = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    else:
        rgb = np.full(shape, value, dtype=np.uint8)
    return Observation(rgb=rgb, stamp=stamp)


def test_policy_contract():
    policy = _policy()
    assert isinstance(policy, Policy) and isinstance(policy.backend, Backend)
    chunk = policy.predict(_obs(stamp=42.25), Instruction(TEXT, stamp=40.0))
    assert chunk.actions.shape == (1, 7) and chunk.actions.dtype == np.float64
    assert np.all(np.isfinite(chunk.actions))
    assert chunk.stamp == 42.25 and chunk.instruction == TEXT
    assert tuple(chunk.timings) == STAGES
    assert all(v >= 0 for v in chunk.timings.values()) and chunk.timings["vision"] > 0
    assert policy.describe().startswith("torch cpu fp32 openvla")
    assert "[tiny_dataset]" in policy.describe()
    assert len(policy.last_tokens) == 7 and len(policy.last_step_times) == 6
    # the action is the un-normalized bin centre of the tokens
    stats = action_stats(load_vla(cached_tiny_checkpoint()).norm_stats)
    expected = unnormalize(policy.action_tokenizer.decode(policy.last_tokens), stats)
    assert np.array_equal(chunk.actions[0], expected)


def test_warmup():
    policy = _policy()
    assert policy.warmup(2) > 0
    assert policy._prompt is None  # the warm-up prompt is not kept
    assert policy.predict(_obs(), Instruction(TEXT, 0.0)).actions.shape == (1, 7)


def test_black_and_white_images_give_different_actions():
    """Catches a dead vision path (openvla/openvla#346: same action for every image)."""
    policy = _policy()
    black = policy.predict(_obs(0), Instruction(TEXT, 0.0))
    black_tokens = policy.last_tokens.copy()
    white = policy.predict(_obs(255), Instruction(TEXT, 0.0))
    assert not np.array_equal(black_tokens, policy.last_tokens)
    assert not np.array_equal(black.actions, white.actions)


def test_the_black_white_check_fails_when_vision_is_dead(monkeypatch):
    """The same check on a policy whose patches never depend on the image: identical actions."""
    policy = _policy()
    constant = policy.backend.vision(policy.preprocessor(np.zeros((8, 8, 3), np.uint8)))
    monkeypatch.setattr(policy.backend, "vision", lambda pixels: constant)
    black = policy.predict(_obs(0), Instruction(TEXT, 0.0))
    white = policy.predict(_obs(255), Instruction(TEXT, 0.0))
    assert np.array_equal(black.actions, white.actions)


def test_instruction_changes_the_prompt():
    policy = _policy()
    policy.predict(_obs(), Instruction(TEXT, 0.0))
    first = policy._prompt.ids.copy()
    policy.predict(_obs(), Instruction("open the drawer", 0.0))
    assert not np.array_equal(first, policy._prompt.ids)


def test_unnorm_key_choice():
    path = cached_tiny_checkpoint(dataset_keys=("bridge_orig", "fractal20220817_data"))
    with pytest.raises(UnnormKeyError, match="bridge_orig, fractal20220817_data"):
        _policy(path)
    with pytest.raises(UnnormKeyError, match="'libero_spatial'.*bridge_orig, fractal20220817_data"):
        _policy(path, unnorm_key="libero_spatial")
    a = _policy(path, unnorm_key="bridge_orig").predict(_obs(), Instruction(TEXT, 0.0))
    b = _policy(path, unnorm_key="fractal20220817_data").predict(_obs(), Instruction(TEXT, 0.0))
    assert not np.array_equal(a.actions[0, :6], b.actions[0, :6])  # different statistics
    assert a.actions[0, 6] == b.actions[0, 6]  # the gripper is not un-normalized


def test_gripper_options_reach_the_action():
    raw = _policy().predict(_obs(), Instruction(TEXT, 0.0)).actions[0, 6]
    binary = _policy(gripper_binarize=True, gripper_invert=True).predict(_obs(), Instruction(TEXT, 0.0))
    assert binary.actions[0, 6] == (0.0 if raw >= 0.5 else 1.0)
    assert GripperOptions(binarize=True).apply(np.array([[0.0] * 6 + [raw]]))[0, 6] in (0.0, 1.0)


def test_non_finite_model_output_raises(monkeypatch):
    policy = _policy()
    original = policy.backend.prefill

    def nan_prefill(embeds):
        logits, state = original(embeds)
        return np.full_like(logits, np.nan), state

    monkeypatch.setattr(policy.backend, "prefill", nan_prefill)
    with pytest.raises(FloatingPointError, match="NaN"):
        policy.predict(_obs(), Instruction(TEXT, 0.0))
    monkeypatch.setattr(policy.backend, "prefill", original)
    monkeypatch.setattr(policy.backend, "vision", lambda p: np.full((1, 256, 64), np.inf, np.float32))
    with pytest.raises(FloatingPointError, match="vision"):
        policy.predict(_obs(), Instruction(TEXT, 0.0))


def test_non_finite_statistics_never_become_an_action():
    policy = _policy()
    policy.stats = type(policy.stats)(key="x", q01=np.full(7, -np.inf), q99=np.zeros(7),
                                      mask=np.ones(7, bool))
    with pytest.raises(FloatingPointError, match="non-finite action"):
        policy.predict(_obs(), Instruction(TEXT, 0.0))


def test_bad_inputs():
    policy = _policy()
    with pytest.raises(ValueError, match="empty instruction"):
        policy.predict(_obs(), Instruction("  ", 0.0))
    with pytest.raises(ImageInputError):
        policy.predict(Observation(rgb=np.zeros((4, 4), np.uint8), stamp=0.0), Instruction(TEXT, 0.0))


def test_minivla_family_predicts():
    policy = _policy(cached_tiny_checkpoint(family="minivla"))
    chunk = policy.predict(_obs(), Instruction(TEXT, 0.0))
    assert chunk.actions.shape == (1, 7) and np.all(np.isfinite(chunk.actions))
    assert "minivla" in policy.describe()
    assert all(policy.action_tokenizer.is_action(policy.last_tokens))
    names = [policy.tokenizer.id_to_token(int(t)) for t in policy.last_tokens]
    assert all(n.startswith("<|extra_") for n in names)


def test_small_image_size_and_bf16():
    policy = _policy(cached_tiny_checkpoint(image_size=112), dtype="bf16")
    chunk = policy.predict(_obs(shape=(120, 160, 3)), Instruction(TEXT, 0.0))
    assert np.all(np.isfinite(chunk.actions))
    assert policy.describe().startswith("torch cpu bf16")
    assert policy.backend.vision(policy.preprocessor(_obs().rgb)).shape == (1, 64, 64)


def test_from_loaded_with_an_explicit_backend():
    loaded = load_vla(cached_tiny_checkpoint())
    policy = VlaPolicy.from_loaded(loaded, TorchBackend(loaded.model, name="torch-custom"))
    assert policy.describe().startswith("torch-custom cpu fp32")


def test_factory_errors(monkeypatch, tmp_path):
    with pytest.raises(BackendUnavailableError, match="unknown backend 'jax'"):
        make_policy(PolicyConfig(checkpoint=str(cached_tiny_checkpoint()), backend="jax"))
    monkeypatch.setitem(factory.BACKEND_MODULES, "fancy", "vla_ros.runtime.no_such_backend_module")
    with pytest.raises(BackendUnavailableError, match="needs a package that is not installed"):
        make_policy(PolicyConfig(checkpoint=str(cached_tiny_checkpoint()), backend="fancy"))
    with pytest.raises(ValueError, match="does not exist"):
        make_policy(PolicyConfig(checkpoint=str(tmp_path / "missing")))
    monkeypatch.setattr(factory, "DEMO_CHECKPOINT", tmp_path / "demo_vla")
    with pytest.raises(ValueError, match="embedded demo model .* is not built yet"):
        make_policy(PolicyConfig(checkpoint=""))


def test_empty_checkpoint_means_the_embedded_demo(monkeypatch):
    monkeypatch.setattr(factory, "DEMO_CHECKPOINT", cached_tiny_checkpoint())
    policy = make_policy(PolicyConfig(checkpoint=""))
    assert np.all(np.isfinite(policy.predict(_obs(), Instruction(TEXT, 0.0)).actions))


def test_predict_cli(tmp_path, capsys):
    from vla_ros.runtime.predict_cli import main

    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8))
    args = ["--checkpoint", str(cached_tiny_checkpoint()), "--image", str(image), "--instruction", TEXT]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "dx_m=" in out and "gripper=" in out and "tokens:" in out
    assert main([*args, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["action"]) == {"dx_m", "dy_m", "dz_m", "droll_rad", "dpitch_rad", "dyaw_rad", "gripper"}
    assert len(data["tokens"]) == 7
    bad = ["--checkpoint", str(cached_tiny_checkpoint()), "--image", str(tmp_path / "nope.png"),
           "--instruction", TEXT]
    assert main(bad) == 1
    assert "cannot read an image" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["openvla", "minivla"])
def test_check_instruction_uses_the_predict_rule_and_is_picklable(family):
    """An instruction whose prompt does not fit the model's positions is refused on arrival, with the
    same rule (and message) predict raises; the check crosses a process boundary on its own."""
    import pickle

    kwargs = {} if family == "openvla" else {"family": "minivla"}
    policy = _policy(cached_tiny_checkpoint(**kwargs), warmup_runs=0)
    check = policy.check_instruction
    assert check(TEXT) is None
    long = "x " * 2000  # 4000 bytes: passes the 4096-byte limit, ~4000 tokens > 2048 positions
    problem = check(long)
    assert problem and problem.startswith("prompt too long") and "2048" in problem
    with pytest.raises(ValueError) as raised:
        policy.predict(_obs(), Instruction(long, 0.0))
    assert str(raised.value) == problem  # one rule, one message
    # the longest prompt that fits is accepted by both
    budget = policy.backend.max_positions - check.n_patches - 6
    fits = next(n for n in range(budget, 0, -1)
                if len(policy.family.prompt_ids(policy.tokenizer, "a " * n)) <= budget)
    assert check("a " * fits) is None
    assert policy.predict(_obs(), Instruction("a " * fits, 0.0)).actions.shape == (1, 7)
    assert check("a " * (fits + 2)) is not None
    assert pickle.loads(pickle.dumps(check))(long) == problem
    assert len(pickle.dumps(check)) < 1_000_000  # the tokenizer, not the model
