"""Pruning criteria: how each weight is scored (a higher score means keep).

A named criterion is one function `fn(weight, rng) -> scores` of the
weight's shape and one registration, as in jaxpruner:

    @register_criterion("magnitude")
    def magnitude(weight, rng):
        return np.abs(weight)

`prune(criterion=...)` also takes a callable `fn(weight, name) -> scores`
of the user's own. All the arithmetic runs in NumPy on host copies of the
weights, so the same weights and seed give the same scores on TensorFlow,
JAX and PyTorch.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

Criterion = str | Callable[[np.ndarray, str], np.ndarray]
ScoreFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Criterion name -> fn(weight, rng) -> scores. Filled by register_criterion.
CRITERIA: dict[str, ScoreFn] = {}


def register_criterion(name: str) -> Callable[[ScoreFn], ScoreFn]:
    """Registers `fn(weight, rng) -> scores` as `prune(criterion=name)`.

    `weight` is the stored weight (its pruned entries are never
    candidates, whatever their score); `rng` is the step's
    `np.random.Generator`, seeded by `prune(seed=...)`.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.pruning.scores import CRITERIA, register_criterion
    >>> @register_criterion("square")
    ... def square(weight, rng):
    ...     return np.square(weight)
    >>> CRITERIA["square"](np.array([-2.0, 1.0]), None).tolist()
    [4.0, 1.0]
    >>> del CRITERIA["square"]
    """

    def add(fn: ScoreFn) -> ScoreFn:
        CRITERIA[name] = fn
        return fn

    return add


@register_criterion("magnitude")
def magnitude(weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """|w|: the lottery ticket criterion (Frankle & Carbin 2019)."""
    return np.abs(weight)


@register_criterion("random")
def random(weight: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random scores: the same counts at random positions (the control)."""
    return rng.random(weight.shape)


def check_criterion(criterion) -> Criterion:
    """Returns `criterion` if it is a registered name or a callable.

    Example:

    >>> from keras_lottery.pruning.scores import check_criterion
    >>> check_criterion("magnitude")
    'magnitude'
    """
    if callable(criterion) or (isinstance(criterion, str) and criterion in CRITERIA):
        return criterion
    raise ValueError(
        f"`criterion` must be one of {tuple(CRITERIA)} or a callable "
        f"fn(weight, name) -> scores. Received: criterion={criterion!r}"
    )


def criterion_name(criterion: Criterion) -> str:
    """The name a `PruneReport` records for `criterion`."""
    if isinstance(criterion, str):
        return criterion
    return getattr(criterion, "__name__", "custom")


def _custom_scores(criterion, raw, alive, key) -> np.ndarray:
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
    return score


def score_weights(
    entries, masks: dict[str, np.ndarray], criterion: Criterion, seed: int | None
) -> dict[str, np.ndarray]:
    """Scores every prunable weight; a higher score means keep.

    Args:
        entries: `(key, wrapper, weight name)` of every prunable weight.
        masks: The current masks by key.
        criterion: A registered name or a callable `fn(weight, name)`.
        seed: Seed of the generator handed to registered criteria.

    Raises:
        ValueError: For NaN or infinite weights, or a callable's scores of
            the wrong shape or not finite.
    """
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
        if isinstance(criterion, str):
            scores[key] = CRITERIA[criterion](raw, rng)
        else:
            scores[key] = _custom_scores(criterion, raw, alive, key)
    return scores
