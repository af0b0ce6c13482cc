"""Will the pruned model run faster on TFLite's XNNPACK? Structural checks.

Two checks, both on the Keras model before export:

- `check_block_alignment`: Dense layers. TFLite runs a FullyConnected
  whose kernel is stored in 1x4 blocks (float32; 1x16 for int8) on its
  builtin sparse kernel, and one such op takes every FullyConnected off
  XNNPACK. So block-prune all Dense layers or none; this warns when some
  but not all are.
- `check_xnnpack_sparse`: conv nets. XNNPACK runs 1x1 convolutions sparse
  (Fast Sparse ConvNets, Elsen et al. 2019) inside a subgraph that starts
  with a 3x3 stride-2 convolution on 3 channels (after a 1-pixel
  ZeroPadding2D, 'valid'), continues through 1x1 convolutions, depthwise
  convolutions, BatchNormalization, elementwise activations, Add and
  Multiply, and ends in GlobalAveragePooling2D(keepdims=True); each 1x1
  convolution needs more than 2/3 zeros. The Keras 3 counterpart of
  tfmot's `PruneForLatencyOnXNNPack` policy: it says which layer breaks
  the pattern, and which layers to prune (`report.prunable`, for
  `keras_lottery.wrap(model, include=...)`).
"""

from __future__ import annotations

import dataclasses
import warnings

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery.core.model import check_model
from keras_lottery.core.wrapper import PrunableWrapper
from keras_lottery.deploy.tflite.report import CONVERTER_SPARSITY
from keras_lottery.pruning.granularity import BlockGranularity

L = keras.layers

#: XNNPACK runs a 1x1 convolution sparse only above this fraction of zeros.
XNNPACK_SPARSITY = 2 / 3


def _inner(layer):
    return layer.layer if isinstance(layer, PrunableWrapper) else layer


def _effective_kernel(layer) -> np.ndarray:
    if isinstance(layer, PrunableWrapper) and "kernel" in layer.weight_names:
        return layer.effective_weight("kernel")
    return np.asarray(keras.ops.convert_to_numpy(_inner(layer).kernel))


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


# ------------------------------------------------------- Dense alignment
def _block_structured(nonzero: np.ndarray, block_shape) -> bool:
    return BlockGranularity(block_shape).aligned(nonzero)


def check_block_alignment(
    model: keras.Model, block_shape: tuple[int, int] = (4, 1), *,
    warn: bool = True,
) -> dict[str, str]:
    """Classifies every Dense kernel for TFLite; warns on a mix.

    A kernel is `"block"` when its zeros fill whole `block_shape` blocks
    (`kernel[i:i+4, j]` for `(4, 1)`) and make at least 30% of it (the
    converter's threshold for a sparse encoding), `"unstructured"` when it
    has >= 30% zeros otherwise, and `"dense"` below 30%. TFLite runs
    `"block"` kernels on its builtin sparse FullyConnected, and then
    keeps every FullyConnected off XNNPACK: if some Dense kernels are
    `"block"` and others are not, the others lose XNNPACK's speed.

    Args:
        model: A wrapped (masks decide) or plain model.
        block_shape: `(rows along the input axis, columns along the output
            axis)`: `(4, 1)` for float32, `(16, 1)` for int8.
        warn: Issue a `UserWarning` naming the layers when they are mixed.

    Returns:
        `{layer name: "block" | "unstructured" | "dense"}` for every Dense.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.deploy.xnnpack import check_block_alignment
    >>> model = kl.wrap(keras.Sequential([keras.Input((8,)),
    ...     keras.layers.Dense(8), keras.layers.Dense(2)]))
    >>> _ = kl.prune(model, 0.5, granularity="block", output_rate=0.5)
    >>> check_block_alignment(model)
    {'dense': 'block', 'dense_1': 'block'}
    """
    check_model(model)
    found = {}
    for layer in _all_layers(model):
        if not isinstance(_inner(layer), L.Dense):
            continue
        nonzero = _effective_kernel(layer) != 0
        zeros = 1.0 - nonzero.mean()
        if zeros < CONVERTER_SPARSITY:
            status = "dense"
        elif _block_structured(nonzero, block_shape):
            status = "block"
        else:
            status = "unstructured"
        found[_inner(layer).name] = status
    blocked = [k for k, v in found.items() if v == "block"]
    others = [k for k, v in found.items() if v != "block"]
    if warn and blocked and others:
        warnings.warn(
            f"Dense layers {blocked} are block-sparse ({block_shape[0]}x"
            f"{block_shape[1]}) but {others} are not. TFLite runs a "
            "block-sparse FullyConnected on its builtin sparse kernel, which "
            "takes every FullyConnected in the model off XNNPACK, so the "
            "other layers run slower than they would dense. Block-prune all "
            "Dense layers (prune(..., granularity='block'), output layer "
            "included) or none.",
            UserWarning, stacklevel=2,
        )
    return found


