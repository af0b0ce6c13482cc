"""Checks of what a round of `lottery_search` produced: non-finite
metrics (recorded, warned about once per round) and `eval_fn`'s failures
and values (labelled `eval_fn`, not `fit_fn`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping

from keras_lottery.search.records import RoundRecord


def warn_non_finite(record: RoundRecord) -> list[str]:
    """Warns once for a round whose metrics (the controls' too) hold NaN or
    inf, naming the round and the metrics; returns their names. The record
    keeps them (as None in its JSON)."""
    named = {k: v for k, v in record.metrics.items()}
    for control, metrics in record.controls.items():
        named.update({f"{control}/{k}": v for k, v in metrics.items()})
    bad = [k for k, v in named.items() if isinstance(v, (int, float))
           and not math.isfinite(v)]
    if bad:
        warnings.warn(
            f"lottery_search: round {record.round} recorded non-finite "
            f"metrics: {', '.join(f'{k}={named[k]}' for k in bad)}. They are "
            "kept (as null in the round's JSON) and skipped by best_ticket; "
            "check fit_fn, eval_fn and the data.", RuntimeWarning, stacklevel=3)
    return bad


class EvalFnError(Exception):
    """Marks an exception raised by (or a bad value from) `eval_fn`, so that
    the search labels it `eval_fn`, not `fit_fn`."""


def checked_eval_fn(eval_fn: Callable | None) -> Callable | None:
    """`eval_fn`, its failures raised as `EvalFnError` (the original as
    `__cause__`) and its values checked to be numbers."""
    if eval_fn is None:
        return None

    def call(model):
        try:
            tested = eval_fn(model)
        except Exception as error:
            raise EvalFnError(f"{type(error).__name__}: {error}") from error
        if not isinstance(tested, Mapping):
            raise EvalFnError(
                "TypeError: eval_fn must return a dict of metrics, e.g. "
                "model.evaluate(x, y, return_dict=True). Received: "
                f"{type(tested).__name__}")
        if tested:
            bad = {k: v for k, v in tested.items()
                   if isinstance(v, (str, bytes)) or not hasattr(v, "__float__")}
            if bad:
                raise EvalFnError(
                    "TypeError: eval_fn must return numbers, e.g. "
                    "model.evaluate(x, y, return_dict=True). Received: "
                    + ", ".join(f"{k!r}: {v!r}" for k, v in bad.items()))
        return tested

    return call


__all__ = ["EvalFnError", "checked_eval_fn", "warn_non_finite"]
