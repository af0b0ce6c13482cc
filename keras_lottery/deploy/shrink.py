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
from keras_lottery.core.model import (
    _clone_layer_with_weights,
    check_model,
    strip,
    wrappers,
)
from keras_lottery.errors import KerasLotteryError

L = keras.layers

#: Activations applied value by value, through which a removed unit's
#: constant can be computed on its own.
ELEMENTWISE = frozenset({
    "linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu",
    "silu", "swish", "softplus", "softsign", "leaky_relu", "hard_sigmoid",
    "hard_silu", "hard_swish", "exponential", "mish", "log_sigmoid", "celu",
    "sparse_plus", "squareplus", "tanh_shrink", "hard_tanh", "soft_shrink",
    "hard_shrink",
})

_CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
_TRANSPOSED = (L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose)
_DEPTHWISE = tuple(
    c for c in (getattr(L, n, None) for n in
                ("DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D",
                 "SeparableConv2D")) if c is not None
)
_POOLS = (
    L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D,
    L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D,
    L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
    L.GlobalAveragePooling1D, L.GlobalAveragePooling2D,
    L.GlobalAveragePooling3D,
)
#: Layers acting channel by channel, without weights across channels.
_PER_CHANNEL = (
    L.Activation, L.ReLU, L.LeakyReLU, L.ELU, L.Dropout, L.SpatialDropout1D,
    L.SpatialDropout2D, L.SpatialDropout3D, L.GaussianNoise,
    L.GaussianDropout, L.AlphaDropout, L.ActivityRegularization,
)


class ShrinkError(KerasLotteryError, ValueError):
    """`shrink` cannot remove the pruned units of this graph exactly.

    Attributes:
        layer: The name of the layer where shrinking stops.

    Example:

    >>> from keras_lottery.deploy.shrink import ShrinkError
    >>> ShrinkError("cannot", layer="add").layer
    'add'
    """

    def __init__(self, message: str, *, layer: str):
        super().__init__(message)
        self.layer = layer


@dataclasses.dataclass
class _Cut:
    """Channels (last axis) of one tensor of the original graph.

    `keep` lists the channels that survive (None: all); `const` holds, for
    every removed channel, the constant it carries; `origin` is the layer
    that removed them.
    """

    size: int
    keep: np.ndarray | None = None
    const: np.ndarray | None = None
    origin: str = ""

    @property
    def cut(self) -> bool:
        return self.keep is not None

    def removed(self) -> np.ndarray:
        if self.keep is None:
            return np.empty(0, dtype=np.int64)
        return np.setdiff1d(np.arange(self.size), self.keep)

    def same_as(self, other: _Cut) -> bool:
        if self.cut != other.cut or self.size != other.size:
            return False
        return not self.cut or (
            np.array_equal(self.keep, other.keep)
            and np.allclose(self.const, other.const)
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


def _numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def _activation_name(fn) -> str:
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return getattr(fn, "__name__", repr(fn))
    return name if isinstance(name, str) else str(name.get("config", name))


def _apply_to_constant(layer, const: np.ndarray, rank: int) -> np.ndarray:
    """The layer's inference output for a tensor constant per channel."""
    x = const.astype("float32").reshape((1,) * (rank - 1) + (-1,))
    return _numpy(layer(x, training=False)).reshape(-1).astype("float64")


def _check_channels_last(layer) -> None:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        raise ShrinkError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses "
            f"data_format={fmt!r}; shrink follows channels on the last axis "
            "only. Build the model with data_format='channels_last'.",
            layer=layer.name,
        )