# ------------------------------------------------ XNNPACK sparse inference
@dataclasses.dataclass(frozen=True)
class XnnpackSparseReport:
    """Whether XNNPACK can run a conv net's 1x1 convolutions sparse.

    Attributes:
        ok: The structure fits and every 1x1 convolution of the subgraph
            has more than 2/3 zeros.
        structure_ok: The structure fits (sparsity aside).
        start: The stem convolution(s) found, or empty.
        end: The GlobalAveragePooling2D layer(s) that end the subgraph.
        prunable: The 1x1 convolutions XNNPACK would run sparse: the
            layers to prune (`keras_lottery.wrap(model, include=...)`).
        sparsity: `{1x1 conv: fraction of zeros}`.
        problems: `(layer, reason)` for each layer that breaks the pattern
            (or `("<model>", reason)`).

    Example:

    >>> from keras_lottery.deploy.xnnpack import XnnpackSparseReport
    >>> XnnpackSparseReport(False, False, (), (), (), {}, (("c", "5x5"),)).ok
    False
    """

    ok: bool
    structure_ok: bool
    start: tuple[str, ...]
    end: tuple[str, ...]
    prunable: tuple[str, ...]
    sparsity: dict[str, float]
    problems: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        lines = [f"XNNPACK sparse inference: {'yes' if self.ok else 'no'}"]
        lines.append(f"  stem: {', '.join(self.start) or 'not found'}; "
                     f"end: {', '.join(self.end) or 'not found'}")
        for name, value in self.sparsity.items():
            mark = "" if value > XNNPACK_SPARSITY else "  (needs > 66.7%)"
            lines.append(f"  1x1 {name}: {100 * value:.1f}% zeros{mark}")
        # An under-pruned 1x1 convolution is named once, on its line above.
        lines += [f"  {layer}: {reason}" for layer, reason in self.problems
                  if self.sparsity.get(layer, 1.0) > XNNPACK_SPARSITY]
        return "\n".join(lines)


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def _graph(model):
    """Producers and consumers of every layer reachable from the outputs."""
    producers: dict[int, list] = {}
    layers: dict[int, object] = {}
    stack = list(model.outputs)
    seen = set()
    while stack:
        tensor = stack.pop()
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        layer, node = graph.producer(tensor)
        layers[id(layer)] = layer
        found = producers.setdefault(id(layer), [])
        for inp in node.input_tensors:
            parent = graph.operation_of(inp)
            if parent not in found:
                found.append(parent)
            stack.append(inp)
    consumers: dict[int, list] = {k: [] for k in layers}
    for key, parents in producers.items():
        for parent in parents:
            consumers.setdefault(id(parent), []).append(layers[key])
    return layers, producers, consumers


def _is_stem(layer, producers) -> bool:
    inner = _inner(layer)
    if not isinstance(inner, L.Conv2D) or isinstance(inner, L.DepthwiseConv2D):
        return False
    kernel = inner.kernel.shape
    parents = producers.get(id(layer), [])
    return (tuple(kernel[:3]) == (3, 3, 3) and _pair(inner.strides) == (2, 2)
            and inner.padding == "valid" and len(parents) == 1
            and isinstance(parents[0], L.ZeroPadding2D)
            and tuple(map(tuple, parents[0].padding)) == ((1, 1), (1, 1)))


def _is_end(layer) -> bool:
    return isinstance(layer, L.GlobalAveragePooling2D) and layer.keepdims


_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid", "linear")


