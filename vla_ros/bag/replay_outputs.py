"""A replay's outputs: the command and status messages of its bag, commands.csv, inferences.csv,
summary.json, plot.png and, with --compare, compare.txt and compare.json."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from vla_ros.bag.commands import DOF_NAMES, CommandSeries, relative_seconds, write_commands_csv
from vla_ros.bag.compare import CompareReport, compare
from vla_ros.bag.io import (
    ACTION_CHUNK,
    END_EFFECTOR_COMMAND,
    NS_PER_S,
    VLA_STATUS,
    BagReader,
    header_msg,
    msg_class,
    qos_profile,
    stamp_msg,
)
from vla_ros.bag.plot import plot_replay
from vla_ros.bag.replay_inputs import ReplayTopics
from vla_ros.bag.replay_types import Inference, ReplayOptions, ReplayRecord
from vla_ros.bag.writer import BagWriter
from vla_ros.control.link import LinkReport
from vla_ros.control.safety import Command, intervention_names
from vla_ros.core.config import NodeConfig
from vla_ros.core.stats import distribution, rate

BAG_NAME = "replay"
INFERENCE_COLUMNS = ("index", "start_ns", "finish_ns", "image_stamp_ns", "latency_s", "instruction", "result")
SUMMARY_VERSION = 1
CHUNK_QOS_DEPTH = 4  # the chunk topic's QoS: reliable, keep last 4, volatile (split.chunk_topic)


# --------------------------------------------------------------------------------------- the bag

def add_topics(writer: BagWriter, bag: BagReader, inputs: dict[str, str], topics: ReplayTopics,
               chunks: bool = False) -> None:
    """Declare the output bag's topics: the inputs (as recorded), then the commands and the status, and
    with `chunks` the ActionChunk topic the policy half publishes on."""
    for t in inputs:
        info = bag.topics[t]
        writer.add_topic(t, info.msgtype, info.msgdef, info.digest, info.qos)
    writer.add_topic(topics.command, END_EFFECTOR_COMMAND, qos=[qos_profile()])
    writer.add_topic(topics.status, VLA_STATUS, qos=[qos_profile()])
    if chunks:
        writer.add_topic(topics.chunk, ACTION_CHUNK, qos=[qos_profile(depth=CHUNK_QOS_DEPTH)])


def command_row(cmd: Command, t_ns: int, t0: int, state: str, instruction: str) -> dict:
    """The commands.csv row of the command published at tick t_ns."""
    src = cmd.source_stamp
    return {
        "t_s": (t_ns - t0) / NS_PER_S, "stamp_ns": t_ns,
        "dx": float(cmd.translation[0]), "dy": float(cmd.translation[1]), "dz": float(cmd.translation[2]),
        "droll": float(cmd.rotation[0]), "dpitch": float(cmd.rotation[1]), "dyaw": float(cmd.rotation[2]),
        "gripper": float(cmd.gripper), "hold": bool(cmd.hold), "interventions": int(cmd.interventions),
        "intervention_names": "|".join(intervention_names(cmd.interventions)),
        "source_stamp_ns": int(round(src * NS_PER_S)) if src is not None else 0,
        "state": state, "instruction": instruction}


def command_msg(row: dict, frame_id: str) -> Any:
    """The EndEffectorCommand of a commands.csv row."""
    vec = msg_class("geometry_msgs/msg/Vector3")
    return msg_class(END_EFFECTOR_COMMAND)(
        header=header_msg(row["stamp_ns"], frame_id),
        translation=vec(x=row["dx"], y=row["dy"], z=row["dz"]),
        rotation=vec(x=row["droll"], y=row["dpitch"], z=row["dyaw"]),
        gripper=row["gripper"], hold=row["hold"], interventions=row["interventions"],
        intervention_names=row["intervention_names"].split("|") if row["intervention_names"] else [],
        source_stamp=stamp_msg(row["source_stamp_ns"]))


def status_msg(t_ns: int, frame_id: str, fields: dict[str, object]) -> Any:
    """The VlaStatus at t_ns from `vla_ros.control.status.status_fields`."""
    return msg_class(VLA_STATUS)(header=header_msg(t_ns, frame_id), **fields)


# ------------------------------------------------------------------------------------ the reports

def command_series(rows: list[dict], source: str) -> CommandSeries:
    """The commands of a run as arrays (for compare and the plot)."""
    return CommandSeries(np.array([r["stamp_ns"] for r in rows], np.int64),
                         np.array([[r[c] for c in DOF_NAMES] for r in rows], np.float64).reshape(-1, 7),
                         np.array([r["hold"] for r in rows], bool),
                         np.array([r["interventions"] for r in rows], np.int64), source,
                         [r["state"] for r in rows])


def write_inferences_csv(path: Path, calls: list[Inference]) -> None:
    """One row per simulated call; latencies with repr so that trace: reads them back exactly."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(INFERENCE_COLUMNS)
        for c in calls:
            w.writerow([c.index, c.start_ns, c.finish_ns, c.image_stamp_ns, repr(c.latency_s), c.instruction,
                        c.result])


