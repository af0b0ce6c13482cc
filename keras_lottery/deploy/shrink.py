"""`shrink`: a physically smaller model from channel-pruned units.

Channel pruning (`prune(..., granularity="channel")`) masks whole channel
groups of the model's channel dependency graph
(`keras_lottery.core.depgraph.channel_groups`). The masked model still computes them.
`shrink` rebuilds the model without them: every layer of a group loses
the removed channels' slices (a conv's filters, the BatchNormalization and
depthwise filters after it, every branch of a residual `Add`, the next
layers' input rows, with `Concatenate` offsets and `Flatten` strides),
inside nested models too. A `MultiHeadAttention` is rebuilt with fewer
heads (`num_heads`), fewer input rows and output channels. Heads pruned in
an attention layer inside a composite layer (KerasHub's
`TransformerEncoder`) are not removed: that layer is rebuilt from its
config, whose one `num_heads` cannot say it; `shrink` names it in its
`ShrinkError`.

A channel is removed when the output filters of every layer producing it
are zero. Such a channel is not simply zero: its bias is not, so it
carries a constant (its activation of its bias, after any
BatchNormalization). Where the next layer still reads it through nonzero
weights, `shrink` folds that constant into the next layer's bias when
that is exact (Dense, 1x1 or 'valid' convolutions); channel pruning zeroes
those weights too, so its models need no folding. A graph that `shrink`
cannot cut exactly gets one `ShrinkError` listing every blocking layer.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery.core.attention_heads import (
    attention_inputs,
    counts_heads,
    layer_weights,
    unsupported,
)
from keras_lottery.core.copy import _clone_layer_with_weights, strip
from keras_lottery.core.depgraph import channel_groups, inner_layer
from keras_lottery.core.model import check_model, walk, wrappers
from keras_lottery.deploy.channel_cuts import (
    Cut,
    ShrinkError,
    carry,
    numpy_value,
    rebuild,
    removed_heads,
    slice_attention,
    slice_layer,
)

L = keras.layers
_SLICED = (L.Dense, L.Conv1D, L.Conv2D, L.Conv3D, L.DepthwiseConv1D,
           L.DepthwiseConv2D, L.SeparableConv1D, L.SeparableConv2D,
           L.BatchNormalization)


@dataclasses.dataclass(frozen=True)
class ShrinkReport:
    """What `shrink` removed, per layer (kept/total units).

    Attributes:
        units: `{layer: (kept, total)}` for each Dense/Conv layer whose
            units (output channels) were removed. For a MultiHeadAttention
            `layer`, `units[layer]` counts its heads (where heads were
            removed) and `units[layer + "/output"]` its output channels
            (where those were).
        params_before: Parameters of the masked model's plain form.
        params_after: Parameters of the shrunk model.

    Example:

    >>> from keras_lottery.deploy.shrink import ShrinkReport
    >>> ShrinkReport({"dense": (30, 300)}, 1000, 400).ratio
    0.4
    """

    units: dict[str, tuple[int, int]]
    params_before: int
    params_after: int

    @property
    def ratio(self) -> float:
        return self.params_after / self.params_before if self.params_before else 1.0


def _dead_units(channel_graph, layers, problems):
    """Per group, the units whose producers' filters are all zero."""
    dead = []
    for group in channel_graph.groups:
        gone = np.zeros(group.size, dtype=bool)
        producers = [m for m in group.members if m.role == "out"]
        if producers:
            gone[:] = True
        for member in producers:
            weight = layer_weights(layers[member.layer])[member.weight]
            values = np.moveaxis(numpy_value(weight), member.axis, 0)[member.positions]
            live = np.abs(values.reshape(member.positions.size, -1)).sum(axis=1) > 0
            gone &= np.bincount(member.units, weights=live, minlength=group.size) == 0
        units = "heads" if counts_heads(group) else "channels"
        if gone.any() and group.blockers:
            problems.append((producers[0].layer, (
                f"{int(gone.sum())} of the {group.size} {units} of "
                f"{', '.join(repr(p) for p in group.producers)} are pruned, but "
                f"they cannot be removed: {'; '.join(group.blockers)}")))
            gone[:] = False
        elif gone.all() and gone.size:
            problems.append((producers[0].layer, (
                f"every one of the {group.size} {units} of "
                f"{', '.join(repr(p) for p in group.producers)} is pruned, so "
                f"they cannot be shrunk to zero {units}; prune "
                "with min_remaining >= 1")))
            gone[:] = False
        dead.append(gone)
    return dead


