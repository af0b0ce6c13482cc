"""Magnitude selection on the backend's device: the same masks, no host copy.

`prune`'s host path (`pruning.pools`) copies every weight to the host and
selects in NumPy, which is the faster path on a CPU (measured:
docs/benchmarks.md, "Prune + rewind step"). On a GPU or TPU that copy
costs more than the selection, so there the weights are scored and each
pool's threshold found where they live, with `keras.ops` (a threshold
from a sort, ties by a cumulative count), and only the boolean masks come to
the host (one byte per weight, for the report and the assignment).

It covers the common step only: single weights (`granularity="weight"`),
the magnitude criterion, lowest scores first. The result is the host
path's exactly: the same counts, the same threshold, ties to the earliest
position (tensor order, then row-major). Where `min_remaining` would
bind, or a weight is not finite, it returns None and the host path
decides (and raises its errors), so nothing differs but the speed.
`KERAS_LOTTERY_SELECTION` (`_internal.placement`) chooses the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from keras import ops

from keras_lottery.pruning.pools import binds, keep_count, wanted_count


def _scores(weights, alive, dtype):
    """|w| of every weight of a pool, flat, in one array; +inf where
    pruned (never a candidate)."""
    flat = [
        ops.where(ops.reshape(a, (-1,)),
                  ops.abs(ops.cast(ops.reshape(w, (-1,)), dtype)),
                  ops.cast(np.inf, dtype))
        for w, a in zip(weights, alive)
    ]
    return flat[0] if len(flat) == 1 else ops.concatenate(flat)


def _chosen(x, k: int):
    """The k lowest of `x` (1 <= k <= its finite entries), ties to the
    earliest position, as a boolean array; and the k-th lowest.

    The k-th lowest is read from a sort at an index given as a tensor, not
    by `top_k(..., k)`: under JAX every new static `k` (a new one each
    round) compiles again, where a sort compiles once per pool size.
    """
    t = ops.take(ops.sort(x), ops.convert_to_tensor(k - 1, "int32"))
    below = ops.less(x, t)
    need = k - int(ops.sum(ops.cast(below, "int32")))
    equal = ops.equal(x, t)
    ties = ops.logical_and(
        equal, ops.less_equal(ops.cumsum(ops.cast(equal, "int32")), need))
    return ops.logical_or(below, ties), t


def prune_pool_on_device(
    keys: Sequence[str],
    variables: Mapping[str, tuple],
    masks: Mapping[str, np.ndarray],
    min_remaining: int | float,
    rate: float,
    sparsity: float | None,
) -> tuple[dict[str, np.ndarray], float | None] | None:
    """New masks of one pool and its threshold, as `pools.prune_pool`
    gives them for single weights scored by magnitude; or None where the
    host path must decide (see the module).

    Args:
        keys: The pool's weight keys, in layer order.
        variables: `key -> (weight variable, mask variable)`.
        masks: The current masks by key, as boolean host arrays.
        min_remaining: Units each tensor keeps at least.
        rate: The pool's rate (used when `sparsity` is None).
        sparsity: Prune the pool to this fraction of zeros instead.
    """
    alive = [int(np.count_nonzero(masks[key])) for key in keys]
    remaining = sum(alive)
    k = wanted_count(rate, sparsity, remaining,
                     sum(masks[key].size for key in keys))
    if k == 0:
        return {key: masks[key].copy() for key in keys}, None
    weights = [variables[key][0].value for key in keys]
    dtype = "float64" if any(
        str(w.dtype) == "float64" for w in weights) else "float32"
    x = _scores(weights, [variables[key][1].value for key in keys], dtype)
    if int(ops.sum(ops.cast(ops.isfinite(x), "int32"))) != remaining:
        return None  # a kept weight is NaN or infinite: the host path says so
    chosen, threshold = _chosen(x, k)
    new_masks, start = {}, 0
    for key, n in zip(keys, alive):
        size = masks[key].size
        got = ops.convert_to_numpy(chosen[start:start + size]).reshape(
            masks[key].shape)
        start += size
        if binds(n, int(np.count_nonzero(got)), keep_count(min_remaining, size)):
            return None  # min_remaining binds: the host path protects
        new_masks[key] = masks[key] & ~got
    return new_masks, float(ops.convert_to_numpy(threshold))
