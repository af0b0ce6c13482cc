"""Granularity: how a weight tensor is cut into the units that are pruned.

`prune` scores weights one by one (the criterion), then a granularity
groups those scores into units, prunes whole units, and expands the kept
units back into a mask. Counts, rates and `min_remaining` are in units.

- `"weight"`: unstructured; every weight is its own unit.
- `"block"`: `block_shape` tiles of the last two axes, `(input, output)`
  for Dense kernels (`(in, out)`) and convolution kernels
  (`(..., in, out)`, tiled separately at every spatial position). The
  default `(4, 1)` is `kernel[i:i+4, j]`, the layout of TFLite's sparse
  FullyConnected kernel; int8 needs `(16, 1)`. A block is scored by the
  L1 (or L2) norm of its weights. Axes not divisible by the block end in
  a partial block, which is a block of its own (counted once, like any
  block), scored by the same norm over the weights it has, rescaled to a
  full block's size (L1 times full/partial, L2 times its square root), so
  that a short block is not pruned first merely for being short.
- `"channel"`: whole channels of the model's channel dependency graph
  (`keras_lottery.core.depgraph.channel_groups`): a Dense unit or conv filter together
  with every weight coupled to it (the depthwise filters and
  BatchNormalization after it, the other branches of a residual `Add`, the
  next layers' input rows), scored by the L1 (or L2) norm of all of them,
  pruned together (every prunable slice zeroed). A `MultiHeadAttention`'s
  channels are its heads: a head's query, key and value kernel slices and
  its output projection rows are one unit (its output projection's
  columns are channels like a Dense's). The output layer's units
  are never pruned. Pair it with `keras_lottery.shrink` to get a
  physically smaller model. Without a graph (a subclassed model) a unit is
  one kernel's output column.
- `"N:M"` (e.g. `"2:4"`): at most N weights kept in every M consecutive
  weights along the input axis (the second-to-last), as NVIDIA's 2:4
  sparsity and tfmot's `sparsity_m_by_n`. Units are single weights, so a
  round prunes `rate` of the remaining weights by score, but never one of
  the N best of its group (`Granularity.protect`). Rounds thus approach
  N:M and land on it exactly once the rate asks for more than N:M allows:
  from dense, one round at `rate >= 1 - N/M` gives exactly N:M; 2:4 at
  `rate=0.2` arrives in round 4. Later rounds prune nothing more. An axis
  not divisible by M ends in a shorter group that also keeps at most N.

Example:

>>> import keras, keras_lottery as kl
>>> model = kl.wrap(keras.Sequential([
...     keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)]))
>>> _ = kl.prune(model, 0.5, granularity="block", block_shape=(4, 1))
>>> mask = kl.get_masks(model)["dense/kernel"]
>>> bool((mask[0::4] == mask[1::4]).all()), int(mask.sum())
(True, 16)
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

NORMS = ("l1", "l2")


class Granularity:
    """How `prune` groups weights into units. Subclass to add a structure.

    A unit is pruned whole; counts, rates and `min_remaining` are in units.

    Example: prune whole rows (input features) of a Dense kernel.

    >>> import keras, numpy as np, keras_lottery as kl
    >>> class Rows(kl.Granularity):
    ...     name = "rows"
    ...     def reduce(self, score, mask, key):
    ...         return score.sum(axis=1), mask.any(axis=1)
    ...     def expand(self, alive, mask):
    ...         return mask * alive[:, None].astype(mask.dtype)
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...                                   keras.layers.Dense(3, name="fc")]))
    >>> _ = model.layers[0].layer.kernel.assign(
    ...     np.array([[1, 1, 1], [5, 5, 5], [2, 2, 2], [9, 9, 9]], "float32"))
    >>> _ = kl.prune(model, 0.5, output_rate=0.5, granularity=Rows())
    >>> kl.get_masks(model)["fc/kernel"].sum(axis=1).tolist()  # rows kept
    [0.0, 3.0, 0.0, 3.0]
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

    def protect(
        self, score: np.ndarray, mask: np.ndarray, key: str
    ) -> np.ndarray | None:
        """Unit positions (flat) this step may not prune, or None.

        For structures that are a bound rather than a tiling (N:M keeps the
        N best of every group). Protected units still count as remaining.
        """
        return None

    def bind(self, model, masks, scores) -> Granularity:
        """The granularity one `prune` call uses on `model` (default: self).

        `masks` and `scores` are keyed `"layer/weight"`. A granularity
        whose units span several tensors returns a bound copy that
        implements `complete`.
        """
        return self

    def complete(self, masks: dict) -> dict:
        """The final masks of one `prune` call, after every pool (default:
        unchanged); units spanning several tensors are applied here."""
        return masks


