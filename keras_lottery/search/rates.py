"""The pruning rate of a search: given, or derived from a target sparsity."""

from __future__ import annotations

import keras
import numpy as np

from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.pruning.granularity import get_granularity
from keras_lottery.pruning.options import check_rate
from keras_lottery.pruning.pools import resolve_pools
from keras_lottery.pruning.report import pruned_count


def derive_rate(
    model: keras.Model,
    rounds: int,
    target_sparsity: float,
    *,
    output_rate_factor: float = 0.5,
    **prune_options,
) -> float:
    """The per-round rate whose `rounds` rounds land on `target_sparsity`.

    Accounts for the output layers' rate (`output_rate` if given, else
    `output_rate_factor` times the rate) and the exact rounding of
    `prune`, which counts units of the granularity (weights, blocks,
    channels); solved by bisection for the smallest rate that reaches the
    target. Exact where a pool's units are all the same size (weights;
    layer-scope channels; blocks that tile the kernel). Otherwise (edge
    blocks, a global pool of channels of different sizes) units are counted
    at their mean size, since which ones go depends on the weights, and the
    search can land a little off target.

    Args:
        model: The wrapped model, as it is before the first pruning round.
        rounds: The number of pruning rounds (>= 1).
        target_sparsity: The fraction of the weights pruned after them.
        output_rate_factor: The output layers' rate, as a fraction of the
            rate, where `output_rate` is not given.
        **prune_options: `prune`'s options (`scope`, `output_rate`,
            `rates`, `groups`, `granularity`, `block_shape`, `norm`; the
            others do not change how many weights go).

    Raises:
        ValueError: The target cannot be reached in `rounds` rounds.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.search.rates import derive_rate
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...     keras.layers.Dense(10), keras.layers.Dense(1)]))
    >>> round(derive_rate(model, 2, 0.5, output_rate=0.0), 3)  # 100 -> 67 -> 45
    0.325
    """
    entries = list(iter_weight_keys(require_wrappers(model)))
    output_rate = prune_options.get("output_rate")
    units = get_granularity(
        prune_options.get("granularity", "weight"),
        block_shape=prune_options.get("block_shape"),
        norm=prune_options.get("norm"),
    )
    masks = {key: np.asarray(wrapper.get_mask(name)) for key, wrapper, name in entries}
    # Channel groups span several weights: a unit holds all their slices.
    units = units.bind(model, masks, masks)
    held = units.unit_weights(masks) if hasattr(units, "unit_weights") else None
    alive_units, alive_weights, total = {}, {}, 0
    for key, mask in masks.items():
        _, alive = units.reduce(mask, mask, key)
        alive_units[key] = int(np.count_nonzero(alive))
        alive_weights[key] = (int(np.count_nonzero(mask)) if held is None
                              else held.get(key, 0))
        total += mask.size
    fixed = max(0, sum(int(np.count_nonzero(m)) for m in masks.values())
                - sum(alive_weights.values()))  # in no prunable unit

    def sparsity_after(rate):
        assignment, _ = resolve_pools(
            model, entries, rate, prune_options.get("scope", "layer"),
            output_rate if output_rate is not None else output_rate_factor * rate,
            prune_options.get("rates"), prune_options.get("groups"),
        )
        pools: dict[str, list] = {}
        for key, _, _ in entries:
            pools.setdefault(assignment[key][0], []).append(key)
        remaining = float(fixed)
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


def search_rate(
    model: keras.Model,
    *,
    rounds: int | None,
    target_sparsity: float | None,
    rate: float,
    prune_options: dict,
) -> float:
    """The rate `lottery_search` prunes at each round: derived when both
    `rounds` and `target_sparsity` are given, else `rate` (checked)."""
    if rounds is not None and target_sparsity is not None and rounds > 0:
        return derive_rate(model, rounds, target_sparsity, **prune_options)
    return check_rate(rate, "rate")