class _Shrinker:
    def __init__(self, channel_graph, dead, problems):
        self.graph, self.dead, self.problems = channel_graph, dead, problems
        self.flat = np.concatenate(dead) if dead else np.zeros(0, dtype=bool)
        self.offsets = np.cumsum([0] + [d.size for d in dead])
        self.values: dict[int, object] = {}
        self.cuts: dict[int, Cut] = {}
        self.made: dict[int, tuple] = {}
        self.units: dict[str, tuple[int, int]] = {}

    def cut_of(self, tensor) -> Cut:
        groups, units = self.graph.units_of(tensor)
        removed = self.flat[self.offsets[groups] + units]
        if not removed.any():
            return Cut(removed.size)
        return Cut(removed.size, np.flatnonzero(~removed))

    def run(self, model, inputs, cuts, prefix):
        for tensor, new, cut in zip(model.inputs, inputs, cuts):
            self.values[id(tensor)] = new
            self.cuts[id(tensor)] = cut
        for tensor in model.outputs:
            self.visit(tensor, prefix)
        return [self.values[id(t)] for t in model.outputs]

    def visit(self, tensor, prefix):
        stack = [tensor]
        while stack:  # iterative: deep graphs exceed Python's recursion
            top = stack[-1]
            if id(top) in self.values:
                stack.pop()
                continue
            layer, node = graph.producer(top)
            missing = [t for t in node.input_tensors if id(t) not in self.values]
            if missing:
                stack.extend(reversed(missing))
                continue
            stack.pop()
            self.apply(layer, node, prefix)

    def apply(self, layer, node, prefix):
        cuts_in = [self.cuts[id(t)] for t in node.input_tensors]
        cuts_out = [self.cut_of(t) for t in node.output_tensors]
        previous = self.made.get(id(layer))
        if previous is not None and isinstance(layer, L.Layer):
            new_layer = previous[0]
            for cut, old in zip(cuts_out, previous[1]):
                cut.const = old.const
        else:
            new_layer = self.layer_for(layer, node, cuts_in, cuts_out, prefix)
            self.made[id(layer)] = (new_layer, cuts_out)
        args, kwargs = node.arguments.fill_in(self.values)
        result = new_layer(*args, **kwargs)
        news = keras.tree.flatten(result)
        for out, new, cut in zip(node.output_tensors, news, cuts_out):
            self.values[id(out)] = new
            self.cuts[id(out)] = cut

    def layer_for(self, layer, node, cuts_in, cuts_out, prefix):
        key = prefix + layer.name
        if not isinstance(layer, L.Layer):  # an operation node: stateless
            for cut in cuts_out:
                carry(layer, node, cuts_in, cut)
            return layer
        if isinstance(layer, keras.Model):
            return self.nested(layer, cuts_in, cuts_out, key)
        if isinstance(layer, L.MultiHeadAttention) and not unsupported(
                layer, node, key):
            return self.attention(layer, node, cuts_out[0], key)
        if self.heads_inside(layer, key):
            return layer  # refused (the one ShrinkError), so not copied
        shape = list(node.input_tensors[0].shape) if node.input_tensors else []
        if cuts_in and cuts_in[0].cut:
            shape[-1] = len(cuts_in[0].keep)
        if isinstance(layer, _SLICED) and (key in self.graph.by_layer) and (
                any(c.cut for c in cuts_in + cuts_out)):
            new = slice_layer(layer, key, cuts_in[0], cuts_out[0], self.graph,
                              self.dead, tuple(shape), self.problems)
            if isinstance(layer, L.BatchNormalization):
                carry(layer, node, cuts_in, cuts_out[0])
            elif cuts_out[0].cut and not isinstance(
                    layer, (L.DepthwiseConv1D, L.DepthwiseConv2D)):
                self.units[key] = (len(cuts_out[0].keep), cuts_out[0].size)
            return new
        if not any(c.cut for c in cuts_in + cuts_out):
            if not layer.weights:
                return type(layer).from_config(layer.get_config())
            if len(node.input_tensors) != 1 or not layer.built:
                return _clone_layer_with_weights(layer)
            shape = tuple(node.input_tensors[0].shape)
            return rebuild(layer, layer.get_config(), shape)
        for cut in cuts_out:
            carry(layer, node, cuts_in, cut)
        config = layer.get_config()
        if isinstance(layer, L.Reshape):
            config["target_shape"] = (*tuple(config["target_shape"])[:-1],
                                      len(cuts_out[0].keep))
        return type(layer).from_config(config)

    def attention(self, layer, node, cut_out, key):
        cuts, shapes = {}, {}
        for part, tensor in attention_inputs(node).items():
            cuts[part] = self.cuts[id(tensor)]
            shapes[part] = (*tuple(tensor.shape)[:-1], len(cuts[part].keep)
                            if cuts[part].cut else tensor.shape[-1])
        new, heads = slice_attention(layer, key, cuts, cut_out, self.graph,
                                     self.dead, shapes, self.problems)
        if heads < layer.num_heads:
            self.units[key] = (heads, layer.num_heads)
        if cut_out.cut:
            self.units[f"{key}/output"] = (len(cut_out.keep), cut_out.size)
        return new

    def heads_inside(self, layer, key) -> bool:
        """Whether heads are pruned in an attention layer inside `layer`
        (a composite layer: rebuilt from its config, which cannot give
        it fewer heads); records why `shrink` stops there."""
        found = False
        for sub, child in walk(layer):
            inner = inner_layer(child)
            gone = removed_heads(f"{key}/{sub}", self.graph, self.dead)
            if not isinstance(inner, L.MultiHeadAttention) or not gone.size:
                continue
            found = True
            self.problems.append((key, (
                f"{gone.size} of the {inner.num_heads} heads of '{key}/{sub}' "
                f"({type(inner).__name__}) are pruned, but '{key}' "
                f"({type(layer).__name__}) cannot be rebuilt with fewer "
                "heads: it is rebuilt from its config, whose one num_heads "
                "sets every attention layer it makes (KerasHub's "
                "TransformerEncoder/TransformerDecoder also derive key_dim = "
                "hidden_dim // num_heads from it). Keep the masked model, or "
                "keep attention out of channel pruning: "
                "wrap(..., exclude=['MultiHeadAttention'])")))
        return found

    def nested(self, model, cuts_in, cuts_out, key):
        inputs = []
        for tensor, cut in zip(model.inputs, cuts_in):
            shape = list(tensor.shape[1:])
            if cut.cut:
                shape[-1] = len(cut.keep)
            # Unnamed: a nested model's input may share the outer one's name.
            inputs.append(keras.Input(shape=tuple(shape), dtype=tensor.dtype))
        # Its own scope: a nested model's input tensor may be the outer
        # model's (KerasHub tasks call their backbone on backbone.input).
        child = _Shrinker(self.graph, self.dead, self.problems)
        outputs = child.run(model, inputs, cuts_in, key + "/")
        self.units.update(child.units)
        for cut, tensor in zip(cuts_out, model.outputs):
            cut.const = child.cuts[id(tensor)].const
        return keras.Model(inputs if len(inputs) > 1 else inputs[0],
                           outputs if len(outputs) > 1 else outputs[0], name=model.name)


