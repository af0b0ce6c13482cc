"""The prune options: one set of keyword arguments, one place that checks them.

`prune`, `prune_to_sparsity`, `GradualPruning`, `LotterySchedule` and
`lottery_search` take the same keyword arguments for how to prune (the
`PRUNE_OPTIONS`), with the same defaults and the same meaning. They are
checked here, names and values, by every one of them, so a mistake gives
the same message wherever it is made, and a callback or a search checks
its options when it is built, before any training starts. Layer names in
`rates` and `groups` are checked against the model when it is pruned.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from keras_lottery.pruning.granularity import get_granularity
from keras_lottery.pruning.report import Group
from keras_lottery.pruning.scores import check_criterion

# The keyword arguments of `keras_lottery.prune` that say how to prune
# (not how much: `rate` and `sparsity` belong to each caller).
PRUNE_OPTIONS = (
    "scope",
    "output_rate",
    "rates",
    "groups",
    "criterion",
    "granularity",
    "block_shape",
    "norm",
    "min_remaining",
    "seed",
    "prune_highest",
)
SCOPES = ("layer", "global")


def _check_fraction(value, what: str, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"`{what}` must be a number in [0, 1). Received: {what}={value!r}"
        )
    if math.isnan(value) or not 0.0 <= float(value) < 1.0:
        raise ValueError(
            f"`{what}` is {meaning} and must be in [0, 1). "
            f"Received: {what}={value}"
        )
    return float(value)


def check_rate(value, what: str) -> float:
    """A fraction in [0, 1) as a float; a clear error otherwise.

    Example:

    >>> from keras_lottery.pruning.options import check_rate
    >>> check_rate(0.2, "rate")
    0.2
    """
    return _check_fraction(
        value, what, "the fraction of the remaining weights to remove"
    )


def check_sparsity(value, what: str = "sparsity") -> float:
    """A fraction of zeros in [0, 1) as a float; a clear error otherwise.

    Example:

    >>> from keras_lottery.pruning.options import check_sparsity
    >>> check_sparsity(0.75)
    0.75
    """
    return _check_fraction(value, what, "the fraction of weights that are zero")


def check_min_remaining(value) -> int | float:
    """A count of units (int >= 0) or a fraction of each tensor's units.

    Example:

    >>> from keras_lottery.pruning.options import check_min_remaining
    >>> check_min_remaining(1), check_min_remaining(0.05)
    (1, 0.05)
    """
    if isinstance(value, bool):
        pass
    elif isinstance(value, numbers.Integral):
        if value >= 0:
            return int(value)
    elif isinstance(value, numbers.Real) and 0.0 <= float(value) < 1.0:
        return float(value)  # NaN fails the comparison
    raise ValueError(
        "`min_remaining` is a count of units each weight tensor keeps (an "
        "int >= 0) or a fraction of each tensor's units (a float in [0, 1), "
        f"e.g. 0.05). Received: min_remaining={value!r}"
    )


def _check_scope(scope) -> str:
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}. Received: scope={scope!r}")
    return scope


def _check_seed(seed):
    if seed is None or (
        isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        and seed >= 0
    ):
        return seed
    raise ValueError(
        "`seed` seeds the 'random' criterion and must be an int >= 0 or "
        f"None. Received: seed={seed!r}"
    )


def check_prune_highest(value) -> bool:
    """`prune_highest` as a bool; a clear error for anything else.

    Example:

    >>> from keras_lottery.pruning.options import check_prune_highest
    >>> check_prune_highest(True)
    True
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(
        "`prune_highest` is True to prune the highest-scored weights (the "
        "inverted-scores ablation of Frankle et al. 2021) or False (the "
        f"default). Received: prune_highest={value!r}"
    )


def check_layer_mapping(mapping, argument: str, example: str, check_value) -> dict:
    """Checks a mapping from layer selectors (names or classes) to values.

    The one check of `rates=` and `GradualPruning(layer_schedules=)`:
    keys name layers as `keras_lottery.core.model.selects` does, and each
    value passes `check_value(value, "argument[key]")`.

    Example:

    >>> from keras_lottery.pruning.options import check_layer_mapping, check_rate
    >>> check_layer_mapping({"fc": 0.1}, "rates", "rates", check_rate)
    {'fc': 0.1}
    """
    if not isinstance(mapping, Mapping):
        raise TypeError(
            f"`{argument}` maps layer names or layer classes to {example}. "
            f"Received: {argument}={mapping!r}"
        )
    for selector, value in mapping.items():
        if not isinstance(selector, (str, type)):
            raise TypeError(
                f"`{argument}` names layers by name (the layer's own or its "
                f"key) or by class. Received: {selector!r} of type "
                f"{type(selector).__name__}."
            )
        check_value(value, f"{argument}[{selector!r}]")
    return dict(mapping)


