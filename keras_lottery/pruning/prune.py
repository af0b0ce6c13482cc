"""`prune`: one step of magnitude pruning, exact in its counts.

The rule that picks a mask (this package) is kept apart from the mechanics
that apply it (`PrunableWrapper`), as in `torch.nn.utils.prune`. All the
arithmetic runs in NumPy on host copies of the weights, so the same
weights and seed give the same masks on TensorFlow, JAX and PyTorch.

Counting rule, used everywhere: a pool of `n` remaining units pruned at
rate `r` loses `floor(r * n + 0.5)` of them (round half up); pruned to a
sparsity `s`, a pool of `N` units ends with `floor(s * N + 0.5)` zeros.
Fewer go only where `min_remaining` protects units: every weight tensor
keeps at least `min_remaining` (default 1) of its best-scored units, in
both modes. Ties in score are broken by position: the unit that comes
first (layer order, then row-major index) is pruned first.

Collapse rule: `prune` warns (`UserWarning`) when it leaves a weight tensor
it pruned with no weight at all (for a Dense or convolution kernel: every
output unit has lost all its incoming weights, so the layer passes on
nothing but its biases, which cuts every path through it), or with fewer
than `COLLAPSE_FRACTION` (1%) of its weights while the rest of the model's
prunable weights keep at least `COLLAPSE_RATIO` (10) times that fraction.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from keras_lottery._internal.placement import select_on_device
from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.pruning.granularity import Granularity, get_granularity
from keras_lottery.pruning.on_device import prune_pool_on_device
from keras_lottery.pruning.options import (
    check_min_remaining,
    check_prune_highest,
    check_prune_options,
    check_rate,
    check_sparsity,
)
from keras_lottery.pruning.pools import (
    host_masks,
    prune_pool,
    resolve_pools,
    single_weights,
)
from keras_lottery.pruning.report import Group, PrunedWeight, PruneReport
from keras_lottery.pruning.scores import (
    Criterion,
    Steered,
    criterion_name,
    get_criterion,
    plain_magnitude,
    scheduled,
    score_weights,
)

# A pruned tensor keeping under COLLAPSE_FRACTION of its weights, while the
# rest of the model keeps COLLAPSE_RATIO times that fraction or more, has
# collapsed (so has one keeping nothing); see `prune`.
COLLAPSE_FRACTION = 0.01
COLLAPSE_RATIO = 10.0


def collapse_warning(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray],
    counts: tuple[Mapping[str, int], Mapping[str, int]] | None = None,
) -> str | None:
    """The collapse warning for one prune step, or None (see the module).

    One pass over the masks, NumPy only (none where `prune` hands over
    the counts of nonzeros before and after, which it has already made).
    Only tensors this step pruned (fewer weights after than before) are
    named, so a tensor emptied by an earlier step is not reported again
    by every later one.
    """
    if counts is None:
        counts = _nonzeros(before), _nonzeros(after)
    was, counts = counts
    total = sum(mask.size for mask in after.values())
    kept = sum(counts.values())
    named = []
    for key, mask in after.items():
        n, size = counts[key], mask.size
        if size == 0 or n >= was[key]:
            continue
        if n == 0:
            named.append(
                f"'{key}' (0 of {size:,} left: this cuts every path through it)"
            )
            continue
        rest = total - size
        fraction = n / size
        if (
            rest
            and fraction < COLLAPSE_FRACTION
            and (kept - n) / rest >= COLLAPSE_RATIO * fraction
        ):
            named.append(f"'{key}' ({n:,} of {size:,} left)")
    if not named:
        return None
    return (
        f"prune left {len(named)} weight tensor(s) (almost) empty while the "
        f"model keeps {100 * kept / total:.1f}% of its prunable weights: "
        + ", ".join(named)
        + ". A layer with (almost) no weights passes on (almost) nothing. "
        "To keep more, pass min_remaining= as a count of units or as a "
        "fraction of each tensor (e.g. min_remaining=0.05), or use "
        "scope='layer' (or give these layers their own rate with rates=)."
    )


def _nonzeros(masks: Mapping[str, np.ndarray]) -> dict[str, int]:
    return {key: int(np.count_nonzero(mask)) for key, mask in masks.items()}


def _row(key, pool, rate, sparsity, size, before, after, threshold):
    return PrunedWeight(
        name=key,
        pool=pool.split(":")[0],
        # The sparsity mode has no rate: report the fraction removed.
        rate=rate if sparsity is None else (
            (before - after) / before if before else 0.0
        ),
        total=int(size),
        before=before,
        after=after,
        threshold=threshold,
    )


def _plan(model, rate, sparsity, *, scope="layer", output_rate=None,
          rates=None, groups=None, criterion="magnitude", granularity="weight",
          block_shape=None, norm=None, min_remaining=1, seed=None,
          prune_highest=False):
    """The masks one prune step would set, without setting them: the
    entries, the masks before and after, the pools and thresholds."""
    units = get_granularity(granularity, block_shape=block_shape, norm=norm)
    min_remaining = check_min_remaining(min_remaining)
    entries = list(iter_weight_keys(require_wrappers(model)))
    assignment, _ = resolve_pools(
        model, entries, rate, scope, output_rate, rates, groups,
        separate_outputs=sparsity is None,
    )
    masks = host_masks(entries)  # bool: a fraction of float masks' passes
    pools: dict[str, list[str]] = {}
    for key, _, _ in entries:
        pools.setdefault(assignment[key][0], []).append(key)
    criterion = get_criterion(criterion)
    invert = check_prune_highest(prune_highest)
    if _on_device(entries, criterion, units, invert):
        picked = _plan_on_device(entries, masks, pools, assignment,
                                 min_remaining, sparsity)
        if picked is not None:
            return (entries, masks, *picked)
    new_masks: dict[str, np.ndarray] = masks
    # float32 scores rank single weights as float64 ones do; sums of
    # scores (blocks, channels) and later rounds' arithmetic need float64.
    float64 = criterion.rounds > 1 or not single_weights(units)
    for step in range(1, criterion.rounds + 1):  # SynFlow: several rounds
        scores = score_weights(entries, new_masks, criterion, seed, model,
                               float64=float64)
        fraction = step / criterion.rounds
        bound = units.bind(model, masks, scores)  # channel: the groups
        ranked = bound if not invert and step == 1 else Steered(
            bound, invert, None if step == 1 else new_masks)
        new_masks, thresholds = {}, {}
        for keys in pools.values():
            pool_masks, threshold = prune_pool(
                keys, scores, masks, ranked, min_remaining,
                scheduled(assignment[keys[0]][1], fraction),
                scheduled(sparsity, fraction),
            )
            new_masks.update(pool_masks)
            thresholds.update(dict.fromkeys(keys, threshold))
        new_masks = bound.complete(new_masks)
    return entries, masks, new_masks, assignment, thresholds


def _on_device(entries, criterion, units, invert) -> bool:
    """Whether this step selects on the device (`pruning.on_device`):
    single weights by magnitude, where `KERAS_LOTTERY_SELECTION` or the
    weights' placement says so."""
    return (
        plain_magnitude(criterion) and single_weights(units, plain=True)
        and not invert
        and select_on_device([w.prunable_variable(n) for _, w, n in entries])
    )


