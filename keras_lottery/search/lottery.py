"""`lottery_search`: iterative magnitude pruning, round by round, resumable."""

from __future__ import annotations

import inspect
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import numpy as np

from keras_lottery.core.model import (
    copy_model,
    iter_weight_keys,
    require_wrappers,
    summary,
)
from keras_lottery.core.rewind import (
    get_rewind_point,
    reset_optimizer,
    rewind,
    set_rewind_point,
)
from keras_lottery.errors import KerasLotteryError
from keras_lottery.pruning.criteria import (
    _check_rate,
    _resolve_pools,
    pruned_count,
    shuffle_masks,
)
from keras_lottery.pruning.criteria import prune as _prune
from keras_lottery.pruning.granularity import get_granularity
from keras_lottery.search.results import (
    RoundRecord,
    SearchResult,
    atomic_save_arrays,
    atomic_write_text,
    load_arrays,
)
from keras_lottery.search.schedule import RewindCheckpoint, check_rewind_to

CONTROLS = ("reinit", "random_prune")


class SearchError(KerasLotteryError, RuntimeError):
    """A round of `lottery_search` failed; finished rounds are kept.

    Attributes:
        round: The round that failed.
        result: A `SearchResult` of the rounds that finished.
    """

    def __init__(self, message: str, round: int, result: SearchResult):
        super().__init__(message)
        self.round = round
        self.result = result


# ------------------------------------------------------------------ helpers
def _seed_everything(seed: int | None, *parts: int) -> None:
    if seed is not None:
        keras.utils.set_random_seed(_derive(seed, *parts))


def _derive(seed: int | None, *parts: int) -> int | None:
    if seed is None:
        return None
    return int(np.random.SeedSequence([seed, *parts]).generate_state(1)[0] >> 1)


