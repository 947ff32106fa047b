"""Command series: the 7-DoF commands of a run as arrays, with CSV and bag-topic readers/writers."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.bag.io import END_EFFECTOR_COMMAND, NS_PER_S, BagError, BagReader, deserialize

DOF_NAMES = ("dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper")
DOF_UNITS = ("m", "m", "m", "rad", "rad", "rad", "0..1")
CSV_COLUMNS = ("t_s", "stamp_ns", *DOF_NAMES, "hold", "interventions", "intervention_names",
               "source_stamp_ns", "state", "instruction")


@dataclass
class CommandSeries:
    """Commands over time: stamps [N] int ns, values [N, 7] float64, hold [N] bool, interventions [N]."""

    stamps_ns: np.ndarray
    values: np.ndarray
    hold: np.ndarray
    interventions: np.ndarray
    source: str = ""  # where the series came from, for reports
    states: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.stamps_ns.shape[0])

    @staticmethod
    def empty(source: str = "") -> CommandSeries:
        return CommandSeries(np.zeros(0, np.int64), np.zeros((0, 7)), np.zeros(0, bool),
                             np.zeros(0, np.int64), source)


def write_commands_csv(path: Path, rows: list[dict]) -> None:
    """Write command rows (dicts with CSV_COLUMNS keys) as CSV; floats with repr so they read back exactly."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for row in rows:
            writer.writerow([_fmt(row[c]) for c in CSV_COLUMNS])


def _fmt(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def read_commands_csv(path: str | Path) -> CommandSeries:
    """A CommandSeries from a replay's commands.csv; BagError naming the file when it is malformed."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("stamp_ns", *DOF_NAMES, "hold") if c not in (reader.fieldnames or [])]
            if missing:
                raise BagError(f"{path} is not a replay commands.csv (missing columns {missing})")
            rows = list(reader)
        stamps = np.array([int(r["stamp_ns"]) for r in rows], np.int64)
        values = np.array([[float(r[c]) for c in DOF_NAMES] for r in rows], np.float64).reshape(-1, 7)
        hold = np.array([r["hold"] in ("1", "true", "True") for r in rows], bool)
        interventions = np.array([int(r.get("interventions") or 0) for r in rows], np.int64)
        states = [r.get("state", "") for r in rows]
    except (OSError, ValueError, KeyError) as exc:
        raise BagError(f"cannot read commands from {path}: {exc}") from None
    return CommandSeries(stamps, values, hold, interventions, str(path), states)


def read_command_topic(bag: BagReader, topic: str) -> CommandSeries:
    """The EndEffectorCommand messages of a topic, stamped with their log time (the clock replay ticks on;
    header stamps may come from another clock)."""
    bag.require(topic, (END_EFFECTOR_COMMAND,), role="reference command")
    stamps, values, hold, interventions = [], [], [], []
    for _, t_ns, raw in bag.messages([topic]):
        msg = deserialize(raw, END_EFFECTOR_COMMAND)
        stamps.append(t_ns)
        values.append([msg.translation.x, msg.translation.y, msg.translation.z, msg.rotation.x,
                       msg.rotation.y, msg.rotation.z, msg.gripper])
        hold.append(bool(msg.hold))
        interventions.append(int(msg.interventions))
    return CommandSeries(np.array(stamps, np.int64), np.array(values, np.float64).reshape(-1, 7),
                         np.array(hold, bool), np.array(interventions, np.int64), f"{bag.path}:{topic}")


def relative_seconds(stamps_ns: np.ndarray, t0_ns: int) -> np.ndarray:
    """Seconds since t0 as float64 (exact enough for plots and reports)."""
    return (np.asarray(stamps_ns, np.int64) - int(t0_ns)) / NS_PER_S
