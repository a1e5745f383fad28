"""Plots for run reports: one histogram per signal with its threshold marked."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa


def signal_histograms(signals: pa.Table, thresholds: dict[str, object], path: Path, title: str = "") -> Path | None:
    columns = [c for c in signals.column_names if c in thresholds]
    if not columns or signals.num_rows == 0:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(columns))
    rows = math.ceil(len(columns) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    for ax, column in zip(axes.flat, columns):
        values = signals.column(column).to_numpy(zero_copy_only=False)
        values = values[np.isfinite(values)]
        if values.size:
            log = values.min() >= 0 and values.max() > 50 * max(np.median(values), 1e-9)
            bins = np.logspace(math.log10(max(values.min(), 1)), math.log10(values.max() + 1), 40) if log else 40
            ax.hist(values, bins=bins, color="#4c72b0")
            if log:
                ax.set_xscale("log")
        for t in _threshold_values(thresholds.get(column)):
            ax.axvline(t, color="#c44e52", linestyle="--", label=f"threshold {t:g}")
        if _threshold_values(thresholds.get(column)):
            ax.legend(fontsize=8)
        ax.set_title(f"{column} (n={values.size})", fontsize=10)
        ax.set_ylabel("documents")
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _threshold_values(threshold) -> list[float]:
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool):
        return [float(threshold)]
    if isinstance(threshold, (tuple, list)):
        return [float(t) for t in threshold if isinstance(t, (int, float))]
    return []