def _kernel_layer(layer, cut_in: _Cut, is_output: bool):
    """Dense/Conv: cut input rows, fold constants, drop zero units.

    Returns (new layer config, weights, output cut).
    """
    _check_channels_last(layer)
    grouped = isinstance(layer, _CONVS) and getattr(layer, "groups", 1) != 1
    if grouped and cut_in.cut:
        raise ShrinkError(
            f"Layer '{layer.name}' is a grouped convolution "
            f"(groups={layer.groups}); shrink cannot cut its inputs.",
            layer=layer.name,
        )
    kernel = _numpy(layer.kernel).astype("float64")
    bias = (_numpy(layer.bias).astype("float64") if layer.use_bias
            else np.zeros(kernel.shape[-1]))
    if cut_in.cut:
        removed = cut_in.removed()
        const = cut_in.const[removed]
        rows = kernel[..., removed, :]
        if np.any(const != 0) and np.any(rows != 0):
            padding = getattr(layer, "padding", "valid")
            if isinstance(layer, _CONVS) and padding != "valid":
                raise ShrinkError(
                    f"Layer '{layer.name}' ({type(layer).__name__}, "
                    f"padding={padding!r}) reads channels that "
                    f"'{cut_in.origin}' pruned but that still carry a "
                    "nonzero constant (its activation of its bias). With "
                    "zero padding that constant's effect depends on the "
                    "position, so it cannot be folded into a bias and "
                    "removing the channels would change the predictions. "
                    "Fix: give the pruned layer use_bias=False (and no "
                    "BatchNormalization offset), use padding='valid' here, "
                    "or prune these layers with granularity='weight'.",
                    layer=layer.name,
                )
            # Each removed input adds const * (sum of its weights) to every
            # output, at every position ('valid' windows see only inputs).
            flat = rows.reshape(-1, rows.shape[-2], rows.shape[-1])
            bias = bias + np.einsum("pio,i->o", flat, const)
        kernel = kernel[..., cut_in.keep, :]
    alive = np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
    keep = np.flatnonzero(alive)
    out_cut = _Cut(kernel.shape[-1])
    if grouped:
        keep = np.arange(kernel.shape[-1])  # filters stay: groups need them
    if keep.size < kernel.shape[-1]:
        if keep.size == 0:
            raise ShrinkError(
                f"Every unit of layer '{layer.name}' is pruned, so its "
                "output is constant and it cannot be shrunk to zero units. "
                "Prune with min_remaining >= 1.",
                layer=layer.name,
            )
        if is_output:
            raise ShrinkError(
                f"Layer '{layer.name}' produces an output of the model and "
                f"{kernel.shape[-1] - keep.size} of its {kernel.shape[-1]} "
                "units are pruned; removing them would change the model's "
                "output shape. Exclude the output layer from channel "
                f"pruning, e.g. prune(..., rates={{'{layer.name}': 0.0}}) "
                f"or wrap(..., exclude=['{layer.name}']).",
                layer=layer.name,
            )
        activation = _activation_name(layer.activation)
        if activation not in ELEMENTWISE:
            raise ShrinkError(
                f"Layer '{layer.name}' has pruned units and the activation "
                f"{activation!r}, which mixes units, so they cannot be "
                "removed exactly. Use an elementwise activation here (or a "
                "separate Activation layer after the next Dense).",
                layer=layer.name,
            )
        const = _numpy(layer.activation(bias.astype("float32"))).astype("float64")
        const[keep] = 0.0
        out_cut = _Cut(kernel.shape[-1], keep, const, layer.name)
        kernel = kernel[..., keep]
        bias = bias[keep]
    config = layer.get_config()
    config["units" if isinstance(layer, L.Dense) else "filters"] = int(kernel.shape[-1])
    use_bias = layer.use_bias or bool(np.any(bias != 0))
    config["use_bias"] = use_bias
    dtype = layer.kernel.dtype
    weights = [kernel.astype(dtype)] + ([bias.astype(dtype)] if use_bias else [])
    return config, weights, out_cut


def _per_channel_weights(layer, cut_in: _Cut, rank: int):
    """BatchNormalization (last axis): slice every per-channel weight."""
    axis = layer.axis
    if not isinstance(axis, int):
        axis = next(iter(axis)) if len(list(axis)) == 1 else None
    if axis not in (-1, rank - 1):
        raise ShrinkError(
            f"Layer '{layer.name}' normalizes axis {layer.axis}; shrink "
            "follows channels on the last axis only.",
            layer=layer.name,
        )
    return [w[cut_in.keep] for w in layer.get_weights()]