class WeightGranularity(Granularity):
    """Unstructured pruning: every weight is a unit."""

    name = "weight"

    def reduce(self, score, mask, key):
        return score.ravel(), mask.ravel() != 0

    def expand(self, alive, mask):
        return (alive.reshape(mask.shape) & (mask != 0)).astype(mask.dtype)


def _check_norm(norm) -> str:
    if norm not in NORMS:
        raise ValueError(
            f"`norm` scores a block or channel by the norm of its weights "
            f"and must be one of {NORMS}. Received: norm={norm!r}"
        )
    return norm


def _reduce_norm(values: np.ndarray, axes, norm: str) -> np.ndarray:
    if norm == "l1":
        return np.abs(values).sum(axis=axes)
    return np.sqrt(np.square(values).sum(axis=axes))


def _require_matrix(shape, key: str, what: str) -> None:
    if len(shape) < 2:
        raise ValueError(
            f"granularity={what!r} needs weights with an input and an output "
            f"axis (rank >= 2), but '{key}' has shape {tuple(shape)}. Exclude "
            "that layer from pruning (wrap(..., exclude=[...])) or prune it "
            "with granularity='weight' in a separate call."
        )


class BlockGranularity(Granularity):
    """Blocks of `block_shape` over the (input, output) axes, pruned whole.

    The last two axes of a weight are taken as (input, output): `(in, out)`
    for a Dense kernel, `(..., in, out)` for a convolution kernel, whose
    spatial positions are tiled separately. `block_shape=(4, 1)` is
    `kernel[i:i+4, j]`. A partial block at the end of an axis is a block
    of its own, scored by the same norm over the weights it holds,
    rescaled to a full block's size.

    Args:
        block_shape: `(rows along the input axis, columns along the output
            axis)`, positive ints.
        norm: `"l1"` (sum of |score|) or `"l2"` (root of the sum of
            squares) over each block; pruned weights count as 0.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.pruning.granularity import BlockGranularity
    >>> g = BlockGranularity((2, 1))
    >>> scores, alive = g.reduce(np.arange(6.0).reshape(3, 2), np.ones((3, 2)), "w")
    >>> scores.tolist()  # blocks [0,2],[1,3]; partial [4],[5] scaled by 2
    [2.0, 4.0, 8.0, 10.0]
    """

    name = "block"

    def __init__(self, block_shape: Sequence[int] = (4, 1), norm: str = "l1"):
        shape = tuple(block_shape) if isinstance(block_shape, Sequence) else None
        if shape is None or len(shape) != 2 or any(
            isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1
            for b in shape
        ):
            raise ValueError(
                "`block_shape` is (rows along the input axis, columns along "
                "the output axis), two positive ints; TFLite's sparse "
                "FullyConnected uses (4, 1) for float32 and (16, 1) for int8. "
                f"Received: block_shape={block_shape!r}"
            )
        self.block_shape = (int(shape[0]), int(shape[1]))
        self.norm = _check_norm(norm)

    def _layout(self, shape):
        rows, cols = self.block_shape
        n_in, n_out = shape[-2], shape[-1]
        return -(-n_in // rows), -(-n_out // cols)

    def _blocked(self, array: np.ndarray) -> np.ndarray:
        """(lead..., in, out) -> (lead..., blocks_in, rows, blocks_out, cols)."""
        rows, cols = self.block_shape
        b_in, b_out = self._layout(array.shape)
        pad_in, pad_out = b_in * rows - array.shape[-2], b_out * cols - array.shape[-1]
        if pad_in or pad_out:
            pads = [(0, 0)] * (array.ndim - 2) + [(0, pad_in), (0, pad_out)]
            array = np.pad(array, pads)
        return array.reshape(*array.shape[:-2], b_in, rows, b_out, cols)

    def reduce(self, score, mask, key):
        _require_matrix(mask.shape, key, "block")
        alive_w = mask != 0
        blocked = self._blocked(np.where(alive_w, score, 0.0))
        unit_scores = _reduce_norm(blocked, (-3, -1), self.norm)
        rows, cols = self.block_shape
        if mask.shape[-2] % rows or mask.shape[-1] % cols:
            # Partial blocks: the norm rescaled to a full block's size, so a
            # short block is not pruned first for being short.
            size = self._blocked(np.ones(mask.shape[-2:])).sum(axis=(-3, -1))
            scale = (rows * cols) / size
            unit_scores = unit_scores * (scale if self.norm == "l1" else np.sqrt(scale))
        alive = self._blocked(alive_w).any(axis=(-3, -1))
        return unit_scores.ravel(), alive.ravel()

    def expand(self, alive, mask):
        rows, cols = self.block_shape
        b_in, b_out = self._layout(mask.shape)
        grid = alive.reshape(*mask.shape[:-2], b_in, b_out)
        full = np.repeat(np.repeat(grid, rows, axis=-2), cols, axis=-1)
        full = full[..., : mask.shape[-2], : mask.shape[-1]]
        return (full & (mask != 0)).astype(mask.dtype)

    def aligned(self, mask: np.ndarray) -> bool:
        """Whether the nonzeros of `mask` fill whole blocks, or none of one.

        The one block tiling of the library (`check_block_alignment` uses
        it too): a partial block at the end of an axis is a block of its
        own, aligned when its entries are all zero or all nonzero.

        Example:

        >>> import numpy as np
        >>> from keras_lottery.pruning.granularity import BlockGranularity
        >>> g = BlockGranularity((2, 1))
        >>> g.aligned(np.array([[1, 0], [1, 0], [0, 1]])), g.aligned(np.eye(3))
        (True, False)
        """
        nonzero = np.asarray(mask) != 0
        _require_matrix(nonzero.shape, "mask", "block")
        alive = self._blocked(nonzero).any(axis=(-3, -1)).ravel()
        full = self.expand(alive, np.ones(nonzero.shape, dtype=bool))
        return bool(np.array_equal(full, nonzero))


class ChannelGranularity(Granularity):
    """Whole output units (Dense) or filters (Conv): the last axis.

    Args:
        norm: `"l1"` or `"l2"` over each unit's weights; pruned weights
            count as 0.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.pruning.granularity import ChannelGranularity
    >>> ChannelGranularity().reduce(np.eye(2) * 3, np.ones((2, 2)), "w")[0].tolist()
    [3.0, 3.0]
    """

    name = "channel"

    def __init__(self, norm: str = "l1"):
        self.norm = _check_norm(norm)

    def reduce(self, score, mask, key):
        _require_matrix(mask.shape, key, "channel")
        alive_w = mask != 0
        flat = np.where(alive_w, score, 0.0).reshape(-1, mask.shape[-1])
        return (
            _reduce_norm(flat, 0, self.norm),
            alive_w.reshape(-1, mask.shape[-1]).any(axis=0),
        )

    def bind(self, model, masks, scores):
        """Binds to the model's channel groups (`core.depgraph`): a unit
        is a group's channel, across every layer it couples. A model
        without a graph (subclassed) keeps each kernel's columns."""
        from keras_lottery.core.depgraph import channel_groups
        from keras_lottery.pruning.channel_groups import GroupedChannels

        try:
            graph = channel_groups(model)
        except TypeError:
            return self
        return GroupedChannels(graph, masks, scores, self.norm)

    def expand(self, alive, mask):
        return ((mask != 0) & alive.reshape(1, -1).reshape(
            (1,) * (mask.ndim - 1) + (-1,))).astype(mask.dtype)


class NMGranularity(WeightGranularity):
    """At most `n` of every `m` consecutive weights along the input axis.

    Units are single weights; `protect` keeps the `n` best-scored alive
    weights of every group (ties: the later position is kept), so each
    round prunes towards N:M and stops exactly on it.

    Args:
        n: Weights kept per group.
        m: Group length along the input (second-to-last) axis.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.pruning.granularity import NMGranularity
    >>> g = NMGranularity(2, 4)
    >>> score = np.array([[4.0], [1.0], [3.0], [2.0]])
    >>> g.protect(score, np.ones((4, 1)), "w").tolist()
    [0, 2]
    """

    def __init__(self, n: int = 2, m: int = 4):
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
               for v in (n, m)) or not 0 < n < m:
            raise ValueError(
                "N:M sparsity keeps n of every m consecutive weights and "
                f"needs ints 0 < n < m, e.g. '2:4'. Received: n={n!r}, m={m!r}"
            )
        self.n, self.m = int(n), int(m)
        self.name = f"{self.n}:{self.m}"

    def _groups(self, array: np.ndarray, fill) -> np.ndarray:
        """(..., in, out) -> (groups, m): groups along the input axis."""
        moved = np.moveaxis(array, -2, -1)  # (..., out, in)
        n_in = moved.shape[-1]
        pad = -n_in % self.m
        if pad:
            moved = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)],
                           constant_values=fill)
        return moved.reshape(-1, self.m)

    def protect(self, score, mask, key):
        _require_matrix(mask.shape, key, self.name)
        alive = mask != 0
        positions = np.arange(mask.size).reshape(mask.shape)
        s = self._groups(np.where(alive, score, -np.inf), -np.inf)
        a = self._groups(alive, False)
        p = self._groups(positions, -1)
        # Best n per group, later positions first among ties: a stable sort
        # of the reversed group by descending score.
        order = np.argsort(-s[:, ::-1], axis=1, kind="stable")[:, : self.n]
        order = self.m - 1 - order
        rows = np.arange(s.shape[0])[:, None]
        keep = a[rows, order]
        return np.sort(p[rows, order][keep])


