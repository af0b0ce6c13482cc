"""Pools and selection: which weights share a threshold, and which go.

Every prunable weight is assigned to a pool (a group, a layer named in
`rates`, an output layer, the global pool, or a pool of its own); a pool
loses `pruned_count(rate, n)` of its `n` remaining units, the lowest
scored first. Ties in score are broken by position: the unit that comes
first (layer order, then row-major index) is pruned first.
"""

from __future__ import annotations

import math

import numpy as np

from keras_lottery.core.model import output_layer_keys
from keras_lottery.pruning.names import resolve_layers, select_layers
from keras_lottery.pruning.options import check_groups, check_rate


def keep_count(min_remaining: int | float, units: int) -> int:
    """Units a tensor of `units` units keeps at least.

    Example:

    >>> from keras_lottery.pruning.pools import keep_count
    >>> keep_count(1, 100), keep_count(0.07, 100), keep_count(0.05, 30)
    (1, 7, 2)
    """
    if isinstance(min_remaining, int):
        return min_remaining
    # round() first: 0.07 * 100 is 7.000000000000001, which must give 7.
    return math.ceil(round(min_remaining * units, 9))


def select(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest scores; ties go to the lowest index.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.pruning.pools import select
    >>> sorted(select(np.array([3.0, 1.0, 1.0, 0.5]), 2).tolist())
    [1, 3]
    """
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= scores.size:
        return np.arange(scores.size)
    threshold = np.partition(scores, k - 1)[k - 1]
    below = np.flatnonzero(scores < threshold)
    equal = np.flatnonzero(scores == threshold)[: k - below.size]
    return np.concatenate([below, equal])


def protected(score: np.ndarray, alive: np.ndarray, keep: int) -> np.ndarray:
    """Positions (flat) of the `keep` best-scored alive units.

    Among equal scores the later positions are kept: the mirror of pruning
    the earlier ones first. Linear time (a partition, no sort).
    """
    if keep <= 0:
        return np.empty(0, dtype=np.int64)
    alive_idx = np.flatnonzero(alive)
    if keep >= alive_idx.size:
        return alive_idx
    if keep == 1:  # the default: one pass instead of a partition
        best = np.where(alive, score.ravel(), -np.inf)
        return np.flatnonzero(best == best.max())[-1:]
    reversed_idx = alive_idx[::-1]
    return reversed_idx[select(-score.ravel()[reversed_idx], keep)]


def _group_pools(found, groups, rate) -> dict[str, tuple[str, float]]:
    """Layer key -> (pool, rate) for the layers in `groups`."""
    pools: dict[str, tuple[str, float]] = {}
    group_of: dict[str, int] = {}
    for i, group in enumerate(check_groups(groups)):
        group_rate = rate if group.rate is None else group.rate
        for selector in group.layers:
            for layer in select_layers(found, selector, argument=f"groups[{i}]"):
                if group_of.get(layer, i) != i:
                    raise ValueError(
                        f"Layer '{layer}' is in two groups ({group_of[layer]} "
                        f"and {i}); a layer can be pruned in one group only. "
                        f"Received: groups={groups!r}"
                    )
                group_of[layer] = i
                pools[layer] = (f"group{i}", float(group_rate))
    return pools


def _rate_overrides(found, rates) -> dict[str, float]:
    """Layer key -> rate for the layers `rates` names; a name wins over a type."""
    overrides: dict[str, float] = {}
    for selector, value in (rates or {}).items():
        value = check_rate(value, f"rates[{selector!r}]")
        named, typed = resolve_layers(found, selector, argument="rates")
        for layer in named:
            overrides[layer] = value
        for layer in typed:
            overrides.setdefault(layer, value)
    return overrides


def resolve_pools(
    model, entries, rate, scope, output_rate, rates, groups,
    separate_outputs: bool = True,
) -> tuple[dict[str, tuple[str, float]], list[str]]:
    """Assigns every weight key to a `(pool name, rate)`.

    Args:
        model: The wrapped model (its graph gives the output layers).
        entries: `(key, wrapper, weight name)` of every prunable weight.
        rate, scope, output_rate, rates, groups: As in `prune`.
        separate_outputs: Pool the output layers on their own, at
            `output_rate` (False in the sparsity mode).

    Returns:
        The assignment by weight key, and the output layers' keys.
    """
    found = {}
    for key, wrapper, name in entries:
        found.setdefault(key[: -len(name) - 1], wrapper)
    grouped = _group_pools(found, groups, rate)
    overrides = _rate_overrides(found, rates)
    outputs = output_layer_keys(model) if separate_outputs else []
    out_rate = rate / 2 if output_rate is None else check_rate(
        output_rate, "output_rate"
    )
    assignment: dict[str, tuple[str, float]] = {}
    for key, _, name in entries:
        layer = key[: -len(name) - 1]
        if layer in grouped:
            assignment[key] = grouped[layer]
        elif layer in overrides:
            assignment[key] = (f"layer:{layer}", overrides[layer])
        elif layer in outputs:
            assignment[key] = (f"output:{layer}", out_rate)
        elif scope == "global":
            assignment[key] = ("global", rate)
        else:
            assignment[key] = (f"weight:{key}", rate)
    return assignment, outputs
