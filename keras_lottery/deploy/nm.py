"""`check_n_m`: does a model or a `.tflite` file keep N:M sparsity?

`prune(..., granularity="N:M")` (`NMGranularity`) makes the masks; this
module checks the result, in a Keras model or in the weights of an
exported `.tflite` file.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery.core.model import check_model, iter_weight_keys, wrappers
from keras_lottery.deploy.tflite.flatbuffer import read_tflite_weights
from keras_lottery.pruning.granularity import NMGranularity


@dataclasses.dataclass(frozen=True)
class NMLayer:
    """N:M compliance of one weight tensor.

    Attributes:
        name: The Keras `"layer/weight"` key, or for a `.tflite` file the
            op and the stored tensor's name.
        shape: The weight's shape (TFLite layout for a `.tflite` file).
        groups: Groups of `m` along the input axis (the last may be short).
        violations: Groups holding more than `n` nonzero weights.
    """

    name: str
    shape: tuple[int, ...]
    groups: int
    violations: int

    @property
    def ok(self) -> bool:
        return self.violations == 0


@dataclasses.dataclass(frozen=True)
class NMReport:
    """What `check_n_m` found; printable, truthy when nothing violates."""

    n: int
    m: int
    layers: tuple[NMLayer, ...]

    @property
    def ok(self) -> bool:
        return all(layer.ok for layer in self.layers)

    @property
    def violations(self) -> int:
        return sum(layer.violations for layer in self.layers)

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        lines = [f"{self.n}:{self.m} sparsity along the input axis:"]
        for layer in self.layers:
            status = "ok" if layer.ok else (
                f"{layer.violations:,} of {layer.groups:,} groups keep "
                f"more than {self.n}")
            lines.append(f"  {layer.name} {layer.shape}: {status}")
        lines.append("OK" if self.ok else f"{self.violations:,} violations")
        return "\n".join(lines)


def _count_violations(nonzero: np.ndarray, n: int, m: int, axis: int):
    moved = np.moveaxis(nonzero, axis, -1)
    pad = -moved.shape[-1] % m
    if pad:
        moved = np.pad(moved, [(0, 0)] * (moved.ndim - 1) + [(0, pad)])
    counts = moved.reshape(-1, m).sum(axis=1)
    return int(counts.size), int(np.count_nonzero(counts > n))


def check_n_m(model_or_path, n: int = 2, m: int = 4) -> NMReport:
    """Checks that every m consecutive input weights hold at most n nonzeros.

    For a Keras model: every prunable weight of a wrapped model (the
    effective weight `w * mask`), or every Dense/Conv kernel of a plain
    one, grouped along the input (second-to-last) axis. For a `.tflite`
    file: the weights of every FULLY_CONNECTED and CONV_2D op, read from
    the flatbuffer (sparse encodings decoded), grouped along the input
    axis of TFLite's layout (the last).

    Args:
        model_or_path: A Keras model, or the path of a `.tflite` file.
        n: Nonzeros allowed per group.
        m: Group length.

    Returns:
        An `NMReport`: per layer the number of groups and of violations;
        `bool(report)` is True when there are none.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.deploy.nm import check_n_m
    >>> model = kl.wrap(keras.Sequential([
    ...     keras.Input((8,)), keras.layers.Dense(4), keras.layers.Dense(2)]))
    >>> bool(check_n_m(model, 2, 4))
    False
    >>> _ = kl.prune(model, 0.5, output_rate=0.5, granularity="2:4")
    >>> bool(check_n_m(model, 2, 4))
    True
    """
    NMGranularity(n, m)  # validates n and m
    rows = []
    if isinstance(model_or_path, (str, os.PathLike)):
        for name, weight in read_tflite_weights(model_or_path).items():
            groups, bad = _count_violations(weight != 0, n, m, -1)
            rows.append(NMLayer(name, tuple(weight.shape), groups, bad))
        return NMReport(n, m, tuple(rows))
    model = check_model(model_or_path)
    found = wrappers(model)
    if found:
        weights = {
            key: w.effective_weight(name)
            for key, w, name in iter_weight_keys(found)
        }
    else:
        weights = {}
        for layer in graph.all_layers(model):
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D,
                                  keras.layers.Conv1D, keras.layers.Conv3D)):
                weights[f"{layer.name}/kernel"] = keras.ops.convert_to_numpy(
                    layer.kernel)
    for key, weight in weights.items():
        weight = np.asarray(weight)
        if weight.ndim < 2:
            continue
        groups, bad = _count_violations(weight != 0, n, m, -2)
        rows.append(NMLayer(key, tuple(weight.shape), groups, bad))
    return NMReport(n, m, tuple(rows))


__all__ = ["NMLayer", "NMReport", "check_n_m"]
