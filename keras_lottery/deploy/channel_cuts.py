"""How `shrink` cuts one layer: the per-layer rules for pruned channels.

A `Cut` describes the channels (last axis) of one tensor: which survive
and the constant each removed one carries. `kernel_layer` cuts a Dense or
convolution (its inputs and its own zero units, folding constants into
its bias); `follow_channels` carries a cut through the layers that act
channel by channel (BatchNormalization, activations, dropout, pooling,
Flatten) and raises `ShrinkError` for the others. The graph rebuild that
applies these rules is in `keras_lottery.deploy.shrink`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

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

CONVS = (L.Conv1D, L.Conv2D, L.Conv3D)
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
class Cut:
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

    def same_as(self, other: Cut) -> bool:
        if self.cut != other.cut or self.size != other.size:
            return False
        return not self.cut or (
            np.array_equal(self.keep, other.keep)
            and np.allclose(self.const, other.const)
        )


def numpy_value(x) -> np.ndarray:
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
    return numpy_value(layer(x, training=False)).reshape(-1).astype("float64")


def _check_channels_last(layer) -> None:
    fmt = getattr(layer, "data_format", "channels_last")
    if fmt not in (None, "channels_last"):
        raise ShrinkError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses "
            f"data_format={fmt!r}; shrink follows channels on the last axis "
            "only. Build the model with data_format='channels_last'.",
            layer=layer.name,
        )


def kernel_layer(layer, cut_in: Cut, is_output: bool):
    """Dense/Conv: cut input rows, fold constants, drop zero units.

    Returns (new layer config, weights, output cut).
    """
    _check_channels_last(layer)
    grouped = isinstance(layer, CONVS) and getattr(layer, "groups", 1) != 1
    if grouped and cut_in.cut:
        raise ShrinkError(
            f"Layer '{layer.name}' is a grouped convolution "
            f"(groups={layer.groups}); shrink cannot cut its inputs.",
            layer=layer.name,
        )
    kernel = numpy_value(layer.kernel).astype("float64")
    bias = (numpy_value(layer.bias).astype("float64") if layer.use_bias
            else np.zeros(kernel.shape[-1]))
    if cut_in.cut:
        removed = cut_in.removed()
        const = cut_in.const[removed]
        rows = kernel[..., removed, :]
        if np.any(const != 0) and np.any(rows != 0):
            padding = getattr(layer, "padding", "valid")
            if isinstance(layer, CONVS) and padding != "valid":
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
    out_cut = Cut(kernel.shape[-1])
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
        const = numpy_value(layer.activation(bias.astype("float32"))).astype("float64")
        const[keep] = 0.0
        out_cut = Cut(kernel.shape[-1], keep, const, layer.name)
        kernel = kernel[..., keep]
        bias = bias[keep]
    config = layer.get_config()
    config["units" if isinstance(layer, L.Dense) else "filters"] = int(kernel.shape[-1])
    use_bias = layer.use_bias or bool(np.any(bias != 0))
    config["use_bias"] = use_bias
    dtype = layer.kernel.dtype
    weights = [kernel.astype(dtype)] + ([bias.astype(dtype)] if use_bias else [])
    return config, weights, out_cut


def _per_channel_weights(layer, cut_in: Cut, rank: int):
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


def follow_channels(layer, cuts_in: list[Cut], node, rank: int, shape):
    """The new layer and output cut of a layer whose input channels are
    cut, for layers that act channel by channel; else a `ShrinkError`.

    Args:
        layer: The original layer.
        cuts_in: The cuts of its inputs (at least one is cut).
        node: Its call in the original graph.
        rank: The rank of its first input.
        shape: Its first input's shape after the cut (to build weights).
    """
    cut = cuts_in[0]
    if len(cuts_in) == 1 and isinstance(layer, L.BatchNormalization):
        weights = _per_channel_weights(layer, cut, rank)
        const = _apply_to_constant(layer, cut.const, rank)
        new = type(layer).from_config(layer.get_config())
        new.build(shape)
        new.set_weights(weights)
        const[cut.keep] = 0.0
        return new, [Cut(cut.size, cut.keep, const, cut.origin)]
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
        return new, [Cut(cut.size, cut.keep, const, cut.origin)]
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
            Cut(positions * cut.size, keep, const, cut.origin)]
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


__all__ = ["ELEMENTWISE", "ShrinkError"]