_GRANULARITIES: dict[str, type[Granularity]] = {
    "weight": WeightGranularity,
    "block": BlockGranularity,
    "channel": ChannelGranularity,
}
_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def get_granularity(granularity: str | Granularity, **options) -> Granularity:
    """Resolves a granularity name (or instance) to a `Granularity`.

    Args:
        granularity: `"weight"`, `"block"`, `"channel"`, `"N:M"` (e.g.
            `"2:4"`) or a `Granularity` instance.
        **options: Options of that granularity; None values are ignored:
            `block_shape` and `norm` (block), `norm` (channel).

    Example:

    >>> from keras_lottery.pruning.granularity import get_granularity
    >>> get_granularity("block", block_shape=(16, 1)).block_shape
    (16, 1)
    >>> get_granularity("2:4").name
    '2:4'
    """
    options = {k: v for k, v in options.items() if v is not None}
    if isinstance(granularity, Granularity):
        if options:
            raise ValueError(
                f"Options {sorted(options)} apply to granularity names only; "
                "a Granularity instance carries its own. Received: "
                f"granularity={type(granularity).__name__}(...) with "
                f"{options}."
            )
        return granularity
    names = [*sorted(_GRANULARITIES), "N:M (e.g. '2:4')"]
    if isinstance(granularity, str) and _NM.match(granularity):
        n, m = map(int, _NM.match(granularity).groups())
        cls, args = NMGranularity, {"n": n, "m": m}
    else:
        cls = _GRANULARITIES.get(granularity) if isinstance(granularity, str) else None
        args = {}
        if cls is None:
            raise ValueError(
                f"`granularity` must be one of {names} or a "
                f"keras_lottery.pruning.granularity.Granularity. "
                f"Received: granularity={granularity!r}"
            )
    accepted = {
        WeightGranularity: (), NMGranularity: (),
        BlockGranularity: ("block_shape", "norm"), ChannelGranularity: ("norm",),
    }.get(cls, tuple(options))
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"granularity={granularity!r} takes the options "
            f"{list(accepted) or 'none'}. Received: "
            + ", ".join(f"{k}={options[k]!r}" for k in unknown)
        )
    return cls(**args, **options)


__all__ = [
    "BlockGranularity",
    "ChannelGranularity",
    "Granularity",
    "NMGranularity",
    "WeightGranularity",
    "get_granularity",
]