def summary(bag: BagReader, record: ReplayRecord, topics: ReplayTopics, counters: dict[str, int],
            config: NodeConfig, options: ReplayOptions, policy: str) -> dict:
    """summary.json: the bag, the inputs, the control loop, the commands, the safety filter, inference.

    `counters` are ControlCore.counters at the end; `policy` is Policy.describe().
    """
    rows, t0 = record.rows, record.t0
    n = len(rows)
    duration_s = (record.t_end - t0) / NS_PER_S
    by_rule = {name: counters[name] for name in sorted(counters) if name.isupper() and counters[name]}
    lat = np.array([c.latency_s for c in record.inferences], np.float64)
    moving = [r for r in rows if not r["hold"]]
    action_age = np.array([(r["stamp_ns"] - r["source_stamp_ns"]) / NS_PER_S for r in moving], np.float64)
    results = Counter(c.result.split(":")[0] for c in record.inferences)
    return {
        "version": SUMMARY_VERSION,
        "bag": {"name": bag.path.name, "storage": bag.storage, "start_ns": t0, "replayed_s": duration_s,
                "topics": {t.name: {"type": t.msgtype, "messages": t.count} for t in bag.topics.values()}},
        "inputs": {
            "camera_topic": topics.camera, "images": record.image_count,
            "image_rate_hz": rate(record.image_count, duration_s),
            "image_encodings": dict(sorted(record.encodings.items())),
            "instruction_topic": topics.instruction,
            "instruction_changes": [{"t_s": (t - t0) / NS_PER_S, "text": text}
                                    for t, text in record.instruction_changes],
            "estops": record.estops, "rejected_inputs": record.rejected_inputs,
            "image_stamp_source": options.stamp_source,
            "extra_cameras": {t: {"images": record.extra_images[t]} for t in topics.extra_cameras},
            "joint_states_topic": topics.joint_states, "joint_states": record.joint_states,
            "not_ready": dict(sorted(record.not_ready.items()))},
        "control": {"rate_hz": config.control.control_rate_hz, "ticks": n,
                    "achieved_rate_hz": rate(n - 1, duration_s) if n > 1 else 0.0,
                    "action_period_s": config.control.action_period_s, "armed": options.armed,
                    "states": dict(sorted(Counter(r["state"] for r in rows).items()))},
        "commands": {"total": n, "hold": n - len(moving), "moving": len(moving),
                     "hold_fraction": (n - len(moving)) / n if n else 0.0, "topic": topics.command},
        "interventions": {"commands_changed": counters["interventions"], "by_rule": by_rule,
                          "rejected_chunks": counters["rejected_chunks"],
                          "rejected_chunks_by_reason": {
                              k[len("rejected_chunks_"):]: v for k, v in sorted(counters.items())
                              if k.startswith("rejected_chunks_") and v}},
        "inference": {"policy": policy, "latency_model": options.latency.describe(),
                      "deterministic": options.latency.deterministic,
                      "calls": len(record.inferences), "policy_runs": record.policy_runs,
                      "skip_superseded": options.lazy, "results": dict(sorted(results.items())),
                      "errors": record.policy_errors, "rate_hz": rate(len(record.inferences), duration_s),
                      "latency_s": distribution(lat)},
        "action_age_s": distribution(action_age),
        "chunks": chunk_summary(record, counters),
        "config": {"control": dataclasses.asdict(config.control), "safety": dataclasses.asdict(config.safety),
                   "policy": {**{k: v for k, v in dataclasses.asdict(config.policy).items()
                                 if k in ("backend", "device", "dtype", "unnorm_key", "max_inference_s")},
                              "checkpoint": Path(config.policy.checkpoint).name or "(embedded demo)"}},
    }


