"""Plots of searches: a metric against % of weights remaining.

matplotlib is imported only when a plot is drawn (it is the `plot` extra).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from keras_lottery._internal.io import atomic_write


def percent_remaining_axis(ax, xs, max_ticks: int = 8) -> None:
    """Log x axis of % weights remaining, decreasing left to right, with
    at most `max_ticks` labels taken from the values plotted (as in
    Frankle & Carbin 2019's figures).

    Example:

    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import matplotlib.pyplot as plt
    >>> from keras_lottery.search.plot import percent_remaining_axis
    >>> fig, ax = plt.subplots()
    >>> percent_remaining_axis(ax, [100.0, 51.3, 21.1, 7.0])
    >>> [t.get_text() for t in ax.get_xticklabels()]
    ['100', '51.3', '21.1', '7']
    >>> plt.close(fig)
    """
    ax.set_xscale("log")
    ax.set_xlim(max(xs) * 1.15, min(xs) / 1.15)
    ticks = sorted({round(x, 1) for x in xs}, reverse=True)
    ticks = ticks[:: max(1, math.ceil(len(ticks) / max_ticks))]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()


def _draw_spread(ax, result, metric, control, color) -> None:
    bars = [
        (100 * record.remaining, *bar)
        for record, bar in zip(result.rounds, result.spread(metric, control))
        if bar is not None
    ]
    if not bars:
        return
    xs, lows, highs = zip(*bars)
    mids = [(lo + hi) / 2 for lo, hi in zip(lows, highs)]
    ax.errorbar(
        xs, mids, yerr=[[m - lo for m, lo in zip(mids, lows)],
                        [hi - m for m, hi in zip(mids, highs)]],
        fmt="none", ecolor=color, elinewidth=1, capsize=3,
    )


def plot_result(
    result, path: str | os.PathLike, metric: str, title: str | None = None
) -> Path:
    """Writes `SearchResult.plot`'s PNG: the tickets, each control, the
    dense network as a dotted line, and the spread across trials where the
    result has one (`result.spread`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    xs = [100 * r.remaining for r in result.rounds]
    ys = [r.metrics.get(metric) for r in result.rounds]
    ax.plot(xs, ys, "o-", label="lottery ticket", color="C0")
    _draw_spread(ax, result, metric, None, "C0")
    for i, control in enumerate(result.control_names):
        pts = [
            (100 * r.remaining, r.controls[control].get(metric))
            for r in result.rounds if control in r.controls
        ]
        pts = [(x, y) for x, y in pts if y is not None]
        if ys[0] is not None:
            pts = [(xs[0], ys[0]), *pts]
        if pts:
            ax.plot(*zip(*pts), "s--", label=control.replace("_", " "),
                    color=f"C{i + 1}")
            _draw_spread(ax, result, metric, control, f"C{i + 1}")
    if ys[0] is not None:
        ax.axhline(ys[0], color="gray", linestyle=":", label="dense")
    percent_remaining_axis(ax, xs)
    ax.set_xlabel("% of weights remaining")
    ax.set_ylabel(metric)
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title or "Accuracy vs. sparsity")
    fig.tight_layout()
    path = atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def plot_overlap(
    result, path: str | os.PathLike, *, title: str | None = None
) -> Path:
    """Writes a PNG heatmap of the Jaccard overlap between rounds' masks.

    Rounds x rounds, each labelled with its % of weights remaining: how
    much of one round's ticket the next rounds keep (see
    `keras_lottery.mask_overlap`). Needs matplotlib (the `plot` extra) and
    the masks of every round (a search run with `directory=`, or held in
    memory).

    Args:
        result: A `SearchResult` holding its rounds' masks.
        path: The `.png` file to write.
        title: The plot title.

    Returns:
        The path written.

    Raises:
        ValueError: `path` does not end in `.png`, or the result does not
            hold the masks of every round.

    Example:

    >>> import numpy as np, keras_lottery as kl
    >>> masks = {0: {"fc/kernel": np.array([1, 1, 1, 1])},
    ...          1: {"fc/kernel": np.array([1, 1, 1, 0])},
    ...          2: {"fc/kernel": np.array([1, 1, 0, 0])}}
    >>> result = kl.SearchResult(
    ...     [kl.RoundRecord(r, float(m["fc/kernel"].mean()), {}, {})
    ...      for r, m in masks.items()], masks=masks)
    >>> result.overlap_matrix().round(2).tolist()
    [[1.0, 0.75, 0.5], [0.75, 1.0, 0.67], [0.5, 0.67, 1.0]]
    >>> kl.plot_overlap(result, "overlap.png").name
    'overlap.png'
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            "plot_overlap writes a PNG; give a path ending in .png. "
            f"Received: {path}"
        )
    if not callable(getattr(result, "overlap_matrix", None)):
        raise TypeError(
            "plot_overlap draws a SearchResult (as lottery_search returns). "
            f"Received: {type(result).__name__}."
        )
    matrix = result.overlap_matrix()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(matrix)
    labels = [f"{r.round} ({100 * r.remaining:.3g}%)" for r in result.rounds]
    size = min(12.0, 2.5 + 0.5 * n)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=120)
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="viridis")
    fig.colorbar(image, ax=ax, label="Jaccard overlap of kept weights")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("round (% of weights remaining)")
    ax.set_ylabel("round (% of weights remaining)")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center",
                        color="black" if matrix[i, j] > 0.6 else "white",
                        fontsize=8)
    ax.set_title(title or "Mask overlap between rounds")
    fig.tight_layout()
    path = atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path
