"""`lottery_search`: iterative magnitude pruning, round by round, resumable.

The steps live in their own modules: the arguments (`search/arguments.py`),
the rate (`search/rates.py`), calling `fit_fn` (`search/fit.py`), the
search directory (`search/directory.py`), and pruning between rounds
(`keras_lottery.pruning.cycle.prune_and_rewind`). This module runs the
rounds.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from keras_lottery._internal.lock import FolderLockedError
from keras_lottery._internal.processes import (
    WriterError,
    WriterSync,
    split_across_processes,
)
from keras_lottery.core.copy import copy_model
from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.core.rewind import get_rewind_point, rewind, set_rewind_point
from keras_lottery.core.state import host_array
from keras_lottery.core.summary import summary
from keras_lottery.errors import KerasLotteryError
from keras_lottery.pruning.cycle import prune_and_rewind
from keras_lottery.pruning.masks import shuffle_masks
from keras_lottery.search import arguments
from keras_lottery.search.checks import EvalFnError, checked_eval_fn, warn_non_finite
from keras_lottery.search.directory import SearchDirectory
from keras_lottery.search.early_bird import EarlyBird
from keras_lottery.search.fit import train
from keras_lottery.search.rates import search_rate
from keras_lottery.search.records import RoundRecord
from keras_lottery.search.results import SearchResult
from keras_lottery.search.schedule import RewindCheckpoint

__all__ = ["SearchError", "lottery_search"]


class SearchError(KerasLotteryError, RuntimeError):
    """A round of `lottery_search` failed; finished rounds are kept.

    Attributes:
        round: The round that failed.
        result: A `SearchResult` of the rounds that finished.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((2,)),
    ...                                   keras.layers.Dense(1)]))
    >>> model.compile("sgd", "mse")
    >>> try:
    ...     kl.lottery_search(model, lambda m: None, rounds=1, verbose=0)
    ... except kl.SearchError as error:
    ...     print(error.round, len(error.result))
    0 0
    """

    def __init__(self, message: str, round: int, result: SearchResult):
        super().__init__(message)
        self.round = round
        self.result = result


def _derive(seed: int | None, *parts: int) -> int | None:
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0] >> 1)


def _format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


class _Search:
    """One run of `lottery_search`: its state, and one method per step."""

    def __init__(self, model, fit_fn, eval_fn, args, options, store, verbose,
                 early_bird=None):
        self.model, self.fit_fn = model, fit_fn
        self.eval_fn = checked_eval_fn(eval_fn)
        self.args, self.options, self.store = args, options, store
        # Of several JAX processes, process 0 writes the directory.
        self.sync = None if store is None else WriterSync("lottery_search")
        self.verbose = verbose
        self.early_bird = early_bird  # an EarlyBird config, or None
        self.found = require_wrappers(model)
        self.records: list[RoundRecord] = []
        self.masks: dict[int, dict] = {}
        self.weights: dict[int, list] = {}
        self.rewind_values: list[np.ndarray] | None = None
        self.late = isinstance(args["rewind_to"], int)
        self.began = time.perf_counter()
        self.done_here = 0

    # ------------------------------------------------------------ state
    def result(self) -> SearchResult:
        return SearchResult(
            self.records, self.args, masks=self.masks, weights=self.weights,
            rewind_weights=self.rewind_values, model=self.model,
            directory=None if self.store is None else self.store.path,
        )

    def resume(self, stack: contextlib.ExitStack) -> int:
        """Opens the directory (`SearchDirectory.open`: one writer) and
        restores its last finished round into the model, on every process;
        returns the round to run next."""
        if self.store is None:
            return 0
        try:  # a read-only folder fails before training
            resumed = self.store.open(self.args, self.sync, stack)
        except (FolderLockedError, WriterError, OSError) as error:
            raise SearchError(str(error), 0, self.result()) from error
        r = self.restore() if resumed else 0
        self.sync.barrier("restored")  # all read before the writer writes
        return r

    def restore(self) -> int:
        self.records = self.store.read_records()
        if not self.records:
            return 0
        finished = [record.round for record in self.records]
        weights = self.store.read_weights(finished[-1])
        shapes = [tuple(w.shape) for w in self.model.weights]
        if weights is None or [w.shape for w in weights] != shapes:
            raise ValueError(
                f"{self.store.path}: the weights of round {finished[-1]} do not "
                f"fit model '{self.model.name}' ({len(shapes)} weights here, "
                f"{'none' if weights is None else len(weights)} saved). Resume "
                "with the model the search was started with."
            )
        self.model.set_weights(weights)
        self.rewind_values = self.store.read_rewind()
        set_rewind_point(self.model, self.rewind_values,
                         to="checkpoint" if self.late else "init")
        if self.verbose:
            print(
                f"lottery_search: resuming {self.store.path} after round "
                f"{finished[-1]} ({100 * self.records[-1].remaining:.2f}% of "
                "weights remaining)."
            )
        return finished[-1] + 1

    def finished(self, r: int) -> bool:
        rounds, target = self.args["rounds"], self.args["target_sparsity"]
        if rounds is not None:
            return r > rounds
        reached = bool(self.records) and (
            1 - self.records[-1].remaining >= target - 1e-12
        )
        return reached or r > 10_000

    # ---------------------------------------------------------- training
    def train(self, model, r: int, what: str, seed_part: int, capture=None,
              bird=None):
        """`fit_fn` and `eval_fn` on `model`; a failure is a SearchError
        naming the round, with the rounds finished so far."""
        seed = self.args["seed"]
        if seed is not None:
            keras.utils.set_random_seed(_derive(seed, r, seed_part))
        try:
            return train(self.fit_fn, model, round=r, what=what,
                         callbacks=[c for c in (capture, bird) if c is not None],
                         eval_fn=self.eval_fn)
        except Exception as error:
            if isinstance(error, EvalFnError):
                what, error = "eval_fn", error.__cause__ or error
            saved = (
                f" Rounds 0-{r - 1} are saved in {self.store.path}; rerun to "
                "resume." if self.store is not None and r > 0 else ""
            )
            message = f"{type(error).__name__}: {error}".rstrip(".")
            if isinstance(error, EvalFnError):
                message = str(error).rstrip(".")
            raise SearchError(
                f"lottery_search failed in round {r} ({what}): {message}.{saved}",
                r, self.result(),
            ) from error

    def save(self, r: int, write) -> None:
        """`write()` to the directory, on the writer (the others wait for
        it); a full disk or a permission error is a SearchError naming the
        round, with the finished rounds, on every process."""
        try:
            self.sync.on_writer(f"save round {r}", write)
        except (OSError, WriterError) as error:
            raise SearchError(
                f"lottery_search could not save round {r} in "
                f"{self.store.path}: {type(error).__name__}: {error}. Rounds "
                f"before {r} are saved; free disk space (or fix the "
                "permissions) and rerun to resume.", r, self.result(),
            ) from error

    def train_round_0(self, bird=None):
        """Trains the dense network and keeps the rewind point."""
        step = self.args["rewind_to"]
        capture = RewindCheckpoint(step) if self.late else None
        metrics, early = self.train(self.model, 0, "fit_fn", 0, capture, bird)
        if capture is not None and not capture.taken:
            raise SearchError(
                f"lottery_search: round 0 ended before step {step}, so there "
                "is no rewind point. Pass `callbacks` to model.fit in fit_fn, "
                "or choose a smaller step.",
                0, self.result(),
            )
        self.rewind_values = get_rewind_point(
            self.model, "checkpoint" if self.late else "init")
        if self.store is not None:
            self.save(0, lambda: self.store.save_rewind(self.rewind_values))
        return metrics, early

    def train_controls(self, r: int, record: RoundRecord, starts: dict) -> None:
        """Trains each control from its copy of the round's start."""
        seed = self.args["seed"]
        for i, (name, control) in enumerate(starts.items()):
            if self.model.compiled and not control.compiled:
                control.compile_from_config(self.model.get_compile_config())
            if name == "reinit":
                rewind(control, "random", seed=_derive(seed, r, 10 + i))
            else:
                shuffle_masks(control, seed=_derive(seed, r, 10 + i))
            record.controls[name], record.controls_early_stop[name] = self.train(
                control, r, f"control {name!r}", 1 + i
            )

    def run_round(self, r: int) -> RoundRecord:
        t0 = time.perf_counter()
        args = self.args
        if r > 0:
            prune_and_rewind(self.model, args["rate"], rewind_to=args["rewind_to"],
                             seed=_derive(args["seed"], r, 0), **self.options)
        masks = {k: w.get_mask(n) for k, w, n in iter_weight_keys(self.found)}
        wanted = args.get("control_rounds")
        controlled = r > 0 and (wanted is None or r in wanted)
        starts = (
            {c: copy_model(self.model) for c in args["control"]} if controlled else {}
        )
        bird = None if self.early_bird is None else EarlyBird(**self.early_bird)
        if r == 0:
            metrics, early = self.train_round_0(bird)
        else:
            metrics, early = self.train(self.model, r, "fit_fn", 0, bird=bird)
        record = RoundRecord(
            round=r,
            remaining=1 - summary(self.model, print_fn=None).sparsity,
            layers={k: [int(np.count_nonzero(m)), int(np.size(m))]
                    for k, m in masks.items()},
            metrics=metrics,
            early_stop=early,
            early_bird=None if bird is None else bird.fired_epoch,
        )
        self.train_controls(r, record, starts)
        record.seconds = time.perf_counter() - t0
        warn_non_finite(record)
        if self.store is not None:
            weights = self.host_weights()
            self.save(r, lambda: self.store.save_round(record, weights(), masks))
        self.records.append(record)
        if self.store is None:
            self.masks[r] = {k: v.astype(bool) for k, v in masks.items()}
            self.weights[r] = self.model.get_weights()
        self.done_here += 1
        return record

    def host_weights(self) -> Callable[[], list]:
        """`model.get_weights()`, read when the writer calls it; a weight
        split across JAX processes is gathered now, by every process (a
        collective)."""
        split = {id(v): host_array(v) for v in self.model.weights
                 if split_across_processes(v)}
        return lambda: [split[id(v)] if id(v) in split else host_array(v)
                        for v in self.model.weights]

    def report(self, record: RoundRecord) -> None:
        """One line per round: % remaining, metrics, controls, time, ETA."""
        rounds = self.args["rounds"]
        elapsed = time.perf_counter() - self.began
        left = (rounds - record.round) if rounds is not None else None
        eta = (f", ~{_format_seconds(elapsed / self.done_here * left)} left"
               if left else "")
        shown = ", ".join(
            f"{k}={v:.4f}" for k, v in record.metrics.items()
            if "acc" in k or k in ("loss", "val_loss")
        )
        controls = "".join(
            f" | {c}: " + ", ".join(f"{k}={v:.4f}" for k, v in m.items() if "acc" in k)
            for c, m in record.controls.items()
        )
        total = "" if rounds is None else f"/{rounds}"
        print(
            f"round {record.round}{total}: {100 * record.remaining:6.2f}% "
            f"remaining | {shown}{controls} | {record.seconds:.1f}s{eta}"
        )

    def run(self) -> SearchResult:
        with contextlib.ExitStack() as stack:
            r = self.resume(stack)
            while not self.finished(r):
                record = self.run_round(r)
                if self.verbose:
                    self.report(record)
                r += 1
        return self.result()