def _count_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


def shrink(model: keras.Model, *, return_report: bool = False):
    """A physically smaller plain model without the channel-pruned units.

    Every channel whose producing filters are all zero (pruned by
    `prune(..., granularity="channel")`, or zero in a plain model) is
    removed from every layer of its channel group
    (`keras_lottery.core.depgraph.channel_groups`): the producers' filters, the
    BatchNormalization, depthwise filters, padding and pooling after them,
    every branch of a residual `Add`/`Multiply`, and the next layers'
    input rows (at every `Flatten` position, at its `Concatenate`
    offset), inside nested models too (rebuilt as plain functional
    models). A MultiHeadAttention head whose query, key and value kernel
    slices are all zero is removed (`num_heads` lowered); one inside a
    composite layer (KerasHub's TransformerEncoder) is refused. A removed
    channel's constant (its activation of its bias), where a next layer
    still reads it, is folded into that layer's bias,
    so the predictions equal the masked model's up to float rounding.
    Other zeros (weight or block pruning inside kept channels) stay
    zeros. Sequential models give a Sequential, functional ones (KerasHub
    models too) a plain functional model.

    Args:
        model: A built Sequential or functional model, wrapped by
            `keras_lottery.wrap` (masks decide) or plain.
        return_report: Also return a `ShrinkReport`.

    Returns:
        The shrunk `keras.Model`, or `(model, ShrinkReport)`.

    Raises:
        ShrinkError: (a ValueError) listing every blocking layer at once:
            pruned channels that reach the model's output or meet a layer
            that mixes channels, constants that cannot be folded (a
            'same'-padded convolution reading them through nonzero
            weights), a group pruned whole, or heads pruned in an
            attention layer inside a composite layer.
        TypeError: For a subclassed model.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> from keras_lottery.deploy.shrink import shrink
    >>> model = kl.wrap(keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)]))
    >>> _ = kl.prune(model, 0.5, granularity="channel")
    >>> small = shrink(model)
    >>> small.layers[0].units
    3
    >>> x = np.random.default_rng(0).normal(size=(4, 8)).astype("float32")
    >>> bool(np.allclose(small.predict(x, verbose=0),
    ...                  model.predict(x, verbose=0), atol=1e-5))
    True
    """
    check_model(model)
    if not graph.is_graph_model(model):
        raise TypeError(
            "shrink rebuilds a Sequential or functional model's graph. "
            f"Received: model '{model.name}', a subclassed "
            f"{type(model).__name__}."
        )
    plain = strip(model) if wrappers(model) else model
    if not plain.inputs or not plain.outputs:
        raise ValueError(
            f"Model '{model.name}' has no symbolic inputs; start it with "
            "keras.Input(shape=...)."
        )
    channel_graph = channel_groups(plain)
    layers = {key: inner_layer(layer) for key, layer in walk(plain)}
    problems: list[tuple[str, str]] = []
    dead = _dead_units(channel_graph, layers, problems)
    shrinker = _Shrinker(channel_graph, dead, problems)
    inputs = [keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype,
                          name=graph.operation_of(t).name) for t in plain.inputs]
    cuts = [Cut(int(t.shape[-1] or 0)) for t in plain.inputs]
    outputs = shrinker.run(plain, inputs, cuts, "")
    if problems:
        names = list(dict.fromkeys(layer for layer, _ in problems))
        raise ShrinkError(
            f"shrink cannot remove the pruned channels exactly at {len(names)} "
            f"layer(s) ({', '.join(repr(n) for n in names)}):\n"
            + "\n".join(f"- {message}." for _, message in problems)
            + "\nExclude those layers from channel pruning "
            "(wrap(..., exclude=[...])) or prune them with granularity='weight'.",
            layer=names[0], layers=names,
        )
    if isinstance(plain, keras.Sequential):
        built = [shrinker.made[id(layer)][0] for layer in plain.layers]
        small = keras.Sequential([inputs[0], *built], name=plain.name)
    else:
        small = keras.Model(
            inputs if len(inputs) > 1 else inputs[0],
            outputs if len(outputs) > 1 else outputs[0],
            name=plain.name,
        )
    if not return_report:
        return small
    return small, ShrinkReport(
        dict(shrinker.units), _count_params(plain), _count_params(small)
    )


__all__ = ["ShrinkError", "ShrinkReport", "shrink"]
