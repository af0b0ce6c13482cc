"""Many trials: searches over several seeds in parallel processes, merged.

Lottery-ticket searches with different seeds (or settings) are independent,
so they scale out as plain processes, one search each: no communication,
nothing shared but the file system. `run_trials` runs them, each in a
fresh process with its own search directory (so an interrupted trial
resumes where it stopped), and `merge_results` averages their rounds per
sparsity level into a `MergedResult`, whose table and plot show the mean
and the spread across trials.

To train one search on several devices instead, use Keras' own engines
(`keras.distribution` on JAX, `tf.distribute` on TensorFlow): see
docs/guides/scaling-up.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from keras_lottery.search.results import RoundRecord, SearchResult, text_table

# Digits of the remaining fraction that decide which rounds share a level.
_LEVEL_DIGITS = 9

Trial = Callable[[int, Path], object] | str | os.PathLike


# ---------------------------------------------------------------- running
def _check_seeds(seeds) -> list[int]:
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence):
        raise TypeError(
            f"`seeds` must be a list of ints. Received: seeds={seeds!r}"
        )
    seeds = list(seeds)
    if not seeds:
        raise ValueError("`seeds` is empty: give at least one seed.")
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(
                f"Every seed must be an int. Received: {seed!r} in seeds={seeds}"
            )
    if len(set(seeds)) != len(seeds):
        raise ValueError(
            "`seeds` repeats a seed; each trial needs its own. "
            f"Received: seeds={seeds}"
        )
    return [int(s) for s in seeds]


@contextlib.contextmanager
def _environment(env: Mapping[str, str] | None):
    """`os.environ` with `env` on top, for the processes started inside."""
    saved = dict(os.environ)
    os.environ.update({str(k): str(v) for k, v in (env or {}).items()})
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _run_script(script, args, seed, directory, env, timeout) -> None:
    command = [
        sys.executable, os.fspath(script), *map(str, args),
        "--seed", str(seed), "--directory", os.fspath(directory),
    ]
    done = subprocess.run(
        command,
        env={**os.environ, **{str(k): str(v) for k, v in (env or {}).items()}},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise RuntimeError(
            f"`{' '.join(command)}` exited with status {done.returncode}: "
            + " | ".join(tail)
        )


def run_trials(
    trial: Trial,
    seeds: Sequence[int],
    directory: str | os.PathLike,
    *,
    processes: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> list[SearchResult]:
    """Runs one trial per seed, each in a fresh process, and loads the results.

    Every trial is a whole `lottery_search` that writes its own search
    directory, `directory/seed_<seed>`. Up to `processes` trials run at
    once. Each starts in a new process (`spawn`: nothing is inherited from
    a backend already running here), so the trials are independent and can
    use any backend. Rerunning with the same directory resumes unfinished
    trials (`lottery_search` resumes after its last finished round) and
    skips the finished rounds of the others.

    Args:
        trial: Either a function `trial(seed, directory)` that runs
            `lottery_search(..., seed=seed, directory=directory)`, defined at
            the top level of a module or script (the processes import it by
            name; a script calling `run_trials` needs an
            `if __name__ == "__main__":` guard), or the path of a Python
            script, run as `python script *args --seed S --directory D`.
        seeds: One trial per seed (distinct ints).
        directory: Parent of the trials' search directories.
        processes: Trials run at once; `min(len(seeds), os.cpu_count())`
            when None. Each trial's backend uses several threads of its
            own: on a small machine, fewer processes may finish sooner.
        args: Further command-line arguments for a script `trial`.
        env: Environment variables set in every trial process, e.g.
            `{"KERAS_BACKEND": "jax"}` or thread limits.
        timeout: Seconds a script trial may run before it is stopped.

    Returns:
        The `SearchResult` of each seed, in the order of `seeds`.

    Raises:
        RuntimeError: If trials failed, after the others have finished. The
            message names each failed seed and its error; what the failed
            trials finished stays on disk, and rerunning resumes them.

    Example:

    >>> from pathlib import Path
    >>> from keras_lottery.search.trials import run_trials
    >>> _ = Path("trial.py").write_text('''
    ... import argparse, keras, numpy as np, keras_lottery as kl
    ... parser = argparse.ArgumentParser()
    ... parser.add_argument("--seed", type=int)
    ... parser.add_argument("--directory")
    ... args = parser.parse_args()
    ... keras.utils.set_random_seed(args.seed)
    ... model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...                                   keras.layers.Dense(2)]))
    ... model.compile("sgd", "mse")
    ... x, y = np.ones((8, 4)), np.ones((8, 2))
    ... kl.lottery_search(model, lambda m: m.fit(x, y, verbose=0), rounds=1,
    ...                   seed=args.seed, directory=args.directory, verbose=0)
    ... ''')
    >>> results = run_trials("trial.py", seeds=[0], directory="runs")
    >>> [round(r.remaining, 3) for r in results[0].rounds]
    [1.0, 0.875]
    """
    seeds = _check_seeds(seeds)
    is_script = isinstance(trial, (str, os.PathLike))
    if is_script:
        if not Path(trial).is_file():
            raise FileNotFoundError(
                f"The trial script {os.fspath(trial)!r} does not exist. Pass "
                "a script path or a function trial(seed, directory)."
            )
    elif not callable(trial):
        raise TypeError(
            "`trial` must be a function trial(seed, directory) or the path of "
            f"a script. Received: trial={trial!r}"
        )
    if processes is None:
        processes = min(len(seeds), os.cpu_count() or 1)
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(
            f"`processes` must be an int >= 1. Received: processes={processes!r}"
        )
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    paths = {seed: root / f"seed_{seed}" for seed in seeds}
    errors: dict[int, BaseException] = {}

    if is_script:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=processes)
        submit = lambda seed: pool.submit(  # noqa: E731
            _run_script, trial, args, seed, paths[seed], env, timeout
        )
    else:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=1,
        )
        submit = lambda seed: pool.submit(trial, seed, paths[seed])  # noqa: E731
    with _environment(None if is_script else env), pool:
        futures = {submit(seed): seed for seed in seeds}
        for future in concurrent.futures.as_completed(futures):
            error = future.exception()
            if error is not None:
                errors[futures[future]] = error

    results = {}
    for seed in seeds:
        if seed in errors:
            continue
        try:
            results[seed] = SearchResult.load(paths[seed])
        except FileNotFoundError:
            errors[seed] = RuntimeError(
                f"the trial finished but wrote no search directory at "
                f"{paths[seed]}; pass `directory` on to lottery_search"
            )
    if errors:
        details = "; ".join(
            f"seed {seed}: {type(e).__name__}: {e}"
            for seed, e in sorted(errors.items())
        )
        raise RuntimeError(
            f"{len(errors)} of {len(seeds)} trials failed ({details}). The "
            f"others are in {root}; rerun run_trials with the same directory "
            "to resume the failed ones."
        )
    return [results[seed] for seed in seeds]


# ---------------------------------------------------------------- merging
def _stats(values: list[float]) -> dict:
    array = np.asarray(values, dtype="float64")
    return {
        "mean": float(array.mean()),
        "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
        "min": float(array.min()),
        "max": float(array.max()),
        "n": len(array),
    }


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

    >>> from keras_lottery.search.results import RoundRecord, SearchResult
    >>> from keras_lottery.search.trials import merge_results
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
        for result in self.results:
            for record in result.rounds:
                key = round(float(record.remaining), _LEVEL_DIGITS)
                levels.setdefault(key, []).append(record)
        rounds, self.stats, self.control_stats = [], [], []
        for remaining in sorted(levels, reverse=True):
            records = levels[remaining]
            stats = self._metric_stats([r.metrics for r in records])
            controls = {
                c: self._metric_stats(
                    [r.controls[c] for r in records if c in r.controls]
                )
                for c in dict.fromkeys(c for r in records for c in r.controls)
            }
            early = [r.early_stop for r in records if r.early_stop is not None]
            rounds.append(
                RoundRecord(
                    round=min(r.round for r in records),
                    remaining=remaining,
                    layers=records[0].layers,
                    metrics={m: s["mean"] for m, s in stats.items()},
                    early_stop=(
                        round(float(np.mean(early))) if early else None
                    ),
                    controls={
                        c: {m: s["mean"] for m, s in ms.items()}
                        for c, ms in controls.items()
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

    def rows(self) -> list[dict]:
        """Per level: the mean, `std`, `min` and `max` of every metric."""
        rows = []
        for record, stats in zip(self.rounds, self.stats):
            row = {
                "round": record.round,
                "remaining_percent": 100 * record.remaining,
                "n": max((s["n"] for s in stats.values()), default=0),
            }
            for metric in self.metric_names:
                s = stats.get(metric)
                for part in ("mean", "std", "min", "max"):
                    key = metric if part == "mean" else f"{metric}_{part}"
                    row[key] = None if s is None else s[part]
            row["early_stop"] = record.early_stop
            for control in self.control_names:
                for metric, value in record.controls.get(control, {}).items():
                    if "acc" in metric or metric == self.default_metric():
                        row[f"{control}/{metric}"] = value
            row["seconds"] = record.seconds
            rows.append(row)
        keys = list(dict.fromkeys(k for row in rows for k in row))
        return [{k: row.get(k) for k in keys} for row in rows]

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
        return text_table(shown)

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

    >>> from keras_lottery.search.results import RoundRecord, SearchResult
    >>> from keras_lottery.search.trials import merge_results
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
