"""Outputs of `vla-ros demo`: the commands plot (from the bag, or from what the driver received), the
bag's topic counts and summary.json."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.bag.commands import read_command_topic
from vla_ros.bag.io import STRING, BagReader, deserialize
from vla_ros.bag.plot import plot_replay
from vla_ros.ros.demo_driver import CommandLog

BAG_DIR = "bag"
PLOT_FILE = "commands.png"
SUMMARY_FILE = "summary.json"
NS_PER_S = 1_000_000_000
PLOT_MARGIN_S = 0.3  # commands shown before the instruction of the plotted episode


def plot_episode(path: Path, episode: dict[str, Any], stamps_ns: np.ndarray, values: np.ndarray,
                 hold: np.ndarray, interventions: np.ndarray, instructions: list[tuple[int, str]],
                 policy: str) -> None:
    """PNG of the episode's commands (vla_ros.bag.plot), time relative to its instruction."""
    t0 = int(episode["start_ns"])
    verdict = f"success in {episode['seconds']:.1f} s" if episode["success"] else episode["reason"]
    title = f"demo episode {episode['index']}: '{episode['instruction']}' - {verdict} ({policy[:80]})"
    plot_replay(path, (np.asarray(stamps_ns, np.int64) - t0) / NS_PER_S, values, hold, interventions,
                [((t - t0) / NS_PER_S, text) for t, text in instructions], title=title)


def episode_window(episode: dict[str, Any], settle_s: float) -> tuple[int, int]:
    """[start, end] in ns of what the plot shows: from a margin before the instruction to the settle's end."""
    return (int(episode["start_ns"]) - int(PLOT_MARGIN_S * NS_PER_S),
            int(episode["end_ns"]) + int(settle_s * NS_PER_S))


def plot_from_bag(bag_path: Path, png: Path, episode: dict[str, Any], command_topic: str,
                  instruction_topic: str, settle_s: float, policy: str) -> int:
    """Plot one episode's commands as recorded in the bag; returns the number of commands plotted."""
    lo, hi = episode_window(episode, settle_s)
    with BagReader(bag_path) as bag:
        series = read_command_topic(bag, command_topic)
        instructions = []
        if instruction_topic in bag.topics:
            instructions = [(t, deserialize(raw, STRING).data)
                            for _, t, raw in bag.messages([instruction_topic]) if lo <= t <= hi]
    keep = (series.stamps_ns >= lo) & (series.stamps_ns <= hi)
    plot_episode(png, episode, series.stamps_ns[keep], series.values[keep], series.hold[keep],
                 series.interventions[keep], instructions, policy)
    return int(keep.sum())


def plot_from_log(png: Path, episode: dict[str, Any], commands: CommandLog, settle_s: float,
                  policy: str) -> int:
    """Plot one episode's commands as the driver received them; returns the number plotted."""
    stamps, values, hold, interventions = commands.window(*episode_window(episode, settle_s))
    marks = [(int(episode["start_ns"]), episode["instruction"]), (int(episode["end_ns"]), "")]
    plot_episode(png, episode, stamps, values, hold, interventions, marks, policy)
    return len(stamps)


def bag_topic_counts(bag_path: Path) -> dict[str, dict[str, Any]]:
    """{topic: {type, count}} of a bag, read with the project's reader."""
    with BagReader(bag_path) as bag:
        return {name: {"type": info.msgtype, "count": info.count}
                for name, info in sorted(bag.topics.items())}


def print_outputs(bag_path: Path, bag_info: dict[str, Any] | None, plot_info: dict[str, Any] | None,
                  summary_path: Path) -> None:
    """The closing report: where the bag, the plot and the summary are."""
    print("outputs:", flush=True)
    if bag_info is not None:
        total = sum(t["count"] for t in bag_info["topics"].values())
        print(f"  bag      {bag_path}/  (mcap, {total} messages on {len(bag_info['topics'])} "
              f"topics; `vla-ros replay {bag_path}` replays it offline)")
    if plot_info is not None:
        print(f"  plot     {plot_info['path']}  (episode {plot_info['episode']}, "
              f"{plot_info['commands']} commands)")
    print(f"  summary  {summary_path}", flush=True)