def _support(layer, producers) -> str | None:
    """None when XNNPACK's sparse (NCHW) subgraph supports the layer."""
    inner = _inner(layer)
    name = type(inner).__name__
    if isinstance(inner, (L.Add, L.Multiply, L.ZeroPadding2D, L.ReLU,
                          L.LeakyReLU, L.ELU, L.Dropout)):
        return None
    if isinstance(inner, L.DepthwiseConv2D):
        k, s = _pair(inner.kernel_size), _pair(inner.strides)
        parents = producers.get(id(layer), [])
        pad = (tuple(map(tuple, parents[0].padding))
               if len(parents) == 1 and isinstance(parents[0], L.ZeroPadding2D)
               else None)
        ok = inner.depth_multiplier == 1 and _pair(inner.dilation_rate) == (1, 1) and (
            (k in ((3, 3), (5, 5)) and s == (1, 1) and inner.padding == "same")
            or (k == (3, 3) and s == (2, 2) and inner.padding == "valid"
                and pad == ((1, 1), (1, 1)))
            or (k == (5, 5) and s == (2, 2) and inner.padding == "valid"
                and pad == ((2, 2), (2, 2)))
        )
        return None if ok else (
            f"DepthwiseConv2D {k[0]}x{k[1]} stride {s[0]} padding "
            f"{inner.padding!r}: XNNPACK's sparse path takes 3x3 or 5x5, "
            "multiplier 1, stride 1 'same', or stride 2 'valid' after a "
            "ZeroPadding2D of (k-1)/2")
    if isinstance(inner, L.Conv2D):
        k, s = _pair(inner.kernel_size), _pair(inner.strides)
        ok = (inner.groups == 1 and _pair(inner.dilation_rate) == (1, 1)
              and k == (1, 1) and s == (1, 1))
        return None if ok else (
            f"Conv2D {k[0]}x{k[1]} stride {s[0]} inside the body: only 1x1 "
            "stride-1 convolutions (and depthwise ones) stay on the sparse "
            "path after the stem")
    if isinstance(inner, L.BatchNormalization):
        axis = inner.axis if isinstance(inner.axis, int) else list(inner.axis)
        return None if axis in (-1, 3, [3], [-1]) else (
            f"BatchNormalization over axis {inner.axis}, not channels")
    if isinstance(inner, L.UpSampling2D):
        return None if inner.interpolation == "bilinear" else (
            f"UpSampling2D interpolation={inner.interpolation!r}, not bilinear")
    if isinstance(inner, L.Activation):
        act = keras.activations.serialize(inner.activation)
        return None if act in _ACTIVATIONS else f"activation {act!r}"
    if isinstance(inner, L.GlobalAveragePooling2D):
        return ("GlobalAveragePooling2D without keepdims=True (XNNPACK ends "
                "the sparse subgraph only at a keepdims mean)")
    return f"{name} is not supported inside XNNPACK's sparse subgraph"


def check_xnnpack_sparse(model: keras.Model) -> XnnpackSparseReport:
    """Checks that XNNPACK can run the model's pruned 1x1 convolutions sparse.

    The pattern (as tfmot's `PruneForLatencyOnXNNPack` checks it): every
    input branch reaches a stem Conv2D 3x3, stride 2, on 3 channels,
    'valid' after `ZeroPadding2D(((1, 1), (1, 1)))`; every output branch
    comes from a `GlobalAveragePooling2D(keepdims=True)`; every layer in
    between is a 1x1 stride-1 Conv2D, a 3x3/5x5 DepthwiseConv2D,
    BatchNormalization, ReLU/ReLU6/LeakyReLU/ELU/sigmoid, Add, Multiply,
    ZeroPadding2D or bilinear UpSampling2D. Each 1x1 convolution must
    have more than 2/3 zeros (masks of a wrapped model, else exact zeros).

    Args:
        model: A Sequential or functional conv net, wrapped or plain.

    Returns:
        An `XnnpackSparseReport`; `print` it for the reasons.

    Example:

    >>> import keras
    >>> from keras_lottery.deploy.xnnpack import check_xnnpack_sparse
    >>> x = keras.Input((32, 32, 3))
    >>> h = keras.layers.ZeroPadding2D(1)(x)
    >>> h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    >>> h = keras.layers.Conv2D(16, 1, activation="relu")(h)
    >>> h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    >>> report = check_xnnpack_sparse(keras.Model(x, h))
    >>> report.structure_ok, report.prunable, report.ok
    (True, ('conv2d_1',), False)
    """
    check_model(model)
    if not model.outputs:
        raise ValueError(
            f"Model '{model.name}' has no symbolic outputs; build it from "
            "keras.Input so that its graph can be followed."
        )
    _, producers, consumers = _graph(model)
    problems: list[tuple[str, str]] = []
    starts = _find_starts(model, producers, consumers, problems)
    ends = _find_ends(model, producers, problems)
    body = (_walk_body(starts, ends, producers, consumers, problems)
            if starts and ends else [])
    structure_ok = bool(starts and ends) and not problems
    ones = [lyr for lyr in body if isinstance(_inner(lyr), L.Conv2D)
            and not isinstance(_inner(lyr), L.DepthwiseConv2D)]
    order = {id(lyr): i for i, lyr in enumerate(_all_layers(model))}
    ones.sort(key=lambda lyr: order.get(id(lyr), 0))
    sparsity = {_name(layer): float(np.mean(_effective_kernel(layer) == 0))
                for layer in ones}
    dense_ones = [k for k, v in sparsity.items() if v <= XNNPACK_SPARSITY]
    for k in dense_ones:
        problems.append((k, f"{100 * sparsity[k]:.1f}% zeros; XNNPACK runs a "
                         "1x1 convolution sparse only above 66.7%"))
    if structure_ok and not ones:
        problems.append(("<model>", "no 1x1 convolution to run sparse"))
    return XnnpackSparseReport(
        ok=structure_ok and bool(ones) and not dense_ones,
        structure_ok=structure_ok,
        start=tuple(_name(s) for s in starts),
        end=tuple(_name(e) for e in ends),
        prunable=tuple(_name(lyr) for lyr in ones),
        sparsity=sparsity,
        problems=tuple(problems),
    )


