"""Which weights to prune: scoring criteria, pruning scopes, exact counts.

The rule that picks a mask (this module) is kept apart from the mechanics
that apply it (`PrunableWrapper`), as in `torch.nn.utils.prune`. All the
arithmetic runs in NumPy on host copies of the weights, so the same
weights and seed give the same masks on TensorFlow, JAX and PyTorch.

Counting rule, used everywhere: a pool of `n` remaining weights pruned at
rate `r` loses `floor(r * n + 0.5)` of them (round half up), fewer only
where `min_remaining` protects weights. Ties in score are broken by
position: the weight that comes first (layer order, then row-major index)
is pruned first.

Collapse rule: `prune` warns (`UserWarning`) when it leaves a weight tensor
it pruned with no weight at all (for a Dense or convolution kernel: every
output unit has lost all its incoming weights, so the layer passes on
nothing but its biases, which cuts every path through it), or with fewer
than `COLLAPSE_FRACTION` (1%) of its weights while the rest of the model's
prunable weights keep at least `COLLAPSE_RATIO` (10) times that fraction.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from keras_lottery.core.model import (
    iter_weight_keys,
    output_layer_keys,
    require_wrappers,
)
from keras_lottery.core.wrapper import PrunableWrapper
from keras_lottery.pruning.granularity import Granularity, get_granularity

SCOPES = ("layer", "global")
CRITERIA = ("magnitude", "random")
# A pruned tensor keeping under COLLAPSE_FRACTION of its weights, while the
# rest of the model keeps COLLAPSE_RATIO times that fraction or more, has
# collapsed (so has one keeping nothing); see `prune`.
COLLAPSE_FRACTION = 0.01
COLLAPSE_RATIO = 10.0

Criterion = str | Callable[[np.ndarray, str], np.ndarray]


def pruned_count(rate: float, remaining: int) -> int:
    """How many of `remaining` weights one round at `rate` removes.

    `floor(rate * remaining + 0.5)`: round half up, the one rounding rule
    of the library.

    Example:

    >>> from keras_lottery.pruning.criteria import pruned_count
    >>> pruned_count(0.2, 1000), pruned_count(0.5, 3)
    (200, 2)
    """
    return math.floor(rate * remaining + 0.5)


@dataclasses.dataclass(frozen=True)
class Group:
    """Layers pruned together, on one threshold, at their own rate.

    Args:
        layers: Layer names (as keys of `get_masks`, without the weight).
        rate: The group's rate; the `rate` of `prune` when None.
    """

    layers: tuple[str, ...]
    rate: float | None = None

    def __init__(self, layers: Sequence[str], rate: float | None = None):
        object.__setattr__(self, "layers", tuple(layers))
        object.__setattr__(self, "rate", rate)


@dataclasses.dataclass(frozen=True)
class PrunedWeight:
    """One row of a `PruneReport`."""

    name: str
    pool: str
    rate: float
    total: int
    before: int
    after: int
    threshold: float | None


@dataclasses.dataclass(frozen=True)
class PruneReport:
    """What one `prune` step did, per prunable weight. Printable."""

    weights: tuple[PrunedWeight, ...]
    scope: str
    criterion: str

    @property
    def total(self) -> int:
        return sum(w.total for w in self.weights)

    @property
    def before(self) -> int:
        return sum(w.before for w in self.weights)

    @property
    def after(self) -> int:
        return sum(w.after for w in self.weights)

    @property
    def sparsity(self) -> float:
        """Fraction of all prunable weights that are zero after the step."""
        return 1.0 - self.after / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        return {
            "scope": self.scope,
            "criterion": self.criterion,
            "weights": [dataclasses.asdict(w) for w in self.weights],
            "total": self.total,
            "before": self.before,
            "after": self.after,
            "sparsity": self.sparsity,
        }

    def __str__(self) -> str:
        header = ("Weight", "Pool", "Rate", "Before", "After", "Threshold")
        rows = [
            (
                w.name,
                w.pool,
                f"{w.rate:.4g}",
                f"{w.before:,}",
                f"{w.after:,}",
                "-" if w.threshold is None else f"{w.threshold:.4g}",
            )
            for w in self.weights
        ]
        rows.append(("Total", "", "", f"{self.before:,}", f"{self.after:,}",
                     f"{100 * self.sparsity:.2f}% sparse"))
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]

        def fmt(row):
            return "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths))
            )

        rule = "-" * len(fmt(header))
        return "\n".join(
            [fmt(header), rule, *map(fmt, rows[:-1]), rule, fmt(rows[-1])]
        )


# -------------------------------------------------------------- validation
def _check_rate(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{what}` must be a number in [0, 1). Received: {value!r}")
    if not 0.0 <= float(value) < 1.0 or math.isnan(value):
        raise ValueError(
            f"`{what}` is the fraction of the remaining weights to remove and "
            f"must be in [0, 1). Received: {what}={value}"
        )
    return float(value)


def _check_min_remaining(value) -> int | float:
    """A count of units (int >= 0) or a fraction of each tensor's units."""
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


