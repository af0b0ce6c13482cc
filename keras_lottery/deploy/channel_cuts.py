"""How `shrink` cuts one layer: weights sliced by the channel groups.

A `Cut` describes the channels (last axis) of one tensor: which survive
and the value each removed one still carries (a constant: its activation
of its bias; NaN where it is not constant, e.g. after zero padding).
`slice_layer` rebuilds a Dense, convolution, depthwise/separable
convolution or BatchNormalization with the slices of the removed units
taken out of every weight, as `keras_lottery.core.depgraph` lists them,
folding the constants of removed inputs into the bias where that is exact.
`carry` computes the removed channels' constants after any other layer.
The graph rebuild that applies these rules is in `keras_lottery.deploy.shrink`.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lottery.core.attention_heads import layer_weights
from keras_lottery.core.depgraph import MERGES
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
_RESIZED = {L.Dense: "units", L.Conv1D: "filters", L.Conv2D: "filters",
            L.Conv3D: "filters", L.SeparableConv1D: "filters",
            L.SeparableConv2D: "filters"}
_DEPTHWISE = (L.DepthwiseConv1D, L.DepthwiseConv2D)
_SEPARABLE = (L.SeparableConv1D, L.SeparableConv2D)
_EVALUATED = (L.BatchNormalization, L.Activation, L.ReLU, L.LeakyReLU, L.ELU,
              L.Identity, *MERGES)
_PADDING = (L.ZeroPadding1D, L.ZeroPadding2D, L.ZeroPadding3D)


class ShrinkError(KerasLotteryError, ValueError):
    """`shrink` cannot remove the pruned units of this graph exactly.

    Attributes:
        layer: The first layer where shrinking stops.
        layers: Every layer where it stops (one error lists them all).

    Example:

    >>> from keras_lottery.deploy.shrink import ShrinkError
    >>> ShrinkError("cannot", layer="add").layer
    'add'
    """

    def __init__(self, message: str, *, layer: str, layers=None):
        super().__init__(message)
        self.layer = layer
        self.layers = list(layers) if layers else [layer]


@dataclasses.dataclass
class Cut:
    """Channels (last axis) of one tensor of the original graph.

    `keep` lists the channels that survive (None: all); `const` holds, for
    every channel, the value a removed one carries (0 for kept ones; NaN:
    not a constant).
    """

    size: int
    keep: np.ndarray | None = None
    const: np.ndarray | None = None

    @property
    def cut(self) -> bool:
        return self.keep is not None

    def removed(self) -> np.ndarray:
        if self.keep is None:
            return np.empty(0, dtype=np.int64)
        return np.setdiff1d(np.arange(self.size), self.keep)

    def constants(self) -> np.ndarray:
        return np.zeros(self.size) if self.const is None else self.const


def numpy_value(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def activation_name(fn) -> str:
    try:
        name = keras.activations.serialize(fn)
    except (ValueError, TypeError):
        return getattr(fn, "__name__", repr(fn))
    return name if isinstance(name, str) else str(name.get("config", name))


def _removed_slices(key, graph, dead):
    """`{(weight, axis): positions}` of the removed units' slices."""
    removed: dict[tuple[str, int], list] = {}
    for g, member in graph.by_layer.get(key, []):
        gone = member.positions[dead[g][member.units]]
        if gone.size:
            removed.setdefault((member.weight, member.axis), []).append(gone)
    return {k: np.unique(np.concatenate(v)) for k, v in removed.items()}


def removed_heads(key, graph, dead) -> np.ndarray:
    """The heads of the attention layer at `key` that `dead` removes."""
    return _removed_slices(key, graph, dead).get(
        ("query/kernel", 1), np.empty(0, dtype=np.int64))


