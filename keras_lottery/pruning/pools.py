"""Pools and selection: which weights share a threshold, and which go.

Every prunable weight is assigned to a pool (a group, a layer named in
`rates`, an output layer, the global pool, or a pool of its own); a pool
loses `pruned_count(rate, n)` of its `n` remaining units, the lowest
scored first. Ties in score are broken by position: the unit that comes
first (layer order, then row-major index) is pruned first.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from keras_lottery.core.model import output_layer_keys
from keras_lottery.core.state import host_view
from keras_lottery.pruning.names import resolve_layers, select_layers
from keras_lottery.pruning.options import check_groups, check_rate
from keras_lottery.pruning.report import pruned_count


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


def wanted_count(rate: float, sparsity: float | None, remaining: int,
                 total: int) -> int:
    """Units a pool of `total` units, `remaining` of them alive, loses
    (before `min_remaining`): `pruned_count(rate, remaining)`, or in the
    sparsity mode the zeros wanted minus the zeros there (never negative),
    at most `remaining`.

    Example:

    >>> from keras_lottery.pruning.pools import wanted_count
    >>> wanted_count(0.2, None, 80, 100), wanted_count(0.2, 0.5, 80, 100)
    (16, 30)
    """
    if sparsity is None:
        wanted = pruned_count(rate, remaining)
    else:
        wanted = pruned_count(sparsity, total) - (total - remaining)
    return min(max(wanted, 0), remaining)


def binds(alive: int, taken: int, keep: int) -> bool:
    """Whether a tensor with `alive` units, `taken` of them selected, is
    left below the `keep` units `min_remaining` protects (the selection
    must then spare its best-scored ones)."""
    return taken > 0 and alive - taken < keep


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


# ------------------------------------------------------------- one pool
def host_masks(entries) -> dict[str, np.ndarray]:
    """The current masks of `(key, wrapper, weight name)` entries, as bool
    host arrays (a quarter of the bytes of float 0/1, read once)."""
    return {
        key: np.asarray(
            host_view(wrapper.mask_variable(name)), dtype=bool
        )
        for key, wrapper, name in entries
    }


# Pools of more candidates than this find their threshold from a sample
# first (see `_threshold`); smaller ones partition all of their candidates.
_SMALL_POOL = 1 << 16
_SAMPLE = 1 << 17


def _brackets(values, cands, k, count):
    """Guesses `(lo, hi)` at the k-th lowest candidate score, ever wider.

    From a fixed-seed sample of the candidates: the k-th lowest's sample
    rank widened by 3.5, then 14, then 56 standard deviations, and last
    `(None, None)` (no bound). Guesses only narrow the search;
    `_threshold` checks each, so the result never depends on the sample.
    """
    rng = np.random.default_rng(0)
    total = sum(v.size for v in values)
    # About count ** (2/3) draws balance the cost of drawing (random reads)
    # against that of the candidates the bracket lets through.
    size = min(_SAMPLE, max(1024, round(count ** (2 / 3))))
    drawn = []
    for s, c in zip(values, cands):
        if s.size:
            idx = np.sort(rng.integers(0, s.size, max(1, round(size * s.size / total))))
            drawn.append(s[idx][c[idx]])
    sample = np.concatenate(drawn)
    n = sample.size
    q = (k - 0.5) / count
    for width in (3.5, 14.0, 56.0) if n else ():
        margin = width * math.sqrt(n * q * (1 - q)) + 8
        r_lo, r_hi = math.floor(q * n - margin), math.ceil(q * n + margin)
        ranks = [r for r in (r_lo, r_hi) if 0 <= r < n]
        parted = np.partition(sample, ranks) if ranks else sample
        yield (
            parted[r_lo] if 0 <= r_lo < n else None,
            parted[r_hi] if 0 <= r_hi < n else None,
        )
    yield None, None


# `_scan` works through a tensor in chunks of this many units, so that its
# boolean temporaries stay in the CPU's cache between its passes.
_CHUNK = 1 << 16


def _scan_chunk(s, c, lo, hi, lt):
    """`_scan` over one chunk: fills `lt` (None: no `lo`), returns the
    chunk's band positions and its count below `lo`."""
    if lt is not None:
        np.less(s, lo, out=lt)
        np.logical_and(lt, c, out=lt)
    if hi is None:
        held = c if lt is None else c ^ lt  # lt is a subset of c
    else:
        held = s <= hi
        np.logical_and(held, c, out=held)
        if lt is not None:
            np.logical_xor(held, lt, out=held)
    return np.flatnonzero(held), 0 if lt is None else int(np.count_nonzero(lt))


