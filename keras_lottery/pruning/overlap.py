"""Mask overlap: how many kept weights two masks share, and how many chance
alone would give (`mask_overlap`, `MaskOverlap`).

Two masks are compared as the sets of weights they keep: their Jaccard
overlap |A∩B| / |A∪B|, and the fraction of B's survivors that survived in A,
|A∩B| / |B|. Random masks with the same densities p and q on n weights share
n·p·q kept weights on average, so the chance Jaccard is
n·p·q / (n·p + n·q - n·p·q) (the expected intersection over the expected
union), and the chance survived fraction is p, the density of A.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import keras
import numpy as np

from keras_lottery._internal.io import text_table
from keras_lottery.pruning.masks import get_masks

_BY = ("name", "order")
_FORMATS = {
    "density_a": ".4f", "density_b": ".4f", "jaccard": ".4f",
    "survived": ".4f", "chance_jaccard": ".4f",
}
_TITLES = {"chance_jaccard": "chance"}


def _ratio(part: float, whole: float) -> float:
    # Two empty sets are the same set; nothing kept in B all survived in A.
    return 1.0 if whole == 0 else float(part) / float(whole)


def _counts(name: str, a: np.ndarray, b: np.ndarray) -> dict:
    n = int(a.size)
    kept_a, kept_b = int(a.sum()), int(b.sum())
    both = int(np.logical_and(a, b).sum())
    p, q = _ratio(kept_a, n), _ratio(kept_b, n)
    return {
        "weight": name, "size": n, "kept_a": kept_a, "kept_b": kept_b,
        "both": both, "union": kept_a + kept_b - both,
        "chance_both": n * p * q if n else 0.0,
    }


def _row(counts: dict) -> dict:
    n = counts["size"]
    chance_union = counts["kept_a"] + counts["kept_b"] - counts["chance_both"]
    return {
        "weight": counts["weight"],
        "size": n,
        "density_a": _ratio(counts["kept_a"], n),
        "density_b": _ratio(counts["kept_b"], n),
        "jaccard": _ratio(counts["both"], counts["union"]),
        "survived": _ratio(counts["both"], counts["kept_b"]),
        "chance_jaccard": _ratio(counts["chance_both"], chance_union),
    }


@dataclass(frozen=True)
class MaskOverlap:
    """The overlap of two masks' kept weights, per weight and overall.

    Attributes:
        per_weight: One dict per weight (`"layer/weight"` of `a`): `weight`,
            `size`, `density_a`, `density_b` (fractions kept), `jaccard`,
            `survived` and `chance_jaccard`, as below for that weight.
        jaccard: |A∩B| / |A∪B| over all weights: 1.0 for identical masks,
            0.0 for disjoint ones.
        survived: |A∩B| / |B|: the fraction of b's kept weights also kept
            in a (1.0 when b's kept weights are a subset of a's).
        chance_jaccard: The Jaccard overlap expected of independent random
            masks with the same per-weight densities. The chance level of
            `survived` is `density_a`.
        density_a: The fraction of weights a keeps.
        density_b: The fraction of weights b keeps.

    Example:

    >>> import numpy as np, keras_lottery as kl
    >>> a = {"fc/kernel": np.array([1, 1, 1, 0])}
    >>> b = {"fc/kernel": np.array([1, 1, 0, 0])}
    >>> overlap = kl.mask_overlap(a, b)
    >>> overlap.jaccard, overlap.survived, round(overlap.chance_jaccard, 3)
    (0.6666666666666666, 1.0, 0.429)
    """

    per_weight: tuple[dict, ...]
    jaccard: float
    survived: float
    chance_jaccard: float
    density_a: float
    density_b: float

    def to_dict(self) -> dict:
        """The overlap as plain Python values (rows as a list)."""
        data = asdict(self)
        data["per_weight"] = [dict(row) for row in self.per_weight]
        return data

    def rows(self) -> list[dict]:
        """The table's rows: one per weight, then the total."""
        total = {
            "weight": "total",
            "size": sum(row["size"] for row in self.per_weight),
            "density_a": self.density_a, "density_b": self.density_b,
            "jaccard": self.jaccard, "survived": self.survived,
            "chance_jaccard": self.chance_jaccard,
        }
        return [dict(row) for row in self.per_weight] + [total]

    def __str__(self) -> str:
        return text_table(self.rows(), formats=_FORMATS, titles=_TITLES,
                          left=["weight"], total=True, empty="(no weights)")


