"""Granularity: how a weight tensor is cut into the units that are pruned.

`prune` scores weights one by one (the criterion), then a granularity
groups those scores into units, prunes whole units, and expands the kept
units back into a mask. `"weight"` (unstructured) makes every weight its
own unit. Structured granularities implement the same three methods.
"""

from __future__ import annotations

import numpy as np


class Granularity:
    """How `prune` groups weights into units. Subclass to add a structure.

    A unit is pruned whole; counts, rates and `min_remaining` are in units.
    """

    name = "base"

    def reduce(
        self, score: np.ndarray, mask: np.ndarray, key: str
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-unit scores and alive flags (both 1-D) of one weight tensor.

        Args:
            score: Per-weight scores (higher: keep), the weight's shape.
            mask: The current 0/1 mask, the weight's shape.
            key: The weight's `"layer/weight"` name, for error messages.
        """
        raise NotImplementedError

    def expand(self, alive: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The new mask (weight's shape) from per-unit alive flags.

        The result never revives a weight that `mask` had pruned.
        """
        raise NotImplementedError


class WeightGranularity(Granularity):
    """Unstructured pruning: every weight is a unit."""

    name = "weight"

    def reduce(self, score, mask, key):
        return score.ravel(), mask.ravel() != 0

    def expand(self, alive, mask):
        return (alive.reshape(mask.shape) & (mask != 0)).astype(mask.dtype)


_GRANULARITIES: dict[str, type[Granularity]] = {"weight": WeightGranularity}


def get_granularity(granularity: str | Granularity, **options) -> Granularity:
    """Resolves a granularity name (or instance) to a `Granularity`."""
    if isinstance(granularity, Granularity):
        return granularity
    cls = _GRANULARITIES.get(granularity)
    if cls is None:
        raise ValueError(
            f"`granularity` must be one of {sorted(_GRANULARITIES)} or a "
            f"keras_lottery.granularity.Granularity. "
            f"Received: granularity={granularity!r}"
        )
    return cls(**options)
