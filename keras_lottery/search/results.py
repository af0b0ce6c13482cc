"""`SearchResult`: the record of a lottery-ticket search, its table and plot."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np

# Preferred metrics for "accuracy vs. sparsity", best first.
PLOT_METRICS = (
    "test_accuracy",
    "test_acc",
    "val_accuracy",
    "val_acc",
    "accuracy",
    "test_loss",
    "val_loss",
    "loss",
)


def percent_remaining_axis(ax, xs, max_ticks: int = 8) -> None:
    """Log x axis of % weights remaining, decreasing left to right, with
    at most `max_ticks` labels taken from the values plotted (as in
    Frankle & Carbin 2019's figures)."""
    ax.set_xscale("log")
    ax.set_xlim(max(xs) * 1.15, min(xs) / 1.15)
    ticks = sorted({round(x, 1) for x in xs}, reverse=True)
    ticks = ticks[:: max(1, math.ceil(len(ticks) / max_ticks))]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}" for t in ticks])
    ax.minorticks_off()


# ------------------------------------------------------------ atomic files
def atomic_write(path: str | os.PathLike, write: Callable[[io.IOBase], None]) -> None:
    """Writes a file so that it is either complete or absent.

    `write(f)` fills a temporary file in the same directory, which is then
    flushed, synced and renamed over `path` (atomic on POSIX).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_save_arrays(path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load_arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def _clean(value):
    """Plain-Python, JSON-safe copy of a metric value (NaN becomes None)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


def text_table(rows: list[dict]) -> str:
    """`rows` (dicts with the same keys) as an aligned text table.

    None shows as `-`, floats with 4 decimals (`remaining_percent`, shown
    as `% left`, with 2; `seconds` with 1), anything else as `str`.
    """
    if not rows:
        return "(no rounds)"
    headers = list(rows[0])

    def fmt(key, value):
        if value is None:
            return "-"
        if key == "remaining_percent":
            return f"{value:.2f}"
        if key == "seconds":
            return f"{value:.1f}"
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    cells = [[fmt(h, row[h]) for h in headers] for row in rows]
    names = ["% left" if h == "remaining_percent" else h for h in headers]
    widths = [
        max(len(names[i]), *(len(c[i]) for c in cells))
        for i in range(len(headers))
    ]
    line = "  ".join(n.rjust(w) for n, w in zip(names, widths))
    body = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, "-" * len(line), *body])


# ------------------------------------------------------------------ record
@dataclasses.dataclass
class RoundRecord:
    """What one round of a search produced.

    Attributes:
        round: 0 for the dense network, then one per pruning step.
        remaining: Fraction of the prunable weights remaining (1.0 dense).
        layers: Per weight `"layer/weight"`: `[remaining, total]` counts.
        metrics: The `fit_fn` metrics (last epoch) and `eval_fn` metrics
            (prefixed `test_`).
        early_stop: Epoch (1-based) of the minimum validation loss, or the
            `"early_stop"` value `fit_fn` returned; None when unknown.
        controls: Per control (`"reinit"`, `"random_prune"`), its metrics.
        controls_early_stop: Per control, its early-stop epoch.
        seconds: Wall time of the round, controls included.
    """

    round: int
    remaining: float
    layers: dict[str, list[int]]
    metrics: dict[str, float]
    early_stop: int | None = None
    controls: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    controls_early_stop: dict[str, int | None] = dataclasses.field(
        default_factory=dict
    )
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return _clean(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict) -> RoundRecord:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