def _fold(layer, rows, const, problems, key):
    """Bias change from removed inputs `const` read through `rows`
    (`(..., removed, out)`), or None where that is not exact."""
    live = np.any(rows.reshape(-1, rows.shape[-2], rows.shape[-1]) != 0, axis=(0, 2))
    hot = live & (const != 0)
    if not hot.any():
        return 0.0
    spatial = rows.shape[:-2]
    padding = getattr(layer, "padding", "valid")
    if np.isnan(const[hot]).any() or (int(np.prod(spatial)) > 1 and padding != "valid"):
        problems.append((key, (
            f"'{key}' ({type(layer).__name__}, padding={padding!r}) reads "
            "removed channels that still carry a value (their activation of "
            "their bias, or a padded one) through nonzero weights, and that "
            "cannot be folded into a bias exactly. Prune with "
            "granularity='channel' (it zeroes these input rows too), or give "
            "the pruned layer use_bias=False")))
        return None
    flat = rows.reshape(-1, rows.shape[-2], rows.shape[-1])
    return np.einsum("pio,i->o", flat, np.where(hot, const, 0.0))


def slice_layer(layer, key, cut_in: Cut, cut_out: Cut, graph, dead, shape, problems):
    """The layer rebuilt without its removed slices, and `cut_out` with the
    constants its removed outputs carry."""
    weights = {w.name: numpy_value(w).astype("float64") for w in layer.weights}
    original = dict(weights)
    removed = _removed_slices(key, graph, dead)
    const_in = cut_in.constants()
    bias = weights.get("bias")
    if isinstance(layer, _DEPTHWISE + _SEPARABLE) and cut_in.cut:
        dk = original["kernel" if isinstance(layer, _DEPTHWISE) else
                      "depthwise_kernel"][..., 0]
        gone = cut_in.removed()
        quiet = ~np.any(dk[..., gone].reshape(-1, gone.size) != 0, axis=0)
        value = np.where(quiet | (const_in[gone] == 0), 0.0, np.nan)
        if layer.padding == "valid":
            value = np.where(quiet, 0.0, const_in[gone] * dk[..., gone].reshape(
                -1, gone.size).sum(axis=0))
        depth = np.zeros(cut_in.size)
        depth[gone] = value
        if isinstance(layer, _DEPTHWISE):
            pre = depth + (original["bias"] if layer.use_bias else 0.0)
        else:
            const_in = depth
    if any(isinstance(layer, t) for t in _RESIZED) and cut_in.cut:
        name = "pointwise_kernel" if isinstance(layer, _SEPARABLE) else "kernel"
        gone = cut_in.removed()
        rows = original[name][..., gone, :]
        delta = _fold(layer, rows, const_in[gone], problems, key)
        if delta is not None and np.any(delta != 0):
            bias = (0.0 if bias is None else bias) + delta
    if any(isinstance(layer, t) for t in _RESIZED):
        pre = np.zeros(cut_out.size) if bias is None else bias
    for (name, axis), gone in removed.items():
        weights[name] = np.delete(weights[name], gone, axis=axis)
    config = layer.get_config()
    for cls, field in _RESIZED.items():
        if isinstance(layer, cls):
            config[field] = int(cut_out.size - cut_out.removed().size)
            if bias is not None:
                weights["bias"] = np.delete(bias, cut_out.removed())
                config["use_bias"] = True
    if cut_out.cut and not isinstance(layer, L.BatchNormalization):
        activation = getattr(layer, "activation", None)
        if activation is not None and activation_name(activation) not in ELEMENTWISE:
            problems.append((key, f"'{key}' applies the activation "
                             f"{activation_name(activation)!r}, which mixes units"))
        value = np.asarray(pre, dtype="float64")
        if activation is not None:
            value = np.where(np.isnan(value), np.nan,
                             apply_activation(activation, np.nan_to_num(value)))
        kept = np.isin(np.arange(cut_out.size), cut_out.keep)
        cut_out.const = np.where(kept, 0.0, value)
    return rebuild(layer, config, shape, weights)


