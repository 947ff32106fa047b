"""train-demo at toy size: OpenVLA layout out, loads through the regular Policy, resumes, time-boxes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from vla_ros.core.config import PolicyConfig  # noqa: E402
from vla_ros.core.types import Instruction, Observation  # noqa: E402
from vla_ros.model.loader import load_vla  # noqa: E402
from vla_ros.runtime.factory import make_policy  # noqa: E402
from vla_ros.sim import train, train_batches, train_config, train_model  # noqa: E402
from vla_ros.sim.dataset import DATASET_KEY, DemoDataset, collect  # noqa: E402
from vla_ros.sim.render import Renderer  # noqa: E402
from vla_ros.sim.world import COLOURS, TabletopWorld  # noqa: E402

TOY = ["--episodes", "4", "--image-size", "56", "--tower-dim", "16", "--tower-depth", "2",
       "--tower-heads", "2", "--llm-hidden", "32", "--llm-layers", "1", "--llm-heads", "2",
       "--batch-size", "4", "--warmup-steps", "5", "--lr", "3e-3", "--threads", "1", "--workers", "1",
       "--eval-episodes", "0", "--minutes", "3"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    out, work = root / "ckpt", root / "work"
    code = train.main(["--out", str(out), "--work", str(work), "--steps", "30", *TOY])
    assert code == 0
    return out, work


def test_checkpoint_has_the_openvla_layout_with_the_demo_statistics(trained):
    out, work = trained
    for name in ("config.json", "model.safetensors.index.json", "tokenizer.json", "preprocessor_config.json",
                 "dataset_statistics.json", train_config.CONFIG_FILE, train_config.LOG_FILE,
                 train_config.PLOT_FILE):
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    data = DemoDataset.load(next(work.glob("data_*")))
    assert config["norm_stats"] == data.statistics()
    assert config["image_sizes"] == [56, 56]
    assert config["vla_ros_demo"]["train_config"]["seed"] == 0
    stats = json.loads((out / "dataset_statistics.json").read_text())
    assert stats[DATASET_KEY]["action"]["mask"] == [True] * 6 + [False]
    assert sum(f.stat().st_size for f in out.glob("*.safetensors")) < 25e6
    # the auxiliary heads trained alongside (and kept in the resumable state) stay out of the checkpoint
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert not any(key.startswith("aux") for key in index)
    assert any(key.startswith("aux.") for key in json.loads((work / "state" / "state.json").read_text())
               ["adam_steps"])


def test_training_log_records_a_falling_loss(trained):
    out, _ = trained
    rows = list(csv.DictReader((out / train_config.LOG_FILE).open()))
    assert [int(r["step"]) for r in rows] == [1, 25, 30]
    summary = json.loads((out / train_config.CONFIG_FILE).read_text())
    assert summary["steps_done"] == 30
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"]) - 1.0  # the easy tokens are learnt at once
    assert float(rows[-1]["aux_patch"]) < float(rows[0]["aux_patch"])  # auxiliary targets on by default


def test_trained_checkpoint_loads_through_the_regular_policy(trained):
    out, _ = trained
    loaded = load_vla(out)
    assert loaded.action_tokenizer.n_bins == 256
    policy = make_policy(PolicyConfig(checkpoint=str(out)))
    world = TabletopWorld()
    world.reset(0)
    rgb = Renderer().render(world.state)
    chunk = policy.predict(Observation(rgb, 1.0), Instruction("pick up the red cube", 1.0))
    assert chunk.actions.shape == (1, 7) and np.all(np.isfinite(chunk.actions))
    stats = json.loads((out / "dataset_statistics.json").read_text())[DATASET_KEY]["action"]
    assert np.all(chunk.actions[0, :6] >= np.array(stats["q01"][:6]) - 1e-9)
    assert np.all(chunk.actions[0, :6] <= np.array(stats["q99"][:6]) + 1e-9)


def test_resume_continues_from_the_saved_step(trained, tmp_path):
    out, work = trained
    resumed = tmp_path / "resumed"
    code = train.main(["--out", str(resumed), "--work", str(work), "--steps", "40", "--resume", *TOY])
    assert code == 0
    summary = json.loads((resumed / train_config.CONFIG_FILE).read_text())
    assert summary["steps_done"] == 40
    rows = list(csv.DictReader((resumed / train_config.LOG_FILE).open()))
    assert [int(r["step"]) for r in rows] == [1, 25, 30, 40]


def test_batches_and_schedule_are_deterministic():
    cfg = train_config.TrainConfig(lr=1e-3, warmup_steps=10, min_lr_fraction=0.1)
    assert train_config.lr_at(0, cfg, 100) == pytest.approx(1e-4)
    assert train_config.lr_at(10, cfg, 100) == pytest.approx(1e-3)
    assert train_config.lr_at(100, cfg, 100) == pytest.approx(1e-4)
    assert train_config.lr_at(55, cfg, 100) == pytest.approx(0.55e-3)


def test_bad_arguments_are_refused(capsys):
    assert train.main(["--minutes", "0"]) == 2
    assert train.main(["--image-size", "100"]) == 2
    assert "multiple of the patch size" in capsys.readouterr().err
    assert train.main(["--aux-patch-weight", "-1"]) == 2
    assert "--aux-patch-weight" in capsys.readouterr().err


def test_position_embedding_init_is_a_readable_2d_code():
    torch = pytest.importorskip("torch")
    table = train_model.sincos_position_embedding(64, 32)[0]  # 8 x 8 grid
    assert table.shape == (64, 32) and torch.isfinite(table).all()
    distinct = torch.cdist(table, table) + torch.eye(64)
    assert distinct.min() > 1e-3  # every patch has its own code
    # neighbours are closer than far patches: the code is smooth in both grid directions
    assert torch.dist(table[0], table[1]) < torch.dist(table[0], table[7])
    assert torch.dist(table[0], table[8]) < torch.dist(table[0], table[56])
    with_class = train_model.sincos_position_embedding(65, 32)[0]
    assert torch.equal(with_class[0], torch.zeros(32)) and torch.allclose(with_class[1:], table)


def test_colour_word_index_finds_the_named_colour_in_the_prompt(trained):
    _, work = trained
    loaded = load_vla(work / "template")
    for text in ("pick up the purple cube", "hover over the yellow cylinder", "grab the red ball"):
        ids = loaded.family.prompt_ids(loaded.tokenizer, text)
        index = train_batches.colour_word_index(loaded, text, ids)
        colour = next(w for w in text.split() if w in ("purple", "yellow", "red"))
        piece = loaded.tokenizer.id_to_token(ids[index])
        assert colour[-3:] in piece.lower(), (text, piece)
    ids = loaded.family.prompt_ids(loaded.tokenizer, "wave")
    assert train_batches.colour_word_index(loaded, "wave", ids) == len(ids) - 1


def test_batch_indices_point_at_the_colour_word_and_the_last_prompt_token_in_the_spliced_sequence(trained):
    """prompt_ends / colour_ends index the sequence the model sees: [BOS, patches, rest of the prompt]."""
    torch = pytest.importorskip("torch")
    from vla_ros.sim.auxiliary import AuxiliaryTargets

    _, work = trained
    loaded = load_vla(work / "template")
    data = collect(3, seed=1, image_size=loaded.preprocess.image_size)
    batcher = train_batches.Batcher(data, loaded, data.statistics()[DATASET_KEY]["action"],
                            AuxiliaryTargets(loaded.preprocess.image_size))
    rows = np.arange(min(6, len(data)))
    batch = batcher(rows)
    ids = batch["ids"]
    pixels = torch.zeros(len(rows), *batch["pixels"].shape[1:])
    with torch.no_grad():
        patches = loaded.model.patch_embeddings(pixels)
        token_embeds = loaded.model.language_model.get_input_embeddings()(ids)
        spliced = loaded.model.splice(token_embeds, patches)
    for j, row in enumerate(rows):
        prompt = batcher.prompt_ids[row]
        colour = batcher.colour_index[data.instructions[row]]
        piece = loaded.tokenizer.id_to_token(prompt[colour]).lstrip("\u2581")
        assert any(w.endswith(piece) and w in COLOURS for w in data.instructions[row].split()), piece
        table = loaded.model.language_model.get_input_embeddings().weight
        assert torch.equal(spliced[j, batch["colour_ends"][j]], table[prompt[colour]])
        assert torch.equal(spliced[j, batch["prompt_ends"][j]], table[prompt[-1]])
