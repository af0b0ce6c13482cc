"""`SearchResult`: the rounds of a lottery-ticket search, its tickets and table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import numpy as np

from keras_lottery._internal.io import atomic_write_text, csv_text, text_table
from keras_lottery.pruning.overlap import MaskOverlap, jaccard_matrix, mask_overlap
from keras_lottery.search.directory import SearchDirectory
from keras_lottery.search.records import RoundRecord, clean
from keras_lottery.search.tickets import TicketStore

# Preferred metrics for "accuracy vs. sparsity", best first.
PLOT_METRICS = ("test_accuracy", "test_acc", "val_accuracy", "val_acc",
                "accuracy", "test_loss", "val_loss", "loss")
# How the search tables show their own columns.
TABLE_FORMATS = {"remaining_percent": ".2f", "seconds": ".1f"}
TABLE_TITLES = {"remaining_percent": "% left"}

__all__ = ["RoundRecord", "SearchResult"]


class SearchResult:
    """The rounds of a lottery-ticket search, with its tickets, table and plot.

    Returned by `lottery_search`; `SearchResult.load(directory)` reads one
    back from a search directory, `SearchResult.from_json` from `to_json`.

    Attributes:
        rounds: One `RoundRecord` per round, round 0 (dense) first.
        args: The search's arguments (as saved in its directory).
        directory: The search directory, or None.

    Example:

    >>> from keras_lottery import RoundRecord, SearchResult
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
        self._kept = TicketStore(
            masks=masks, weights=weights, rewind_weights=rewind_weights,
            model=model, directory=directory,
        )

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

    def _check_round(self, round) -> int:
        if isinstance(round, RoundRecord):
            round = round.round
        known = [r.round for r in self.rounds]
        if round not in known:
            raise ValueError(f"No round {round!r} in this search. Rounds: {known}.")
        return round

    def masks(self, round: int | RoundRecord) -> dict[str, np.ndarray]:
        """The masks used in a round (all ones in round 0), by
        `"layer/weight"` as named when the round ran."""
        return self._kept.round_masks(self._check_round(round))

    def mask_overlap(self, round_a: int | RoundRecord,
                     round_b: int | RoundRecord) -> MaskOverlap:
        """`keras_lottery.mask_overlap` of two rounds' masks: how many of
        round b's kept weights round a kept, against chance. Raises
        ValueError, as `ticket` does, for masks this result does not hold."""
        return mask_overlap(self.masks(round_a), self.masks(round_b))

    def overlap_matrix(self) -> np.ndarray:
        """The Jaccard overlap of every two rounds' masks, rounds x rounds
        (`keras_lottery.plot_overlap` draws it)."""
        return jaccard_matrix([self.masks(r) for r in self.rounds])

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
            The `RoundRecord` of that round (round 0 if none is sparser):
            its numbers. `best_model(tolerance)` gives its trained model.

        Example:

        >>> from keras_lottery import RoundRecord, SearchResult
        >>> result = SearchResult([RoundRecord(0, 1.0, {}, {"loss": 0.30}),
        ...                        RoundRecord(1, 0.5, {}, {"loss": 0.31})])
        >>> result.best_ticket().round, result.best_ticket(0.02).round
        (0, 1)
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

    def best_model(
        self,
        tolerance: float = 0.0,
        metric: str | None = None,
        *,
        model: keras.Model | None = None,
    ) -> keras.Model:
        """The winning model: the best ticket, with its trained weights.

        The same as `ticket(best_ticket(tolerance, metric), trained=True)`.

        Args:
            tolerance: As for `best_ticket`.
            metric: As for `best_ticket`.
            model: A wrapped model of the searched architecture, for a
                result that holds none (see `ticket`).

        Returns:
            A new wrapped `keras.Model` (uncompiled); `keras_lottery.strip`
            gives the plain Keras model to save or export.

        Example:

        >>> import keras, numpy as np, keras_lottery as kl
        >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
        ...                                   keras.layers.Dense(2)]))
        >>> model.compile("sgd", "mse")
        >>> x, y = np.ones((8, 4)), np.ones((8, 2))
        >>> result = kl.lottery_search(
        ...     model, lambda m: m.fit(x, y, verbose=0), rounds=2, verbose=0)
        >>> winner = result.best_model(tolerance=1.0, metric="loss")
        >>> round(kl.summary(winner, print_fn=None).sparsity, 3)
        0.25
        """
        record = self.best_ticket(tolerance, metric)
        return self.ticket(record, trained=True, model=model)

    def ticket(
        self,
        round: int | RoundRecord,
        *,
        trained: bool = False,
        model: keras.Model | None = None,
    ) -> keras.Model:
        """A copy of the searched model with the mask of round `round`.

        Args:
            round: The round, or its `RoundRecord` (as `best_ticket()`
                returns).
            trained: False: the weights at the rewind point, ready to train
                (the lottery ticket itself); True: the weights the round
                ended with.
            model: A wrapped model of the searched architecture to copy;
                needed where this result holds no model (read with `load`
                or `from_json` without one). Its layer names may differ:
                masks and weights are matched by order.

        Returns:
            A new wrapped `keras.Model` (uncompiled).

        Raises:
            ValueError: For an unknown round, no model, or masks and weights
                this result does not hold (the message says where to get
                them).
        """
        return self._kept.build(self._check_round(round), trained=trained,
                                model=model)

    # --------------------------------------------------------------- text
    def _cells(self, index: int, record: RoundRecord) -> dict:
        """A row's metric columns (`MergedResult`: `n`, mean and spread)."""
        return {m: record.metrics.get(m) for m in self.metric_names}

    def rows(self) -> list[dict]:
        """The table as a list of flat dicts (the CSV rows): per round, its
        round, % left, metrics, early stop, controls and seconds."""
        metrics = self.metric_names
        # Controls show the accuracy-like metrics only (or the default one),
        # to keep the table readable; to_json keeps all of them.
        shown = [m for m in metrics if "acc" in m] or (
            [self.default_metric()] if metrics else [])
        controls = [(c, m) for c in self.control_names for m in shown
                    if any(m in r.controls.get(c, {}) for r in self.rounds)]
        out = []
        for i, r in enumerate(self.rounds):
            row = {"round": r.round, "remaining_percent": 100 * r.remaining,
                   **self._cells(i, r), "early_stop": r.early_stop}
            for c, m in controls:
                row[f"{c}/{m}"] = r.controls.get(c, {}).get(m)
            for c in self.control_names:
                row[f"{c}/early_stop"] = r.controls_early_stop.get(c)
            out.append({**row, "seconds": r.seconds})
        return out

    def _text_table(self, rows: list[dict]) -> str:
        return text_table(rows, formats=TABLE_FORMATS, titles=TABLE_TITLES,
                          empty="(no rounds)")

    def table(self) -> str:
        """The rounds as an aligned text table."""
        return self._text_table(self.rows())

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"<SearchResult: {len(self.rounds)} rounds>"

    # ---------------------------------------------------------------- I/O
    def to_dict(self) -> dict:
        data = {
            "args": clean(self.args),
            "rounds": [r.to_dict() for r in self.rounds],
        }
        if self.directory is not None:
            data["directory"] = os.fspath(self.directory)
        return data

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The result as JSON; also written (atomically) to `path` if given.

        The JSON holds the numbers and, for a search with a directory, the
        directory's path, from which `from_json` reads masks and weights.
        """
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            SearchDirectory(Path(path).parent).refuse_overwrite(path)
            atomic_write_text(path, text)
        return text

    @classmethod
    def from_json(
        cls, source: str | os.PathLike, model: keras.Model | None = None
    ) -> SearchResult:
        """Reads `to_json` output: a JSON string or the path of a file.

        The JSON holds the numbers of every round. Where it names a search
        directory that still holds that search (or the file lies in one),
        masks and weights are read from there, and with `model` (a wrapped
        model of the searched architecture) `ticket` builds models;
        otherwise `ticket` says to load the search directory.

        Example:

        >>> import keras, numpy as np, keras_lottery as kl
        >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
        ...                                   keras.layers.Dense(2)]))
        >>> model.compile("sgd", "mse")
        >>> x, y = np.ones((8, 4)), np.ones((8, 2))
        >>> result = kl.lottery_search(model, lambda m: m.fit(x, y, verbose=0),
        ...                            rounds=1, directory="search", verbose=0)
        >>> _ = result.to_json("result.json")
        >>> again = kl.SearchResult.from_json("result.json", model=model)
        >>> len(again), kl.summary(again.ticket(1), print_fn=None).remaining
        (2, 7)
        """
        text = str(source)
        path = None
        if not text.lstrip().startswith("{"):
            path = Path(source)
            text = path.read_text(encoding="utf-8")
        data = json.loads(text)
        args = data.get("args")
        directory = SearchDirectory.holding(
            args, data.get("directory"), None if path is None else path.parent
        )
        result = cls(
            [RoundRecord.from_dict(r) for r in data.get("rounds", [])],
            args, model=model, directory=directory,
        )
        result._kept.origin = "json"
        return result

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV text; also written to `path` if given."""
        text = csv_text(self.rows())
        if path is not None:
            atomic_write_text(path, text)
        return text

    @classmethod
    def load(
        cls, directory: str | os.PathLike, model: keras.Model | None = None,
        *, upto: int | None = None,
    ) -> SearchResult:
        """Reads the finished rounds of a search directory.

        Every round is checked first (its record belongs to this search at
        its position; its masks and weights match their checksums): a
        damaged last round is left out with a warning, as unfinished; a
        damaged or foreign earlier round is an error naming the file.

        Args:
            directory: A `lottery_search(..., directory=...)` directory.
            model: Optionally, a wrapped model of the same architecture, so
                that `ticket()` and `best_model()` can build models.
            upto: Read rounds 0 to `upto` only: the rounds before a damaged
                one.

        Raises:
            FileNotFoundError: `directory` holds no search.
            keras_lottery.search.directory.RoundDamagedError: (a ValueError) A
                round before the last one is damaged, missing or belongs to
                another search; the message names the file and the `upto`
                that reads the rounds before it.

        Example:

        >>> import keras_lottery as kl
        >>> result = kl.SearchResult.load("search", upto=1)  # doctest: +SKIP
        """
        if upto is not None and (isinstance(upto, bool) or
                                 not isinstance(upto, int) or upto < 0):
            raise ValueError(
                f"`upto` is the last round to read, an int >= 0. Received: "
                f"upto={upto!r}.")
        store = SearchDirectory(directory)
        args = store.read_args()
        return cls(store.read_records(upto), args, model=model,
                   directory=store.path)

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
        Needs matplotlib (the `plot` extra).

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
        from keras_lottery.search.plot import plot_result

        return plot_result(self, path, metric, title)

    def spread(
        self, metric: str, control: str | None = None
    ) -> list[tuple[float, float] | None]:
        """Per round, the `(low, high)` range of `metric` across trials.

        A single search has no spread: every entry is None.
        `MergedResult` (several seeds merged) returns the minimum and
        maximum, which `plot` draws as error bars.

        Args:
            metric: The metric.
            control: A control's name, or None for the tickets.
        """
        return [None] * len(self.rounds)