def slice_attention(layer, key, cuts: dict, cut_out: Cut, graph, dead, shapes,
                    problems):
    """A MultiHeadAttention rebuilt without its removed heads, input rows
    and output channels; returns it and its number of heads.

    `cuts` and `shapes` are the `"query"`, `"value"`, `"key"` inputs'.
    A removed head whose value kernel is zero outputs its value bias at
    every position (softmax weights sum to 1); that, through its output
    rows, and removed inputs' constants are folded into biases."""
    weights = {n: numpy_value(w).astype("float64")
               for n, w in layer_weights(layer).items()}
    heads_n, head_dims = layer.num_heads, weights["value/kernel"].shape[-1]
    out_n = weights["output/kernel"].shape[-1]
    biases = {"output/bias": (out_n,)} | {f"{p}/bias": weights[f"{p}/kernel"].shape[1:]
                                         for p in ("query", "key", "value")}
    for name, shape in biases.items():  # zeros where use_bias=False
        weights.setdefault(name, np.zeros(shape))
    for part in ("query", "key", "value"):
        cut = cuts[part]
        if cut.cut:
            gone, kernel = cut.removed(), weights[f"{part}/kernel"]
            delta = _fold(layer, kernel[gone].reshape(gone.size, -1),
                          cut.constants()[gone], problems, key)
            if delta is not None:
                weights[f"{part}/bias"] = weights[f"{part}/bias"] + np.reshape(
                    delta, kernel.shape[1:] if np.ndim(delta) else ())
    removed = _removed_slices(key, graph, dead)
    heads = removed_heads(key, graph, dead)
    weights["output/bias"] = weights["output/bias"] + np.einsum(
        "hd,hdo->o", weights["value/bias"][heads].reshape(-1, head_dims),
        weights["output/kernel"][heads])
    if cut_out.cut:  # a removed output channel carries its bias
        kept = np.isin(np.arange(cut_out.size), cut_out.keep)
        cut_out.const = np.where(kept, 0.0, weights["output/bias"])
    for (name, axis), gone in removed.items():
        weights[name] = np.delete(weights[name], gone, axis=axis)
    config = layer.get_config()
    shape = config.get("output_shape") or (out_n,)
    config.update(num_heads=heads_n - heads.size, output_shape=(
        *tuple(shape)[:-1], weights["output/kernel"].shape[-1]),
        use_bias=bool(layer.use_bias or any(
            np.any(weights[n] != 0) for n in biases)))
    new = type(layer).from_config(config)
    new.build(shapes["query"], shapes["value"], shapes["key"])
    for name, variable in layer_weights(new).items():
        variable.assign(weights[name].astype(variable.dtype))
    return new, heads_n - heads.size


def _host_zeros(shape, dtype=None):
    return np.zeros(shape, dtype=keras.backend.standardize_dtype(dtype or "float32"))


def rebuild(layer, config, shape, weights=None):
    """`type(layer)` from `config`, built for `shape` and given `weights`
    (by name; default: the layer's own). Built with zeros initializers (a
    random initializer compiles a kernel per new shape on JAX), then set
    back to the layer's."""
    if weights is None:
        weights = {w.name: numpy_value(w) for w in layer.weights}
    fields = [k for k in config if k.endswith("_initializer")]
    new = type(layer).from_config(
        {k: v for k, v in config.items() if k not in fields})
    for field in fields:  # before build: host zeros, no kernel compiled
        if hasattr(new, field):
            setattr(new, field, _host_zeros)
    if shape is not None:
        new.build(shape)
    for field in fields:
        if hasattr(layer, field) and hasattr(new, field):
            setattr(new, field, getattr(layer, field))
    if new.weights:
        new.set_weights([np.asarray(weights[w.name]).astype(w.dtype)
                         for w in new.weights])
    return new


