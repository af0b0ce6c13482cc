"""Many trials: searches over several seeds in parallel processes, merged.

Lottery-ticket searches with different seeds (or settings) are independent,
so they scale out as plain processes, one search each: no communication,
nothing shared but the file system. `run_trials` runs them, each in a
fresh process with its own search directory (so an interrupted trial
resumes where it stopped), and `merge_results` averages their rounds per
sparsity level into a `MergedResult`, whose table and plot show the mean
and the spread across trials.

`executor="ray"` runs the same trials as tasks on a Ray cluster instead
(`search/executors.py`). To train one search on several devices or hosts,
use Keras' own engines (`keras.distribution` on JAX, `tf.distribute` on
TensorFlow): see docs/guides/scaling-up.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from keras_lottery._internal.child import run_child
from keras_lottery.search.directory import SearchDirectory
from keras_lottery.search.executors import check_executor, run_on_ray
from keras_lottery.search.results import SearchResult

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
    command = [os.fspath(script), *map(str, args), "--seed", str(seed),
               "--directory", os.fspath(directory)]
    run_child(command, what=f"`python {' '.join(command)}`", env=env,
              timeout=timeout, error=RuntimeError,
              fix="Pass run_trials a larger `timeout`.")


class _Progress:
    """One line per trial when it finishes a round, ends or fails (verbose),
    read from the trials' search directories: the one view of all trials,
    whichever executor runs them."""

    def __init__(self, paths: Mapping[int, Path], verbose: int):
        self.paths, self.verbose = paths, verbose
        self.rounds = {seed: 0 for seed in paths}
        self.errors: dict[int, BaseException] = {}

    def tick(self) -> None:
        if not self.verbose:
            return
        for seed, path in self.paths.items():
            finished = len(SearchDirectory(path).finished_rounds())
            for r in range(self.rounds[seed], finished):
                print(f"run_trials: seed {seed}: round {r} finished", flush=True)
            self.rounds[seed] = max(finished, self.rounds[seed])

    def done(self, seed: int, error: BaseException | None) -> None:
        if error is not None:
            self.errors[seed] = error
        self.tick()
        if self.verbose:
            end = "done" if error is None else (
                f"failed ({type(error).__name__}: {str(error)[:200]})"
            )
            print(f"run_trials: seed {seed}: {end}", flush=True)


def _run_locally(trial, seeds, paths, processes, args, env, timeout,
                 progress: _Progress) -> None:
    here = env  # the trial processes' environment, set here for functions
    if isinstance(trial, (str, os.PathLike)):
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=processes)
        submit = lambda seed: pool.submit(  # noqa: E731
            _run_script, trial, args, seed, paths[seed], env, timeout
        )
        here = None  # run_child sets a script's environment
    else:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=processes,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=1,
        )
        submit = lambda seed: pool.submit(trial, seed, paths[seed])  # noqa: E731
    with _environment(here), pool:
        pending = {submit(seed): seed for seed in seeds}
        while pending:
            done, _ = concurrent.futures.wait(
                pending, timeout=1.0,
                return_when=concurrent.futures.FIRST_COMPLETED,
            )
            progress.tick()
            for future in done:
                progress.done(pending.pop(future), future.exception())


def run_trials(
    trial: Trial,
    seeds: Sequence[int],
    directory: str | os.PathLike,
    *,
    processes: int | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    executor: str = "local",
    resources: Mapping[str, float] | None = None,
    retries: int = 3,
    verbose: int = 0,
) -> list[SearchResult]:
    """Runs one trial per seed, each in a fresh process, and loads the results.

    The processes are local (`executor="local"`, the default) or Ray tasks
    on the cluster `ray.init(address=...)` connected to (`executor="ray"`,
    needs `pip install "keras-lottery[ray]"`; see
    docs/guides/scaling-up.md).

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
            when None (on Ray: all, scheduled by their `resources`). Each
            trial's backend uses several threads of its own: on a small
            machine, fewer processes may finish sooner.
        args: Further command-line arguments for a script `trial`.
        env: Environment variables set in every trial process, e.g.
            `{"KERAS_BACKEND": "jax"}` or thread limits.
        timeout: Seconds a script trial may run before it is stopped
            (local executor only).
        executor: `"local"` (processes on this machine) or `"ray"` (Ray
            tasks; `directory` must then be storage every node of the
            cluster reads and writes, e.g. a shared file system).
        resources: What each trial asks Ray for: `num_cpus`, `num_gpus`,
            `memory` (bytes), e.g. `{"num_cpus": 2, "num_gpus": 1}`. Ray's
            default (1 CPU) when None.
        retries: On Ray, how often a trial whose worker process died is run
            again (it resumes after its last finished round). An exception
            raised by the trial is not retried.
        verbose: 1 prints a line for each trial when it finishes a round,
            ends or fails: the progress of all trials in one view.

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
    if isinstance(trial, (str, os.PathLike)):
        trial = Path(trial).absolute()  # workers may start elsewhere
        if not trial.is_file():
            raise FileNotFoundError(
                f"The trial script {os.fspath(trial)!r} does not exist. Pass "
                "a script path or a function trial(seed, directory)."
            )
    elif not callable(trial):
        raise TypeError(
            "`trial` must be a function trial(seed, directory) or the path of "
            f"a script. Received: trial={trial!r}"
        )
    resources = check_executor(executor, resources, retries, timeout)
    if processes is None and executor == "local":
        processes = min(len(seeds), os.cpu_count() or 1)
    if processes is not None and (
        isinstance(processes, bool) or not isinstance(processes, int)
        or processes < 1
    ):
        raise ValueError(
            f"`processes` must be an int >= 1. Received: processes={processes!r}"
        )
    # Absolute: a Ray worker does not start in this working directory.
    root = Path(directory).absolute()
    root.mkdir(parents=True, exist_ok=True)
    paths = {seed: root / f"seed_{seed}" for seed in seeds}
    progress = _Progress(paths, verbose)
    if executor == "ray":
        run_on_ray(trial, args, paths, processes=processes,
                   resources=resources, retries=retries, env=env,
                   on_tick=progress.tick, on_done=progress.done)
    else:
        _run_locally(trial, seeds, paths, processes, args, env, timeout,
                     progress)
    errors = progress.errors

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