# ------------------------------------------------------------------ result
class SearchResult:
    """The rounds of a lottery-ticket search, with table, files and plot.

    Returned by `lottery_search`; `SearchResult.load(directory)` reads one
    back from a search directory.

    Attributes:
        rounds: One `RoundRecord` per round, round 0 (dense) first.
        args: The search's arguments (as saved in its directory).
        directory: The search directory, or None.

    Example:

    >>> from keras_lottery.search.results import RoundRecord, SearchResult
    >>> result = SearchResult([
    ...     RoundRecord(0, 1.0, {}, {"test_accuracy": 0.97}),
    ...     RoundRecord(1, 0.8, {}, {"test_accuracy": 0.975}),
    ...     RoundRecord(2, 0.64, {}, {"test_accuracy": 0.95})])
    >>> result.best_ticket(tolerance=0.01).round
    1
    """

    def __init__(
        self,
        rounds: list[RoundRecord],
        args: dict | None = None,
        *,
        masks: dict[int, dict[str, np.ndarray]] | None = None,
        weights: dict[int, list[np.ndarray]] | None = None,
        rewind_weights: list[np.ndarray] | None = None,
        model: keras.Model | None = None,
        directory: str | os.PathLike | None = None,
    ):
        self.rounds = list(rounds)
        self.args = dict(args or {})
        self.directory = None if directory is None else Path(directory)
        self._masks = masks if masks is not None else {}
        self._weights = weights if weights is not None else {}
        self._rewind_weights = rewind_weights
        self._model = model

    # ----------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.rounds)

    def __getitem__(self, index: int) -> RoundRecord:
        return self.rounds[index]

    @property
    def metric_names(self) -> list[str]:
        names: list[str] = []
        for record in self.rounds:
            names += [k for k in record.metrics if k not in names]
        return names

    @property
    def control_names(self) -> list[str]:
        names: list[str] = []
        for record in self.rounds:
            names += [k for k in record.controls if k not in names]
        return names

    def default_metric(self) -> str:
        """The metric plots and `best_ticket` use unless told otherwise."""
        names = self.metric_names
        for name in PLOT_METRICS:
            if name in names:
                return name
        if not names:
            raise ValueError("This search recorded no metrics.")
        return names[0]

    def _check_metric(self, metric):
        metric = metric or self.default_metric()
        if metric not in self.metric_names:
            raise ValueError(
                f"Unknown metric {metric!r}. Recorded metrics: "
                f"{self.metric_names}."
            )
        return metric

    def masks(self, round: int) -> dict[str, np.ndarray]:
        """The masks used in a round (all ones in round 0)."""
        self._check_round(round)
        if round not in self._masks and self.directory is not None:
            path = self.directory / f"round_{round:03d}.masks.npz"
            if path.exists():
                self._masks[round] = load_arrays(path)
        if round not in self._masks:
            raise ValueError(f"The masks of round {round} were not kept.")
        return {k: v.astype("float32") for k, v in self._masks[round].items()}

    def _check_round(self, round):
        known = [r.round for r in self.rounds]
        if round not in known:
            raise ValueError(f"No round {round} in this search. Rounds: {known}.")

    # ------------------------------------------------------------ tickets
    def best_ticket(
        self, tolerance: float = 0.0, metric: str | None = None
    ) -> RoundRecord:
        """The sparsest round within `tolerance` of the dense round.

        Args:
            tolerance: How far below the dense value the metric may fall
                (in the metric's units, e.g. 0.005 for half a point of
                accuracy). For a loss (name containing "loss"), how far
                above.
            metric: The metric to compare; `default_metric()` when None.

        Returns:
            The `RoundRecord` of that round (round 0 if none is sparser).
            Pass it to `ticket` for the model:
            `result.ticket(result.best_ticket(0.005), trained=True)`.
        """
        metric = self._check_metric(metric)
        dense = self.rounds[0].metrics.get(metric)
        lower_is_better = "loss" in metric
        best = self.rounds[0]
        for record in self.rounds[1:]:
            value = record.metrics.get(metric)
            if value is None or dense is None:
                continue
            ok = (
                value <= dense + tolerance
                if lower_is_better
                else value >= dense - tolerance
            )
            if ok and record.remaining < best.remaining:
                best = record
        return best

    def ticket(
        self, round: int | RoundRecord, *, trained: bool = False
    ) -> keras.Model:
        """A copy of the searched model with the mask of round `round`.

        Args:
            round: The round, or its `RoundRecord` (as `best_ticket()`
                returns).
            trained: False: the weights at the rewind point, ready to train
                (the lottery ticket itself); True: the weights the round
                ended with.

        Returns:
            A new wrapped `keras.Model` (uncompiled).
        """
        if isinstance(round, RoundRecord):
            round = round.round
        self._check_round(round)
        if self._model is None:
            raise ValueError(
                "This result holds no model. Pass the (wrapped) model of the "
                "same architecture: SearchResult.load(directory, model=...)."
            )
        from keras_lottery.core.model import copy_model
        from keras_lottery.pruning.criteria import set_masks

        model = copy_model(self._model)
        # The round's masks first: every weight written afterwards is masked
        # by them (a pruned weight cannot be written back).
        set_masks(model, self.masks(round))
        if trained:
            weights = self._weights.get(round)
            if weights is None and self.directory is not None:
                path = self.directory / f"round_{round:03d}.weights.npz"
                if path.exists():
                    data = load_arrays(path)
                    weights = [data[f"w{i}"] for i in range(len(data))]
            if weights is None:
                raise ValueError(f"The trained weights of round {round} were not kept.")
            model.set_weights(weights)
            return model
        rewind_weights = self._rewind_weights
        if rewind_weights is None and self.directory is not None:
            data = load_arrays(self.directory / "rewind.npz")
            rewind_weights = [data[f"w{i}"] for i in range(len(data))]
        if rewind_weights is None:
            raise ValueError("The rewind point of this search was not kept.")
        for variable, value in zip(model.trainable_weights, rewind_weights):
            variable.assign(value)
        return model

    # --------------------------------------------------------------- text
    def _columns(self):
        metrics = self.metric_names
        # Controls show the accuracy-like metrics only (or the default one),
        # to keep the table readable; to_json keeps all of them.
        shown = [m for m in metrics if "acc" in m] or [self.default_metric()]
        controls = [
            (c, m) for c in self.control_names for m in shown
            if any(m in r.controls.get(c, {}) for r in self.rounds)
        ]
        return metrics, controls

    def rows(self) -> list[dict]:
        """The table as a list of flat dicts (the CSV rows)."""
        metrics, controls = self._columns()
        out = []
        for r in self.rounds:
            row = {
                "round": r.round,
                "remaining_percent": 100 * r.remaining,
                **{m: r.metrics.get(m) for m in metrics},
                "early_stop": r.early_stop,
            }
            for c, m in controls:
                row[f"{c}/{m}"] = r.controls.get(c, {}).get(m)
            for c in self.control_names:
                row[f"{c}/early_stop"] = r.controls_early_stop.get(c)
            row["seconds"] = r.seconds
            out.append(row)
        return out

    def table(self) -> str:
        """The rounds as an aligned text table."""
        return text_table(self.rows())

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"<SearchResult: {len(self.rounds)} rounds>"

    # ---------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        return {
            "args": _clean(self.args),
            "rounds": [r.to_dict() for r in self.rounds],
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON; also written (atomically) to `path` if given."""
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(cls, source: str | os.PathLike) -> SearchResult:
        """Reads `to_json` output: a JSON string or the path of a file."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        data = json.loads(text)
        return cls(
            [RoundRecord.from_dict(r) for r in data.get("rounds", [])],
            data.get("args"),
        )

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV text; also written to `path` if given."""
        rows = self.rows()
        buffer = io.StringIO()
        if rows:
            writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        text = buffer.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def load(
        cls, directory: str | os.PathLike, model: keras.Model | None = None
    ) -> SearchResult:
        """Reads the finished rounds of a search directory.

        Args:
            directory: A `lottery_search(..., directory=...)` directory.
            model: Optionally, a wrapped model of the same architecture, so
                that `ticket()` can build models.
        """
        directory = Path(directory)
        meta = directory / "search.json"
        if not meta.is_file():
            raise FileNotFoundError(
                f"{directory} is not a search directory: it has no "
                "search.json. Pass the `directory` given to lottery_search."
            )
        args = json.loads(meta.read_text(encoding="utf-8"))
        rounds = [
            RoundRecord.from_dict(json.loads(p.read_text(encoding="utf-8")))
            for p in sorted(directory.glob("round_[0-9][0-9][0-9].json"))
        ]
        return cls(rounds, args, model=model, directory=directory)

    # --------------------------------------------------------------- plot
    def plot(
        self,
        path: str | os.PathLike,
        metric: str | None = None,
        *,
        title: str | None = None,
    ) -> Path:
        """Writes a PNG of `metric` against % of weights remaining.

        As in Frankle & Carbin (2019): a log x axis, decreasing from 100%,
        the tickets, each control, and the dense network as a dashed line.

        Args:
            path: The `.png` file to write.
            metric: The metric; `default_metric()` when None.
            title: The plot title.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(
                f"plot writes a PNG; give a path ending in .png. Received: {path}"
            )
        metric = self._check_metric(metric)
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
        xs = [100 * r.remaining for r in self.rounds]
        ys = [r.metrics.get(metric) for r in self.rounds]
        ax.plot(xs, ys, "o-", label="lottery ticket", color="C0")
        self._draw_spread(ax, metric, None, "C0")
        for i, control in enumerate(self.control_names):
            pts = [
                (100 * r.remaining, r.controls[control].get(metric))
                for r in self.rounds if control in r.controls
            ]
            pts = [(x, y) for x, y in pts if y is not None]
            if ys[0] is not None:
                pts = [(xs[0], ys[0]), *pts]
            if pts:
                ax.plot(*zip(*pts), "s--", label=control.replace("_", " "),
                        color=f"C{i + 1}")
                self._draw_spread(ax, metric, control, f"C{i + 1}")
        if ys[0] is not None:
            ax.axhline(ys[0], color="gray", linestyle=":", label="dense")
        percent_remaining_axis(ax, xs)
        ax.set_xlabel("% of weights remaining")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title(title or "Accuracy vs. sparsity")
        fig.tight_layout()
        atomic_write(path, lambda f: fig.savefig(f, format="png"))
        plt.close(fig)
        return path

    def spread(
        self, metric: str, control: str | None = None
    ) -> list[tuple[float, float] | None]:
        """Per round, the `(low, high)` range of `metric` across trials.

        A single search has no spread: every entry is None.
        `keras_lottery.trials.MergedResult` (several seeds merged) returns
        the minimum and maximum, which `plot` draws as error bars.

        Args:
            metric: The metric.
            control: A control's name, or None for the tickets.
        """
        return [None] * len(self.rounds)

    def _draw_spread(self, ax, metric, control, color) -> None:
        bars = [
            (100 * record.remaining, *bar)
            for record, bar in zip(self.rounds, self.spread(metric, control))
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