def carry(layer, node, cuts_in: list[Cut], cut_out: Cut) -> None:
    """Sets `cut_out.const`: the removed channels' values after `layer`."""
    if not cut_out.cut:
        return
    if isinstance(layer, L.Concatenate) and len(cuts_in) > 1 and sum(
            c.size for c in cuts_in) == cut_out.size:
        const = np.concatenate([c.constants() for c in cuts_in])
    elif isinstance(layer, (L.Flatten, L.Reshape)):
        const = np.tile(cuts_in[0].constants(), cut_out.size // cuts_in[0].size)
    elif isinstance(layer, _PADDING):
        const = np.where(cuts_in[0].constants() != 0, np.nan, 0.0)
    elif isinstance(layer, _EVALUATED) or not isinstance(layer, L.Layer):
        const = _evaluate(layer, node, cuts_in)
    else:  # pooling, cropping, upsampling, dropout: a constant stays itself
        const = cuts_in[0].constants()
    kept = np.isin(np.arange(cut_out.size), cut_out.keep)
    cut_out.const = np.where(kept, 0.0, const)


_NUMPY_ACTIVATIONS = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.clip(x, 0.0, 6.0),
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "tanh": np.tanh,
    "silu": lambda x: x / (1.0 + np.exp(-x)),
    "swish": lambda x: x / (1.0 + np.exp(-x)),
    "hard_sigmoid": lambda x: np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_silu": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "hard_swish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
}
_NUMPY_MERGES = {L.Add: np.sum, L.Multiply: np.prod, L.Average: np.mean,
                 L.Maximum: np.max, L.Minimum: np.min}


def apply_activation(fn, x: np.ndarray) -> np.ndarray:
    """An activation of host values (NumPy for the common ones: a Keras
    call compiles a kernel per shape on JAX)."""
    numpy_fn = _NUMPY_ACTIVATIONS.get(activation_name(fn))
    if numpy_fn is not None:
        return numpy_fn(x)
    return numpy_value(fn(x.astype("float32"))).astype("float64")


def _numpy_layer(layer, consts):
    """The layer on host values, or None where NumPy has no formula."""
    if isinstance(layer, L.BatchNormalization):
        w = {v.name: numpy_value(v).astype("float64") for v in layer.weights}
        var = w["moving_variance"] + layer.epsilon
        x = (consts[0] - w["moving_mean"]) / np.sqrt(var)
        return x * w.get("gamma", 1.0) + w.get("beta", 0.0)
    if isinstance(layer, L.Activation):
        return apply_activation(layer.activation, consts[0])
    if isinstance(layer, L.ReLU):
        x = consts[0]
        top = np.inf if layer.max_value is None else float(layer.max_value)
        low = float(layer.negative_slope) * (x - float(layer.threshold))
        return np.where(x >= top, top, np.where(x >= layer.threshold, x, low))
    for cls, fn in _NUMPY_MERGES.items():
        if type(layer) is cls:
            return fn(np.broadcast_arrays(*consts), axis=0)
    if type(layer) is L.Subtract:
        return consts[0] - consts[1]
    return None


def _evaluate(layer, node, cuts_in):
    """The layer's inference output for inputs constant per channel."""
    consts = [np.nan_to_num(c.constants()) for c in cuts_in]
    out = _numpy_layer(layer, consts) if isinstance(layer, L.Layer) else None
    if out is None:
        values = {id(t): c.astype("float32").reshape((1,) * (len(t.shape) - 1) + (-1,))
                  for t, c in zip(node.input_tensors, consts, strict=False)}
        args, kwargs = node.arguments.fill_in(values)
        if isinstance(layer, L.Layer) and not isinstance(layer, MERGES):
            kwargs = {**kwargs, "training": False}
        out = numpy_value(keras.tree.flatten(layer(*args, **kwargs))[0])
    out = np.asarray(out, dtype="float64").reshape(-1)
    unknown = np.zeros(out.size, dtype=bool)
    for cut in cuts_in:
        flags = np.isnan(cut.constants())
        unknown |= flags if flags.size == out.size else bool(flags.any())
    return np.where(unknown, np.nan, out)


__all__ = ["ELEMENTWISE", "ShrinkError", "removed_heads", "slice_attention"]
