"""Pruning criteria: how the weights are scored (a higher score means keep).

The rule is kept apart from the mechanics, as in jaxpruner
(`calculate_scores`) and `torch.nn.utils.prune` (`compute_mask`): a
`Criterion` has one scoring method, `score(weights, context)`, and is
registered by name with `register_criterion`; `prune` pools, counts, cuts
into units and selects the same way for every criterion. `criterion=` takes
a registered name (`"magnitude"`, `"random"`, and the data-driven `"snip"`,
`"grasp"`, `"synflow"` of `keras_lottery.pruning.criteria`), a `Criterion`
(`kl.SNIP(data=(x, y))`), or a callable `fn(weight, name) -> scores`; a
plain `fn(weight, rng)` registered by name still works.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import keras
import numpy as np

from keras_lottery.core.state import host_view
from keras_lottery.pruning.granularity import Granularity


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may look at besides the weights.

    Attributes:
        model: The wrapped model being pruned.
        variables: Each prunable weight's raw variable, by `"layer/weight"`
            key (gradient-based criteria differentiate with respect to
            these; they hold exactly 0.0 where the model's masks prune).
        masks: The masks the scores are for, by key (0/1 arrays). An
            iterative criterion (SynFlow) sees masks sparser than the
            model's: those of its previous scoring rounds.
        rng: A NumPy generator seeded by `prune(seed=...)`.
    """

    model: keras.Model | None
    variables: Mapping[str, keras.Variable]
    masks: Mapping[str, np.ndarray]
    rng: np.random.Generator