def _keep_count(min_remaining: int | float, units: int) -> int:
    """Units a tensor of `units` units keeps at least."""
    if isinstance(min_remaining, int):
        return min_remaining
    # round() first: 0.07 * 100 is 7.000000000000001, which must give 7.
    return math.ceil(round(min_remaining * units, 9))


def _collapse_warning(
    before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]
) -> str | None:
    """The collapse warning for one prune step, or None (see the module).

    One pass over the masks, NumPy only. Only tensors this step pruned
    (fewer weights after than before) are named, so a tensor emptied by an
    earlier step is not reported again by every later one.
    """
    counts = {key: int(np.count_nonzero(mask)) for key, mask in after.items()}
    total = sum(mask.size for mask in after.values())
    kept = sum(counts.values())
    named = []
    for key, mask in after.items():
        n, size = counts[key], mask.size
        if size == 0 or n >= int(np.count_nonzero(before[key])):
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


# ----------------------------------------------------------------- scoring
def score_weights(
    entries, masks: dict[str, np.ndarray], criterion: Criterion, seed: int | None
) -> dict[str, np.ndarray]:
    """Scores every prunable weight; a higher score means keep."""
    rng = np.random.default_rng(seed)
    scores = {}
    for key, wrapper, name in entries:
        raw = np.asarray(keras.ops.convert_to_numpy(wrapper.prunable_variable(name)))
        alive = masks[key] != 0
        if not np.isfinite(raw).all() and not np.isfinite(raw[alive]).all():
            raise ValueError(
                f"Weight '{key}' holds NaN or infinite values, so magnitudes "
                "are meaningless; refusing to prune. Check the training run "
                "that produced them (learning rate, loss scaling)."
            )
        if criterion == "magnitude":
            score = np.abs(raw)  # pruned entries are never candidates
        elif criterion == "random":
            score = rng.random(raw.shape)
        else:
            weight = np.where(alive, raw, 0).astype(raw.dtype)
            score = np.asarray(criterion(weight, key), dtype=np.float64)
            if score.shape != weight.shape:
                raise ValueError(
                    f"The criterion must return one score per weight: shape "
                    f"{weight.shape} for '{key}'. Received: shape {score.shape}."
                )
            if not np.all(np.isfinite(score)):
                raise ValueError(
                    f"The criterion returned NaN or infinite scores for '{key}'."
                )
        scores[key] = score
    return scores