def _callbacks_call(fit_fn) -> str | None:
    """How `fit_fn` takes the search's callbacks, if it does.

    A parameter named `callbacks` gets them by keyword; otherwise a required
    second positional parameter (or `*args`) gets them by position, and a
    `**kwargs` by the keyword `callbacks`. A second parameter with a default
    and another name, `fit_fn(model, epochs=3)`, is the user's own: it is
    left alone. Returns "keyword", "positional" or None (call `fit_fn(model)`).
    """
    try:
        params = list(inspect.signature(fit_fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.name == "callbacks" and p.kind != p.POSITIONAL_ONLY for p in params):
        return "keyword"
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if len(positional) >= 2 and positional[1].default is inspect.Parameter.empty:
        return "positional"
    if len(positional) < 2 and any(p.kind == p.VAR_POSITIONAL for p in params):
        return "positional"
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return "keyword"
    return None


def _signature(fn) -> str:
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def _parse_fit_output(output, round: int, what: str) -> tuple[dict, int | None]:
    """Metrics and early-stop epoch from a History or a dict of metrics."""
    if isinstance(output, keras.callbacks.History):
        history = output.history
    elif isinstance(output, Mapping):
        history = dict(output)
    else:
        raise TypeError(
            f"Round {round}: {what} must return a keras History (what "
            "model.fit returns) or a dict of metrics. Received: "
            f"{type(output).__name__}. End fit_fn with `return model.fit(...)`."
        )
    early_stop = history.pop("early_stop", None)
    metrics = {}
    for key, value in history.items():
        if isinstance(value, (list, tuple)):
            if not value:
                continue
            series = [float(v) for v in value]
            value = series[-1]
            if key == "val_loss" and early_stop is None:
                finite = [v if math.isfinite(v) else math.inf for v in series]
                early_stop = int(np.argmin(finite)) + 1
        try:
            metrics[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    if not metrics:
        raise ValueError(
            f"Round {round}: {what} returned no metrics. Return "
            "model.fit(...)'s History or a dict such as {'accuracy': 0.97}."
        )
    if "loss" in metrics and not math.isfinite(metrics["loss"]):
        raise FloatingPointError(
            f"Round {round}: training produced a non-finite loss "
            f"({metrics['loss']}). Lower the learning rate or check the data."
        )
    return metrics, None if early_stop is None else int(early_stop)


def _layer_counts(model) -> dict[str, list[int]]:
    return {
        key: [int(np.count_nonzero(w.get_mask(n))), int(np.prod(w.get_mask(n).shape))]
        for key, w, n in iter_weight_keys(require_wrappers(model))
    }


def derive_rate(
    model: keras.Model,
    rounds: int,
    target_sparsity: float,
    *,
    scope: str = "layer",
    output_rate_factor: float = 0.5,
    prune_options: Mapping | None = None,
) -> float:
    """The per-round rate whose `rounds` rounds land on `target_sparsity`.

    Accounts for the output layers' lower rate (`output_rate_factor` times
    the rate) and the exact rounding of `prune`, which counts units of the
    granularity (weights, blocks, channels); solved by bisection for the
    smallest rate that reaches the target. Exact where a pool's units are
    all the same size (weights; layer-scope channels; blocks that tile the
    kernel). Otherwise (edge blocks, a global pool of channels of different
    sizes) units are counted at their mean size, since which ones go
    depends on the weights, and the search can land a little off target.
    """
    entries = list(iter_weight_keys(require_wrappers(model)))
    options = dict(prune_options or {})
    units = get_granularity(
        options.get("granularity", "weight"),
        block_shape=options.get("block_shape"), norm=options.get("norm"),
    )
    alive_units, alive_weights, total = {}, {}, 0
    for key, wrapper, name in entries:
        mask = np.asarray(wrapper.get_mask(name))
        _, alive = units.reduce(mask, mask, key)
        alive_units[key] = int(np.count_nonzero(alive))
        alive_weights[key] = int(np.count_nonzero(mask))
        total += mask.size

    def sparsity_after(rate):
        assignment, _ = _resolve_pools(
            model, entries, rate, scope,
            None if output_rate_factor is None else output_rate_factor * rate,
            options.get("rates"), options.get("groups"),
        )
        pools: dict[str, list] = {}
        for key, _, _ in entries:
            pools.setdefault(assignment[key][0], []).append(key)
        remaining = 0.0
        for keys in pools.values():
            n = sum(alive_units[k] for k in keys)
            size = sum(alive_weights[k] for k in keys) / n if n else 0.0
            for _ in range(rounds):
                n -= pruned_count(assignment[keys[0]][1], n)
            remaining += n * size
        return 1 - remaining / total

    lo, hi = 0.0, 0.999999
    if sparsity_after(hi) < target_sparsity:
        raise ValueError(
            f"target_sparsity={target_sparsity} cannot be reached in "
            f"{rounds} rounds. Use more rounds."
        )
    for _ in range(60):
        mid = (lo + hi) / 2
        if sparsity_after(mid) < target_sparsity:
            lo = mid
        else:
            hi = mid
    return hi


def _format_seconds(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{(seconds % 3600) // 60:02d}m"


# ------------------------------------------------------------- directory
class _Directory:
    """The files of a search: one atomic commit per finished round."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def check_args(self, args: dict) -> bool:
        """True if a search with these args exists here (to resume)."""
        meta = self.path / "search.json"
        canonical = json.loads(json.dumps(args))
        if meta.exists():
            saved = json.loads(meta.read_text(encoding="utf-8"))
            if saved != canonical:
                diff = sorted(
                    k for k in set(saved) | set(canonical)
                    if saved.get(k) != canonical.get(k)
                )
                details = ", ".join(
                    f"{k}: saved {saved.get(k)!r} vs now {canonical.get(k)!r}"
                    for k in diff
                )
                raise ValueError(
                    f"{self.path} holds a search with different arguments "
                    f"({details}). Resume it with the same arguments, or "
                    "choose another directory; nothing was overwritten."
                )
            return True
        if any(self.path.glob("round_*.json")):
            raise ValueError(
                f"{self.path} holds round files but no search.json; refusing "
                "to overwrite them. Choose an empty directory."
            )
        atomic_write_text(meta, json.dumps(canonical, indent=2))
        return False

    def finished_rounds(self) -> list[int]:
        return sorted(
            int(p.name[6:9]) for p in self.path.glob("round_[0-9][0-9][0-9].json")
        )

    def save_round(self, record: RoundRecord, model, masks) -> None:
        stem = self.path / f"round_{record.round:03d}"
        atomic_save_arrays(
            f"{stem}.masks.npz", {k: v.astype(bool) for k, v in masks.items()}
        )
        weights = model.get_weights()
        atomic_save_arrays(
            f"{stem}.weights.npz", {f"w{i}": w for i, w in enumerate(weights)}
        )
        # The record is the commit: a round counts as finished once it exists.
        atomic_write_text(f"{stem}.json", json.dumps(record.to_dict(), indent=2))

    def save_rewind(self, values: list[np.ndarray]) -> None:
        atomic_save_arrays(
            self.path / "rewind.npz", {f"w{i}": v for i, v in enumerate(values)}
        )

    def load_rewind(self) -> list[np.ndarray]:
        data = load_arrays(self.path / "rewind.npz")
        return [data[f"w{i}"] for i in range(len(data))]

    def load_round(self, round: int) -> tuple[RoundRecord, list[np.ndarray], dict]:
        stem = self.path / f"round_{round:03d}"
        record = RoundRecord.from_dict(
            json.loads(Path(f"{stem}.json").read_text(encoding="utf-8"))
        )
        data = load_arrays(f"{stem}.weights.npz")
        weights = [data[f"w{i}"] for i in range(len(data))]
        return record, weights, load_arrays(f"{stem}.masks.npz")


# ----------------------------------------------------------------- search
def lottery_search(
    model: keras.Model,
    fit_fn: Callable,
    *,
    rounds: int | None = None,
    target_sparsity: float | None = None,
    rate: float = 0.2,
    output_rate: float | None = None,
    scope: str = "layer",
    rewind_to: str | int | None = "init",
    eval_fn: Callable[[keras.Model], Mapping[str, float]] | None = None,
    control: str | Sequence[str] | None = None,
    control_rounds: Sequence[int] | None = None,
    directory: str | os.PathLike | None = None,
    seed: int | None = None,
    verbose: int = 1,
    prune_options: Mapping | None = None,
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
        output_rate: Rate of the output layers; `rate / 2` when None.
        scope: `"layer"` or `"global"`, as in `prune`.
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
        directory: Where to save each finished round atomically (masks,
            weights, metrics, arguments). Rerunning with the same arguments
            resumes after the last finished round; different arguments on
            an existing search are an error.
        seed: Seeds Keras (`keras.utils.set_random_seed`) before each
            training, and the controls, so that a resumed search replays an
            uninterrupted one exactly (given a deterministic `fit_fn`).
        verbose: 1 prints one line per round; 0 is silent.
        prune_options: Further `prune` arguments: `rates`, `groups`,
            `criterion`, `min_remaining`, `granularity`, `block_shape`,
            `norm`.

    Returns:
        A `SearchResult`.

    Raises:
        SearchError: When `fit_fn` or `eval_fn` fails in a round (the error
            names the round; its `.result` and the directory keep every
            finished round).
        ValueError: For bad arguments, or a directory holding a search with
            different arguments.

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
    """
    found = require_wrappers(model)
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Model '{model.name}' is not compiled: lottery_search resets its "
            "optimizer after every round, so it needs one before round 0. "
            "Call model.compile(optimizer, loss, ...) before lottery_search "
            "(a fit_fn that compiles the model itself must compile it once "
            "before the search too)."
        )
    if not callable(fit_fn):
        raise TypeError(f"`fit_fn` must be callable. Received: {fit_fn!r}")
    if eval_fn is not None and not callable(eval_fn):
        raise TypeError(f"`eval_fn` must be callable or None. Received: {eval_fn!r}")
    rewind_to = check_rewind_to(rewind_to)
    controls = [] if control is None else (
        [control] if isinstance(control, str) else list(control)
    )
    for c in controls:
        if c not in CONTROLS:
            raise ValueError(
                f"`control` must be None, one of {CONTROLS}, or a list of "
                f"them. Received: control={control!r}"
            )
    if control_rounds is not None:
        if isinstance(control_rounds, (str, bytes)) or not all(
            isinstance(r, int) and not isinstance(r, bool) and r >= 1
            for r in control_rounds
        ):
            raise ValueError(
                "`control_rounds` must be a list of round numbers >= 1 (round"
                f" 0 is the dense network). Received: control_rounds={control_rounds!r}"
            )
        if not controls:
            raise ValueError(
                "`control_rounds` says when to train the controls, but no "
                f"`control` was given. Received: control_rounds={control_rounds!r}"
                ", control=None. Pass control='reinit' or 'random_prune'."
            )
        control_rounds = sorted(set(control_rounds))
    if isinstance(rewind_to, int) and _callbacks_call(fit_fn) is None:
        raise ValueError(
            f"rewind_to={rewind_to} (late rewinding) needs the weights at "
            f"step {rewind_to}, captured by a callback during round 0, but "
            f"fit_fn{_signature(fit_fn)} takes no callbacks. Declare "
            "fit_fn(model, callbacks=None) and pass "
            "model.fit(..., callbacks=callbacks)."
        )
    if rounds is not None and (
        isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0
    ):
        raise ValueError(f"`rounds` must be an int >= 0. Received: rounds={rounds!r}")
    if target_sparsity is not None:
        target_sparsity = float(target_sparsity)
        if not 0.0 < target_sparsity < 1.0:
            raise ValueError(
                "`target_sparsity` is the fraction of weights pruned, in "
                f"(0, 1). Received: target_sparsity={target_sparsity}"
            )
    if rounds is None and target_sparsity is None:
        raise ValueError(
            "Say when to stop: pass `rounds`, `target_sparsity`, or both."
        )
    prune_options = dict(prune_options or {})
    unknown = set(prune_options) - {"rates", "groups", "criterion", "min_remaining", "granularity", "block_shape", "norm"}  # noqa: E501
    if unknown:
        raise ValueError(
            f"Unknown prune_options {sorted(unknown)}; allowed: rates, groups, "
            "criterion, min_remaining, granularity, block_shape, norm."
        )
    if rounds is not None and target_sparsity is not None and rounds > 0:
        factor = None if output_rate is not None else 0.5
        rate = derive_rate(
            model, rounds, target_sparsity, scope=scope,
            output_rate_factor=factor, prune_options=prune_options,
        )
        if output_rate is not None:
            output_rate = _check_rate(output_rate, "output_rate")
    else:
        rate = _check_rate(rate, "rate")
    max_rounds = rounds if rounds is not None else 10_000

    args = {
        "rounds": rounds,
        "target_sparsity": target_sparsity,
        "rate": rate,
        "output_rate": output_rate,
        "scope": scope,
        "rewind_to": rewind_to,
        "control": controls,
        "seed": seed,
        **({} if control_rounds is None else {"control_rounds": control_rounds}),
        "prune_options": {k: repr(v) for k, v in sorted(prune_options.items())},
        "weights": {k: list(w.mask_variable(n).shape)
                    for k, w, n in iter_weight_keys(found)},
    }
    store = _Directory(directory) if directory is not None else None
    records: list[RoundRecord] = []
    kept_masks: dict[int, dict] = {}
    kept_weights: dict[int, list] = {}
    rewind_values = None
    start = 0
    if store is not None and store.check_args(args):
        finished = store.finished_rounds()
        if finished:
            for r in finished:
                records.append(store.load_round(r)[0])
            _, weights, _ = store.load_round(finished[-1])
            model.set_weights(weights)
            rewind_values = store.load_rewind()
            set_rewind_point(
                model, rewind_values,
                to="checkpoint" if isinstance(rewind_to, int) else "init",
            )
            start = finished[-1] + 1
            if verbose:
                print(
                    f"lottery_search: resuming {store.path} after round "
                    f"{finished[-1]} ({100 * records[-1].remaining:.2f}% of "
                    "weights remaining)."
                )

    def partial_result():
        return SearchResult(
            records, args, masks=kept_masks, weights=kept_weights,
            rewind_weights=rewind_values, model=model,
            directory=None if store is None else store.path,
        )

    def reached_target():
        return target_sparsity is not None and rounds is None and records and (
            1 - records[-1].remaining >= target_sparsity - 1e-12
        )

    def run(m, r, what, seed_part, capture=None):
        _seed_everything(seed, r, seed_part)
        callbacks = [capture] if capture is not None else []
        try:
            if how_callbacks == "keyword":
                output = fit_fn(m, callbacks=callbacks)
            elif how_callbacks == "positional":
                output = fit_fn(m, callbacks)
            else:
                output = fit_fn(m)
            metrics, early = _parse_fit_output(output, r, what)
            if eval_fn is not None:
                tested = eval_fn(m)
                if not isinstance(tested, Mapping):
                    raise TypeError(
                        f"Round {r}: eval_fn must return a dict of metrics."
                        f" Received: {type(tested).__name__}."
                    )
                for k, v in tested.items():
                    name = k if str(k).startswith("test_") else f"test_{k}"
                    metrics[name] = float(v)
        except Exception as error:
            saved = (
                f" Rounds 0-{r - 1} are saved in {store.path}; rerun to "
                "resume." if store is not None and r > 0 else ""
            )
            raise SearchError(
                f"lottery_search failed in round {r} ({what}): "
                f"{type(error).__name__}: {error}.{saved}",
                r, partial_result(),
            ) from error
        return metrics, early

    prune_kwargs = dict(scope=scope, output_rate=output_rate, **prune_options)
    how_callbacks = _callbacks_call(fit_fn)
    began = time.perf_counter()
    done_this_run = 0
    r = start
    while r <= max_rounds and not reached_target():
        t0 = time.perf_counter()
        if r > 0:
            _prune(model, rate, seed=_derive(seed, r, 0), **prune_kwargs)
            if rewind_to == "init":
                rewind(model, "init")
            elif rewind_to is not None:
                rewind(model, "checkpoint")
            if model.optimizer is not None:
                reset_optimizer(model.optimizer)
        masks = {k: w.get_mask(n) for k, w, n in iter_weight_keys(found)}
        controlled = r > 0 and (control_rounds is None or r in control_rounds)
        starts = {c: copy_model(model) for c in controls} if controlled else {}


        capture = None
        if r == 0 and isinstance(rewind_to, int):
            capture = RewindCheckpoint(rewind_to)
        metrics, early = run(model, r, "fit_fn", 0, capture)
        if r == 0:
            if capture is not None and not capture.taken:
                raise SearchError(
                    f"lottery_search: round 0 ended before step {rewind_to}, "
                    "so there is no rewind point. Pass `callbacks` to "
                    "model.fit in fit_fn, or choose a smaller step.",
                    0, partial_result(),
                )
            rewind_values = get_rewind_point(
                model, "checkpoint" if isinstance(rewind_to, int) else "init"
            )
            if store is not None:
                store.save_rewind(rewind_values)

        record = RoundRecord(
            round=r,
            remaining=1 - summary(model, print_fn=None).sparsity,
            layers=_layer_counts(model),
            metrics=metrics,
            early_stop=early,
        )
        for i, c in enumerate(controls):
            if not controlled:
                continue
            ctrl = starts[c]
            if model.compiled and not ctrl.compiled:
                ctrl.compile_from_config(model.get_compile_config())
            if c == "reinit":
                rewind(ctrl, "random", seed=_derive(seed, r, 10 + i))
            else:
                shuffle_masks(ctrl, seed=_derive(seed, r, 10 + i))
            record.controls[c], record.controls_early_stop[c] = run(
                ctrl, r, f"control {c!r}", 1 + i
            )
        del starts
        record.seconds = time.perf_counter() - t0
        records.append(record)
        if store is not None:
            store.save_round(record, model, masks)
        else:
            kept_masks[r] = {k: v.astype(bool) for k, v in masks.items()}
            kept_weights[r] = model.get_weights()
        done_this_run += 1
        if verbose:
            elapsed = time.perf_counter() - began
            left = (max_rounds - r) if rounds is not None else None
            eta = (
                f", ~{_format_seconds(elapsed / done_this_run * left)} left"
                if left else ""
            )
            shown = ", ".join(
                f"{k}={v:.4f}" for k, v in record.metrics.items()
                if "acc" in k or k in ("loss", "val_loss")
            )
            ctrl_shown = "".join(
                f" | {c}: " + ", ".join(
                    f"{k}={v:.4f}" for k, v in m.items() if "acc" in k
                )
                for c, m in record.controls.items()
            )
            total = "" if rounds is None else f"/{rounds}"
            print(
                f"round {r}{total}: {100 * record.remaining:6.2f}% remaining"
                f" | {shown}{ctrl_shown} | {record.seconds:.1f}s{eta}"
            )
        r += 1
    return partial_result()
