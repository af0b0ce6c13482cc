"""The fit protocol of `lottery_search`: how `fit_fn` and `eval_fn` are
called, and how their output becomes a round's metrics.

`fit_fn(model)` trains the model and returns `model.fit`'s `History` or a
dict of metrics. It gets the search's callbacks (the late-rewinding
checkpoint) only where it asks for them: a parameter named `callbacks`, or
a required second parameter. `eval_fn(model)` returns test metrics,
recorded with a `test_` prefix.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping

import keras
import numpy as np


def callbacks_call(fit_fn) -> str | None:
    """How `fit_fn` takes the search's callbacks, if it does.

    A parameter named `callbacks` gets them by keyword; otherwise a required
    second positional parameter (or `*args`) gets them by position, and a
    `**kwargs` by the keyword `callbacks`. A second parameter with a default
    and another name, `fit_fn(model, epochs=3)`, is the user's own: it is
    left alone.

    Returns:
        `"keyword"`, `"positional"` or None (call `fit_fn(model)`).

    Example:

    >>> from keras_lottery.search.fit import callbacks_call
    >>> def fit(model, callbacks=None): ...
    >>> def own(model, epochs=3): ...
    >>> callbacks_call(fit), callbacks_call(own)
    ('keyword', None)
    """
    try:
        params = list(inspect.signature(fit_fn).parameters.values())
    except (TypeError, ValueError):
        return None
    # A parameter named `seed` is never the callbacks (see `seed_call`).
    params = [p for p in params if p.name != "seed"]
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


def seed_call(fit_fn) -> bool:
    """Whether `fit_fn` has a parameter named `seed`:
    `keras_lottery.instability` then passes each copy's seed by keyword,
    besides seeding Keras with it.

    Example:

    >>> from keras_lottery.search.fit import seed_call
    >>> def fit(model, seed=0, callbacks=None): ...
    >>> seed_call(fit), seed_call(lambda model: None)
    (True, False)
    """
    try:
        params = inspect.signature(fit_fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "seed" and p.kind != p.POSITIONAL_ONLY for p in params)


def signature(fn) -> str:
    """`fn`'s signature as text, for messages; `(...)` when unknown."""
    try:
        return str(inspect.signature(fn))
    except (TypeError, ValueError):
        return "(...)"


def parse_fit_output(output, round: int, what: str) -> tuple[dict, int | None]:
    """Metrics and early-stop epoch from a History or a dict of metrics.

    The last value of every series is the metric; the early stop is the
    dict's `"early_stop"` entry, or the (1-based) epoch of the minimum
    `val_loss`.

    Raises:
        TypeError: `output` is neither a History nor a dict.
        ValueError: No metric.
        FloatingPointError: A non-finite loss.

    Example:

    >>> from keras_lottery.search.fit import parse_fit_output
    >>> parse_fit_output({"loss": [0.9, 0.5], "val_loss": [0.7, 0.8]}, 1, "fit_fn")
    ({'loss': 0.5, 'val_loss': 0.8}, 1)
    """
    if isinstance(output, keras.callbacks.History):
        history = dict(output.history)
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


def call_fit(fit_fn: Callable, model: keras.Model, callbacks: list,
             seed: int | None = None):
    """Calls `fit_fn` on `model`, handing over `callbacks` where it takes
    them (`callbacks_call`) and `seed` where it is given and `fit_fn` has a
    `seed` parameter (`seed_call`); returns what `fit_fn` returns."""
    how = callbacks_call(fit_fn)
    extra = {"seed": seed} if seed is not None and seed_call(fit_fn) else {}
    if how == "keyword":
        return fit_fn(model, callbacks=callbacks, **extra)
    if how == "positional":
        return fit_fn(model, callbacks, **extra)
    return fit_fn(model, **extra)


def train(
    fit_fn: Callable,
    model: keras.Model,
    *,
    round: int,
    what: str,
    callbacks: list,
    eval_fn: Callable | None = None,
    seed: int | None = None,
) -> tuple[dict[str, float], int | None]:
    """Trains `model` with `fit_fn` (handing over `callbacks` where it takes
    them, and `seed` where it is given and `fit_fn` takes it), then
    evaluates it with `eval_fn`.

    Returns:
        The metrics (`eval_fn`'s prefixed `test_`) and the early-stop epoch.
    """
    output = call_fit(fit_fn, model, callbacks, seed)
    metrics, early = parse_fit_output(output, round, what)
    if eval_fn is not None:
        tested = eval_fn(model)
        if not isinstance(tested, Mapping):
            raise TypeError(
                f"Round {round}: eval_fn must return a dict of metrics, e.g. "
                "model.evaluate(x, y, return_dict=True). Received: "
                f"{type(tested).__name__}."
            )
        for k, v in tested.items():
            name = k if str(k).startswith("test_") else f"test_{k}"
            metrics[name] = float(v)
    return metrics, early