def _select(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k lowest scores; ties go to the lowest index."""
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k >= scores.size:
        return np.arange(scores.size)
    threshold = np.partition(scores, k - 1)[k - 1]
    below = np.flatnonzero(scores < threshold)
    equal = np.flatnonzero(scores == threshold)[: k - below.size]
    return np.concatenate([below, equal])


def _protected(score: np.ndarray, alive: np.ndarray, keep: int) -> np.ndarray:
    """Positions (flat) of the `keep` best-scored alive weights.

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
    return reversed_idx[_select(-score.ravel()[reversed_idx], keep)]


# ------------------------------------------------------------------- pools
def _resolve_pools(
    model, entries, rate, scope, output_rate, rates, groups,
    separate_outputs: bool = True,
) -> tuple[dict[str, tuple[str, float]], list[str]]:
    """Assigns every weight key to a (pool name, rate)."""
    by_layer: dict[str, list[str]] = {}
    wrapper_of: dict[str, PrunableWrapper] = {}
    for key, wrapper, name in entries:
        layer = key[: -len(name) - 1]
        by_layer.setdefault(layer, []).append(key)
        wrapper_of[layer] = wrapper
    layer_keys = set(by_layer)

    assignment: dict[str, tuple[str, float]] = {}
    group_of: dict[str, int] = {}
    for i, group in enumerate(groups or []):
        if not isinstance(group, Group):
            if isinstance(group, str) or not isinstance(group, Sequence):
                raise TypeError(
                    "Each entry of `groups` is a list of layer names or a "
                    f"keras_lottery.Group. Received: {group!r}"
                )
            group = Group(group)
        group_rate = rate if group.rate is None else _check_rate(
            group.rate, f"groups[{i}].rate"
        )
        for layer in group.layers:
            if layer not in layer_keys:
                raise ValueError(
                    f"groups[{i}] names '{layer}', which is not a wrapped "
                    f"layer. Wrapped layers: {sorted(layer_keys)}."
                )
            if layer in group_of:
                raise ValueError(
                    f"Layer '{layer}' is in two groups ({group_of[layer]} and "
                    f"{i}); a layer can be pruned in one group only."
                )
            group_of[layer] = i
            for key in by_layer[layer]:
                assignment[key] = (f"group{i}", group_rate)

    overrides: dict[str, float] = {}
    for selector, value in (rates or {}).items():
        value = _check_rate(value, f"rates[{selector!r}]")
        by_name = {
            layer for layer, w in wrapper_of.items()
            if isinstance(selector, str) and selector in (
                layer, w.name, w.layer.name)  # key, wrapper's or layer's name
        }
        matched = by_name | {
            layer for layer, w in wrapper_of.items()
            if (isinstance(selector, type) and isinstance(w.layer, selector))
            or type(w.layer).__name__ == selector  # a class selects subclasses
        }
        if not matched:
            raise ValueError(
                f"`rates` has key {selector!r}, which matches no wrapped layer "
                f"name or layer type. Wrapped layers: {sorted(layer_keys)}."
            )
        for layer in matched:
            if layer in by_name or layer not in overrides:
                overrides[layer] = value

    outputs = output_layer_keys(model) if separate_outputs else []
    out_rate = rate / 2 if output_rate is None else _check_rate(
        output_rate, "output_rate"
    )
    for key, _, name in entries:
        if key in assignment:
            continue
        layer = key[: -len(name) - 1]
        if layer in overrides:
            assignment[key] = (f"layer:{layer}", overrides[layer])
        elif layer in outputs:
            assignment[key] = (f"output:{layer}", out_rate)
        elif scope == "global":
            assignment[key] = ("global", rate)
        else:
            assignment[key] = (f"weight:{key}", rate)
    return assignment, outputs


def prune(
    model: keras.Model,
    rate: float = 0.2,
    *,
    scope: str = "layer",
    output_rate: float | None = None,
    rates: Mapping[str | type, float] | None = None,
    groups: Sequence[Sequence[str] | Group] | None = None,
    criterion: Criterion = "magnitude",
    granularity: str | Granularity = "weight",
    block_shape: Sequence[int] | None = None,
    norm: str | None = None,
    min_remaining: int | float = 1,
    seed: int | None = None,
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

    A step that leaves a tensor (almost) empty warns (`UserWarning`, one
    per call, naming the tensors): a tensor this step pruned that keeps no
    weight (for a Dense or convolution kernel, every output unit then has
    lost all its incoming weights, which cuts every path through the
    layer), or under 1% of its weights while the rest of the model keeps
    at least 10 times that fraction. Global pruning can do this to layers
    whose weights are small at initialization, such as depthwise kernels.

    Args:
        model: A model holding `PrunableWrapper` layers.
        rate: Fraction of the remaining weights to remove, in [0, 1).
        scope: `"layer"` or `"global"`.
        output_rate: Rate of the output layers; `rate / 2` when None.
        rates: Overrides by layer name (the wrapped layer's, its wrapper's
            `prunable_<name>` or its key) or layer type (a class, which
            selects its subclasses too, or a class name), e.g.
            `{"Conv2D": 0.15, keras.layers.Dense: 0.2}`. A name wins over a
            type.
        groups: Lists of layer names (or `Group(layers, rate)`) pruned
            collectively. A layer may be in one group only.
        criterion: `"magnitude"` (|w|), `"random"` (same counts, random
            positions: the random-pruning control), or a callable
            `fn(weight: np.ndarray, name: str) -> scores` of the weight's
            shape, where a higher score means keep. `weight` is the
            effective weight (pruned entries are 0); pruned entries are
            never candidates, whatever their score.
        granularity: `"weight"` (unstructured), `"block"`, `"channel"`,
            `"N:M"` (e.g. `"2:4"`), or a
            `keras_lottery.granularity.Granularity` grouping weights into
            units pruned whole; counts and `min_remaining` are then in units
            (see `keras_lottery.granularity` for each structure).
        block_shape: For `granularity="block"`: `(rows along the input
            axis, columns along the output axis)`; `(4, 1)` when None.
        norm: For `"block"` and `"channel"`: `"l1"` (the default) or
            `"l2"`, the norm of a unit's scores that ranks it.
        min_remaining: Units (weights, blocks, channels) each weight tensor
            keeps at least, so that no layer is cut off (which global
            pruning otherwise can do): a count (an int >= 0), or a fraction
            of each tensor's units (a float in [0, 1)), which a tensor of
            `n` units turns into `ceil(fraction * n)`. Pruning never
            revives units, so a tensor already below it just loses none.
        seed: Seed of the `"random"` criterion.
        sparsity: Instead of a rate, prune every pool up to this fraction
            of zeros (in units), as tfmot's schedules do: the output layers
            are then pooled like the others, and `rate`, `output_rate` and
            `rates` do not apply. A pool already sparser is left as it is.

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
    rate = _check_rate(rate, "rate")
    if sparsity is not None:
        sparsity = _check_rate(sparsity, "sparsity")
        if output_rate is not None or rates:
            raise ValueError(
                "`sparsity` sets one target for every pool; `output_rate` and "
                "`rates` belong to the rate mode. Received: "
                f"output_rate={output_rate!r}, rates={rates!r}"
            )
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}. Received: scope={scope!r}")
    if not callable(criterion) and criterion not in CRITERIA:
        raise ValueError(
            f"`criterion` must be one of {CRITERIA} or a callable "
            f"fn(weight, name) -> scores. Received: criterion={criterion!r}"
        )
    units = get_granularity(granularity, block_shape=block_shape, norm=norm)
    min_remaining = _check_min_remaining(min_remaining)
    entries = list(iter_weight_keys(require_wrappers(model)))
    assignment, _ = _resolve_pools(
        model, entries, rate, scope, output_rate, rates, groups,
        separate_outputs=sparsity is None,
    )
    masks = {key: wrapper.get_mask(name) for key, wrapper, name in entries}
    scores = score_weights(entries, masks, criterion, seed)

    pools: dict[str, list[str]] = {}
    for key, _, _ in entries:
        pools.setdefault(assignment[key][0], []).append(key)

    new_masks: dict[str, np.ndarray] = {}
    thresholds: dict[str, float | None] = {}
    for keys in pools.values():
        pool_rate = assignment[keys[0]][1]
        remaining = units_total = 0
        unit_alive, candidate_scores = {}, []
        for key in keys:
            unit_scores, alive = units.reduce(scores[key], masks[key], key)
            unit_alive[key] = alive
            units_total += alive.size
            remaining += int(np.count_nonzero(alive))
            # Pruned and protected units are never candidates: +inf scores
            # keep them out of the k lowest (k never exceeds the candidates).
            candidates = np.where(alive, unit_scores, np.inf)
            keep = _keep_count(min_remaining, alive.size)
            candidates[_protected(unit_scores, alive, keep)] = np.inf
            held = units.protect(scores[key], masks[key], key)
            if held is not None:
                candidates[held] = np.inf
            candidate_scores.append(candidates)
        flat_scores = (
            candidate_scores[0] if len(keys) == 1
            else np.concatenate(candidate_scores)
        )
        available = int(np.count_nonzero(np.isfinite(flat_scores)))
        if sparsity is None:
            wanted = pruned_count(pool_rate, remaining)
        else:  # zeros wanted minus zeros there, never negative
            wanted = pruned_count(sparsity, units_total) - (units_total - remaining)
        k = min(max(wanted, 0), available)
        chosen = _select(flat_scores, k)
        thresholds_value = float(flat_scores[chosen].max()) if k else None
        offsets = np.cumsum([0] + [c.size for c in candidate_scores])
        for i, key in enumerate(keys):
            local = chosen[(chosen >= offsets[i]) & (chosen < offsets[i + 1])]
            alive = unit_alive[key].copy()
            alive[local - offsets[i]] = False
            new_masks[key] = units.expand(alive, masks[key])
            thresholds[key] = thresholds_value

    rows = []
    for key, wrapper, name in entries:
        # Masks built here are 0/1 of the right shape by construction.
        wrapper.mask_variable(name).assign(new_masks[key])
        before = int(np.count_nonzero(masks[key]))
        after = int(np.count_nonzero(new_masks[key]))
        rows.append(
            PrunedWeight(
                name=key,
                pool=assignment[key][0].split(":")[0],
                # The sparsity mode has no rate: report the fraction removed.
                rate=assignment[key][1] if sparsity is None else (
                    (before - after) / before if before else 0.0
                ),
                total=int(masks[key].size),
                before=before,
                after=after,
                threshold=thresholds[key],
            )
        )
    message = _collapse_warning(masks, new_masks)
    if message is not None:
        warnings.warn(message, UserWarning, stacklevel=2)
    return PruneReport(
        tuple(rows),
        scope=scope,
        criterion=criterion if isinstance(criterion, str) else getattr(
            criterion, "__name__", "custom"
        ),
    )


# -------------------------------------------------------------- mask I/O
def get_masks(model: keras.Model) -> dict[str, np.ndarray]:
    """Returns every mask of a wrapped model, keyed `"layer/weight"`.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> {k: v.shape for k, v in kl.get_masks(model).items()}
    {'dense/kernel': (3, 2)}
    """
    return {
        key: wrapper.get_mask(name)
        for key, wrapper, name in iter_weight_keys(require_wrappers(model))
    }


def set_masks(
    model: keras.Model,
    masks: Mapping[str, np.ndarray],
    *,
    strict: bool = True,
    by: str = "name",
) -> None:
    """Sets masks by `"layer/weight"` key, e.g. from `get_masks` of a ticket.

    Transfers a ticket between models of the same architecture (Morcos et
    al. 2019, "One ticket to win them all").

    Args:
        model: A model holding `PrunableWrapper` layers.
        masks: Arrays of 0/1 keyed like `get_masks(model)`.
        strict: Require a mask for every prunable weight of `model`.
        by: `"name"` matches keys to `get_masks(model)` keys; `"order"`
            matches the i-th mask to the i-th prunable weight (for a model
            of the same architecture whose layers are named differently).

    Raises:
        ValueError: For an unknown key, a missing key (when `strict`), a
            shape mismatch or values other than 0/1. Nothing is changed
            unless every mask is valid.

    Example:

    >>> import keras, keras_lottery as kl
    >>> def make():
    ...     return kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                      keras.layers.Dense(2)]))
    >>> a, b = make(), make()  # the same architecture, other layer names
    >>> _ = kl.prune(a, 0.5, output_rate=0.5)
    >>> kl.set_masks(b, kl.get_masks(a), by="order")
    >>> [int(m.sum()) for m in kl.get_masks(b).values()]
    [3]
    """
    if not isinstance(masks, Mapping):
        raise TypeError(
            "`masks` must be a dict of 'layer/weight' -> array, as returned "
            f"by get_masks. Received: {type(masks).__name__}."
        )
    targets = {
        key: (wrapper, name)
        for key, wrapper, name in iter_weight_keys(require_wrappers(model))
    }
    if by == "order":
        if len(masks) != len(targets):
            raise ValueError(
                f"by='order' needs one mask per prunable weight: "
                f"{len(targets)} for model '{model.name}'. "
                f"Received: {len(masks)} masks."
            )
        masks = dict(zip(targets, masks.values()))
    elif by != "name":
        raise ValueError(f"`by` must be 'name' or 'order'. Received: by={by!r}")
    unknown = sorted(set(masks) - set(targets))
    if unknown:
        raise ValueError(
            f"`masks` has keys {unknown} that match no prunable weight of "
            f"model '{model.name}'. Its weights are {sorted(targets)}. If "
            "the models differ only in layer names, pass by='order'."
        )
    missing = sorted(set(targets) - set(masks))
    if strict and missing:
        raise ValueError(
            f"`masks` lacks {missing}. Pass a mask for every prunable weight, "
            "or strict=False to leave those masks unchanged."
        )
    checked = {}
    for key, value in masks.items():
        wrapper, name = targets[key]
        array = np.asarray(keras.ops.convert_to_numpy(value))
        expected = tuple(wrapper.mask_variable(name).shape)
        if array.shape != expected:
            raise ValueError(
                f"Mask '{key}' must have shape {expected}. Received: shape "
                f"{array.shape}. Masks transfer only between models of the "
                "same architecture."
            )
        if array.dtype != bool and not np.all((array == 0) | (array == 1)):
            raise ValueError(f"Mask '{key}' must hold only 0 and 1.")
        checked[key] = array
    for key, array in checked.items():
        wrapper, name = targets[key]
        wrapper.set_mask(name, array)


def shuffle_masks(model: keras.Model, seed: int | None = None) -> None:
    """Moves each mask's ones to random positions, keeping its sparsity.

    The mask-shuffle control: same per-layer sparsity, structure destroyed.

    Args:
        model: A model holding `PrunableWrapper` layers.
        seed: Seed of the permutation.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...                                   keras.layers.Dense(10)]))
    >>> _ = kl.prune(model, 0.5, output_rate=0.5)
    >>> kl.shuffle_masks(model, seed=0)
    >>> [int(m.sum()) for m in kl.get_masks(model).values()]
    [50]
    """
    rng = np.random.default_rng(seed)
    for _, wrapper, name in iter_weight_keys(require_wrappers(model)):
        mask = wrapper.get_mask(name)
        wrapper.set_mask(name, rng.permutation(mask.ravel()).reshape(mask.shape))
