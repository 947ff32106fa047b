"""Image preprocessing in numpy (OpenCV optional): RGB uint8 [H, W, 3] -> pixel_values [1, 3n, S, S].

OpenVLA's processor squashes the image to S x S ignoring the aspect ratio ("resize-naive") with PIL's
bicubic resize (antialiased when shrinking), then normalizes per tower: ToTensor (/255) and
(x - mean) / std in float32. Resize methods, none of which goes through PIL:

- "pil": `pil_bicubic_resize` reimplements PIL's 8-bit resampling in numpy (separable passes,
  horizontal first, 22-bit fixed-point coefficients, uint8 rounding between the passes): output
  bit-identical to `PIL.Image.resize(..., BICUBIC)`; ~10 ms for 640x480 -> 224 on one x86 core.
- "torch": torch's uint8 antialiased bicubic (a port of Pillow-SIMD): off by 1 (rarely 2) on
  0.02-0.4% of the values, ~0.7 ms. "auto" (default) picks it when torch is importable, else "pil".
- "cv2": OpenCV INTER_AREA to shrink / INTER_CUBIC to enlarge: fast but not PIL's pixels (up to
  14 levels off on rendered scenes; it changed the tiny models' tokens on a few images in 40).
`vla-ros bench --resize-check N` measures all three against PIL, in pixels and in actions.

One resize serves both towers; only the normalization differs. The optional centre crop keeps the
central 0.9 of the area (sqrt(0.9) of each side) before the resize, for checkpoints fine-tuned with
random-crop augmentation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

PRECISION_BITS = 22  # PIL: 32 - 8 (pixel) - 2 (headroom)
RESIZE_METHODS = ("auto", "pil", "torch", "cv2")
CROP_AREA = 0.9


class ImageInputError(ValueError):
    """The observation's image cannot be used (type, shape, dtype, size)."""


