"""The plots of the run report and `pfdx compare`: reliability diagrams, a run history."""
from __future__ import annotations

import dataclasses
import io
from typing import Mapping, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Curve:
    """One model's calibration: per drawn bin, its mean prediction (x) and mean target
    (y: observed label, or true CVR). A curve without points keeps its colour slot."""

    label: str
    x: Sequence[float]
    y: Sequence[float]


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _png(plt, fig) -> bytes:
    buf = io.BytesIO()
    # No "Software" entry: the same figure gives the same bytes.
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def reliability_png(panels: Sequence[tuple[str, Sequence[Curve]]], title: str,
                    xlabel: str = "mean prediction in bin") -> bytes:
    """PNG: one panel per (y-axis label, curves), side by side on the same scale, each
    with the diagonal of perfect calibration; the legend on the first panel."""
    plt = _figure()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels) + 1, 6), squeeze=False)
    # tab20 has a colour for each of up to 20 curves; solid and dashed lines
    # alternate so neighbouring colours stay apart.
    colours = plt.get_cmap("tab20").colors
    top = 0.0
    for ax, (ylabel, curves) in zip(axes[0], panels):
        for i, curve in enumerate(curves):
            x, y = np.asarray(curve.x), np.asarray(curve.y)
            if not x.size:
                continue
            top = max(top, x.max(), y.max())
            ax.plot(x, y, marker="o", markersize=3, linewidth=1.2, label=curve.label,
                    color=colours[(2 * i) % 20 + (i // 10) % 2],
                    linestyle="-" if i % 2 == 0 else "--")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[0]:
        lim = min(1.0, top * 1.05) or 1.0  # nothing drawn: the unit square
        ax.plot([0, lim], [0, lim], color="black", linestyle="--", linewidth=0.8,
                label="perfect calibration")
        ax.set_xlim(0, lim)
        ax.set_ylim(0, lim)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    return _png(plt, fig)


def history_png(runs: Sequence[str], series: Mapping[str, Sequence[float | None]],
                title: str) -> bytes:
    """PNG: one panel per named series (e.g. AUC, ECE) over the runs, oldest first;
    a missing value (None) leaves a gap."""
    plt = _figure()
    fig, axes = plt.subplots(len(series), 1, figsize=(6, 2 * len(series)), sharex=True,
                             squeeze=False)
    x = range(len(runs))
    for ax, (name, values) in zip(axes[:, 0], series.items()):
        ax.plot(x, [float("nan") if v is None else v for v in values], "o-")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xticks(list(x))
    axes[-1, 0].set_xticklabels(runs, rotation=45, ha="right", fontsize=7)
    axes[0, 0].set_title(title)
    fig.tight_layout()
    return _png(plt, fig)