def _plan_on_device(entries, masks, pools, assignment, min_remaining, sparsity):
    """`_plan`'s masks, assignment and thresholds from the device path, or
    None where a pool needs the host path (which then does every pool)."""
    variables = {key: (w.prunable_variable(n), w.mask_variable(n))
                 for key, w, n in entries}
    new_masks, thresholds = {}, {}
    for keys in pools.values():
        picked = prune_pool_on_device(
            keys, variables, masks, min_remaining,
            assignment[keys[0]][1], sparsity)
        if picked is None:
            return None
        new_masks.update(picked[0])
        thresholds.update(dict.fromkeys(keys, picked[1]))
    return new_masks, assignment, thresholds


def planned_masks(
    model: keras.Model,
    rate: float = 0.2,
    *,
    sparsity: float | None = None,
    **prune_options,
) -> dict[str, np.ndarray]:
    """The masks `prune(model, rate, **prune_options)` would set now,
    keyed `"layer/weight"`, leaving the model's masks and weights as they
    are (`EarlyBird` compares them from epoch to epoch).

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.pruning.prune import planned_masks
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...     keras.layers.Dense(10, name="fc"), keras.layers.Dense(2)]))
    >>> int(planned_masks(model, 0.5)["fc/kernel"].sum())
    50
    >>> int(kl.get_masks(model)["fc/kernel"].sum())
    100
    """
    rate = check_rate(rate, "rate")
    if sparsity is not None:
        sparsity = check_sparsity(sparsity)
    options = check_prune_options(
        prune_options, where="planned_masks", sparsity=sparsity is not None
    )
    return {k: m.astype("float32") for k, m in _plan(
        model, rate, sparsity, **options)[2].items()}


