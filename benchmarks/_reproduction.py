"""Shared helpers of the reproduction benchmarks (lenet, mnist1d).

Kept free of Keras imports at module level: `use_backend` must run before
Keras is imported, since Keras reads KERAS_BACKEND once.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "img"
BACKENDS = ("jax", "tensorflow", "torch")


def use_backend(backend: str | None) -> str:
    """Re-executes this script with KERAS_BACKEND=backend when it differs.

    Returns the backend in use (the environment's, else "jax").
    """
    current = os.environ.get("KERAS_BACKEND")
    if backend is not None and backend != current:
        env = {**os.environ, "KERAS_BACKEND": backend}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if current is None:
        os.environ["KERAS_BACKEND"] = "jax"
    if os.environ["KERAS_BACKEND"] == "torch":
        import torch  # noqa: F401  (torch before tensorflow, see DESIGN.md)
    return os.environ["KERAS_BACKEND"]


def environment() -> dict:
    """Where and how a run happened: for the JSON next to its numbers."""
    import keras

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
        "command": " ".join(
            shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv]
        ),
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _stats(values: list[float]) -> tuple[float, float, float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return (math.nan,) * 4
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / max(1, len(values) - 1)
    return mean, math.sqrt(var), min(values), max(values)


def series(runs: list[dict], metric: str, control: str | None = None):
    """Per round: (% remaining, mean, std, min, max) of `metric` over runs.

    `runs` are `SearchResult.to_dict()` outputs of searches with the same
    schedule (one per seed).
    """
    n = min(len(r["rounds"]) for r in runs)
    out = []
    for i in range(n):
        rounds = [r["rounds"][i] for r in runs]
        if control is None:
            values = [r["metrics"].get(metric) for r in rounds]
        elif i == 0:
            values = [r["metrics"].get(metric) for r in rounds]  # dense
        else:
            values = [r["controls"].get(control, {}).get(metric) for r in rounds]
        remaining = 100 * sum(r["remaining"] for r in rounds) / len(rounds)
        out.append((remaining, *_stats(values)))
    return out


def early_stops(runs: list[dict], control: str | None = None):
    """Per round: mean early-stop value over runs."""
    n = min(len(r["rounds"]) for r in runs)
    out = []
    for i in range(n):
        if control is None or i == 0:
            values = [r["rounds"][i]["early_stop"] for r in runs]
        else:
            values = [
                r["rounds"][i]["controls_early_stop"].get(control) for r in runs
            ]
        out.append(_stats(values)[0])
    return out


def plot(
    runs: list[dict],
    path: Path,
    *,
    metric: str,
    controls: list[str],
    labels: dict[str, str],
    title: str,
    ylabel: str,
) -> Path:
    """Mean over seeds with a min-max band, against % of weights remaining."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=120)
    for i, control in enumerate([None, *controls]):
        rows = [r for r in series(runs, metric, control) if not math.isnan(r[1])]
        xs = [r[0] for r in rows]
        mean = [100 * r[1] for r in rows]
        low = [100 * r[3] for r in rows]
        high = [100 * r[4] for r in rows]
        name = labels.get(control or "ticket", control or "ticket")
        style = "o-" if control is None else "s--"
        ax.plot(xs, mean, style, color=f"C{i}", label=name, markersize=4)
        if len(runs) > 1:
            ax.fill_between(xs, low, high, color=f"C{i}", alpha=0.15)
    dense = series(runs, metric)[0][1]
    ax.axhline(100 * dense, color="gray", linestyle=":", label="dense (mean)")
    xs = [r[0] for r in series(runs, metric)]
    from keras_lottery.search.plot import percent_remaining_axis  # after the backend

    percent_remaining_axis(ax, xs, max_ticks=9)
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    seeds = f"{len(runs)} seed{'s' if len(runs) > 1 else ''}"
    band = ", band: min-max" if len(runs) > 1 else ""
    ax.set_title(f"{title} ({seeds}{band})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def plot_early_stop(
    runs: list[dict], path: Path, *, controls: list[str], labels: dict[str, str],
    title: str,
) -> Path:
    """The early-stop iteration (mean over seeds) against % remaining."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.8, 4.4), dpi=120)
    xs = [r[0] for r in series(runs, "loss")]
    for i, control in enumerate([None, *controls]):
        stops = early_stops(runs, control)
        pts = [(x, y) for x, y in zip(xs, stops) if not math.isnan(y)]
        if control is not None:
            pts = pts[1:]  # round 0 is the dense network, not a control
        style = "o-" if control is None else "s--"
        name = labels.get(control or "ticket", control or "ticket")
        if pts:
            ax.plot(*zip(*pts), style, color=f"C{i}", label=name, markersize=4)
    from keras_lottery.search.plot import percent_remaining_axis  # after the backend

    percent_remaining_axis(ax, xs, max_ticks=9)
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_ylabel("early-stop iteration (min. validation loss)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def percent_cell(stats: tuple, seeds: int) -> str:
    """A `series` row as "mean ± std" in percent ("-" where nothing ran)."""
    mean, std = stats[1], stats[2]
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if seeds > 1 else "")


def markdown_table(
    runs: list[dict], *, metric: str, controls: list[str], labels: dict[str, str]
) -> str:
    """Rounds as a Markdown table: mean ± std over seeds, in percent."""

    def cell(stats):
        return percent_cell(stats, len(runs))

    cols = [None, *controls]
    header = ["round", "% remaining"] + [
        labels.get(c or "ticket", c or "ticket") for c in cols
    ] + [f"early stop ({labels.get(c or 'ticket', c or 'ticket')})" for c in cols]
    data = {c: series(runs, metric, c) for c in cols}
    stops = {c: early_stops(runs, c) for c in cols}
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" for _ in header) + "|",
    ]
    for i, row in enumerate(data[None]):
        cells = [str(i), f"{row[0]:.2f}"]
        cells += [cell(data[c][i]) if (i or c is None) else "-" for c in cols]
        cells += [
            "-" if math.isnan(stops[c][i]) or (i == 0 and c is not None)
            else f"{stops[c][i]:.0f}"
            for c in cols
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
