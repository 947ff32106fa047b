"""`vla-ros bench --oft-pair DIR`: an autoregressive OpenVLA checkpoint and its OpenVLA-OFT twin, written
from a seed, so both decodings can be timed side by side without downloads.

Both share every weight they have in common (towers, projector, LLM): the autoregressive one is a random
OFT release directory in OFT's own layout (`tiny_oft.write_tiny_oft_release`: the merged VLA plus OFT's
component files, which the autoregressive loader ignores) and the OFT one is its `vla-ros convert` with
the LIBERO preset narrowed to one camera. Real tower shapes (DINOv2-L/14 + SigLIP-SO400M/14, 256 patches
per camera) by default; the LLM is the small random one of `tiny.write_tiny_checkpoint`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vla_ros.model.convert import convert
from vla_ros.model.settings import SETTINGS_FILE, preset
from vla_ros.model.tiny_oft import FORMS, write_tiny_oft_release

FORM = "libero"  # OFT's LIBERO constants: chunk 8, action dim 7, proprio 8, q01/q99 bounds
LIBERO_PROPRIO = preset(FORM).proprio_dim


@dataclass(frozen=True)
class PairSpec:
    """What the pair is written from: seed, the OFT side's proprio length and chunk, tower shapes."""

    seed: int = 0
    proprio_dim: int = 8  # 0 (no proprio token) or 8 (LIBERO's)
    chunk: int = 8
    real_towers: bool = True

    def key(self) -> str:
        """The pair's directory name: one per distinct spec, so a written pair is reused."""
        towers = "real" if self.real_towers else "tiny"
        return f"seed{self.seed}_proprio{self.proprio_dim}_chunk{self.chunk}_{towers}"


def write_pair(root: str | Path, spec: PairSpec, log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """(autoregressive, OFT) checkpoint directories under `root`/<spec key>, written once then reused."""
    if spec.proprio_dim not in (0, LIBERO_PROPRIO):
        raise ValueError(f"the pair's proprio length is 0 or {LIBERO_PROPRIO} (LIBERO's), "
                         f"got {spec.proprio_dim}")
    base = Path(root) / spec.key()
    ar, oft = base / "ar", base / "oft"
    if (oft / SETTINGS_FILE).is_file():  # convert writes the settings file last
        log(f"[bench] reusing the checkpoint pair in {base}")
        return ar, oft
    shutil.rmtree(base, ignore_errors=True)
    log(f"[bench] writing the checkpoint pair to {base} ({'real' if spec.real_towers else 'tiny'} towers)")
    write_tiny_oft_release(ar, form=FORM, seed=spec.seed, real_towers=spec.real_towers)
    settings = preset(FORM, cameras=("primary",), proprio_dim=spec.proprio_dim, chunk=spec.chunk,
                      unnorm_key=FORMS[FORM][0])
    convert(ar, oft, settings, log=log)
    return ar, oft