def _scan(values, cands, lo, hi):
    """Candidates below `lo`, and those in `[lo, hi]` (position, score)."""
    below, inside, counts = [], [], []
    for s, c in zip(values, cands):
        lt = None if lo is None else np.empty(s.shape, dtype=bool)
        found, n = [], 0
        for a in range(0, s.size, _CHUNK):
            b = a + _CHUNK
            idx, m = _scan_chunk(s[a:b], c[a:b], lo, hi,
                                 None if lt is None else lt[a:b])
            found.append(idx + a)
            n += m
        idx = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        below.append(lt)
        inside.append((idx, s[idx]))
        counts.append(n)
    return below, inside, counts


def _threshold(values, cands, k, count):
    """The k-th lowest candidate score (1 <= k <= count) and the selection.

    Linear in the units: the k-th lowest is searched only among the
    candidates within a bracket found from a sample (`_bracket`), which
    one pass over each tensor checks; a wrong guess costs one more pass
    with a wider bracket on the side the k-th lowest lies on.

    Returns:
        The threshold `t`, per tensor a bool array of the selected units
        (every candidate scored below `t`, and among those scored `t`, the
        earliest (tensor order, then position), `k` in all), and per tensor
        the number selected.
    """
    guesses = (
        _brackets(values, cands, k, count) if count > _SMALL_POOL
        else iter([(None, None)])
    )
    lo, hi = next(guesses)
    while True:
        below, inside, counts = _scan(values, cands, lo, hi)
        n_below = sum(counts)
        n_inside = sum(idx.size for idx, _ in inside)
        if n_below < k <= n_below + n_inside:
            break
        # Missed: the k-th lowest is below lo or above hi; a wider guess
        # on that side (a bracket open on one side never misses).
        wider_lo, wider_hi = next(guesses)
        lo, hi = (wider_lo, lo) if k <= n_below else (hi, wider_hi)
    scores = np.concatenate([v for _, v in inside])
    r = k - n_below - 1
    t = np.partition(scores, r)[r]
    need = k - n_below - int(np.count_nonzero(scores < t))  # ties to take
    selected, taken = [], []
    for (idx, v), lt, c, n in zip(inside, below, cands, counts):
        chosen = np.zeros(c.shape, dtype=bool) if lt is None else lt
        lower = idx[v < t]
        ties = idx[v == t][:need]
        chosen[lower] = True
        chosen[ties] = True
        need -= ties.size
        selected.append(chosen)
        taken.append(n + lower.size + ties.size)
    return t, selected, taken


def _builtin_masks(units) -> bool:
    """Whether `units` (or the granularity it wraps) reads bool masks."""
    from keras_lottery.pruning import granularity as g

    inner = getattr(units, "units", units)
    return type(inner) in (
        g.WeightGranularity, g.BlockGranularity, g.ChannelGranularity,
        g.NMGranularity,
    )


class _Tensor(NamedTuple):
    """One weight tensor of a pool, in units."""

    mask: np.ndarray  # the mask the granularity reads
    scores: np.ndarray  # unit scores, flat
    alive: np.ndarray  # bool, flat
    n_alive: int
    held: np.ndarray | None  # positions `Granularity.protect` holds
    keep: int  # units `min_remaining` keeps


def single_weights(units, *, plain: bool = False) -> bool:
    """Whether the units are single weights (`reduce` and `expand` are then
    a reshape, done here without a pass over the mask, and float32 scores
    rank them as float64 ones would); with `plain`, and with no rule of
    their own either (N:M's `protect`), as the device path requires."""
    from keras_lottery.pruning import granularity as g

    if plain:
        return type(units) is g.WeightGranularity
    return type(units) in (g.WeightGranularity, g.NMGranularity)


