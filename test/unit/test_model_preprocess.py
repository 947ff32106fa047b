"""Image preprocessing: bit-exact PIL bicubic in numpy, torch within 1, normalization, crop, bad input."""

import numpy as np
import pytest
from PIL import Image

from vla_ros.model.loader import read_preprocess
from vla_ros.model.preprocess import (
    ImageInputError,
    ImagePreprocessor,
    PreprocessSpec,
    center_crop,
    cv2_resize,
    pil_bicubic_resize,
    torch_resize,
)
from vla_ros.model.spec import VlaSpec
from vla_ros.model.tiny import cached_tiny_checkpoint

SIZES = [((480, 640), (224, 224)), ((720, 1280), (224, 224)), ((100, 150), (224, 224)),
         ((224, 224), (112, 112)), ((300, 301), (224, 224)), ((50, 400), (112, 112)), ((7, 9), (224, 224))]


def _pil(rgb, w, h):
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.BICUBIC))


@pytest.mark.parametrize("shape,out", SIZES)
def test_numpy_resize_is_bit_exact_pil(shape, out):
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    ours = pil_bicubic_resize(rgb, out[1], out[0])
    assert ours.dtype == np.uint8 and ours.shape == (*out, 3)
    assert np.array_equal(ours, _pil(rgb, out[1], out[0]))


def test_same_size_is_a_copy():
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    out = pil_bicubic_resize(rgb, 224, 224)
    assert np.array_equal(out, rgb) and out is not rgb


def test_torch_resize_within_one_of_pil_and_cv2_is_only_close():
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    ref = _pil(rgb, 224, 224).astype(int)
    diff_torch = np.abs(torch_resize(rgb, 224, 224).astype(int) - ref)
    assert diff_torch.max() <= 1 and (diff_torch > 0).mean() < 0.02
    diff_cv2 = np.abs(cv2_resize(rgb, 224, 224).astype(int) - ref)
    assert diff_cv2.max() > 1  # documented: OpenCV is not PIL's resampling


def test_normalization_matches_torchvision_math():
    """ToTensor (/255 in float32) then (x - mean) / std per tower, stacked as [1, 6, S, S]."""
    cfg = PreprocessSpec(image_size=224, means=((0.484375, 0.455078125, 0.40625), (0.5, 0.5, 0.5)),
                           stds=((0.228515625, 0.2236328125, 0.224609375), (0.5, 0.5, 0.5)), resize="pil")
    rgb = np.random.default_rng(2).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    pixels = ImagePreprocessor(cfg)(rgb)
    assert pixels.shape == (1, 6, 224, 224) and pixels.dtype == np.float32
    square = _pil(rgb, 224, 224).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    for tower in range(2):
        mean = np.asarray(cfg.means[tower], np.float32)[:, None, None]
        std = np.asarray(cfg.stds[tower], np.float32)[:, None, None]
        assert np.array_equal(pixels[0, 3 * tower:3 * tower + 3], (square - mean) / std)


def test_checkpoint_preprocessor_config_is_used():
    path = cached_tiny_checkpoint()
    pre = read_preprocess(path, VlaSpec.from_dir(path))
    assert pre.means[0] == (0.484375, 0.455078125, 0.40625)  # bf16-rounded, as released
    assert pre.stds[0] == (0.228515625, 0.2236328125, 0.224609375)
    assert pre.means[1] == (0.5, 0.5, 0.5) and pre.image_size == 224


def test_center_crop_keeps_nine_tenths_of_the_area():
    rgb = np.zeros((480, 640, 3), dtype=np.uint8)
    crop = center_crop(rgb)
    assert crop.shape[:2] == (455, 607)
    assert crop.shape[0] * crop.shape[1] / (480 * 640) == pytest.approx(0.9, abs=0.002)
    marked = np.zeros((100, 100, 3), dtype=np.uint8)
    marked[0, :] = 255  # the top row is cropped away
    cfg = PreprocessSpec(224, ((0.5,) * 3,), ((0.5,) * 3,), center_crop=True, resize="pil")
    assert ImagePreprocessor(cfg).resize(marked).max() == 0


@pytest.mark.parametrize("bad,match", [
    (np.zeros((10, 10), np.uint8), "RGB"),
    (np.zeros((10, 10, 4), np.uint8), "RGB"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    ([[0, 0, 0]], "numpy array"),
])
def test_bad_images_are_clear_errors(bad, match):
    cfg = PreprocessSpec(224, ((0.5,) * 3,), ((0.5,) * 3,))
    with pytest.raises(ImageInputError, match=match):
        ImagePreprocessor(cfg)(bad)


def test_config_validation():
    with pytest.raises(ValueError, match="resize"):
        PreprocessSpec(224, ((0.5,) * 3,), ((0.5,) * 3,), resize="lanczos")
    with pytest.raises(ValueError, match="std"):
        PreprocessSpec(224, ((0.5,) * 3,), ((0.0, 0.5, 0.5),))
