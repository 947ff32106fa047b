"""Compare two command series per DoF with tolerances; a regression gives a non-zero exit (CI).

A reference is an earlier replay's output directory (its commands.csv; ticks match by exact stamp)
or an EndEffectorCommand topic in a bag (e.g. a teleoperator's commands; each tick is matched to the
nearest reference message within half a tick).

    python -m vla_ros.bag.compare RUN_DIR REF_DIR [--tolerance 1e-6 | dx=0.001,rot=0.01,gripper=0.05]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vla_ros.bag.commands import DOF_NAMES, DOF_UNITS, CommandSeries, read_command_topic, read_commands_csv
from vla_ros.bag.io import BagError, BagReader

DEFAULT_TOLERANCE = 1e-6
TOLERANCE_GROUPS: dict[str, tuple[str, ...]] = {
    "all": DOF_NAMES,
    "trans": DOF_NAMES[:3], "translation": DOF_NAMES[:3],
    "rot": DOF_NAMES[3:6], "rotation": DOF_NAMES[3:6],
    **{name: (name,) for name in DOF_NAMES},
}


def parse_tolerance(spec: str | None) -> np.ndarray:
    """Per-DoF absolute tolerances [7] from '1e-6' (all) or 'trans=0.001,rot=0.01,gripper=0.05'."""
    tol = np.full(7, DEFAULT_TOLERANCE)
    if not spec:
        return tol
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.rpartition("=")
        name = name.strip() or "all"
        if name not in TOLERANCE_GROUPS:
            raise ValueError(f"tolerance {part!r}: unknown name {name!r} (use one of "
                             f"{', '.join(TOLERANCE_GROUPS)})")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"tolerance {part!r}: {value!r} is not a number") from None
        if not np.isfinite(number) or number < 0:
            raise ValueError(f"tolerance {part!r}: must be a finite number >= 0")
        for dof in TOLERANCE_GROUPS[name]:
            tol[DOF_NAMES.index(dof)] = number
    return tol


@dataclass
class CompareReport:
    """Per-DoF differences between a run and a reference, and the verdict."""

    run_source: str
    ref_source: str
    mode: str  # "exact" (stamps match) or "nearest" (within a window)
    matched: int
    unmatched_run: int
    unmatched_ref: int
    rows: list[dict] = field(default_factory=list)
    hold_mismatches: int = 0
    intervention_mismatches: int = 0
    reasons: list[str] = field(default_factory=list)
    max_abs_dt_s: float = 0.0

    @property
    def regression(self) -> bool:
        return bool(self.reasons)

    def to_dict(self) -> dict:
        return {"run": self.run_source, "reference": self.ref_source, "mode": self.mode,
                "matched": self.matched, "unmatched_run": self.unmatched_run,
                "unmatched_reference": self.unmatched_ref, "max_abs_dt_s": self.max_abs_dt_s,
                "dof": self.rows, "hold_mismatches": self.hold_mismatches,
                "intervention_mismatches": self.intervention_mismatches,
                "regression": self.regression, "reasons": self.reasons}

    def table(self) -> str:
        """A human-readable table of the differences and the verdict."""
        lines = [f"compare: run {self.run_source}", f"     vs reference {self.ref_source}",
                 f"matched {self.matched} ticks ({self.mode} stamps), unmatched: run {self.unmatched_run}, "
                 f"reference {self.unmatched_ref}", "",
                 f"{'DoF':<8} {'unit':<5} {'max|d|':>11} {'mean|d|':>11} {'rms':>11} {'tolerance':>11} "
                 f"{'over':>6}  {'at t [s]':>9}  result"]
        for row in self.rows:
            at = f"{row['worst_t_s']:9.3f}" if row["worst_t_s"] is not None else f"{'-':>9}"
            lines.append(f"{row['dof']:<8} {row['unit']:<5} {row['max_abs']:11.3e} {row['mean_abs']:11.3e} "
                         f"{row['rms']:11.3e} {row['tolerance']:11.3e} {row['over']:6d}  {at}  "
                         f"{'ok' if row['ok'] else 'FAIL'}")
        lines.append(f"{'hold':<8} {'-':<5} mismatches {self.hold_mismatches} of {self.matched}")
        lines.append(f"{'interv.':<8} {'-':<5} mismatches {self.intervention_mismatches} of {self.matched} "
                     "(information)")
        lines.append("")
        if self.reasons:
            lines.append("result: REGRESSION")
            lines += [f"  - {r}" for r in self.reasons]
        else:
            lines.append("result: PASS")
        return "\n".join(lines)


def align(run: CommandSeries, ref: CommandSeries, exact: bool,
          window_ns: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (run_idx, ref_idx) of matched ticks: equal stamps, or the nearest within window_ns."""
    if len(run) == 0 or len(ref) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if exact:
        _, i_run, i_ref = np.intersect1d(run.stamps_ns, ref.stamps_ns, assume_unique=False,
                                         return_indices=True)
        return i_run.astype(np.int64), i_ref.astype(np.int64)
    order = np.argsort(ref.stamps_ns, kind="stable")
    ref_sorted = ref.stamps_ns[order]
    pos = np.searchsorted(ref_sorted, run.stamps_ns)
    lo = np.clip(pos - 1, 0, len(ref_sorted) - 1)
    hi = np.clip(pos, 0, len(ref_sorted) - 1)
    pick = np.where(np.abs(ref_sorted[hi] - run.stamps_ns) < np.abs(run.stamps_ns - ref_sorted[lo]), hi, lo)
    dt = np.abs(ref_sorted[pick] - run.stamps_ns)
    window = window_ns if window_ns is not None else _half_period_ns(run)
    ok = dt <= window
    return np.nonzero(ok)[0].astype(np.int64), order[pick[ok]].astype(np.int64)