def _units_of(keys, scores, masks, units, min_remaining) -> list[_Tensor]:
    bool_ok, per_weight = _builtin_masks(units), single_weights(units)
    found = []
    for key in keys:
        # A granularity of one's own gets the 0/1 float mask it always had.
        mask = masks[key] if bool_ok else masks[key].astype(np.float32)
        if per_weight:
            unit_scores, alive = scores[key], np.asarray(mask, dtype=bool)
        else:
            unit_scores, alive = units.reduce(scores[key], mask, key)
        alive = np.asarray(alive, dtype=bool).ravel()
        held = units.protect(scores[key], mask, key)
        found.append(_Tensor(
            mask, np.asarray(unit_scores).ravel(), alive,
            int(np.count_nonzero(alive)),
            None if held is None else np.asarray(held, dtype=np.int64),
            keep_count(min_remaining, alive.size),
        ))
    return found


def _select_pool(found: list[_Tensor], wanted: int):
    """The units to prune in each tensor of a pool, and the threshold.

    Units protected by `min_remaining` are excluded lazily: the selection
    is made without them first, and only a tensor that it leaves with
    fewer than its `keep` unprotected survivors gets its protected units
    (`protected`) excluded before selecting again. When every tensor keeps
    `keep` unprotected survivors, none of its `keep` best was selected, so
    this is the selection with every tensor's protection applied up front
    (the rule of the module); a third try protects every tensor.
    """
    excluded = [t.held for t in found]
    checked = [t.keep <= 0 for t in found]
    for attempt in range(3):
        cands, counts = [], []
        for t, out in zip(found, excluded):
            cand, n = t.alive, t.n_alive
            if out is not None and out.size:
                cand = cand.copy()
                cand[out] = False
                n = int(np.count_nonzero(cand))
            cands.append(cand)
            counts.append(n)
        k = min(max(wanted, 0), sum(counts))
        if k == 0:
            return [None] * len(found), None
        threshold, selected, taken = _threshold(
            [t.scores for t in found], cands, k, sum(counts)
        )
        late = [
            i for i, (got, n, t) in enumerate(zip(taken, counts, found))
            if not checked[i] and binds(n, got, t.keep)
        ]
        if not late:
            return selected, float(threshold)
        for i in late if attempt == 0 else range(len(found)):
            if not checked[i]:
                more = protected(found[i].scores, found[i].alive, found[i].keep)
                held = excluded[i]
                excluded[i] = more if held is None else np.concatenate([held, more])
                checked[i] = True
    raise AssertionError("unreachable: the third try protects every tensor")


def prune_pool(keys, scores, masks, units, min_remaining, rate, sparsity):
    """New masks of one pool's weights, and the pool's score threshold.

    Args:
        keys: The pool's weight keys, in layer order.
        scores: Per-weight scores by key (higher: keep).
        masks: The current masks by key (bool, or 0/1).
        units: The `Granularity`.
        min_remaining: Units each tensor keeps at least (`keep_count`).
        rate: The pool's rate (used when `sparsity` is None).
        sparsity: Prune the pool to this fraction of zeros instead.

    Returns:
        The new masks by key (each never reviving a pruned weight), and the
        highest score pruned (None when nothing was).
    """
    found = _units_of(keys, scores, masks, units, min_remaining)
    wanted = wanted_count(rate, sparsity, sum(t.n_alive for t in found),
                          sum(t.alive.size for t in found))
    selected, threshold = _select_pool(found, wanted)
    per_weight = single_weights(units)
    new_masks = {}
    for key, chosen, t in zip(keys, selected, found):
        alive = t.alive.copy() if chosen is None else t.alive ^ chosen
        if per_weight:  # `expand` (chosen <= alive), without a pass over mask
            new_masks[key] = alive.reshape(t.mask.shape).astype(
                t.mask.dtype, copy=False)
        else:
            new_masks[key] = units.expand(alive, t.mask)
    return new_masks, threshold