def lottery_search(
    model: keras.Model,
    fit_fn: Callable,
    *,
    rounds: int | None = None,
    target_sparsity: float | None = None,
    rate: float = 0.2,
    rewind_to: str | int | None = "init",
    eval_fn: Callable[[keras.Model], Mapping[str, float]] | None = None,
    control: str | Sequence[str] | None = None,
    control_rounds: Sequence[int] | None = None,
    early_bird: bool | EarlyBird | None = None,
    directory: str | os.PathLike | None = None,
    seed: int | None = None,
    verbose: int = 1,
    prune_options: Mapping | None = None,
    **options,
) -> SearchResult:
    """Finds a lottery ticket by iterative magnitude pruning with rewinding.

    Round 0 trains the wrapped (dense) model with `fit_fn`. Each later round
    prunes `rate` of the remaining weights (`keras_lottery.prune`; the
    output layers at `output_rate`), rewinds the survivors (`rewind_to`),
    resets the optimizer, and trains again. Every round records the
    weights remaining (overall and per layer), the metrics, the early-stop
    epoch (minimum validation loss, as the paper measures it), the masks
    and the wall time.

    Args:
        model: A compiled model holding `PrunableWrapper`s (`wrap(model)`).
        fit_fn: `fit_fn(model)` trains the model your way and returns
            `model.fit(...)`'s History or a dict of metrics. To get the
            late-rewinding checkpoint (`rewind_to=k`), declare a parameter
            named `callbacks`, `fit_fn(model, callbacks=None)`, and pass it
            on to `model.fit` (a required second parameter of another name
            gets the callbacks too; one with a default is left alone). A
            dict may carry an `"early_stop"` entry.
        rounds: Number of pruning rounds (the result has `rounds + 1`
            records, round 0 being dense). `rounds=1` is one-shot pruning.
        target_sparsity: Stop once this fraction of weights is pruned. With
            `rounds` too, the rate is derived so that `rounds` rounds land
            on the target (with blocks or channels: just past it, by less
            than one unit, or, for a global pool of channels of different
            sizes, possibly a little short).
        rate: Fraction of the remaining weights pruned per round.
        rewind_to: `"init"` (theta_0: the lottery ticket), a training step
            k (late rewinding; needs `fit_fn(model, callbacks)`), or None
            (no rewinding: train, prune, fine-tune, as Han et al. 2015).
        eval_fn: `eval_fn(model)` returns test metrics (a dict), recorded
            with a `test_` prefix.
        control: `"reinit"` (the round's mask, freshly re-initialized
            weights: Frankle & Carbin's random re-init control),
            `"random_prune"` (a random mask of the same per-layer sparsity,
            at the rewind point), or a list of both. Each control is trained
            every round through the same `fit_fn` and recorded beside the
            ticket. Needs a Sequential or functional model.
        control_rounds: The rounds (>= 1) in which the controls are
            trained; None trains them in every round. Controls cost one
            extra training each; papers report them at a few sparsities
            (Frankle & Carbin's LeNet: rounds 3, 7, 12, 15, 18).
        early_bird: True ends each round's training once the mask the
            round would draw has settled (`EarlyBird` with the search's
            rate and prune options, patience 5, threshold 0.1: You et al.
            2020), or an `EarlyBird` to use as configured (a fresh copy
            each round). Needs `fit_fn(model, callbacks=None)`; the
            controls train without it. Each record's `early_bird` is the
            epoch it fired (None: it did not).
        directory: Where to save each finished round atomically (masks,
            weights, metrics, arguments). Rerunning with the same arguments
            and a model of the same architecture (layer names may differ)
            resumes after the last finished round; different arguments or
            another architecture on an existing search are an error saying
            what differs. On several JAX processes, pass the same directory
            on every process (shared storage): process 0 writes it, the
            others wait (at most `KERAS_LOTTERY_SYNC_TIMEOUT` s, 1800 by
            default) and read it; a resumed search resumes everywhere.
        seed: Seeds Keras before each training, pruning and control with
            a seed derived from `seed`, the round and the step (not `seed`
            itself), so that a resumed search replays an uninterrupted one
            exactly (given a deterministic `fit_fn`).
        verbose: 1 prints one line per round; 0 is silent.
        prune_options: Deprecated: pass the prune options as keyword
            arguments instead.
        **options: How to prune, the keyword arguments of
            `keras_lottery.prune`: `scope` (`"layer"` or `"global"`),
            `output_rate` (the output layers' rate; `rate / 2` when None),
            `rates`, `groups`, `criterion`, `granularity`, `block_shape`,
            `norm`, `min_remaining`. Checked before round 0 trains.

    Returns:
        A `SearchResult`: `result.table()`, `result.best_model()` (the
        winning ticket, trained), `result.ticket(round)`.

    Raises:
        SearchError: When `fit_fn` or `eval_fn` fails in a round (the error
            names the round; its `.result` and the directory keep every
            finished round).
        ValueError: For bad arguments, or a directory holding a search with
            different arguments or another architecture.
        TypeError: For an unknown prune option.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)]))
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((16, 4)), np.ones((16, 1))
    >>> result = kl.lottery_search(
    ...     model, lambda m: m.fit(x, y, epochs=1, verbose=0),
    ...     rounds=2, rate=0.5, verbose=0)
    >>> [round(r.remaining, 3) for r in result.rounds]  # output layer at 0.25
    [1.0, 0.55, 0.3]
    >>> winner = result.best_model(tolerance=1.0, metric="loss")
    """
    rewind_to = arguments.check_call(model, fit_fn, eval_fn, rewind_to)
    controls, control_rounds = arguments.check_controls(control, control_rounds)
    rounds, target_sparsity = arguments.check_stop(rounds, target_sparsity)
    options = arguments.prune_options_of(prune_options, options)
    rate = search_rate(model, rounds=rounds, target_sparsity=target_sparsity,
                       rate=rate, prune_options=options)
    bird = arguments.check_early_bird(early_bird, fit_fn, rate, options)
    args = arguments.search_args(
        model, rounds=rounds, target_sparsity=target_sparsity, rate=rate,
        rewind_to=rewind_to, controls=controls, control_rounds=control_rounds,
        seed=seed, options=options,
    )
    store = None if directory is None else SearchDirectory(directory)
    if bird is not None:  # saved (and compared on resume) only when used
        args["early_bird"] = {k: repr(v) for k, v in sorted(bird.items())}
    return _Search(model, fit_fn, eval_fn, args, options, store, verbose,
                   bird).run()