def _half_period_ns(series: CommandSeries) -> int:
    if len(series) < 2:
        return 0
    return int(np.median(np.diff(np.sort(series.stamps_ns))) // 2)


def compare(run: CommandSeries, ref: CommandSeries, tolerance: np.ndarray, exact: bool = True,
            max_violation_fraction: float = 0.0, max_unmatched_fraction: float = 0.0,
            check_hold: bool = True, t0_ns: int | None = None) -> CompareReport:
    """Compare `run` against `ref`. A regression is: a DoF over its tolerance on more than
    max_violation_fraction of the matched ticks, hold flags that differ (when check_hold) on more than
    that fraction, or more than max_unmatched_fraction of the run's ticks without a reference."""
    i_run, i_ref = align(run, ref, exact)
    t0 = int(t0_ns if t0_ns is not None else (run.stamps_ns[0] if len(run) else 0))
    matched = int(i_run.size)
    report = CompareReport(run.source, ref.source, "exact" if exact else "nearest", matched,
                           len(run) - matched, (len(ref) - matched) if exact else 0)
    if matched:
        report.max_abs_dt_s = float(np.max(np.abs(run.stamps_ns[i_run] - ref.stamps_ns[i_ref]))) / 1e9
    diff = run.values[i_run] - ref.values[i_ref]  # [M, 7]
    absd = np.abs(diff)
    for k, name in enumerate(DOF_NAMES):
        col = absd[:, k]
        over = int(np.count_nonzero(~(col <= tolerance[k])))  # NaN counts as over
        worst = int(np.nanargmax(col)) if matched and not np.all(np.isnan(col)) else None
        frac = over / matched if matched else 0.0
        row = {"dof": name, "unit": DOF_UNITS[k], "tolerance": float(tolerance[k]),
               "max_abs": float(np.nanmax(col)) if matched else 0.0,
               "mean_abs": float(np.nanmean(col)) if matched else 0.0,
               "rms": float(np.sqrt(np.nanmean(col ** 2))) if matched else 0.0,
               "over": over, "over_fraction": frac,
               "worst_t_s": (float(run.stamps_ns[i_run[worst]] - t0) / 1e9) if worst is not None else None,
               "ok": frac <= max_violation_fraction}
        report.rows.append(row)
        if not row["ok"]:
            report.reasons.append(f"{name}: {over} of {matched} ticks differ by more than {tolerance[k]:g} "
                                  f"(max {row['max_abs']:.3e} at t={row['worst_t_s']:.3f} s)")
    report.hold_mismatches = int(np.count_nonzero(run.hold[i_run] != ref.hold[i_ref]))
    differ = run.interventions[i_run] != ref.interventions[i_ref]
    report.intervention_mismatches = int(np.count_nonzero(differ))
    if check_hold and matched and report.hold_mismatches / matched > max_violation_fraction:
        report.reasons.append(f"hold: {report.hold_mismatches} of {matched} ticks differ in HOLD")
    if len(run) == 0 or len(ref) == 0:
        report.reasons.append(f"nothing to compare: run has {len(run)} commands, reference has {len(ref)}")
    else:
        unmatched = report.unmatched_run + report.unmatched_ref
        if unmatched / max(len(run), 1) > max_unmatched_fraction:
            report.reasons.append(f"{report.unmatched_run} run ticks and {report.unmatched_ref} reference "
                                  "commands have no counterpart "
                                  f"(allowed fraction {max_unmatched_fraction:g})")
    return report


def load_reference(ref: str, bag_path: str | Path | None = None) -> tuple[CommandSeries, bool]:
    """(series, exact) for REF: an output directory of an earlier replay, or `topic:/name` / a command
    topic of `bag_path`. Exact stamps are expected for replay outputs, nearest-stamp matching for topics."""
    topic = ref[len("topic:"):] if ref.startswith("topic:") else None
    if topic is None:
        path = Path(ref)
        if path.is_dir():
            csv_path = path / "commands.csv"
            if not csv_path.is_file():
                raise BagError(f"reference {ref!r} is a directory without commands.csv (not a replay output)")
            return read_commands_csv(csv_path), True
        if path.is_file() and path.suffix == ".csv":
            return read_commands_csv(path), True
        topic = ref
    if bag_path is None:
        raise BagError(f"reference {ref!r} is neither a replay output directory nor a .csv file")
    with BagReader(bag_path) as bag:
        if topic not in bag.topics:
            raise BagError(f"reference {ref!r} is neither a replay output directory nor a topic of bag "
                           f"{str(bag_path)!r} (topics: {', '.join(sorted(bag.topics)) or 'none'})")
        return read_command_topic(bag, topic), False


def main(argv: list[str] | None = None) -> int:
    """CLI: compare two replay outputs (or a replay output with a bag's command topic)."""
    ap = argparse.ArgumentParser(prog="python -m vla_ros.bag.compare", description=__doc__.splitlines()[0])
    ap.add_argument("run", help="replay output directory (or its commands.csv)")
    ap.add_argument("reference", help="replay output directory, commands.csv, or a command topic of --bag")
    ap.add_argument("--bag", help="bag holding the reference topic")
    ap.add_argument("--tolerance", default=None,
                    help="absolute, e.g. 1e-6 or 'trans=0.001,rot=0.01,gripper=0.05'")
    ap.add_argument("--max-violations", type=float, default=0.0,
                    help="allowed fraction of ticks over tolerance")
    ap.add_argument("--max-unmatched", type=float, default=0.0, help="allowed fraction of unmatched ticks")
    ap.add_argument("--json", help="write the report as JSON here")
    args = ap.parse_args(argv)
    try:
        tol = parse_tolerance(args.tolerance)
        run, _ = load_reference(args.run)
        ref, exact = load_reference(args.reference, args.bag)
    except (BagError, ValueError) as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    report = compare(run, ref, tol, exact, args.max_violations, args.max_unmatched, check_hold=exact)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return 1 if report.regression else 0


if __name__ == "__main__":
    sys.exit(main())