def _name(layer) -> str:
    return _inner(layer).name


def _search(sources, stop, step, missing: str, problems) -> list:
    """Layers where `stop` holds on every path from `sources`; a path that
    ends first is a problem (`missing`) and the search gives up."""
    found, seen, todo = [], set(), list(sources)
    while todo:
        layer = todo.pop()
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        if stop(layer):
            found.append(layer)
            continue
        nxt = step(layer)
        if not nxt:
            problems.append((_name(layer), missing))
            return []
        todo.extend(nxt)
    return found


def _find_starts(model, producers, consumers, problems) -> list:
    """The stem convolutions every input branch reaches."""
    def conv_like(layer):
        return isinstance(_inner(layer), (L.Conv1D, L.Conv2D, L.Conv3D,
                                          L.Dense))

    inputs = [graph.operation_of(t) for t in model.inputs]
    starts = _search(
        inputs, lambda lyr: _is_stem(lyr, producers) or conv_like(lyr),
        lambda lyr: consumers.get(id(lyr), []),
        "reaches the output without a stem convolution", problems,
    )
    for layer in [s for s in starts if not _is_stem(s, producers)]:
        inner = _inner(layer)
        k = "x".join(map(str, _pair(getattr(inner, "kernel_size", (1, 1)))))
        problems.append((_name(layer), (
            f"first weighted layer is a {type(inner).__name__} {k} stride "
            f"{_pair(getattr(inner, 'strides', 1))[0]} padding "
            f"{getattr(inner, 'padding', '-')!r} on "
            f"{inner.kernel.shape[-2]} channels; XNNPACK's sparse subgraph "
            "starts with a Conv2D 3x3 stride 2 on 3 channels, padding "
            "'valid' after ZeroPadding2D(((1, 1), (1, 1)))")))
    return [s for s in starts if _is_stem(s, producers)]


def _find_ends(model, producers, problems) -> list:
    """The GlobalAveragePooling2D(keepdims=True) of every output branch."""
    outputs = [graph.operation_of(t) for t in model.outputs]
    ends = _search(
        outputs,
        lambda lyr: isinstance(lyr, L.GlobalAveragePooling2D),
        lambda lyr: producers.get(id(lyr), []),
        "no GlobalAveragePooling2D(keepdims=True) on this output branch",
        problems,
    )
    for layer in [e for e in ends if not _is_end(e)]:
        problems.append((_name(layer), "GlobalAveragePooling2D without "
                         "keepdims=True; XNNPACK ends the sparse subgraph only "
                         "at a mean that keeps the spatial dims"))
    return [e for e in ends if _is_end(e)]


def _walk_body(starts, ends, producers, consumers, problems) -> list:
    """The supported layers between the stems and the ends."""
    body, seen = [], set()
    end_ids = {id(e) for e in ends}
    todo = [c for s in starts for c in consumers.get(id(s), [])]
    while todo:
        layer = todo.pop()
        if id(layer) in seen or id(layer) in end_ids:
            continue
        seen.add(id(layer))
        reason = _support(layer, producers)
        if reason is not None:
            problems.append((_name(layer), reason))
            continue
        body.append(layer)
        nxt = consumers.get(id(layer), [])
        if not nxt:
            problems.append((_name(layer), "reaches an output before "
                             "the GlobalAveragePooling2D"))
        todo.extend(nxt)
    return body


__all__ = [
    "CONVERTER_SPARSITY",
    "XNNPACK_SPARSITY",
    "XnnpackSparseReport",
    "check_block_alignment",
    "check_xnnpack_sparse",
]
