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
"""

from __future__ import annotations

import keras

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


def unsupported(layer, node, name) -> str | None:
    """Why this call's heads cannot be followed (see the module), or None."""
    axes = layer.get_config().get("attention_axes")
    if (len(node.output_tensors) > 1 or bool(getattr(layer, "use_gate", False))
            or axes not in (None, (1,), [1]) or any(
                t is None or len(t.shape) != 3
                for t in attention_inputs(node).values())):
        return (f"{name} is not a plain attention over (batch, sequence, "
                "features) returning one tensor, without a gate")
    return None


def _heads(builder, layer, key, blocker=None):
    heads = builder.new(layer.num_heads, blocker)
    for part in ("query", "key", "value"):
        builder.record(key, f"{part}/kernel", 1, heads, "out")
        if layer.use_bias and not blocker:
            builder.record(key, f"{part}/bias", 0, heads, "follow")
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
    heads = _heads(b, layer, key)
    b.record(key, "output/kernel", 0, heads, "in")
    shape = node.output_tensors[0].shape
    out = b.new(int(shape[-1]))
    b.record(key, "output/kernel", -1, out, "out")
    if layer.use_bias:
        b.record(key, "output/bias", 0, out, "follow")
    return [out]


__all__ = ["attention_inputs", "layer_weights", "record_attention",
           "record_blocked_heads", "unsupported"]
