"""PNG plot of a replay: the 7 DoF over time, HOLD shaded, interventions and instruction changes marked."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vla_ros.bag.commands import DOF_NAMES, DOF_UNITS
from vla_ros.control.safety import Intervention

# Everything the figure shows is deterministic; PNG metadata carries no date (only the software name).
PNG_METADATA = {"Software": "vla_ros replay"}


def plot_replay(path: str | Path, t_s: np.ndarray, values: np.ndarray, hold: np.ndarray,
                interventions: np.ndarray, instruction_changes: Sequence[tuple[float, str]] = (),
                title: str = "", reference: tuple[np.ndarray, np.ndarray] | None = None,
                reference_label: str = "reference") -> None:
    """Write the plot: t_s [N] seconds, values [N, 7], hold [N], interventions [N] bit masks.

    `reference` = (t_s [M], values [M, 7]) is drawn underneath in grey (compare mode).
    """
    import matplotlib  # lazy: matplotlib is heavy and only needed for the plot

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt  # lazy: after choosing the Agg backend

    t_s = np.asarray(t_s, np.float64)
    values = np.asarray(values, np.float64).reshape(-1, 7)
    hold = np.asarray(hold, bool)
    masks = np.asarray(interventions, np.int64)
    rules = [(int(rule), str(rule.name)) for rule in Intervention if np.any(masks & int(rule))]

    with plt.rc_context({"font.size": 8, "svg.hashsalt": "vla_ros"}):
        fig, axes = plt.subplots(8, 1, figsize=(11, 13), sharex=True,
                                 gridspec_kw={"height_ratios": [1] * 7 + [max(1.0, 0.22 * len(rules) + 0.4)]})
        for k, ax in enumerate(axes[:7]):
            if reference is not None and len(reference[0]):
                ax.plot(reference[0], np.asarray(reference[1])[:, k], color="0.6", lw=1.4,
                        label=reference_label, drawstyle="steps-post")
            ax.plot(t_s, values[:, k], color="C0", lw=1.0, label="command", drawstyle="steps-post")
            if hold.any():
                ax.fill_between(t_s, 0, 1, where=hold, step="post", color="0.85", alpha=0.6, lw=0,
                                transform=ax.get_xaxis_transform(), label="HOLD")
            changed = masks != 0
            if changed.any():
                ax.plot(t_s[changed], values[changed, k], ".", color="C3", ms=2.5, label="safety changed")
            ax.set_ylabel(f"{DOF_NAMES[k]} [{DOF_UNITS[k]}]")
            ax.grid(True, lw=0.3)
        safety_ax = axes[7]
        for row, (bit, _) in enumerate(rules):
            hits = t_s[(masks & bit) != 0]
            safety_ax.plot(hits, np.full(hits.shape, row), "|", color=f"C{row % 10}", ms=6)
        safety_ax.set_yticks(range(len(rules)), [name for _, name in rules])
        safety_ax.set_ylim(-0.8, max(len(rules), 1) - 0.2)
        safety_ax.set_ylabel("safety")
        safety_ax.set_xlabel("time since the bag's first message [s]")
        safety_ax.grid(True, axis="x", lw=0.3)
        if not rules:
            safety_ax.text(0.5, 0.5, "no safety interventions", transform=safety_ax.transAxes,
                           ha="center", va="center", color="0.4")
        for when, text in instruction_changes:
            for ax in axes:
                ax.axvline(when, color="C2", ls="--", lw=1.0)
            label = text if len(text) <= 40 else text[:37] + "..."
            axes[0].annotate(f"'{label}'" if text else "(hold: empty instruction)", (when, 1.0),
                             xycoords=("data", "axes fraction"), xytext=(2, 2), textcoords="offset points",
                             fontsize=7, color="C2", va="bottom", rotation=0, clip_on=False)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles:
            axes[0].legend(handles, labels, loc="upper right", fontsize=7, ncol=4, framealpha=0.8)
        if len(t_s):
            axes[-1].set_xlim(float(t_s[0]), float(t_s[-1]) if t_s[-1] > t_s[0] else float(t_s[0]) + 1.0)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.975))
        fig.savefig(path, format="png", dpi=90, metadata=PNG_METADATA)
        plt.close(fig)
