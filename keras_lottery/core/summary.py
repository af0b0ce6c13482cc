"""`summary`: what is pruned, layer by layer, and what the wrappers cost."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import numpy as np

from keras_lottery._internal.io import text_table
from keras_lottery.core.model import require_wrappers, wrappers


def coverage(model: keras.Model) -> tuple[int, int, list[str]]:
    """How much of a model's kernels and matrices its wrappers cover.

    Returns:
        `(covered, total, unreached)`: the number of entries of trainable
        weights with two or more dimensions longer than 1 (kernels,
        embedding tables, matrices; not biases, even the 2-D ones of
        attention layers, nor a ViT's class token) that a
        `PrunableWrapper` masks, the number of all such entries, and the
        paths of the weights no wrapper masks.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(4, name="a"), keras.layers.Dense(2, name="b")]),
    ...     exclude=["b"])
    >>> covered, total, unreached = kl.coverage(model)
    >>> covered, total, [path.split("/")[0] for path in unreached]
    (12, 20, ['b'])
    """
    masked = {
        id(v) for w in wrappers(model).values() for v in w._weights.values()
    }
    covered = total = 0
    unreached = []
    for variable in model.trainable_weights:
        if sum(int(d) > 1 for d in variable.shape) < 2 or "bias" in variable.name:
            continue
        size = int(np.prod(variable.shape))
        total += size
        if id(variable) in masked:
            covered += size
        else:
            unreached.append(variable.path)
    return covered, total, unreached


# ----------------------------------------------------------------- summary
@dataclasses.dataclass(frozen=True)
class WeightSummary:
    """Counts for one prunable weight."""

    layer: str
    weight: str
    shape: tuple[int, ...]
    total: int
    remaining: int

    @property
    def sparsity(self) -> float:
        """Fraction of the weight's entries that are pruned (zero)."""
        return 1.0 - self.remaining / self.total if self.total else 0.0


@dataclasses.dataclass(frozen=True)
class PruningSummary:
    """Per-weight counts of a wrapped model, printable as a table.

    Attributes:
        weights: One `WeightSummary` per prunable weight.
        kernels_and_matrices: Entries of all the model's trainable weights
            with two or more dimensions longer than 1 (biases excluded):
            what `coverage` compares the prunable weights with.
        state_bytes: Bytes of keras-lottery state on the device: the masks
            (1 byte per prunable weight) and the rewind points kept in
            variables (none with `rewind_point="host"`).
    """

    weights: tuple[WeightSummary, ...]
    kernels_and_matrices: int = 0
    state_bytes: int = 0

    @property
    def coverage(self) -> float:
        """Fraction of the kernels and matrices that are prunable."""
        if not self.kernels_and_matrices:
            return 1.0
        return self.total / self.kernels_and_matrices

    @property
    def total(self) -> int:
        """Number of prunable weights in the model."""
        return sum(w.total for w in self.weights)

    @property
    def remaining(self) -> int:
        """Number of prunable weights not pruned."""
        return sum(w.remaining for w in self.weights)

    @property
    def sparsity(self) -> float:
        """Fraction of all prunable weights that are pruned."""
        return 1.0 - self.remaining / self.total if self.total else 0.0

    def to_dict(self) -> dict:
        """The summary as plain Python data (JSON-able)."""
        return {
            "weights": [
                {**dataclasses.asdict(w), "sparsity": w.sparsity}
                for w in self.weights
            ],
            "total": self.total,
            "remaining": self.remaining,
            "sparsity": self.sparsity,
            "kernels_and_matrices": self.kernels_and_matrices,
            "coverage": self.coverage,
            "state_bytes": self.state_bytes,
        }

    def __str__(self) -> str:
        rows = [
            (f"{w.layer}/{w.weight}", str(w.shape), f"{w.total:,}",
             f"{w.remaining:,}", f"{100 * w.sparsity:.2f}%")
            for w in self.weights
        ]
        rows.append(("Total", "", f"{self.total:,}", f"{self.remaining:,}",
                     f"{100 * self.sparsity:.2f}%"))
        header = ("Weight", "Shape", "Total", "Remaining", "Sparsity")
        lines = [text_table(rows, header, left=[0, 1], total=True)]
        if self.kernels_and_matrices:
            lines.append(
                f"Coverage: {self.total:,} of {self.kernels_and_matrices:,} "
                f"kernel and matrix weights prunable ({100 * self.coverage:.1f}%)"
                f"; keras-lottery state on the device: {self.state_bytes:,} "
                f"bytes ({self.state_bytes / max(self.total, 1):.1f} per "
                "prunable weight)."
            )
        return "\n".join(lines)


def summary(
    model: keras.Model, print_fn: Callable[[str], object] | None = print
) -> PruningSummary:
    """Prints and returns the prunable weights of a model and their sparsity.

    Args:
        model: A model holding `PrunableWrapper` layers.
        print_fn: Called with the table as one string; None prints nothing.

    Returns:
        A `PruningSummary`: per weight its shape, total count, remaining
        count and sparsity, plus totals (`.total`, `.remaining`,
        `.sparsity`) and `.to_dict()`.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> kl.summary(model, print_fn=None).total
    6
    """
    rows = []
    for key, wrapper in require_wrappers(model).items():
        for name in wrapper.weight_names:
            mask = wrapper.get_mask(name)
            rows.append(
                WeightSummary(
                    layer=key,
                    weight=name,
                    shape=tuple(int(d) for d in mask.shape),
                    total=int(mask.size),
                    remaining=int(np.count_nonzero(mask)),
                )
            )
    _, kernels, _ = coverage(model)
    state = sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for w in wrappers(model).values() for v in w._state_variables()
    )
    result = PruningSummary(tuple(rows), kernels, state)
    if print_fn is not None:
        print_fn(str(result))
    return result
