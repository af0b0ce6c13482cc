"""The prune options: one set of keyword arguments, one place that checks them.

`prune`, `prune_to_sparsity`, `GradualPruning`, `LotterySchedule` and
`lottery_search` take the same keyword arguments for how to prune; they
are checked here, before any training starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
)


def check_prune_options(options: Mapping[str, Any], *, where: str) -> dict:
    """Returns `options` as a dict; an unknown name is a clear TypeError.

    Args:
        options: Keyword arguments meant for `keras_lottery.prune`.
        where: The caller's name, for the message (`"LotterySchedule"`).
    """
    unknown = sorted(set(options) - set(PRUNE_OPTIONS))
    if unknown:
        raise TypeError(
            f"{where} got unexpected keyword argument(s) {unknown}. The prune "
            f"options are {list(PRUNE_OPTIONS)}, the same keyword arguments "
            f"as keras_lottery.prune. Received: {dict(options)!r}"
        )
    return dict(options)
