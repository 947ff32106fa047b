"""The ROS-free parts of `vla-ros demo` (vla_ros.ros.demo): the task each episode asks for, its
instruction, the episode that is plotted, the success summary, and where config/demo.yaml is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.core.files import find_shared, share_candidates
from vla_ros.core.schema import ConfigError
from vla_ros.sim.summary import summarize
from vla_ros.sim.tasks import TASK_KINDS, make_instruction, parse_phrasing

DEMO_CONFIG = ("config", "demo.yaml")  # vla_node's parameters for the demo, under the share directory
TASK_CHOICES = ("alternate", "any", "pick", "move")


def default_config_path() -> Path:
    """config/demo.yaml of the source tree, or of an installed share/vla_ros."""
    path = find_shared(*DEMO_CONFIG)
    if path is None:
        raise ConfigError("cannot find config/demo.yaml (looked in "
                          + ", ".join(map(str, share_candidates(*DEMO_CONFIG))) + ")")
    return path


def wanted_kind(task: str, index: int) -> str | None:
    """The task kind episode `index` (1-based) asks for: alternate = pick, move, pick, ...; any = None."""
    if task == "alternate":
        return TASK_KINDS[(index - 1) % len(TASK_KINDS)]
    return None if task == "any" else task


def episode_instruction(reset_instruction: str, kind: str | None, rng: np.random.Generator) -> str:
    """The instruction to publish: the simulator's own, or one of `kind` about the same target.

    vla_sim takes an instruction naming an object of its scene as the new task, so asking for the
    other kind about the same object changes the episode's task.
    """
    found, target = parse_phrasing(reset_instruction)
    if kind is None or found == kind or not target:
        return reset_instruction
    return make_instruction(kind, target, rng)


def episode_summary(episodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Successes, success rate and mean seconds to success, overall ("all") and per task kind ("by_kind")."""
    return summarize([e["kind"] for e in episodes], [e["success"] for e in episodes],
                     {"mean_seconds_to_success": [e["seconds"] if e["success"] else None for e in episodes]})


def success_line(summary: dict[str, Any]) -> str:
    """`success rate: 4/5 (80%)   move 2/2, pick 2/3` of an `episode_summary`."""
    wins, total = summary["all"]["successes"], summary["all"]["episodes"]
    parts = [f"{k} {r['successes']}/{r['episodes']}" for k, r in summary["by_kind"].items()]
    return f"success rate: {wins}/{total} ({100.0 * wins / total:.0f}%)   " + ", ".join(parts)


def plotted_episode(episodes: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The episode whose commands are plotted: the first successful one, else the first."""
    return next((e for e in episodes if e["success"]), episodes[0] if episodes else None)
