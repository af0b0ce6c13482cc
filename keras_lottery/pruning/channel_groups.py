"""Channel pruning through the channel dependency graph.

`ChannelGranularity` bound to a graph model (`bind`) prunes the units of
`keras_lottery.core.depgraph` groups instead of each kernel's own output
columns: a unit is scored by the L1 (or L2) norm of every prunable weight
slice of its group (producers' filters, depthwise filters, the next
layers' input rows), summed over the members as Torch-Pruning's group
importance is; it is pruned whole, zeroing every one of those slices; and
its pool and `min_remaining` are those of the group's first producer (its
*anchor*). A MultiHeadAttention's heads (inside a composite layer such as
KerasHub's TransformerEncoder too) are the units of one group, anchored
on its query kernel: a head's score sums its query, key and
value kernel slices and its output projection rows. Groups that are
blocked (they reach the model's output, start at its input, or meet a
layer that mixes channels) and groups with a producer that is not wrapped
are not pruned.
"""

from __future__ import annotations

import numpy as np

from keras_lottery.core.depgraph import ChannelGraph
from keras_lottery.pruning.granularity import Granularity


def _slice_norms(values: np.ndarray, axis: int, positions: np.ndarray, norm: str):
    moved = np.moveaxis(values, axis, 0)[positions]
    flat = moved.reshape(positions.size, -1)
    return np.abs(flat).sum(axis=1) if norm == "l1" else np.square(flat).sum(axis=1)


def _member_key(member) -> str:
    return f"{member.layer}/{member.weight}"


class GroupedChannels(Granularity):
    """A `ChannelGranularity` bound to one model's channel groups.

    Built by `ChannelGranularity.bind` for one `prune` step: the units of
    a group are the units of its anchor's weight (other weights have
    none), and `complete` zeroes every member slice of the pruned units.
    `expand` is called with the mask array `reduce` saw for the anchor.
    """

    name = "channel"

    def __init__(self, graph: ChannelGraph, masks, scores, norm: str):
        self.norm = norm
        self.anchors: dict[str, tuple] = {}
        self.decided: dict[int, tuple] = {}
        self._key_of: dict[int, str] = {}
        for g, group in enumerate(graph.groups):
            producers = [m for m in group.members if m.role == "out"]
            if not group.prunable or not producers or any(
                    _member_key(m) not in masks for m in producers):
                continue
            total = np.zeros(group.size)
            for member in group.members:
                key = _member_key(member)
                if key in masks:
                    live = np.where(masks[key] != 0, scores[key], 0.0)
                    total += np.bincount(
                        member.units, minlength=group.size,
                        weights=_slice_norms(live, member.axis, member.positions, norm))
            if norm == "l2":
                total = np.sqrt(total)
            self.anchors[_member_key(producers[0])] = (g, group, total, producers[0])

    def unit_weights(self, masks) -> dict[str, int]:
        """Per anchor weight: the unpruned weights its group's units hold,
        in every member slice (`search.rates` counts sparsity with it)."""
        held = {}
        for key, (_, group, _, _) in self.anchors.items():
            held[key] = int(sum(
                np.count_nonzero(np.moveaxis(masks[k], m.axis, 0)[m.positions])
                for m in group.members if (k := _member_key(m)) in masks))
        return held

    def reduce(self, score, mask, key):
        if key not in self.anchors:
            return np.empty(0), np.empty(0, dtype=bool)
        self._key_of[id(mask)] = key
        _, group, total, anchor = self.anchors[key]
        norms = _slice_norms(np.asarray(mask, dtype=np.float64), anchor.axis,
                             anchor.positions, "l1")
        alive = np.bincount(anchor.units, weights=norms, minlength=group.size) > 0
        return total, alive

    def expand(self, alive, mask):
        key = self._key_of.get(id(mask))
        if key is not None:
            g, group, _, _ = self.anchors[key]
            self.decided[g] = (group, np.asarray(alive, dtype=bool))
        return mask

    def complete(self, masks):
        out = dict(masks)
        copied: set[str] = set()
        for group, alive in self.decided.values():
            dead = ~alive
            if not dead.any():
                continue
            for member in group.members:
                key = _member_key(member)
                if key not in out:
                    continue
                if key not in copied:
                    out[key] = out[key].copy()
                    copied.add(key)
                index = [slice(None)] * out[key].ndim
                index[member.axis] = member.positions[dead[member.units]]
                out[key][tuple(index)] = 0
        return out


__all__ = ["GroupedChannels"]