class Criterion:
    """A pruning criterion: one scoring method. Subclass to add your own.

    `score(weights, context)` gets every prunable weight (NumPy, masked:
    pruned entries are 0) by `"layer/weight"` key and returns one score
    array per key, of the weight's shape; a higher score means keep. The
    pools, exact counts, scopes, output-layer rule and granularities are
    `prune`'s, the same for every criterion, and a pruned weight is never
    a candidate, whatever its score.

    `rounds > 1` makes a criterion iterative (SynFlow): `prune` then
    scores and selects `rounds` times, each round keeping an exponentially
    smaller fraction (`keep ** (i / rounds)` of what the call starts with,
    `keep` its final fraction), with the masks of the previous round in
    `context.masks`; the last round gives exactly `prune`'s counts.

    Example: a criterion of one's own, by name everywhere.

    >>> import keras, numpy as np, keras_lottery as kl
    >>> from keras_lottery.pruning.scores import Criterion, register_criterion
    >>> @register_criterion("square")
    ... class Square(Criterion):
    ...     def score(self, weights, context):
    ...         return {key: np.square(w) for key, w in weights.items()}
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...                                   keras.layers.Dense(2)]))
    >>> kl.prune(model, 0.5, output_rate=0.5, criterion="square").criterion
    'square'
    >>> from keras_lottery.pruning.scores import CRITERIA
    >>> del CRITERIA["square"]
    """

    name: str = "custom"
    rounds: int = 1

    def score(
        self, weights: Mapping[str, np.ndarray], context: ScoreContext
    ) -> Mapping[str, np.ndarray]:
        """Scores by key, each of its weight's shape; higher means keep."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement score(weights, context)."
        )

    def score_raw(
        self, raw: Mapping[str, np.ndarray], context: ScoreContext, *,
        float64: bool = True,
    ) -> dict[str, np.ndarray]:
        """Scores from the variables' raw host arrays: what `prune` calls.

        This default refuses a kept weight that is NaN or infinite
        (`check_finite`), zeroes the pruned entries, calls `score` and
        checks its answer. Override it only to compute `score`'s answer in
        fewer passes over memory, as `Magnitude` does.

        Args:
            raw: Each prunable weight on the host by key, read when
                looked up (once each), as its variable holds it: a pruned
                entry may hold anything, NaN included. Write into one only
                where `raw[key].flags.owndata and .writeable` (JAX and
                torch on a CPU hand out read-only views, `host_view`).
            context: As for `score`; `context.masks` are the masks.
            float64: Return float64 scores (a granularity sums them into
                units); False leaves float32 scores float32.

        Returns:
            Scores by key, each of its weight's shape, finite where kept.
        """
        weights = {}
        for key, weight in raw.items():
            alive = _alive(context.masks[key])
            check_finite(key, weight, alive)
            if _own(weight):  # in place: no second copy of every weight
                np.copyto(weight, 0, where=~alive)
            else:
                weight = np.where(alive, weight, 0).astype(weight.dtype)
            weights[key] = weight
        return _checked(self.score(weights, context), weights, self, float64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# Criterion name -> a Criterion subclass (built with no arguments).
CRITERIA: dict[str, type[Criterion]] = {}


class _WeightFunction(Criterion):
    """A function of one weight, `fn(weight, rng)` or `fn(weight, name)`."""

    def __init__(self, fn: Callable, name: str, by_name: bool):
        self.fn, self.name, self.by_name = fn, name, by_name

    def score(self, weights, context):
        return {
            key: self.fn(w, key if self.by_name else context.rng)
            for key, w in weights.items()
        }

    def __repr__(self) -> str:
        return self.name


def register_criterion(name: str) -> Callable:
    """Registers a criterion as `criterion=name` for every prune option user.

    Decorates a `Criterion` subclass (built with no arguments when named),
    or a plain function `fn(weight, rng) -> scores` of one weight, where
    `rng` is the step's `np.random.Generator`, seeded by `prune(seed=...)`.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> from keras_lottery.pruning.scores import register_criterion
    >>> @register_criterion("inverse")
    ... def inverse(weight, rng):
    ...     return -np.abs(weight)
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...                                   keras.layers.Dense(2)]))
    >>> _ = model.layers[0].layer.kernel.assign(np.arange(8.0).reshape(4, 2))
    >>> _ = kl.prune(model, 0.5, output_rate=0.5, criterion="inverse")
    >>> kl.get_masks(model)["dense/kernel"][:, 0].tolist()  # large ones go
    [1.0, 1.0, 0.0, 0.0]
    >>> from keras_lottery.pruning.scores import CRITERIA
    >>> del CRITERIA["inverse"]
    """
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"A criterion is registered under a non-empty name. Received: "
            f"name={name!r}"
        )

    def add(target):
        if isinstance(target, type) and issubclass(target, Criterion):
            target.name = name
            CRITERIA[name] = target
        elif callable(target):
            CRITERIA[name] = lambda: _WeightFunction(target, name, by_name=False)
        else:
            raise TypeError(
                "register_criterion decorates a Criterion subclass or a "
                f"function fn(weight, rng). Received: {target!r}"
            )
        return target

    return add


@register_criterion("magnitude")
class Magnitude(Criterion):
    """|w|: the lottery ticket criterion (Frankle & Carbin 2019).

    >>> import numpy as np
    >>> from keras_lottery.pruning.scores import Magnitude
    >>> Magnitude().score({"fc/kernel": np.array([-2.0, 1.0])}, None)
    {'fc/kernel': array([2., 1.])}
    """

    def score(self, weights, context):
        return {key: np.abs(w) for key, w in weights.items()}

    def score_raw(self, raw, context, *, float64=True):
        """`score`'s |w| in two or three passes (the default makes about
        eight): |w| in place, `check_finite`, then 0 where pruned only for
        `float64` (summed into units; a pruned single weight's score is
        never read). A subclass overriding `score` gets the default."""
        if not plain_magnitude(self):
            return super().score_raw(raw, context, float64=float64)
        out = {}
        for key, weight in raw.items():
            alive = _alive(context.masks[key])
            score = np.abs(weight, out=weight if _own(weight) else None)
            if not check_finite(key, score, alive, nonnegative=True):
                score = np.where(alive, score, 0).astype(score.dtype)
            elif float64:
                np.multiply(score, alive, out=score)
            out[key] = _as_scores(score, float64)
        return out


def plain_magnitude(criterion) -> bool:
    """Whether `criterion` scores |w| (`Magnitude`, or a subclass keeping
    its `score`), so that the fast paths (host, device) apply."""
    return isinstance(criterion, Magnitude) and type(criterion).score is Magnitude.score


@register_criterion("random")
class Random(Criterion):
    """Random scores: the same counts at random positions (the control)."""

    def score(self, weights, context):
        return {key: context.rng.random(w.shape) for key, w in weights.items()}


def _builtin() -> None:
    # The data-driven criteria register themselves when first imported.
    import keras_lottery.pruning.criteria  # noqa: F401


def get_criterion(criterion) -> Criterion:
    """The `Criterion` object `criterion=` names; a clear error otherwise.

    >>> from keras_lottery.pruning.scores import get_criterion
    >>> get_criterion("magnitude")
    Magnitude()
    """
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, type) and issubclass(criterion, Criterion):
        return criterion()
    if isinstance(criterion, str):
        _builtin()
        if criterion in CRITERIA:
            return CRITERIA[criterion]()
    elif callable(criterion):
        name = getattr(criterion, "__name__", "custom")
        return _WeightFunction(criterion, name, by_name=True)
    _builtin()
    raise ValueError(
        f"`criterion` must be one of {tuple(CRITERIA)}, a "
        "keras_lottery.Criterion (e.g. kl.SNIP(data=(x, y))), or a callable "
        f"fn(weight, name) -> scores. Received: criterion={criterion!r}"
    )


def check_criterion(criterion):
    """Returns `criterion` if `get_criterion` accepts it.

    >>> from keras_lottery.pruning.scores import check_criterion
    >>> check_criterion("magnitude")
    'magnitude'
    """
    get_criterion(criterion)
    return criterion


def criterion_name(criterion) -> str:
    """The name a `PruneReport` records for `criterion`."""
    return get_criterion(criterion).name


def _as_scores(score, float64: bool) -> np.ndarray:
    """Scores as float64, or (`float64=False`) a float32 array as it is:
    widening is exact, so single weights rank the same either way."""
    score = np.asarray(score)
    if not float64 and score.dtype in (np.float32, np.float64):
        return score
    return np.asarray(score, dtype=np.float64)


def _checked(scores, weights, criterion, float64) -> dict[str, np.ndarray]:
    if not isinstance(scores, Mapping) or set(scores) != set(weights):
        got = sorted(scores) if isinstance(scores, Mapping) else type(scores).__name__
        raise ValueError(
            f"Criterion {criterion!r} must return one score array per "
            f"weight, keyed {sorted(weights)}. Received: {got}.")
    out = {}
    for key, weight in weights.items():
        score = _as_scores(scores[key], float64)
        if score.shape != weight.shape:
            raise ValueError(
                f"The criterion must return one score per weight: shape "
                f"{weight.shape} for '{key}'. Received: shape {score.shape}.")
        if not np.all(np.isfinite(score)):
            raise ValueError(
                f"The criterion returned NaN or infinite scores for '{key}'.")
        out[key] = score
    return out


def _alive(mask: np.ndarray) -> np.ndarray:  # bool, or 0/1 floats
    return mask if mask.dtype == bool else mask != 0


def _own(array: np.ndarray) -> bool:
    """Our own host copy (TF), not a view of a variable's memory (JAX, torch)."""
    return array.flags.owndata and array.flags.writeable


