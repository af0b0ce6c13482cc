"""The channel dependency graph: which channels must be pruned together.

Built once from a model's graph (Sequential, functional, nested models),
as Torch-Pruning's DepGraph is for PyTorch. Every channel of every tensor
is an element; a Dense or convolution creates new elements for its output
channels; layers acting channel by channel (BatchNormalization,
activations, dropout, padding, pooling, depthwise convolutions) pass their
input's elements on; a residual `Add` / `Multiply` / `Subtract` /
`Average` / `Maximum` / `Minimum` joins the elements of its inputs
position by position; `Concatenate` lays them side by side (offsets);
`Flatten` / `Reshape` repeat them with the channel stride. Joined elements
are one *unit*; the units whose layers are linked form a `ChannelGroup`,
listing every weight slice (layer, weight, axis, positions) that reads or
writes each unit: producers' output filters, depthwise filters,
BatchNormalization parameters and the next layers' input rows.

A group that cannot be pruned has `blockers`: it reaches the model's
output (a classifier's classes are never a group), it starts at the
model's input, or a layer mixes its channels (Softmax or LayerNormalization
over channels, a grouped convolution, a layer this graph cannot follow).
A `MultiHeadAttention`'s heads are units of one group, inside composite
layers too (`keras_lottery.core.attention_heads`).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery.core import attention_heads
from keras_lottery.core.wrapper import PrunableWrapper

L = keras.layers
_KERNELS = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D)
_DEPTHWISE = tuple(getattr(L, n) for n in ("DepthwiseConv1D", "DepthwiseConv2D")
                   if hasattr(L, n))
_SEPARABLE = tuple(getattr(L, n) for n in ("SeparableConv1D", "SeparableConv2D")
                   if hasattr(L, n))
#: Layers that act channel by channel without weights.
PASS = tuple(getattr(L, n) for n in (
    "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D",
    "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
    "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D",
    "AveragePooling2D", "AveragePooling3D", "GlobalMaxPooling1D",
    "GlobalMaxPooling2D", "GlobalMaxPooling3D", "GlobalAveragePooling1D",
    "GlobalAveragePooling2D", "GlobalAveragePooling3D", "ZeroPadding1D",
    "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
    "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D",
) if hasattr(L, n))
MERGES = (L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum)
_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


@dataclasses.dataclass(frozen=True)
class Member:
    """The slices of one weight that belong to a group's units.

    `positions[i]` along `axis` of `layer`'s `weight` belongs to unit
    `units[i]`. `role` is `"out"` (a Dense/conv's output filters),
    `"in"` (a layer's input rows) or `"follow"` (per-channel weights:
    depthwise filters, BatchNormalization, biases of followers).
    """

    layer: str
    weight: str
    axis: int
    positions: np.ndarray
    units: np.ndarray
    role: str


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """Channels pruned together: `size` units and the slices they own.

    Attributes:
        size: Number of units (channels) in the group.
        members: Every weight slice of every unit (`Member`).
        blockers: Why the group cannot be pruned (empty: it can).
    """

    size: int
    members: tuple[Member, ...]
    blockers: tuple[str, ...]

    @property
    def prunable(self) -> bool:
        return not self.blockers

    @property
    def producers(self) -> list[str]:
        """Layers whose output filters are the group's units, in order."""
        return list(dict.fromkeys(m.layer for m in self.members if m.role == "out"))

    @property
    def layers(self) -> list[str]:
        return list(dict.fromkeys(m.layer for m in self.members))

    def __str__(self) -> str:
        state = "prunable" if self.prunable else "blocked: " + "; ".join(self.blockers)
        units = "heads" if attention_heads.counts_heads(self) else "channels"
        return (f"{self.size} {units} of {', '.join(self.producers) or '?'} "
                f"-> {', '.join(self.layers)} ({state})")


def inner_layer(layer):
    """The wrapped layer of a `PrunableWrapper`, else the layer itself."""
    return layer.layer if isinstance(layer, PrunableWrapper) else layer


def channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") in (None, "channels_last")


class _Builder:
    """Union-find over channel elements (units) and spaces (groups)."""

    def __init__(self):
        self.parent: list[int] = []
        self.space_of: list[int] = []
        self.space_parent: list[int] = []
        self.blockers: dict[int, list[str]] = {}
        self.records: list[tuple] = []
        self.maps: dict[int, np.ndarray] = {}
        self.layer_space: dict[int, np.ndarray] = {}

    def new(self, n: int, blocker: str | None = None) -> np.ndarray:
        start, space = len(self.parent), len(self.space_parent)
        self.parent.extend(range(start, start + n))
        self.space_of.extend([space] * n)
        self.space_parent.append(space)
        if blocker:
            self.blockers.setdefault(space, []).append(blocker)
        return np.arange(start, start + n, dtype=np.int64)

    def _find(self, parent, x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(self, a: np.ndarray, b: np.ndarray) -> None:
        for x, y in zip(a.tolist(), b.tolist()):
            rx, ry = self._find(self.parent, x), self._find(self.parent, y)
            if rx != ry:
                self.parent[max(rx, ry)] = min(rx, ry)
            sx = self._find(self.space_parent, self.space_of[x])
            sy = self._find(self.space_parent, self.space_of[y])
            if sx != sy:
                self.space_parent[max(sx, sy)] = min(sx, sy)

    def block(self, elements: np.ndarray, reason: str) -> None:
        for space in {self.space_of[e] for e in elements.tolist()}:
            reasons = self.blockers.setdefault(space, [])
            if reason not in reasons:
                reasons.append(reason)

    def record(self, key, weight, axis, elements, role, positions=None):
        if positions is None:
            positions = np.arange(elements.size)
        self.records.append((key, weight, axis, positions, elements, role))


def _size(tensor) -> int:
    shape = tensor.shape
    return int(shape[-1]) if len(shape) and shape[-1] is not None else 1


_OP_MERGES = frozenset({"Add", "Subtract", "Multiply", "Maximum", "Minimum",
                        "Divide", "TrueDivide"})
_OP_PASS = frozenset({"Relu", "Relu6", "Sigmoid", "Tanh", "Silu", "Swish",
                      "Gelu", "Elu", "Selu", "Softplus", "HardSigmoid",
                      "HardSilu", "Abs", "Square", "Sqrt", "Exp", "Negative",
                      "LeakyRelu", "Cast"})


class _Walker:
    """Visits a model's graph once and applies the channel rules."""

    def __init__(self, builder: _Builder):
        self.b = builder
        self.calls: dict[int, tuple[list, list]] = {}
        self.nested: set[int] = set()  # attention layers inside others

    def model(self, model, in_maps, prefix):
        for tensor, elements in zip(model.inputs, in_maps):
            self.b.maps[id(tensor)] = elements
        outs = []
        for tensor in model.outputs:
            self.visit(tensor, prefix)
            outs.append(self.b.maps[id(tensor)])
        return outs

    def visit(self, tensor, prefix):
        stack = [tensor]
        while stack:  # iterative: deep graphs exceed Python's recursion
            top = stack[-1]
            if id(top) in self.b.maps:
                stack.pop()
                continue
            made = graph.producer(top)
            if made is None:
                self.b.maps[id(top)] = self.b.new(_size(top), "comes from outside")
                stack.pop()
                continue
            op, node = made
            missing = [t for t in node.input_tensors if id(t) not in self.b.maps]
            if missing:
                stack.extend(reversed(missing))
                continue
            stack.pop()
            ins = [self.b.maps[id(t)] for t in node.input_tensors]
            outs = self.call(op, node, ins, prefix)
            for out, elements in zip(node.output_tensors, outs):
                self.b.maps[id(out)] = elements

    def call(self, op, node, ins, prefix):
        layer = inner_layer(op)
        if getattr(layer, "weights", None) or isinstance(layer, keras.Model):
            previous = self.calls.get(id(layer))
            if previous is not None:  # a shared layer: its inputs are coupled
                for a, b in zip(previous[0], ins):
                    if a.size == b.size:
                        self.b.join(a, b)
                return previous[1]
        if not graph.is_graph_model(layer):
            attention_heads.record_nested(self.b, layer, prefix + layer.name,
                                          self.nested)
        outs = self.rule(layer, node, ins, prefix + layer.name)
        self.calls[id(layer)] = (ins, outs)
        return outs

    def blocked(self, node, ins, reason):
        for elements in ins:
            self.b.block(elements, reason)
        return [self.b.new(_size(t), reason) for t in node.output_tensors]

    def rule(self, layer, node, ins, key):
        b, name = self.b, f"'{key}' ({type(layer).__name__})"
        if isinstance(layer, keras.Model):
            if graph.is_graph_model(layer) and len(ins) == len(layer.inputs):
                return self.model(layer, ins, key + "/")
            return self.blocked(node, ins, f"{name} is a model without a graph")
        if isinstance(layer, L.MultiHeadAttention):
            reason = attention_heads.unsupported(layer, node, name)
            if reason:
                attention_heads.record_blocked_heads(b, layer, key, reason)
                return self.blocked(node, ins, reason)
            return attention_heads.record_attention(b, layer, node, key, name)
        if not channels_last(layer):
            return self.blocked(node, ins, f"{name} is channels_first")
        if isinstance(layer, _KERNELS) and len(ins) == 1:
            if getattr(layer, "groups", 1) != 1:
                return self.blocked(node, ins, f"{name} is a grouped convolution")
            b.record(key, "kernel", -2, ins[0], "in")
            out = b.new(_size(node.output_tensors[0]))
            b.record(key, "kernel", -1, out, "out")
            if layer.use_bias:
                b.record(key, "bias", 0, out, "follow")
            return [out]
        if isinstance(layer, _DEPTHWISE + _SEPARABLE) and len(ins) == 1:
            if layer.depth_multiplier != 1:
                return self.blocked(node, ins, f"{name} has depth_multiplier != 1")
            # Keras names a DepthwiseConv's kernel `kernel`, a Separable's not.
            separable = isinstance(layer, _SEPARABLE)
            depthwise = "depthwise_kernel" if separable else "kernel"
            b.record(key, depthwise, -2, ins[0], "follow")
            if isinstance(layer, _DEPTHWISE):
                if layer.use_bias:
                    b.record(key, "bias", 0, ins[0], "follow")
                return [ins[0]]
            b.record(key, "pointwise_kernel", -2, ins[0], "in")
            out = b.new(_size(node.output_tensors[0]))
            b.record(key, "pointwise_kernel", -1, out, "out")
            if layer.use_bias:
                b.record(key, "bias", 0, out, "follow")
            return [out]
        rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
        if isinstance(layer, L.BatchNormalization) and len(ins) == 1:
            axis = layer.axis if isinstance(layer.axis, int) else (
                next(iter(layer.axis)) if len(list(layer.axis)) == 1 else None)
            if axis not in (-1, rank - 1):
                return self.blocked(node, ins, f"{name} normalizes axis {layer.axis}")
            for weight in layer.weights:
                b.record(key, weight.name, 0, ins[0], "follow")
            return [ins[0]]
        if isinstance(layer, PASS) and len(ins) == 1:
            activation = getattr(layer, "activation", None)
            if activation is not None and getattr(
                    activation, "__name__", "") in _MIXING_ACTIVATIONS:
                return self.blocked(node, ins, f"{name} applies a softmax")
            return [ins[0]]
        if isinstance(layer, MERGES) or (
                not isinstance(layer, L.Layer) and type(layer).__name__ in _OP_MERGES):
            return [self.merge(ins)]
        if not isinstance(layer, L.Layer) and type(layer).__name__ in _OP_PASS:
            return [ins[0]]
        if isinstance(layer, L.Concatenate):
            if layer.axis in (-1, rank - 1):
                return [np.concatenate(ins)]
            return [self.merge(ins)]
        if isinstance(layer, (L.Flatten, L.Reshape)) and len(ins) == 1:
            return self.reshape(node, ins, name)
        return self.blocked(node, ins, f"{name} mixes or reshapes channels")

    def merge(self, ins):
        full = max(ins, key=lambda e: e.size)
        for elements in ins:
            if elements.size == full.size:
                self.b.join(full, elements)
            elif elements.size != 1:
                self.b.block(elements, "a merge of different channel counts")
        return full

    def reshape(self, node, ins, name):
        shape_in = tuple(node.input_tensors[0].shape[1:])
        shape_out = tuple(node.output_tensors[0].shape[1:])
        size, out = ins[0].size, _size(node.output_tensors[0])
        if None not in shape_in and None not in shape_out and shape_in and shape_out:
            tail = [int(np.prod(shape_in[i:])) for i in range(len(shape_in))]
            if out == size or (out % size == 0 and out in tail):
                return [np.tile(ins[0], out // size)]
        return self.blocked(node, ins, f"{name} mixes or reshapes channels")


class ChannelGraph:
    """The channel groups of one model (see the module docstring).

    Attributes:
        groups: The `ChannelGroup`s, in graph order.
    """

    def __init__(self, builder: _Builder):
        b = builder
        n = len(b.parent)
        roots = np.array([b._find(b.parent, e) for e in range(n)], dtype=np.int64)
        spaces = np.array([b._find(b.space_parent, b.space_of[r]) for r in roots],
                          dtype=np.int64)
        blockers: dict[int, list[str]] = {}
        for space, reasons in b.blockers.items():
            target = blockers.setdefault(b._find(b.space_parent, space), [])
            target.extend(r for r in reasons if r not in target)
        first = [int(spaces[r[4][0]]) for r in b.records if r[4].size]
        order = list(dict.fromkeys(first + spaces.tolist()))
        index = {space: i for i, space in enumerate(order)}
        self.group_of = np.array([index[s] for s in spaces.tolist()], dtype=np.int64)
        # A unit is an element root; its number is its rank in its group.
        unique = np.unique(roots)
        groups = self.group_of[unique]
        ranked = np.lexsort((unique, groups))
        start = np.searchsorted(groups[ranked], groups[ranked], side="left")
        rank = np.empty(unique.size, dtype=np.int64)
        rank[ranked] = np.arange(unique.size) - start
        self.unit_of = rank[np.searchsorted(unique, roots)]
        sizes = np.bincount(groups, minlength=len(order)).tolist()
        members_of: list[list[Member]] = [[] for _ in order]
        for key, weight, axis, positions, elements, role in b.records:
            groups = self.group_of[elements]
            for g in np.unique(groups).tolist():
                sel = groups == g
                members_of[g].append(Member(key, weight, axis, positions[sel],
                                            self.unit_of[elements[sel]], role))
        self.groups: list[ChannelGroup] = []
        for i, space in enumerate(order):
            reasons = list(blockers.get(space, []))
            if not any(m.role == "out" for m in members_of[i]) and not reasons:
                reasons.append("no Dense or convolution produces these channels")
            self.groups.append(
                ChannelGroup(sizes[i], tuple(members_of[i]), tuple(reasons)))
        self._maps = b.maps
        self.by_layer: dict[str, list[tuple[int, Member]]] = {}
        for g, group in enumerate(self.groups):
            for member in group.members:
                self.by_layer.setdefault(member.layer, []).append((g, member))

    def units_of(self, tensor) -> tuple[np.ndarray, np.ndarray]:
        """`(groups, units)`: each channel of a graph tensor's group and unit."""
        elements = self._maps[id(tensor)]
        return self.group_of[elements], self.unit_of[elements]

    @property
    def prunable(self) -> list[ChannelGroup]:
        return [g for g in self.groups if g.prunable and g.members]

    def __str__(self) -> str:
        lines = [f"{len(self.prunable)} prunable channel groups of {len(self.groups)}:"]
        lines += [f"  {group}" for group in self.groups if group.members]
        return "\n".join(lines)


def channel_groups(model: keras.Model) -> ChannelGraph:
    """The channel dependency graph of a Sequential or functional model.

    Args:
        model: A built Sequential or functional model, wrapped by
            `keras_lottery.wrap` or plain; nested models are entered.

    Returns:
        A `ChannelGraph`; its `groups` list which channels are pruned
        together, and what blocks the others.

    Raises:
        TypeError: For a subclassed model (it has no graph to read).

    Example:

    >>> import keras
    >>> from keras_lottery.core.depgraph import channel_groups
    >>> x = keras.Input((8, 8, 3))
    >>> a = keras.layers.Conv2D(4, 3, name="a")(x)
    >>> b = keras.layers.Conv2D(4, 3, name="b")(x)
    >>> h = keras.layers.Add()([a, b])
    >>> y = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(h))
    >>> groups = channel_groups(keras.Model(x, y)).prunable
    >>> [(g.size, g.producers) for g in groups]
    [(4, ['a', 'b'])]
    """
    if not graph.is_graph_model(model) or not getattr(model, "outputs", None):
        raise TypeError(
            "channel_groups reads a Sequential or functional model's graph. "
            f"Received: model '{getattr(model, 'name', model)}' of type "
            f"{type(model).__name__}, which has none (subclassed, or not "
            "started with keras.Input)."
        )
    builder = _Builder()
    walker = _Walker(builder)
    in_maps = [builder.new(_size(t), "starts at the model input") for t in model.inputs]
    outs = walker.model(model, in_maps, "")
    for tensor, elements in zip(model.outputs, outs):
        builder.block(elements, f"reaches the model output "
                      f"'{graph.operation_of(tensor).name}'")
    return ChannelGraph(builder)


__all__ = ["ChannelGraph", "ChannelGroup", "Member", "channel_groups"]