def _as_masks(source, argument: str) -> dict[str, np.ndarray]:
    if isinstance(source, keras.Model):
        source = get_masks(source)
    elif not isinstance(source, Mapping):
        raise TypeError(
            f"`{argument}` is a dict of masks by 'layer/weight' (as get_masks "
            "returns) or a wrapped model. Received: "
            f"{type(source).__name__}."
        )
    return {str(k): np.asarray(v) != 0 for k, v in source.items()}


def _pairs(a: dict, b: dict, by: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, mask of a, mask of b) per weight, checked to correspond."""
    if by == "name":
        if set(a) != set(b):
            raise ValueError(
                "The two masks name different weights. Only in a: "
                f"{sorted(set(a) - set(b))}; only in b: "
                f"{sorted(set(b) - set(a))}. Received: a={sorted(a)}, "
                f"b={sorted(b)}. For models that differ only in layer "
                "names, pass by='order'."
            )
        pairs = [(k, a[k], b[k], k) for k in a]
    else:
        if len(a) != len(b):
            raise ValueError(
                f"The two masks hold different numbers of weights. Received: "
                f"{len(a)} in a ({sorted(a)}), {len(b)} in b ({sorted(b)})."
            )
        pairs = [(ka, a[ka], b[kb], kb) for ka, kb in zip(a, b)]
    for name, x, y, other in pairs:
        if x.shape != y.shape:
            raise ValueError(
                f"The masks of weight '{name}' differ in shape. Received: "
                f"{x.shape} in a, {y.shape} in b ('{other}')."
            )
    return [(name, x, y) for name, x, y, _ in pairs]


def mask_overlap(
    a: Mapping[str, np.ndarray] | keras.Model,
    b: Mapping[str, np.ndarray] | keras.Model,
    *,
    by: str = "name",
) -> MaskOverlap:
    """How far two masks keep the same weights, and how far chance would.

    Compares two tickets: two rounds of one search, the same round of two
    seeds, or a ticket and its shuffled control. A weight counts as kept
    where its mask is nonzero.

    Args:
        a: Masks by `"layer/weight"` (as `get_masks` returns them), or a
            wrapped model (its current masks). The reference: `survived`
            is the fraction of b's kept weights kept in a.
        b: The same for the other ticket.
        by: `"name"` pairs the weights by key; `"order"` pairs the i-th
            weight of a with the i-th of b (models of the same
            architecture whose layers are named differently).

    Returns:
        A `MaskOverlap`: per weight and overall, the Jaccard overlap, the
        survived fraction, and the Jaccard overlap of random masks of the
        same densities. `print` shows it as a table.

    Raises:
        ValueError: The masks name different weights, or a weight's masks
            differ in shape.

    Example:

    >>> import numpy as np, keras_lottery as kl
    >>> a = {"fc/kernel": np.array([[1, 1], [1, 0]]),
    ...      "out/kernel": np.array([1, 0, 1, 0])}
    >>> b = {"fc/kernel": np.array([[1, 0], [1, 0]]),
    ...      "out/kernel": np.array([0, 1, 1, 0])}
    >>> print(kl.mask_overlap(a, b))
    weight      size  density_a  density_b  jaccard  survived  chance
    -----------------------------------------------------------------
    fc/kernel      4     0.7500     0.5000   0.6667    1.0000  0.4286
    out/kernel     4     0.5000     0.5000   0.3333    0.5000  0.3333
    -----------------------------------------------------------------
    total          8     0.6250     0.5000   0.5000    0.7500  0.3846
    """
    if by not in _BY:
        raise ValueError(f"`by` is one of {_BY}. Received: by={by!r}.")
    counts = [
        _counts(name, x, y)
        for name, x, y in _pairs(_as_masks(a, "a"), _as_masks(b, "b"), by)
    ]
    size = sum(c["size"] for c in counts)
    total = {
        key: sum(c[key] for c in counts)
        for key in ("kept_a", "kept_b", "both", "union", "chance_both")
    }
    chance_union = total["kept_a"] + total["kept_b"] - total["chance_both"]
    return MaskOverlap(
        per_weight=tuple(_row(c) for c in counts),
        jaccard=_ratio(total["both"], total["union"]),
        survived=_ratio(total["both"], total["kept_b"]),
        chance_jaccard=_ratio(total["chance_both"], chance_union),
        density_a=_ratio(total["kept_a"], size),
        density_b=_ratio(total["kept_b"], size),
    )


def jaccard_matrix(
    masks: Sequence[Mapping[str, np.ndarray]], *, by: str = "name"
) -> np.ndarray:
    """The Jaccard overlap of every pair of `masks`, as a symmetric matrix
    (1.0 on the diagonal)."""
    n = len(masks)
    matrix = np.ones((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            value = mask_overlap(masks[i], masks[j], by=by).jaccard
            matrix[i, j] = matrix[j, i] = value
    return matrix