def check_finite(key: str, values: np.ndarray, alive: np.ndarray, *,
                 nonnegative: bool = False) -> bool:
    """Whether every entry of `values` (a weight, or |w|: `nonnegative`) is
    finite, in one or two reductions (max; min) and no temporary; only if
    not are the kept entries (`alive`) looked at: a ValueError naming `key`
    if one is not finite. A pruned entry may hold anything a user assigned:
    False then, and the caller zeroes the pruned entries.

    >>> import numpy as np
    >>> from keras_lottery.pruning.scores import check_finite
    >>> check_finite("fc/kernel", np.array([1.0, np.nan]), np.array([1, 0]) > 0)
    False
    """
    if not values.size:
        return True
    low = 0.0 if nonnegative else values.min()
    if np.isfinite(low) and np.isfinite(values.max()):
        return True
    if not np.isfinite(values[alive]).all():
        raise ValueError(
            f"Weight '{key}' holds NaN or infinite values, so magnitudes "
            "are meaningless; refusing to prune. Check the training run "
            "that produced them (learning rate, loss scaling)."
        )
    return False


def score_weights(
    entries, masks: dict[str, np.ndarray], criterion, seed: int | None,
    model: keras.Model | None = None, *, float64: bool = True,
) -> dict[str, np.ndarray]:
    """Scores every prunable weight; a higher score means keep.

    One host copy of each weight, scored by `criterion.score_raw` (by
    default: `check_finite`, pruned entries zeroed, `score`).

    Args:
        entries: `(key, wrapper, weight name)` of every prunable weight.
        masks: The masks to score under, by key.
        criterion: Anything `get_criterion` accepts.
        seed: Seed of the generator handed to criteria.
        model: The wrapped model, for criteria that run it.
        float64: Hand every score on as float64 (a granularity that sums
            scores into units needs it); False leaves float32 scores
            float32, which rank single weights the same, at half the
            memory traffic.

    Raises:
        ValueError: For NaN or infinite weights, or scores of the wrong
            keys or shapes, or not finite.
    """
    criterion = get_criterion(criterion)
    variables = {key: w.prunable_variable(name) for key, w, name in entries}
    context = ScoreContext(model, variables, masks, np.random.default_rng(seed))
    return criterion.score_raw(_HostArrays(variables), context, float64=float64)


