"""Merged searches: mean and spread per sparsity level (`merge_results`).

Searches with different seeds (or settings), run by `run_trials` or one by
one, are merged per level of weights remaining into a `MergedResult`,
whose table and plot show the mean and the spread across them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from keras_lottery.pruning.overlap import jaccard_matrix
from keras_lottery.search.records import RoundRecord
from keras_lottery.search.results import SearchResult

# Digits of the remaining fraction that decide which rounds share a level.
_LEVEL_DIGITS = 9


def _stats(values: list[float]) -> dict:
    array = np.asarray(values, dtype="float64")
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": len(array),
    }


def _mean_step(steps: list[int | None]) -> int | None:
    """The mean early-stop step, rounded; None where no search had one."""
    steps = [s for s in steps if s is not None]
    return round(float(np.mean(steps))) if steps else None


def _as_result(source, index: int) -> SearchResult:
    if isinstance(source, SearchResult):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return SearchResult.load(path)
        if path.is_file():
            return SearchResult.from_json(path)
        raise FileNotFoundError(
            f"results[{index}] = {os.fspath(source)!r} is neither a search "
            "directory nor a JSON file written by SearchResult.to_json."
        )
    raise TypeError(
        "merge_results takes SearchResults, search directories or JSON files. "
        f"Received: results[{index}] of type {type(source).__name__}."
    )


class MergedResult(SearchResult):
    """Several searches merged: mean and spread per sparsity level.

    Rounds of different searches that reach the same fraction of weights
    remaining (the same round of searches run with the same settings and
    different seeds) form one level. Each level's `RoundRecord` holds the
    mean of every metric, so `table`, `to_csv`, `best_ticket` and `plot`
    work as on one search; `table` and `rows` add the spread (standard
    deviation; minimum and maximum in the CSV), and `plot` draws the
    minimum-to-maximum range as error bars, as Frankle & Carbin (2019) do.
    Masks and weights stay with the individual searches.

    Attributes:
        results: The merged `SearchResult`s.
        stats: Per level (aligned with `rounds`), per metric: `mean`, `std`
            (sample standard deviation, 0 for one value), `min`, `max`, `n`.
        control_stats: The same per level, per control, per metric.

    Example:

    >>> from keras_lottery import RoundRecord, SearchResult, merge_results
    >>> def search(a, b):
    ...     return SearchResult([RoundRecord(0, 1.0, {}, {"accuracy": a}),
    ...                          RoundRecord(1, 0.8, {}, {"accuracy": b})])
    >>> merged = merge_results([search(0.90, 0.92), search(0.94, 0.96)])
    >>> [round(r.metrics["accuracy"], 3) for r in merged.rounds]
    [0.92, 0.94]
    >>> merged.spread("accuracy")
    [(0.9, 0.94), (0.92, 0.96)]
    """

    def __init__(self, results: Sequence[SearchResult]):
        self.results = list(results)
        levels: dict[float, list[RoundRecord]] = {}
        members: dict[float, list[tuple[int, int]]] = {}
        for index, result in enumerate(self.results):
            for record in result.rounds:
                key = round(float(record.remaining), _LEVEL_DIGITS)
                levels.setdefault(key, []).append(record)
                members.setdefault(key, []).append((index, record.round))
        rounds, self.stats, self.control_stats = [], [], []
        # Per level: (index in `results`, round) of the rounds merged there.
        self._members = [members[k] for k in sorted(levels, reverse=True)]
        for remaining in sorted(levels, reverse=True):
            records = levels[remaining]
            stats = self._metric_stats([r.metrics for r in records])
            controls = {
                c: self._metric_stats(
                    [r.controls[c] for r in records if c in r.controls]
                )
                for c in dict.fromkeys(c for r in records for c in r.controls)
            }
            rounds.append(
                RoundRecord(
                    round=min(r.round for r in records),
                    remaining=remaining,
                    layers=records[0].layers,
                    metrics={m: s["mean"] for m, s in stats.items()},
                    early_stop=_mean_step([r.early_stop for r in records]),
                    controls={
                        c: {m: s["mean"] for m, s in ms.items()}
                        for c, ms in controls.items()
                    },
                    controls_early_stop={
                        c: _mean_step([r.controls_early_stop.get(c)
                                       for r in records])
                        for c in controls
                    },
                    seconds=float(np.mean([r.seconds for r in records])),
                )
            )
            self.stats.append(stats)
            self.control_stats.append(controls)
        args = {
            "merged": len(self.results),
            "seeds": [r.args.get("seed") for r in self.results],
        }
        shared = [
            k for k, v in (self.results[0].args if self.results else {}).items()
            if k != "seed" and all(r.args.get(k) == v for r in self.results)
        ]
        args.update({k: self.results[0].args[k] for k in shared})
        super().__init__(rounds, args)

    @staticmethod
    def _metric_stats(metrics: list[Mapping]) -> dict[str, dict]:
        names = list(dict.fromkeys(m for d in metrics for m in d))
        stats = {}
        for name in names:
            values = [d[name] for d in metrics if d.get(name) is not None]
            if values and all(math.isfinite(v) for v in values):
                stats[name] = _stats(values)
        return stats

    def spread(
        self, metric: str, control: str | None = None
    ) -> list[tuple[float, float] | None]:
        """Per level, the `(min, max)` of `metric` across the searches.

        None where fewer than two searches reached the level.
        """
        table = (
            self.stats if control is None
            else [c.get(control, {}) for c in self.control_stats]
        )
        out = []
        for stats in table:
            s = stats.get(metric)
            out.append(None if s is None or s["n"] < 2 else (s["min"], s["max"]))
        return out

    def seed_overlap(self) -> list[float | None]:
        """Per level, the mean Jaccard overlap of the searches' tickets.

        For every two searches that reached the level, the Jaccard overlap
        of their masks (`keras_lottery.mask_overlap`, weights paired by
        order, so layer names may differ); None where fewer than two
        searches reached it. Needs the masks of every search: run them
        with `directory=` and merge the directories, or merge the results
        `lottery_search` returned.

        Raises:
            ValueError: A search does not hold the masks of a round.

        Example:

        >>> import numpy as np, keras_lottery as kl
        >>> def search(kept):
        ...     masks = {0: {"fc/kernel": np.ones(4)},
        ...              1: {"fc/kernel": np.array(kept)}}
        ...     return kl.SearchResult([kl.RoundRecord(0, 1.0, {}, {}),
        ...                             kl.RoundRecord(1, 0.5, {}, {})],
        ...                            masks=masks)
        >>> merged = kl.merge_results([search([1, 1, 0, 0]),
        ...                            search([0, 1, 1, 0])])
        >>> [round(v, 3) for v in merged.seed_overlap()]
        [1.0, 0.333]
        """
        out = []
        for members in self._members:
            if len(members) < 2:
                out.append(None)
                continue
            masks = []
            for index, round_ in members:
                try:
                    masks.append(self.results[index].masks(round_))
                except ValueError as error:
                    raise ValueError(
                        "seed_overlap compares the searches' masks; "
                        f"results[{index}] does not hold them: {error}"
                    ) from error
            matrix = jaccard_matrix(masks, by="order")
            out.append(float(matrix[np.triu_indices(len(masks), 1)].mean()))
        return out

    def _cells(self, index: int, record: RoundRecord) -> dict:
        """`n`, and the mean, `std`, `min` and `max` of every metric."""
        stats = self.stats[index]
        cells = {"n": max((s["n"] for s in stats.values()), default=0)}
        for metric in self.metric_names:
            s = stats.get(metric)
            for part in ("mean", "std", "min", "max"):
                key = metric if part == "mean" else f"{metric}_{part}"
                cells[key] = None if s is None else s[part]
        return cells

    def table(self) -> str:
        """Per level: `n`, and each metric as `mean ± std`."""
        shown = []
        for row in self.rows():
            out = {}
            for key, value in row.items():
                if key.endswith(("_min", "_max")) or (
                    key.endswith("_std") and key[:-4] in self.metric_names
                ):
                    continue
                std = row.get(f"{key}_std")
                if key in self.metric_names and value is not None:
                    value = f"{value:.4f} ± {std:.4f}"
                out[key] = value
            shown.append(out)
        return self._text_table(shown)

    def to_dict(self) -> dict:
        data = super().to_dict()
        data["stats"] = self.stats
        data["control_stats"] = self.control_stats
        return data

    def __repr__(self) -> str:
        return (
            f"<MergedResult: {len(self.results)} searches, "
            f"{len(self.rounds)} sparsity levels>"
        )


def merge_results(
    results: Sequence[SearchResult | str | os.PathLike],
) -> MergedResult:
    """Merges searches (several seeds, say) into mean and spread per level.

    Args:
        results: `SearchResult`s (as `run_trials` or `lottery_search`
            return them), search directories (read with
            `SearchResult.load`), or JSON files (`SearchResult.to_json`).

    Returns:
        A `MergedResult`: `table()`, `to_csv()`, `to_json()` and `plot()`
        show the mean and the spread of every metric per sparsity level.

    Example:

    >>> from keras_lottery import RoundRecord, SearchResult, merge_results
    >>> one = SearchResult([RoundRecord(0, 1.0, {}, {"loss": 0.5})])
    >>> two = SearchResult([RoundRecord(0, 1.0, {}, {"loss": 0.7})])
    >>> print(merge_results([one, two]).table())
    round  % left  n             loss  early_stop  seconds
    ------------------------------------------------------
        0  100.00  2  0.6000 ± 0.1414           -      0.0
    """
    if isinstance(results, (str, bytes, os.PathLike, SearchResult)) or not isinstance(
        results, Sequence
    ):
        raise TypeError(
            "merge_results takes a list of results. Received: "
            f"{type(results).__name__}."
        )
    loaded = [_as_result(source, i) for i, source in enumerate(results)]
    if not loaded:
        raise ValueError("merge_results needs at least one result. Received: [].")
    for i, result in enumerate(loaded):
        if not result.rounds:
            raise ValueError(
                f"results[{i}] has no finished rounds; nothing to merge. "
                "Finish or drop that search."
            )
    return MergedResult(loaded)