def check_rgb(rgb: object) -> np.ndarray:
    """Return `rgb` if it is an RGB uint8 [H, W, 3] array, else raise a clear ImageInputError."""
    if not isinstance(rgb, np.ndarray):
        raise ImageInputError(f"image must be a numpy array, got {type(rgb).__name__}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageInputError(f"image must be RGB [H, W, 3], got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ImageInputError(f"image must be uint8, got {rgb.dtype}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageInputError(f"image is empty: shape {rgb.shape}")
    return rgb


def _bicubic(x: np.ndarray) -> np.ndarray:
    """PIL's bicubic kernel (a = -0.5)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@lru_cache(maxsize=32)
def _pil_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tap indices [out, K] and fixed-point weights [out, K] (int32) as PIL's precompute_coeffs."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    ksize = int(math.ceil(support)) * 2 + 1
    centers = (np.arange(out_size) + 0.5) * scale
    # C casts (int)(v) truncate toward zero; the clamps make the sign irrelevant here.
    xmin = np.maximum(np.trunc(centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), in_size)
    taps = np.arange(min(ksize, int((xmax - xmin).max())))  # PIL pads to ksize with zero weights
    valid = taps[None, :] < (xmax - xmin)[:, None]
    idx = np.where(valid, xmin[:, None] + taps[None, :], xmin[:, None])
    w = np.where(valid, _bicubic((idx - centers[:, None] + 0.5) / filter_scale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    w = np.where(total != 0.0, w / np.where(total == 0.0, 1.0, total), w)
    one = float(1 << PRECISION_BITS)
    fixed = np.where(w < 0, np.trunc(-0.5 + w * one), np.trunc(0.5 + w * one)).astype(np.int32)
    return idx, fixed


def _resample_rows(x: np.ndarray, idx: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Resample axis 0 of uint8 [N, M]: [N_out, M] uint8, PIL's rounding and clipping."""
    acc = np.full((idx.shape[0], x.shape[1]), 1 << (PRECISION_BITS - 1), dtype=np.int32)
    tmp = np.empty_like(acc)
    for k in range(idx.shape[1]):
        np.multiply(np.take(x, idx[:, k], axis=0), weights[:, k, None], out=tmp)
        acc += tmp
    np.right_shift(acc, PRECISION_BITS, out=acc)
    np.clip(acc, 0, 255, out=acc)
    return acc.astype(np.uint8)


def pil_bicubic_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Bit-exact PIL `Image.resize((width, height), BICUBIC)` of a uint8 [H, W, C] array."""
    h, w, c = rgb.shape
    out = rgb
    if w != width:
        idx, weights = _pil_coefficients(w, width)
        rows = np.ascontiguousarray(out.transpose(1, 0, 2)).reshape(w, h * c)
        out = _resample_rows(rows, idx, weights).reshape(width, h, c).transpose(1, 0, 2)
    if h != height:
        idx, weights = _pil_coefficients(h, height)
        rows = np.ascontiguousarray(out).reshape(h, width * c)
        out = _resample_rows(rows, idx, weights).reshape(height, width, c)
    return np.ascontiguousarray(out) if out is not rgb else rgb.copy()


def torch_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """torch's uint8 antialiased bicubic (the Pillow-SIMD port): within 1-2 of PIL, ~15x faster."""
    import torch  # lazy: the ONNX Runtime / TensorRT backends preprocess without torch
    import torch.nn.functional as F

    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb.copy()
    with torch.inference_mode():
        t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]
        out = F.interpolate(t.contiguous(memory_format=torch.channels_last), size=(height, width),
                            mode="bicubic", antialias=True)
        return out[0].permute(1, 2, 0).contiguous().numpy()


def cv2_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV resize: INTER_AREA when shrinking, INTER_CUBIC otherwise (approximates PIL)."""
    import cv2  # lazy: only this resize method needs OpenCV

    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb.copy()
    shrink = width < w and height < h
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)


def center_crop(rgb: np.ndarray, area: float = CROP_AREA) -> np.ndarray:
    """The central crop holding `area` of the pixels (each side scaled by sqrt(area))."""
    h, w = rgb.shape[:2]
    side = math.sqrt(area)
    ch, cw = max(1, int(round(h * side))), max(1, int(round(w * side)))
    top, left = (h - ch) // 2, (w - cw) // 2
    return rgb[top:top + ch, left:left + cw]


def resolve_resize(method: str) -> str:
    """"auto" -> "torch" when torch is importable, else the exact numpy "pil"."""
    if method != "auto":
        return method
    try:
        import torch  # noqa: F401
    except ImportError:
        return "pil"
    return "torch"


@dataclass(frozen=True)
class PreprocessSpec:
    """Image size, per-tower mean/std (as the checkpoint's processor stores them), crop and resize."""

    image_size: int
    means: tuple[tuple[float, float, float], ...]
    stds: tuple[tuple[float, float, float], ...]
    center_crop: bool = False
    resize: str = "auto"

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_METHODS:
            raise ValueError(f"resize must be one of {RESIZE_METHODS}, got {self.resize!r}")
        if len(self.means) != len(self.stds) or not self.means:
            raise ValueError("one mean and one std per tower are needed")
        if any(s <= 0 or not math.isfinite(s) for std in self.stds for s in std):
            raise ValueError(f"stds must be positive and finite, got {self.stds}")


class ImagePreprocessor:
    """RGB uint8 [H, W, 3] -> float32 pixel_values [1, 3 * n_towers, S, S]."""

    def __init__(self, cfg: PreprocessSpec) -> None:
        self.cfg = cfg
        self._mean = [np.asarray(m, dtype=np.float32).reshape(3, 1, 1) for m in cfg.means]
        self._std = [np.asarray(s, dtype=np.float32).reshape(3, 1, 1) for s in cfg.stds]
        self.method = resolve_resize(cfg.resize)
        self._resize = {"pil": pil_bicubic_resize, "torch": torch_resize, "cv2": cv2_resize}[self.method]

    def resize(self, rgb: np.ndarray) -> np.ndarray:
        """The squashed S x S uint8 image both towers see."""
        rgb = check_rgb(rgb)
        if self.cfg.center_crop:
            rgb = center_crop(rgb)
        size = self.cfg.image_size
        return self._resize(rgb, size, size)

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        square = self.resize(rgb)
        chw = square.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)  # as torchvision's ToTensor
        out = np.empty((1, 3 * len(self._mean), *chw.shape[1:]), dtype=np.float32)
        for i, (mean, std) in enumerate(zip(self._mean, self._std)):
            np.divide(chw - mean, std, out=out[0, 3 * i:3 * i + 3])
        return out
