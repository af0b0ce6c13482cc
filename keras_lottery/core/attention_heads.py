"""Attention heads in the channel dependency graph (`core.depgraph`).

A `keras.layers.MultiHeadAttention` over `(batch, sequence, features)`
reads its query, key and value inputs through its projections' input rows
(`"in"` members of those inputs' groups) and makes two groups:

- its heads, one unit per head: the head's slices of the query, key and
  value kernels (`"out"`, axis 1 of `(features, heads, head_dim)`) and
  biases (`"follow"`), and its rows of the output projection (`"in"`,
  axis 0 of `(heads, head_dim, output)`), pruned and removed together as
  Torch-Pruning's `prune_num_heads` does; head dimensions are not units;
- its output channels: the output projection's columns and bias.

Weights are named as `core.registry` names them (`"query/kernel"`,
`"output/bias"`). An attention layer with a gate, custom `attention_axes`,
other input ranks, or returning its attention scores is a blocker.

An attention layer inside a layer the graph does not enter (a composite
layer: KerasHub's `TransformerEncoder`, `TransformerDecoder` and its
`CachedMultiHeadAttention`) has its heads group all the same
(`record_nested`): a head's slices are all inside the attention layer and
its output width does not change, so pruning whole heads needs nothing
from the graph around it. Only a gate blocks them.
"""

from __future__ import annotations

import keras

from keras_lottery.core.model import walk
from keras_lottery.core.wrapper import PrunableWrapper

L = keras.layers
#: A MultiHeadAttention's projections, named as `core.registry` names them.
PROJECTIONS = {"query": "_query_dense", "key": "_key_dense",
               "value": "_value_dense", "output": "_output_dense"}


def layer_weights(layer) -> dict:
    """A layer's weights by the names `Member.weight` uses: `"query/kernel"`
    for a MultiHeadAttention's projections, else the weight's own name.

    Example:

    >>> import keras
    >>> from keras_lottery.core.attention_heads import layer_weights
    >>> mha = keras.layers.MultiHeadAttention(2, 3)
    >>> mha.build((None, 4, 6), (None, 4, 6))
    >>> tuple(layer_weights(mha)["query/kernel"].shape)
    (6, 2, 3)
    """
    if isinstance(layer, L.MultiHeadAttention):
        return {f"{prefix}/{w.name}": w for prefix, attribute in PROJECTIONS.items()
                for w in getattr(layer, attribute).weights}
    return {w.name: w for w in layer.weights}


def attention_inputs(node) -> dict:
    """`{"query", "value", "key": tensor}` of one MultiHeadAttention call
    (the key is the value when the call passes none)."""
    args, kwargs = node.arguments.args, node.arguments.kwargs
    found = {n: args[i] if len(args) > i else kwargs.get(n)
             for i, n in enumerate(("query", "value", "key"))}
    found["key"] = found["value"] if found["key"] is None else found["key"]
    return found


def counts_heads(group) -> bool:
    """Whether a `depgraph.ChannelGroup`'s units are attention heads."""
    return any(m.role == "out" and (m.weight, m.axis) == ("query/kernel", 1)
               for m in group.members)


def _gated(layer) -> bool:
    # Keras keeps the flag as `_use_gate`; its config is the public record.
    return bool(layer.get_config().get("use_gate", False))


def unsupported(layer, node, name) -> str | None:
    """Why this call's heads cannot be followed (see the module), or None."""
    axes = layer.get_config().get("attention_axes")
    if (len(node.output_tensors) > 1 or _gated(layer)
            or axes not in (None, (1,), [1]) or any(
                t is None or len(t.shape) != 3
                for t in attention_inputs(node).values())):
        return (f"{name} is not a plain attention over (batch, sequence, "
                "features) returning one tensor, without a gate")
    return None


def _heads(builder, layer, key, blocker=None):
    """The head group: query, key and value kernel slices; unless blocked,
    their biases and the output projection's rows too."""
    heads = builder.new(layer.num_heads, blocker)
    for part in ("query", "key", "value"):
        builder.record(key, f"{part}/kernel", 1, heads, "out")
        if layer.use_bias and not blocker:
            builder.record(key, f"{part}/bias", 0, heads, "follow")
    if not blocker:
        builder.record(key, "output/kernel", 0, heads, "in")
    return heads


def record_blocked_heads(builder, layer, key, blocker) -> None:
    """The heads of an attention call that cannot be followed: a group
    (their query, key and value kernel slices) blocked by `blocker`, so
    that pruned heads there are named, not passed over."""
    _heads(builder, layer, key, blocker)


def record_attention(builder, layer, node, key, name) -> list:
    """Applies the attention rule (see the module) on `builder`, a
    `depgraph._Builder` whose maps hold the call's inputs; returns the
    elements of its output."""
    b, tensors = builder, attention_inputs(node)
    qkv = {id(t) for t in tensors.values()}
    for tensor in node.input_tensors:
        if id(tensor) not in qkv:
            b.block(b.maps[id(tensor)], f"{name} reads it as a mask")
    for part in ("query", "key", "value"):
        b.record(key, f"{part}/kernel", 0, b.maps[id(tensors[part])], "in")
    _heads(b, layer, key)
    shape = node.output_tensors[0].shape
    out = b.new(int(shape[-1]))
    b.record(key, "output/kernel", -1, out, "out")
    if layer.use_bias:
        b.record(key, "output/bias", 0, out, "follow")
    return [out]


def record_nested(builder, layer, key, seen: set) -> None:
    """Records the heads of every built MultiHeadAttention inside `layer`
    at any depth (keyed `f"{key}/{sub}"`, as `core.model.walk` keys it),
    for a layer whose graph is not entered: a composite layer, a model
    without a graph (see the module). `seen` holds the ids of attention
    layers already recorded; a MultiHeadAttention itself adds nothing.

    Example:

    >>> import keras
    >>> from keras_lottery.core.depgraph import channel_groups
    >>> class Block(keras.layers.Layer):  # as KerasHub's TransformerEncoder
    ...     def __init__(self, **kwargs):
    ...         super().__init__(**kwargs)
    ...         self.attention = keras.layers.MultiHeadAttention(
    ...             2, 4, name="attention")
    ...     def call(self, x):
    ...         return x + self.attention(x, x)
    >>> x = keras.Input((4, 8))
    >>> graph = channel_groups(keras.Model(x, Block(name="block")(x)))
    >>> [(g.size, g.producers, g.prunable) for g in graph.groups if counts_heads(g)]
    [(2, ['block/attention'], True)]
    """
    if isinstance(layer, L.MultiHeadAttention):
        return
    for sub, child in walk(layer):
        inner = child.layer if isinstance(child, PrunableWrapper) else child
        if (not isinstance(inner, L.MultiHeadAttention) or id(inner) in seen
                or not inner.built):
            continue
        seen.add(id(inner))
        name = f"{key}/{sub}"
        if _gated(inner):
            record_blocked_heads(builder, inner, name, (
                f"'{name}' ({type(inner).__name__}) has a gate"))
        else:
            _heads(builder, inner, name)


__all__ = ["attention_inputs", "counts_heads", "layer_weights",
           "record_attention", "record_blocked_heads", "record_nested",
           "unsupported"]
