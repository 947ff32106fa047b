"""How long each simulated inference of a replay takes on the bag's clock (`--latency-model`)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from vla_ros.bag.io import NS_PER_S

MAX_LATENCY_S = 600.0


@dataclass(frozen=True)
class LatencyModel:
    """The latency of every simulated policy call.

    zero: the chunk is there the instant the image is; fixed:S: every call takes S seconds;
    trace:PATH: call i takes the i-th latency (cyclically) of an earlier replay's inferences.csv (or a
    CSV with a latency_s column, or a JSON list): a measured run, replayed deterministically;
    measured: each call takes its measured wall time (rounded to 0.1 ms; NOT deterministic: the run's
    inferences.csv can be fed back with trace:).
    """

    kind: str = "zero"
    fixed_s: float = 0.0
    trace: tuple[float, ...] = ()
    source: str = ""

    @staticmethod
    def parse(spec: str) -> LatencyModel:
        """zero | fixed:S | measured | trace:PATH; ValueError with the accepted forms otherwise."""
        spec = (spec or "zero").strip()
        if spec == "zero":
            return LatencyModel()
        if spec == "measured":
            return LatencyModel("measured")
        if spec.startswith("fixed:"):
            try:
                value = float(spec[6:])
            except ValueError:
                value = float("nan")
            if not (math.isfinite(value) and 0.0 <= value <= MAX_LATENCY_S):
                raise ValueError(f"latency model {spec!r}: S must be a number of seconds in [0, 600]")
            return LatencyModel("fixed", fixed_s=value)
        if spec.startswith("trace:"):
            path = spec[6:]
            return LatencyModel("trace", trace=read_latency_trace(path), source=path)
        raise ValueError(f"latency model {spec!r}: use zero, fixed:SECONDS, measured or trace:PATH")

    @property
    def deterministic(self) -> bool:
        return self.kind != "measured"

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.fixed_s:g}"
        if self.kind == "trace":
            return f"trace:{Path(self.source).name} ({len(self.trace)} calls)"
        return self.kind

    def latency_ns(self, index: int, measured_s: float) -> int:
        """Latency of call `index` [ns] (measured_s is the wall time the call took)."""
        if self.kind == "fixed":
            seconds = self.fixed_s
        elif self.kind == "trace":
            seconds = self.trace[index % len(self.trace)]
        elif self.kind == "measured":
            seconds = round(measured_s, 4)
        else:
            seconds = 0.0
        return int(round(seconds * NS_PER_S))


def read_latency_trace(path: str) -> tuple[float, ...]:
    """Latencies [s] from a replay output directory, a CSV with a latency_s column or a JSON list."""
    p = Path(path)
    if p.is_dir():
        p = p / "inferences.csv"
    try:
        if p.suffix == ".json":
            values = [float(v) for v in json.loads(p.read_text())]
        else:
            with open(p, newline="", encoding="utf-8") as f:
                values = [float(row["latency_s"]) for row in csv.DictReader(f)]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"latency trace {path!r}: cannot read latencies ({exc}); expected a replay output "
                         "directory, a CSV with a latency_s column or a JSON list of seconds") from None
    if not values or not all(math.isfinite(v) and 0.0 <= v <= MAX_LATENCY_S for v in values):
        raise ValueError(f"latency trace {path!r}: needs at least one latency, each in [0, 600] s")
    return tuple(values)