def chunk_summary(record: ReplayRecord, counters: dict[str, int]) -> dict:
    """The chunk figures under VlaStatus's names: switches, the command jump at a switch (before the
    safety filter, the largest over the 6 axes [m/s or rad/s]; max and p95, -1 without a switch),
    the accepted chunks' delays, actions dropped on arrival, chunks rejected as late."""
    jumps = np.array(record.switch_jumps, np.float64)
    return {"chunk_switches": len(jumps), "chunk_jump_max": float(jumps.max()) if len(jumps) else -1.0,
            "chunk_jump_p95": float(np.percentile(jumps, 95)) if len(jumps) else -1.0,
            "chunk_jump": distribution(jumps), "chunk_delay_s": distribution(record.chunk_delays),
            "dropped_actions": counters["dropped_actions"],
            "rejected_chunks_late": counters["rejected_chunks_late"]}


def link_summary(report: LinkReport, counters: dict[str, int], options: ReplayOptions, config: NodeConfig,
                 topic: str) -> dict:
    """summary.json's "link" (split and control-only replays): the chunk link's counts under the names of
    LinkReport, the chunks rejected as too old or stamped in the future, the apparent clock offset [s]
    (null before the first chunk) and the clock verdict ('' when consistent)."""
    offset = report.clock_offset_s
    return {"mode": options.mode, "chunk_topic": topic, "watch_cameras": config.split.watch_cameras,
            "received": report.received, "lost": report.lost, "duplicates": report.duplicates,
            "reordered": report.reordered, "restarts": report.restarts,
            "rejected_old": counters["rejected_chunks_old"],
            "rejected_future": counters["rejected_chunks_future"],
            "clock_offset_s": offset if math.isfinite(offset) else None,
            "clock_problem": report.clock_problem}


def write_reports(out: Path, final_dir: Path, bag: BagReader, record: ReplayRecord, topics: ReplayTopics,
                  counters: dict[str, int], config: NodeConfig, options: ReplayOptions, policy: str,
                  link: LinkReport | None = None) -> tuple[dict, CommandSeries, CompareReport | None]:
    """Write every output file but the bag into `out` (the temporary twin of `final_dir`); `link`: the
    control half's link report (split and control-only replays).

    Returns (summary, command series, compare report or None).
    """
    write_commands_csv(out / "commands.csv", record.rows)
    write_inferences_csv(out / "inferences.csv", record.inferences)
    series = command_series(record.rows, str(final_dir / "commands.csv"))
    report: CompareReport | None = None
    result = summary(bag, record, topics, counters, config, options, policy)
    if link is not None:
        result["link"] = link_summary(link, counters, options, config, topics.chunk)
    result["outputs"] = {"bag": BAG_NAME, "commands": "commands.csv", "inferences": "inferences.csv",
                         "plot": "plot.png" if options.plot else None, "summary": "summary.json"}
    spec = options.compare
    if spec is not None:
        report = compare(series, spec.reference, spec.tolerance, spec.exact, spec.max_violations,
                         spec.max_unmatched, check_hold=spec.exact, t0_ns=record.t0)
        (out / "compare.txt").write_text(report.table() + "\n", encoding="utf-8")
        (out / "compare.json").write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n",
                                          encoding="utf-8")
        result["compare"] = {"reference": spec.reference.source, "regression": report.regression,
                             "reasons": report.reasons}
    if options.plot:
        ref = None
        if spec is not None and len(spec.reference):
            ref = (relative_seconds(spec.reference.stamps_ns, record.t0), spec.reference.values)
        plot_replay(out / "plot.png", relative_seconds(series.stamps_ns, record.t0), series.values,
                    series.hold, series.interventions,
                    [((t - record.t0) / NS_PER_S, text) for t, text in record.instruction_changes],
                    title=f"{bag.path.name}: {policy}, latency {options.latency.describe()}", reference=ref)
    (out / "summary.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return result, series, report