class _Shrinker:
    def __init__(self, model):
        self.model = model
        self.values: dict[int, object] = {}
        self.cuts: dict[int, _Cut] = {}
        self.made: dict[int, tuple[object, list[_Cut]]] = {}
        self.units: dict[str, tuple[int, int]] = {}
        self.output_ids = {id(t) for t in model.outputs}

    def run(self):
        inputs = []
        for tensor in self.model.inputs:
            new = keras.Input(shape=tuple(tensor.shape[1:]), dtype=tensor.dtype,
                              name=graph.operation_of(tensor).name)
            self.values[id(tensor)] = new
            self.cuts[id(tensor)] = _Cut(int(tensor.shape[-1] or 0))
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

    def layer_for(self, layer, cuts_in: list[_Cut], node):
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

    def build(self, layer, cuts_in: list[_Cut], node):
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
            return clone, [_Cut(int(t.shape[-1] or 0)) for t in outs]
        if isinstance(layer, (L.Dense, *_CONVS)) and len(cuts_in) == 1:
            is_output = any(id(t) in self.output_ids for t in outs)
            config, weights, cut = _kernel_layer(layer, cuts_in[0], is_output)
            if cut.cut:
                self.units[layer.name] = (len(cut.keep), cut.size)
            new = type(layer).from_config(config)
            new.build(self._shape(node, cuts_in))
            new.set_weights(weights)
            return new, [cut]
        if not any_cut:
            return _clone_layer_with_weights(layer), [
                _Cut(int(t.shape[-1] or 0)) for t in outs]
        cut = cuts_in[0]
        if len(cuts_in) == 1 and isinstance(layer, L.BatchNormalization):
            weights = _per_channel_weights(layer, cut, rank)
            const = _apply_to_constant(layer, cut.const, rank)
            new = type(layer).from_config(layer.get_config())
            new.build(self._shape(node, cuts_in))
            new.set_weights(weights)
            const[cut.keep] = 0.0
            return new, [_Cut(cut.size, cut.keep, const, cut.origin)]
        if len(cuts_in) == 1 and isinstance(layer, _PER_CHANNEL):
            if isinstance(layer, L.Activation) and _activation_name(
                    layer.activation) not in ELEMENTWISE:
                raise ShrinkError(
                    f"Layer '{layer.name}' applies "
                    f"{_activation_name(layer.activation)!r}, which mixes "
                    f"the channels that '{cut.origin}' pruned with the "
                    "others, so they cannot be removed exactly.",
                    layer=layer.name,
                )
            const = _apply_to_constant(layer, cut.const, rank)
            const[cut.keep] = 0.0
            new = type(layer).from_config(layer.get_config())
            return new, [_Cut(cut.size, cut.keep, const, cut.origin)]
        if len(cuts_in) == 1 and isinstance(layer, _POOLS):
            _check_channels_last(layer)
            return type(layer).from_config(layer.get_config()), [cut]
        if len(cuts_in) == 1 and isinstance(layer, L.Flatten) and rank >= 2:
            shape = node.input_tensors[0].shape[1:]
            if rank > 2:
                _check_channels_last(layer)
            if any(d is None for d in shape):
                raise ShrinkError(
                    f"Flatten layer '{layer.name}' has an input of unknown "
                    f"shape {tuple(shape)}; shrink needs static sizes.",
                    layer=layer.name,
                )
            positions = int(np.prod(shape[:-1])) if rank > 2 else 1
            keep = (np.arange(positions)[:, None] * cut.size
                    + cut.keep[None, :]).ravel()
            const = np.tile(cut.const, positions)
            return type(layer).from_config(layer.get_config()), [
                _Cut(positions * cut.size, keep, const, cut.origin)]
        if isinstance(layer, _DEPTHWISE + _TRANSPOSED):
            what = "channel-wise convolutions"
        elif len(cuts_in) > 1:
            what = "layers that merge several inputs"
        else:
            what = "this layer type"
        origins = sorted({c.origin for c in cuts_in if c.cut})
        raise ShrinkError(
            f"Layer '{layer.name}' ({type(layer).__name__}) reads channels "
            f"that {', '.join(repr(o) for o in origins)} pruned, and shrink "
            f"cannot cut the inputs of {what}. Shrink follows pruned units "
            "through activations, BatchNormalization, dropout, pooling and "
            "Flatten into the next Dense or Conv layer. Exclude "
            f"{', '.join(repr(o) for o in origins)} from channel pruning "
            "(prune(..., rates={name: 0.0})) or use granularity='weight'.",
            layer=layer.name,
        )

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
