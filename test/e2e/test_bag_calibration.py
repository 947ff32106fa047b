"""`vla-ros export --quantize w8a8 --calibration BAG`: frames of a recorded session with their instruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bag_fixtures import INSTRUCTIONS, make_sim_bag

from vla_ros import cli
from vla_ros.bag.calibration import bag_calibration, is_bag
from vla_ros.bag.io import BagError


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sim_bag(tmp_path_factory.mktemp("calib") / "bag", duration_s=2.0)


def test_frames_come_with_the_instruction_in_force_spread_over_the_bag(bag: Path) -> None:
    samples = bag_calibration(bag, max_samples=8)
    assert len(samples) == 8 and is_bag(bag) and not is_bag(bag.parent)
    texts = [s.instruction for s in samples]
    assert texts[0] == INSTRUCTIONS[0][1] and texts[-1] == INSTRUCTIONS[1][1]  # before and after the change
    assert texts == sorted(texts, key=[t for _, t in INSTRUCTIONS].index)  # in time order
    images = [s.images[0] for s in samples]
    assert all(im.dtype == np.uint8 and im.ndim == 3 and im.shape[2] == 3 for im in images)
    assert not np.array_equal(images[0], images[-1])


def test_a_bag_without_instructions_is_refused_saying_why(tmp_path: Path) -> None:
    silent = make_sim_bag(tmp_path / "silent", duration_s=0.5, instructions=())
    with pytest.raises(BagError, match="instruction"):
        bag_calibration(silent)


def test_export_cli_hands_the_bag_observations_to_the_quantizer(bag: Path, monkeypatch, tmp_path) -> None:
    seen: dict = {}

    def fake_export(*args, **kwargs) -> dict:
        seen.update(kwargs)
        return {}

    monkeypatch.setattr("vla_ros.runtime.export.export_checkpoint", fake_export)
    out = str(tmp_path / "out")
    assert cli.main(["export", "ckpt", out, "--quantize", "w8a8", "--calibration", str(bag)]) == 0
    samples = seen["calibration"]
    assert isinstance(samples, list) and samples and samples[0].instruction == INSTRUCTIONS[0][1]
    assert cli.main(["export", "ckpt", out, "--quantize", "w8a8", "--calibration", str(tmp_path)]) == 0
    assert seen["calibration"] == str(tmp_path)  # not a bag: passed on as the path it is
