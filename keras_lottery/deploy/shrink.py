"""`shrink`: a physically smaller model from channel-pruned units.

Channel pruning (`prune(..., granularity="channel")`) masks whole output
units of Dense layers and whole filters of convolutions. The masked model
still computes them. `shrink` rebuilds the model without them: the pruned
layer gets fewer units, and the layers downstream lose the matching
inputs, through activations, BatchNormalization, dropout, pooling and
Flatten, until the next Dense or convolution.

A removed unit is not simply zero: its kernel is zero but its bias is
not, so it outputs a constant (its activation of its bias, after any
BatchNormalization). `shrink` folds that constant into the bias of the
next Dense or 'valid' convolution, so the small model has the masked
model's predictions (up to float rounding). Where the constant cannot be
folded exactly it raises an error naming the layer, as it does for graphs
whose channels it cannot follow (merges of pruned branches, reshapes) and
for pruned units of an output layer (the model's outputs would change
shape).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery.core.copy import _clone_layer_with_weights, strip
from keras_lottery.core.model import check_model, wrappers
from keras_lottery.deploy.channel_cuts import (
    CONVS,
    Cut,
    ShrinkError,
    follow_channels,
    kernel_layer,
)


@dataclasses.dataclass(frozen=True)
class ShrinkReport:
    """What `shrink` removed, per layer (kept/total units).

    Attributes:
        units: `{layer: (kept, total)}` for each Dense/Conv layer whose
            units were removed.
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


class _Shrinker:
    def __init__(self, model):
        self.model = model
        self.values: dict[int, object] = {}
        self.cuts: dict[int, Cut] = {}
        self.made: dict[int, tuple[object, list[Cut]]] = {}
        self.units: dict[str, tuple[int, int]] = {}
        self.output_ids = {id(t) for t in model.outputs}

    def run(self):
        inputs = []
        for tensor in self.model.inputs:
            new = keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype,
                              name=graph.operation_of(tensor).name)
            self.values[id(tensor)] = new
            self.cuts[id(tensor)] = Cut(int(tensor.shape[-1] or 0))
            inputs.append(new)
        outputs = []
        for tensor in self.model.outputs:
            self.visit(tensor)
            cut = self.cuts[id(tensor)]
            if cut.cut:
                layer = graph.operation_of(tensor)
                raise ShrinkError(
                    f"Units pruned by layer '{cut.origin}' reach the model "
                    f"output through '{layer.name}'; removing them would "
                    "change the output shape. Exclude that layer from "
                    "channel pruning, e.g. prune(..., rates="
                    f"{{'{cut.origin}': 0.0}}).",
                    layer=cut.origin,
                )
            outputs.append(self.values[id(tensor)])
        return inputs, outputs

    def visit(self, tensor):
        if id(tensor) in self.values:
            return
        layer, node = graph.producer(tensor)
        for inp in node.input_tensors:
            self.visit(inp)
        cuts_in = [self.cuts[id(t)] for t in node.input_tensors]
        new_layer, cuts_out = self.layer_for(layer, cuts_in, node)
        args, kwargs = node.arguments.fill_in(self.values)
        result = new_layer(*args, **kwargs)
        for out, new, cut in zip(node.output_tensors,
                                 keras.tree.flatten(result), cuts_out):
            self.values[id(out)] = new
            self.cuts[id(out)] = cut

    def layer_for(self, layer, cuts_in: list[Cut], node):
        previous = self.made.get(id(layer))
        if previous is not None:
            new_layer, seen_cuts, cuts_out = previous
            if len(seen_cuts) == len(cuts_in) and all(
                    a.same_as(b) for a, b in zip(seen_cuts, cuts_in)):
                return new_layer, cuts_out
            raise ShrinkError(
                f"Layer '{layer.name}' is shared by several calls whose "
                "inputs are pruned differently; shrink cannot give it one "
                "shape. Prune it and its inputs the same way, or not at all.",
                layer=layer.name,
            )
        new_layer, cuts_out = self.build(layer, cuts_in, node)
        self.made[id(layer)] = (new_layer, cuts_in, cuts_out)
        return new_layer, cuts_out

    def build(self, layer, cuts_in: list[Cut], node):
        outs = node.output_tensors
        rank = len(node.input_tensors[0].shape) if node.input_tensors else 0
        any_cut = any(c.cut for c in cuts_in)
        if isinstance(layer, keras.Model):
            if any_cut:
                raise ShrinkError(
                    f"Nested model '{layer.name}' reads channels that "
                    f"'{cuts_in[0].origin}' pruned; shrink works on one "
                    "flat graph. Build the model without nesting.",
                    layer=layer.name,
                )
            clone = keras.models.clone_model(layer)
            clone.set_weights(layer.get_weights())
            return clone, [Cut(int(t.shape[-1] or 0)) for t in outs]
        if isinstance(layer, (keras.layers.Dense, *CONVS)) and len(cuts_in) == 1:
            is_output = any(id(t) in self.output_ids for t in outs)
            config, weights, cut = kernel_layer(layer, cuts_in[0], is_output)
            if cut.cut:
                self.units[layer.name] = (len(cut.keep), cut.size)
            new = type(layer).from_config(config)
            new.build(self._shape(node, cuts_in))
            new.set_weights(weights)
            return new, [cut]
        if not any_cut:
            return _clone_layer_with_weights(layer), [
                Cut(int(t.shape[-1] or 0)) for t in outs]
        return follow_channels(layer, cuts_in, node, rank,
                               self._shape(node, cuts_in))

    def _shape(self, node, cuts_in):
        shape = list(node.input_tensors[0].shape)
        if cuts_in[0].cut:
            shape[-1] = len(cuts_in[0].keep)
        return tuple(shape)


def _count_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.weights))


def shrink(model: keras.Model, *, return_report: bool = False):
    """A physically smaller plain model without the channel-pruned units.

    Every Dense unit or convolution filter whose kernel slice is all
    zeros (pruned by `prune(..., granularity="channel")`, or zero in a
    plain model) is removed, and the next Dense/Conv layer loses the
    matching inputs: through activations, BatchNormalization, dropout,
    pooling and Flatten (whose inputs are cut at every position). A
    removed unit still outputs a constant (its activation of its bias);
    that constant is folded into the next layer's bias, so the predictions
    equal the masked model's up to float rounding. Other zeros (weight or
    block pruning inside the kept units) stay zeros. Sequential models
    give a Sequential, functional ones a functional model.

    Args:
        model: A built Sequential or functional model, wrapped by
            `keras_lottery.wrap` (masks decide) or plain.
        return_report: Also return a `ShrinkReport`.

    Returns:
        The shrunk `keras.Model`, or `(model, ShrinkReport)`.

    Raises:
        ShrinkError: (a ValueError) naming the layer, when pruned units
            reach the model's output, meet a layer whose channels shrink
            cannot follow (Add/Concatenate of pruned branches, Reshape,
            depthwise/transposed convolutions), carry a nonzero constant
            into a 'same'-padded convolution, or fill a whole layer.
        TypeError: For a subclassed model.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> from keras_lottery.deploy.shrink import shrink
    >>> model = kl.wrap(keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)]))
    >>> _ = kl.prune(model, 0.5, granularity="channel", rates={"dense_1": 0.0})
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
    shrinker = _Shrinker(plain)
    inputs, outputs = shrinker.run()
    if isinstance(plain, keras.Sequential):
        layers = [shrinker.made[id(layer)][0] for layer in plain.layers]
        small = keras.Sequential([inputs[0], *layers], name=plain.name)
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
