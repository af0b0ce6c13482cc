"""The arguments of `lottery_search`: checked before any training starts,
and saved in the search directory (so that a rerun resumes only the same
search)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import keras

from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.pruning.cycle import check_rewind_to
from keras_lottery.pruning.options import check_prune_options
from keras_lottery.search.early_bird import EarlyBird
from keras_lottery.search.fit import callbacks_call, signature

CONTROLS = ("reinit", "random_prune")


def check_call(model, fit_fn, eval_fn, rewind_to) -> str | int | None:
    """Checks the model (wrapped and compiled), `fit_fn`, `eval_fn` and
    `rewind_to`; returns `rewind_to`."""
    require_wrappers(model)
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
    if isinstance(rewind_to, int) and callbacks_call(fit_fn) is None:
        raise ValueError(
            f"rewind_to={rewind_to} (late rewinding) needs the weights at "
            f"step {rewind_to}, captured by a callback during round 0, but "
            f"fit_fn{signature(fit_fn)} takes no callbacks. Declare "
            "fit_fn(model, callbacks=None) and pass "
            "model.fit(..., callbacks=callbacks)."
        )
    return rewind_to


def check_early_bird(early_bird, fit_fn, rate: float, options: Mapping) -> dict | None:
    """`lottery_search`'s `early_bird`: None, True (an `EarlyBird` drawing
    the search's own next mask: its rate and prune options), or an
    `EarlyBird` (used as configured); returns the config of the callback
    each round gets fresh, or None."""
    if early_bird is None or early_bird is False:
        return None
    if early_bird is True:
        config = EarlyBird(rate, **options).get_config()
    elif isinstance(early_bird, EarlyBird):
        config = early_bird.get_config()
    else:
        raise TypeError(
            "`early_bird` must be None, True (stop each round once the mask "
            "the round would draw settles) or a keras_lottery.EarlyBird. "
            f"Received: early_bird={early_bird!r}"
        )
    if callbacks_call(fit_fn) is None:
        raise ValueError(
            "early_bird stops each round's training through a callback, but "
            f"fit_fn{signature(fit_fn)} takes no callbacks. Declare "
            "fit_fn(model, callbacks=None) and pass "
            "model.fit(..., callbacks=callbacks)."
        )
    return config


def check_controls(control, control_rounds) -> tuple[list[str], list[int] | None]:
    """The controls as a list, and the sorted rounds they train in."""
    controls = [] if control is None else (
        [control] if isinstance(control, str) else list(control)
    )
    for c in controls:
        if c not in CONTROLS:
            raise ValueError(
                f"`control` must be None, one of {CONTROLS}, or a list of "
                f"them. Received: control={control!r}"
            )
    if control_rounds is None:
        return controls, None
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
    return controls, sorted(set(control_rounds))


def check_stop(rounds, target_sparsity) -> tuple[int | None, float | None]:
    """`rounds` and `target_sparsity`: at least one, each in range."""
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
    return rounds, target_sparsity


def prune_options_of(
    prune_options: Mapping | None, options: Mapping
) -> dict:
    """The prune options: the keyword arguments, plus the deprecated
    `prune_options=` dict (with a DeprecationWarning); checked."""
    options = dict(options)
    if prune_options is not None:
        if not isinstance(prune_options, Mapping):
            raise TypeError(
                "`prune_options` must be a dict. Received: "
                f"{type(prune_options).__name__}. Better, pass the prune "
                "options as keyword arguments: lottery_search(..., "
                "granularity='channel')."
            )
        given = ", ".join(f"{k}={v!r}" for k, v in prune_options.items())
        warnings.warn(
            "lottery_search(prune_options={...}) is deprecated: pass the "
            f"prune options as keyword arguments, lottery_search(..., {given}).",
            DeprecationWarning,
            stacklevel=3,
        )
        if "seed" in prune_options:
            raise TypeError(
                "`seed` is lottery_search's own argument (it seeds training "
                "and every round's pruning). Pass lottery_search(..., seed=...)"
                f". Received: prune_options={dict(prune_options)!r}"
            )
        both = sorted(set(prune_options) & set(options))
        if both:
            raise TypeError(
                f"{both} given both as keyword arguments and in prune_options."
                " Pass each once, as a keyword argument."
            )
        options.update(prune_options)
    return check_prune_options(options, where="lottery_search")


def search_args(
    model: keras.Model,
    *,
    rounds, target_sparsity, rate, rewind_to, controls, control_rounds, seed,
    options: Mapping,
) -> dict:
    """The arguments saved in a search directory and compared on resume.

    `scope` and `output_rate` are saved as themselves, the other prune
    options as their `repr`; `weights` is every prunable weight's shape by
    `"layer/weight"`, compared by order and shape (names may differ).
    """
    others = {k: v for k, v in options.items() if k not in ("scope", "output_rate")}
    return {
        "rounds": rounds,
        "target_sparsity": target_sparsity,
        "rate": rate,
        "output_rate": options.get("output_rate"),
        "scope": options.get("scope", "layer"),
        "rewind_to": rewind_to,
        "control": controls,
        "seed": seed,
        **({} if control_rounds is None else {"control_rounds": control_rounds}),
        "prune_options": {k: repr(v) for k, v in sorted(others.items())},
        "weights": {k: list(w.mask_variable(n).shape)
                    for k, w, n in iter_weight_keys(require_wrappers(model))},
    }