def _check_rates(rates):
    if rates is None:
        return None
    return check_layer_mapping(
        rates, "rates", "rates, e.g. {'Conv2D': 0.15, 'fc': 0.1}", check_rate
    )


def check_groups(groups) -> list[Group]:
    """`groups` as a list of `Group`s; a clear error for anything else.

    Example:

    >>> from keras_lottery.pruning.options import check_groups
    >>> check_groups([["fc1", "fc2"]])
    [Group(layers=('fc1', 'fc2'), rate=None)]
    """
    if groups is None:
        return []
    if isinstance(groups, (str, Group)) or not isinstance(groups, Sequence):
        raise TypeError(
            "`groups` is a list of groups, each a list of layer names or a "
            f"keras_lottery.Group. Received: groups={groups!r}"
        )
    checked = []
    for i, group in enumerate(groups):
        if not isinstance(group, Group):
            if isinstance(group, str) or not isinstance(group, Sequence):
                raise TypeError(
                    "Each entry of `groups` is a list of layer names or a "
                    f"keras_lottery.Group. Received: {group!r}"
                )
            group = Group(group)
        if group.rate is not None:
            check_rate(group.rate, f"groups[{i}].rate")
        checked.append(group)
    return checked


def check_prune_options(
    options: Mapping[str, Any], *, where: str, sparsity: bool = False
) -> dict:
    """Checks the names and values of prune options; returns them as a dict.

    The one check of `prune`, `prune_to_sparsity`, `GradualPruning`,
    `LotterySchedule` and `lottery_search`: each mistake has one message,
    the same wherever it is made. Options left out keep `prune`'s
    defaults. Layer names in `rates` and `groups` are checked when a model
    is pruned, since they depend on it.

    Args:
        options: Keyword arguments meant for `keras_lottery.prune`.
        where: The caller's name, for the message (`"LotterySchedule"`).
        sparsity: True where the caller prunes to a sparsity
            (`prune_to_sparsity`, `GradualPruning`), for which the
            rate-only options (`output_rate`, `rates`) mean nothing.

    Raises:
        TypeError: For an unknown name, or a value of the wrong type
            (a `prune_highest` that is not a bool).
        ValueError: For a value out of range: a rate outside [0, 1), an
            unknown scope, criterion or granularity, a bad block shape,
            norm, `min_remaining` or seed; or a rate-only option where a
            sparsity is pruned to.

    Example:

    >>> from keras_lottery.pruning.options import check_prune_options
    >>> check_prune_options({"scope": "global", "min_remaining": 0.05},
    ...                     where="LotterySchedule")
    {'scope': 'global', 'min_remaining': 0.05}
    >>> check_prune_options({"scop": "global"}, where="LotterySchedule")
    Traceback (most recent call last):
    ...
    TypeError: LotterySchedule got unexpected keyword argument(s) ['scop']. ...
    """
    unknown = sorted(set(options) - set(PRUNE_OPTIONS))
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword argument(s) {unknown}. The prune "
            f"options are {list(PRUNE_OPTIONS)}, the same keyword arguments "
            f"as keras_lottery.prune. Received: {dict(options)!r}"
        )
    options = dict(options)
    if sparsity and (options.get("output_rate") is not None or options.get("rates")):
        raise ValueError(
            "`sparsity` sets one target for every pool; `output_rate` and "
            "`rates` belong to the rate mode. Received: "
            f"output_rate={options.get('output_rate')!r}, "
            f"rates={options.get('rates')!r}"
        )
    if "scope" in options:
        _check_scope(options["scope"])
    if options.get("output_rate") is not None:
        check_rate(options["output_rate"], "output_rate")
    _check_rates(options.get("rates"))
    check_groups(options.get("groups"))
    if "criterion" in options:
        check_criterion(options["criterion"])
    get_granularity(
        options.get("granularity", "weight"),
        block_shape=options.get("block_shape"), norm=options.get("norm"),
    )
    if "min_remaining" in options:
        check_min_remaining(options["min_remaining"])
    _check_seed(options.get("seed"))
    if "prune_highest" in options:
        check_prune_highest(options["prune_highest"])
    return options
