"""What one prune step did: `PruneReport`, and the one counting rule.

Counting rule, used everywhere: a pool of `n` remaining units pruned at
rate `r` loses `pruned_count(r, n) = floor(r * n + 0.5)` of them (round
half up), fewer only where `min_remaining` protects units.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

from keras_lottery._internal.io import text_table


def pruned_count(rate: float, remaining: int) -> int:
    """How many of `remaining` weights one round at `rate` removes.

    `floor(rate * remaining + 0.5)`: round half up, the one rounding rule
    of the library.

    Example:

    >>> from keras_lottery.pruning.report import pruned_count
    >>> pruned_count(0.2, 1000), pruned_count(0.5, 3)
    (200, 2)
    """
    return math.floor(rate * remaining + 0.5)


@dataclasses.dataclass(frozen=True)
class Group:
    """Layers pruned together, on one threshold, at their own rate.

    Args:
        layers: The layers, each named as `prune(rates=...)` names them:
            the wrapped layer's name (`"fc"`, which its wrapper shares), its
            key (`"encoder/fc"`), or a layer class
            (which selects its subclasses too) or class name.
        rate: The group's rate; the `rate` of `prune` when None.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(4, name="a"), keras.layers.Dense(4, name="b"),
    ...     keras.layers.Dense(2, name="out")]))
    >>> report = kl.prune(model, 0.2, groups=[kl.Group(["a", "b"], 0.5)])
    >>> [(w.name, w.pool) for w in report.weights]
    [('a/kernel', 'group0'), ('b/kernel', 'group0'), ('out/kernel', 'output')]
    """

    layers: tuple[str | type, ...]
    rate: float | None = None

    def __init__(self, layers: Sequence[str | type], rate: float | None = None):
        if isinstance(layers, (str, type)):
            layers = [layers]
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
    """What one `prune` step did, per prunable weight. Printable.

    Attributes:
        weights: One `PrunedWeight` per prunable weight, in layer order:
            its key, pool, rate, and counts before and after the step.
        scope: The `scope` of the step.
        criterion: The criterion's name.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...     keras.layers.Dense(10), keras.layers.Dense(2)]))
    >>> report = kl.prune(model, 0.5)
    >>> report.before, report.after, round(report.sparsity, 3)
    (120, 65, 0.458)
    """

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
        return text_table(rows, header, left=[0, 1], total=True)
