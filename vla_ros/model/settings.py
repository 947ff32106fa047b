"""A checkpoint's explicit inference settings (`vla_settings.json`), read by every verb.

OpenVLA-OFT picks chunk length, action dimension, proprio dimension and normalization by sniffing the
command line; here they are written once by `vla-ros convert` and read from the checkpoint directory,
then checked against the tensor shapes. A checkpoint without the file is autoregressive OpenVLA:
one camera, no proprio, chunk 1, q01/q99 bounds.

    {"format": "vla_ros.settings/1", "family": "openvla-oft", "action_head": "l1_regression",
     "chunk": 8, "action_dim": 7, "proprio_dim": 8, "normalization": "q99",
     "cameras": ["primary", "wrist"], "film": false, "unnorm_key": "libero_spatial_no_noops",
     "lora_rank": 32, "source": {...}}
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from vla_ros.model.spec import CheckpointError, read_json

SETTINGS_FILE = "vla_settings.json"
FORMAT = "vla_ros.settings/1"
ACTION_HEADS = ("autoregressive", "l1_regression", "discrete", "diffusion")
NORMALIZATIONS = ("q99", "minmax")  # OFT's BOUNDS_Q99 (q01/q99) and BOUNDS (min/max)


@dataclass(frozen=True)
class VlaSettings:
    """How a checkpoint is run: decoding, chunk, dimensions, cameras, FiLM."""

    family: str = "openvla"
    action_head: str = "autoregressive"
    chunk: int = 1
    action_dim: int = 7
    proprio_dim: int = 0
    normalization: str = "q99"
    cameras: tuple[str, ...] = ("primary",)
    film: bool = False
    unnorm_key: str = ""
    lora_rank: int = 0
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def parallel(self) -> bool:
        """One bidirectional LLM pass gives the whole chunk (OFT), instead of a decode loop."""
        return self.action_head in ("l1_regression", "discrete")

    @property
    def n_slots(self) -> int:
        """Zero-embedded action positions in OFT's sequence (chunk x action_dim)."""
        return self.chunk * self.action_dim

    def check(self) -> VlaSettings:
        """Raise CheckpointError for values no model can have; return self."""
        if self.action_head not in ACTION_HEADS:
            raise CheckpointError(f"{SETTINGS_FILE}: action_head {self.action_head!r} is not one of "
                                  f"{list(ACTION_HEADS)}")
        if self.action_head == "diffusion":
            raise CheckpointError("OFT's diffusion action head is not supported (one full LLM pass per "
                                  "denoising step, not the released recipe): use an L1-regression or "
                                  "discrete checkpoint")
        if self.normalization not in NORMALIZATIONS:
            raise CheckpointError(f"{SETTINGS_FILE}: normalization {self.normalization!r} is not one of "
                                  f"{list(NORMALIZATIONS)}")
        for name, low in (("chunk", 1), ("action_dim", 1), ("proprio_dim", 0), ("lora_rank", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise CheckpointError(f"{SETTINGS_FILE}: {name} must be an integer >= {low}, got {value!r}")
        if not self.cameras or not all(isinstance(c, str) and c for c in self.cameras):
            raise CheckpointError(f"{SETTINGS_FILE}: cameras must list at least one camera name")
        if len(set(self.cameras)) != len(self.cameras):
            raise CheckpointError(f"{SETTINGS_FILE}: camera names repeat: {list(self.cameras)}")
        if self.action_head == "autoregressive" and (self.chunk != 1 or len(self.cameras) != 1
                                                     or self.proprio_dim or self.film):
            raise CheckpointError(f"{SETTINGS_FILE}: the autoregressive head runs one camera, no proprio, "
                                  f"no FiLM and chunk 1")
        return self

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["cameras"] = list(self.cameras)
        return {"format": FORMAT, **d}

    @staticmethod
    def from_json(d: Any) -> VlaSettings:
        """Validate a parsed settings file (unknown keys are errors: a typo must not pass silently)."""
        if not isinstance(d, dict):
            raise CheckpointError(f"{SETTINGS_FILE} must hold a JSON object")
        values = dict(d)
        fmt = values.pop("format", None)
        if fmt != FORMAT:
            raise CheckpointError(f"{SETTINGS_FILE}: format {fmt!r} is not {FORMAT!r}")
        names = set(VlaSettings.__dataclass_fields__)
        unknown = set(values) - names
        if unknown:
            raise CheckpointError(f"{SETTINGS_FILE}: unknown keys {sorted(unknown)}; "
                                  f"allowed: {sorted(names)}")
        if "cameras" in values:
            if not isinstance(values["cameras"], list):
                raise CheckpointError(f"{SETTINGS_FILE}: cameras must be a list of names")
            values["cameras"] = tuple(values["cameras"])
        return VlaSettings(**values).check()


def read_settings(path: str | Path) -> VlaSettings:
    """The directory's settings file, or the autoregressive defaults when there is none."""
    file = Path(path) / SETTINGS_FILE
    if not file.is_file():
        return VlaSettings()
    return VlaSettings.from_json(read_json(file))


def write_settings(path: str | Path, settings: VlaSettings) -> Path:
    """Write `vla_settings.json` into the directory (checked first)."""
    file = Path(path) / SETTINGS_FILE
    file.write_text(json.dumps(settings.check().to_json(), indent=2) + "\n")
    return file


# Per-platform values of OFT's `prismatic/vla/constants.py` (chosen there from argv; here by name).
PRESETS: dict[str, VlaSettings] = {
    "libero": VlaSettings(family="openvla-oft", action_head="l1_regression", chunk=8, action_dim=7,
                          proprio_dim=8, normalization="q99", cameras=("primary", "wrist"), lora_rank=32),
    "aloha": VlaSettings(family="openvla-oft", action_head="l1_regression", chunk=25, action_dim=14,
                         proprio_dim=14, normalization="minmax",
                         cameras=("cam_high", "cam_left_wrist", "cam_right_wrist"), film=True, lora_rank=32),
    "bridge": VlaSettings(family="openvla-oft", action_head="l1_regression", chunk=5, action_dim=7,
                          proprio_dim=7, normalization="q99", cameras=("primary",), lora_rank=32),
}


def preset(name: str, **overrides: Any) -> VlaSettings:
    """A preset with explicit values replacing its own (None = keep the preset's)."""
    if name not in PRESETS:
        raise CheckpointError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    given = {k: v for k, v in overrides.items() if v is not None}
    if "cameras" in given:
        given["cameras"] = tuple(given["cameras"])
    return replace(PRESETS[name], **given).check()