class _HostArrays(Mapping):
    """Each variable on the host (`host_view`: no copy where the backend
    shares its CPU memory), read when looked up (one at a time)."""

    def __init__(self, variables: Mapping[str, keras.Variable]):
        self.variables = variables

    def __getitem__(self, key: str) -> np.ndarray:
        return np.asarray(host_view(self.variables[key]))

    def __iter__(self):
        return iter(self.variables)

    def __len__(self) -> int:
        return len(self.variables)


# ----------------------------------------------- rounds and prune_highest
def scheduled(value: float | None, fraction: float) -> float | None:
    """A rate or sparsity at `fraction` of an exponential schedule.

    The kept fraction goes from 1 to `1 - value` as `(1 - value) ** fraction`
    (Tanaka et al. 2020's schedule for SynFlow); at `fraction == 1` the
    value itself, so that the last round's counts are `prune`'s exactly.

    Example:

    >>> from keras_lottery.pruning.scores import scheduled
    >>> round(scheduled(0.99, 0.5), 6), scheduled(0.99, 1.0)
    (0.9, 0.99)
    """
    if value is None or fraction >= 1.0:
        return value
    return 1.0 - (1.0 - value) ** fraction


class Steered(Granularity):
    """A granularity's units, ranked for `prune_highest` and later rounds.

    `prune_highest=True` negates the unit scores after the granularity
    reduced them (a block's norm keeps its meaning), so the highest-scored
    units go first and `min_remaining` keeps the lowest-scored. In round
    `i > 1` of an iterative criterion, the units earlier rounds pruned rank
    below every other (they are pruned again first, so no unit is ever
    revived), and the masks of the round before bound the new ones.
    """

    name = "steered"

    def __init__(self, units: Granularity, invert: bool, current=None):
        self.units, self.invert, self.current = units, invert, current

    def reduce(self, score, mask, key):
        unit_scores, alive = self.units.reduce(score, mask, key)
        if self.invert:
            unit_scores = -unit_scores
        if self.current is not None:
            _, still = self.units.reduce(score, self.current[key], key)
            gone = alive & ~still
            if gone.any():
                floor = unit_scores[alive & still].min(initial=0.0)
                unit_scores = np.where(gone, floor - 1.0 - np.abs(floor), unit_scores)
        return unit_scores, alive

    def expand(self, alive, mask):
        return self.units.expand(alive, mask)

    def protect(self, score, mask, key):
        return self.units.protect(-score if self.invert else score, mask, key)