def prune(
    model: keras.Model,
    rate: float = 0.2,
    *,
    scope: str = "layer",
    output_rate: float | None = None,
    rates: Mapping[str | type, float] | None = None,
    groups: Sequence[Sequence[str | type] | Group] | None = None,
    criterion: str | Criterion | Callable = "magnitude",
    granularity: str | Granularity = "weight",
    block_shape: Sequence[int] | None = None,
    norm: str | None = None,
    min_remaining: int | float = 1,
    seed: int | None = None,
    prune_highest: bool = False,
    sparsity: float | None = None,
) -> PruneReport:
    """Prunes a fraction of the remaining weights by score; one IMP step.

    Each weight is assigned to a pool, which loses exactly
    `floor(rate * n + 0.5)` of its `n` remaining weights, the lowest-scored
    first (ties: the earliest position first). Pools, by priority:

    1. each entry of `groups`: its layers on one threshold, at its rate;
    2. layers named (or whose type is named) in `rates`: each on its own;
    3. the model's output layers, found from its graph: each on its own, at
       `output_rate` (Frankle & Carbin 2019 prune the output layer at half
       the rate of the others);
    4. everything else: with `scope="layer"` each prunable weight on its own
       threshold; with `scope="global"` one threshold over all of them.

    A pruned weight is never revived, and every weight tensor keeps at least
    `min_remaining` of its best-scored units (weights, blocks, channels).

    A layer is named as everywhere in keras-lottery: by its own name
    (`"fc"`, which its wrapper shares) or its key (`"encoder/fc"`);
    a layer class selects its subclasses too, a class name (`"Dense"`)
    that class.

    A step that leaves a tensor (almost) empty warns (`UserWarning`, one
    per call, naming the tensors): a tensor this step pruned that keeps no
    weight (for a Dense or convolution kernel, every output unit then has
    lost all its incoming weights, which cuts every path through the
    layer), or under 1% of its weights while the rest of the model keeps
    at least 10 times that fraction. Global pruning can do this to layers
    whose weights are small at initialization, such as depthwise kernels.

    The keyword arguments from `scope` to `seed` are the prune options:
    `prune_to_sparsity`, `GradualPruning`, `LotterySchedule` and
    `lottery_search` take the same ones, with the same defaults, checked
    by the same code (`keras_lottery.pruning.options`).

    Args:
        model: A model holding `PrunableWrapper` layers.
        rate: Fraction of the remaining weights to remove, in [0, 1).
        scope: `"layer"` or `"global"`.
        output_rate: Rate of the output layers; `rate / 2` when None.
        rates: Overrides by layer name (the wrapped layer's, which its
            wrapper shares, or its key) or layer type (a class, which
            selects its subclasses too, or a class name), e.g.
            `{"Conv2D": 0.15, keras.layers.Dense: 0.2}`. A name wins over a
            type.
        groups: Lists of layers (named as in `rates`), or
            `Group(layers, rate)`, pruned collectively. A layer may be in
            one group only.
        criterion: `"magnitude"` (|w|), `"random"` (same counts, random
            positions: the random-pruning control), `"synflow"`, a
            `keras_lottery.Criterion` (`kl.SNIP(data=(x, y))`,
            `kl.GraSP(...)`, `kl.SynFlow(rounds=...)` or one's own), or a
            callable `fn(weight: np.ndarray, name: str) -> scores` of the
            weight's shape, where a higher score means keep. `weight` is
            the effective weight (pruned entries are 0); pruned entries
            are never candidates, whatever their score. An iterative
            criterion (SynFlow) scores and selects `rounds` times.
        granularity: `"weight"` (unstructured), `"block"`, `"channel"`,
            `"N:M"` (e.g. `"2:4"`), or a
            `keras_lottery.pruning.granularity.Granularity` grouping
            weights into units pruned whole; counts and `min_remaining` are
            then in units (see `keras_lottery.pruning.granularity`).
        block_shape: For `granularity="block"`: `(rows along the input
            axis, columns along the output axis)`; `(4, 1)` when None.
        norm: For `"block"` and `"channel"`: `"l1"` (the default) or
            `"l2"`, the norm of a unit's scores that ranks it.
        min_remaining: Units (weights, blocks, channels) each weight tensor
            keeps at least, in both modes (a rate or a `sparsity`), so that
            no layer is cut off (which global pruning otherwise can do): a
            count (an int >= 0; 1 by default), or a fraction of each
            tensor's units (a float in [0, 1)), which a tensor of `n` units
            turns into `ceil(fraction * n)`. 0 protects nothing. Pruning
            never revives units, so a tensor already below it just loses
            none.
        seed: Seed of the `"random"` criterion.
        prune_highest: Prune the highest-scored units instead of the
            lowest (the inverted-scores ablation of Frankle et al. 2021);
            `min_remaining` then keeps the lowest-scored.
        sparsity: Instead of a rate, prune every pool up to this fraction
            of zeros (in units), as tfmot's schedules do: the output layers
            are then pooled like the others, and `rate`, `output_rate` and
            `rates` do not apply. A pool already sparser is left as it is.
            `min_remaining` still protects units (pass 0 for tfmot's exact
            counts); `prune_to_sparsity` is this mode.

    Returns:
        A `PruneReport` with, per weight, the counts before and after and
        the score threshold used; `print(report)` shows it as a table.

    Raises:
        ValueError: For a rate outside [0, 1), an unknown scope, criterion
            or granularity, a `min_remaining` that is neither an int >= 0
            nor a float in [0, 1), NaN or infinite weights, a model without
            wrapped layers, unknown layers in `rates`/`groups`, or a layer
            in two groups.

    Warns:
        UserWarning: When the step leaves a weight tensor (almost) empty,
            as described above.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...     keras.layers.Dense(10, name="fc"), keras.layers.Dense(2, name="out")]))
    >>> report = kl.prune(model, rate=0.2)  # the output layer at 0.1
    >>> [(w.name, w.after) for w in report.weights]
    [('fc/kernel', 80), ('out/kernel', 18)]
    """
    rate = check_rate(rate, "rate")
    if sparsity is not None:
        sparsity = check_sparsity(sparsity)
    check_prune_options(
        dict(scope=scope, output_rate=output_rate, rates=rates, groups=groups,
             criterion=criterion, granularity=granularity,
             block_shape=block_shape, norm=norm, min_remaining=min_remaining,
             seed=seed, prune_highest=prune_highest),
        where="prune", sparsity=sparsity is not None,
    )
    entries, masks, new_masks, assignment, thresholds = _plan(
        model, rate, sparsity, scope=scope, output_rate=output_rate,
        rates=rates, groups=groups, criterion=criterion,
        granularity=granularity, block_shape=block_shape, norm=norm,
        min_remaining=min_remaining, seed=seed, prune_highest=prune_highest,
    )
    counts = _nonzeros(masks), _nonzeros(new_masks)
    rows = []
    for key, wrapper, name in entries:
        # Masks built here are 0/1 of the right shape by construction.
        wrapper.mask_variable(name).assign(new_masks[key])
        pool, pool_rate = assignment[key]
        rows.append(_row(key, pool, pool_rate, sparsity, masks[key].size,
                         counts[0][key], counts[1][key], thresholds[key]))
    message = collapse_warning(masks, new_masks, counts)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
    return PruneReport(tuple(rows), scope=scope, criterion=criterion_name(criterion))
