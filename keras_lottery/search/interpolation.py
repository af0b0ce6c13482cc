"""The line between two trained networks: weights interpolated with masks
fixed, BatchNormalization statistics recomputed, the error at each point;
and the records of `keras_lottery.instability` (`Instability`,
`InstabilitySweep`) with their plots."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from keras_lottery._internal.io import atomic_write, text_table
from keras_lottery.core.model import iter_weight_keys, require_wrappers, walk

STABLE_BARRIER = 0.02  # the paper's threshold: a barrier under 2% is stable


@dataclasses.dataclass
class Instability:
    """The error along the line between two copies trained from one point.

    Attributes:
        alphas: The interpolation coefficients, 0 (copy A) to 1 (copy B).
        errors: The error at each alpha (1 - `metric` for an accuracy,
            else `metric` itself).
        metrics: `eval_fn`'s metrics at each alpha.
        end_metrics: `eval_fn`'s metrics of the two trained copies, as
            trained (BatchNormalization with its own moving statistics).
        barrier: max(errors) - mean(errors[0], errors[-1]), the error
            barrier height of the paper.
        metric: The metric the errors come from.
        rewind_to: Where both copies started: `"init"`, `"checkpoint"` or a
            training step k.
        seeds: The seeds of the two copies.
        remaining: Fraction of the prunable weights kept by the masks.
        bn_recomputed: Whether BatchNormalization statistics were
            recomputed at each point (from `bn_data`).

    Example:

    >>> import keras_lottery as kl
    >>> record = kl.Instability(
    ...     alphas=[0.0, 0.5, 1.0], errors=[0.02, 0.05, 0.03],
    ...     metrics=[{}] * 3, end_metrics=[{}, {}], barrier=0.025,
    ...     metric="accuracy", rewind_to="init", seeds=[0, 1])
    >>> record.stable(), kl.Instability.from_dict(record.to_dict()) == record
    (False, True)
    """

    alphas: list[float]
    errors: list[float]
    metrics: list[dict[str, float]]
    end_metrics: list[dict[str, float]]
    barrier: float
    metric: str
    rewind_to: str | int
    seeds: list[int]
    remaining: float = 1.0
    bn_recomputed: bool = False

    def stable(self, threshold: float = STABLE_BARRIER) -> bool:
        """Whether the barrier is below `threshold` (2%, the paper's)."""
        return self.barrier < threshold

    def to_dict(self) -> dict:
        """The record as a JSON-safe dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> Instability:
        """Reads `to_dict` output; unknown keys are ignored."""
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Writes a PNG of the error (%) against the interpolation
        coefficient; returns the path."""
        return _plot([self], path, title or (
            f"Linear interpolation, rewind to {self.rewind_to}: "
            f"barrier {100 * self.barrier:.2f}%"))


@dataclasses.dataclass
class InstabilitySweep:
    """`instability` at several rewind steps k.

    Attributes:
        results: One `Instability` per step, in the order given.
        threshold: The barrier under which a step counts as stable.

    Example:

    >>> import keras_lottery as kl
    >>> def record(step, barrier):
    ...     return kl.Instability([0.0, 1.0], [0.1, 0.1], [{}, {}], [{}, {}],
    ...                           barrier, "accuracy", step, [0, 1])
    >>> kl.InstabilitySweep([record(0, 0.08), record(100, 0.01)]).first_stable
    100
    """

    results: list[Instability]
    threshold: float = STABLE_BARRIER

    @property
    def first_stable(self) -> str | int | None:
        """The first step whose barrier is below `threshold`, or None."""
        for result in self.results:
            if result.stable(self.threshold):
                return result.rewind_to
        return None

    def table(self) -> str:
        """One row per step: the barrier, the end points' errors, stable."""
        rows = [{
            "rewind_to": r.rewind_to,
            "barrier %": 100 * r.barrier,
            "error A %": 100 * r.errors[0],
            "error B %": 100 * r.errors[-1],
            "max error %": 100 * max(r.errors),
            "stable": r.stable(self.threshold),
        } for r in self.results]
        return text_table(rows, formats={
            k: ".2f" for k in ("barrier %", "error A %", "error B %", "max error %")
        })

    def plot(self, path: str | os.PathLike, title: str | None = None) -> Path:
        """Writes a PNG with one error curve per step; returns the path."""
        return _plot(self.results, path, title or "Linear interpolation")


def _plot(results: list[Instability], path, title: str) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(
            f"plot writes a PNG; give a path ending in .png. Received: {path}"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, r in enumerate(results):
        label = f"rewind to {r.rewind_to} (barrier {100 * r.barrier:.2f}%)"
        ax.plot(r.alphas, [100 * e for e in r.errors], "o-", markersize=3,
                color=f"C{i}", label=label)
    ax.set_xlabel("interpolation coefficient alpha (0: copy A, 1: copy B)")
    ax.set_ylabel("error (%)" if results[0].metric != "loss" else "loss x 100")
    ax.grid(True, alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    path = atomic_write(path, lambda f: fig.savefig(f, format="png"))
    plt.close(fig)
    return path


def error_of(metrics: Mapping, metric: str) -> float:
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "eval_fn must return a dict of metrics, e.g. model.evaluate(x, y, "
            f"return_dict=True). Received: {type(metrics).__name__}."
        )
    if metric not in metrics:
        raise KeyError(
            f"eval_fn returned no '{metric}'. Its metrics: {sorted(metrics)}. "
            "Pass metric= one of them."
        )
    value = float(metrics[metric])
    return 1.0 - value if "acc" in metric else value


# ------------------------------------------------------------ the path
def _batches(data, batch_size):
    """Input batches of `bn_data`: an array (or dict of arrays) sliced in
    `batch_size` rows, or an iterable of batches (`(x, y)` taken as x)."""
    if isinstance(data, (np.ndarray, Mapping)) or hasattr(data, "shape"):
        rows = len(next(iter(data.values())) if isinstance(data, Mapping) else data)
        for i in range(0, rows, batch_size):
            if isinstance(data, Mapping):
                yield {k: v[i:i + batch_size] for k, v in data.items()}
            else:
                yield data[i:i + batch_size]
        return
    for batch in data:
        yield batch[0] if isinstance(batch, tuple) else batch


def recompute_batchnorm(model: keras.Model, data, batch_size: int = 256) -> int:
    """Recomputes every BatchNormalization layer's moving statistics.

    The statistics are reset (mean 0, variance 1) and set to the average
    of the batch statistics over `data`, with the model in training mode
    (a cumulative average: batch i has momentum (i - 1) / i), as
    `torch.optim.swa_utils.update_bn` does. Weights are unchanged.

    Args:
        model: Any Keras model.
        data: Inputs: an array (or a dict of arrays) cut into batches of
            `batch_size`, or an iterable of batches (`(x, y)` tuples too).
        batch_size: Rows per batch for arrays.

    Returns:
        The number of BatchNormalization layers updated.

    Example:

    >>> import keras, numpy as np
    >>> from keras_lottery.search.interpolation import recompute_batchnorm
    >>> model = keras.Sequential([keras.Input((2,)),
    ...                           keras.layers.BatchNormalization()])
    >>> recompute_batchnorm(model, np.array([[0., 2.], [2., 6.]]))
    1
    >>> keras.ops.convert_to_numpy(model.layers[0].moving_mean).tolist()
    [1.0, 4.0]
    """
    layers = [layer for _, layer in walk(model)
              if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        return 0
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape))
    seen = 0
    try:
        for x in _batches(data, batch_size):
            seen += 1
            for layer in layers:
                layer.momentum = (seen - 1) / seen
            model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if not seen:
        raise ValueError("recompute_batchnorm: `data` holds no batch.")
    return len(layers)


def _fixed(model) -> set[int]:
    """Indices in `model.weights` never interpolated: masks, rewind points
    and any non-float variable."""
    skip = set()
    for _, wrapper, name in iter_weight_keys(require_wrappers(model)):
        skip.add(id(wrapper.mask_variable(name)))
        skip.add(id(wrapper.initial_variable(name)))
    return {
        i for i, v in enumerate(model.weights)
        if id(v) in skip or "float" not in str(v.dtype)
    }


def interpolate(a, b, probe, eval_fn, metric, alphas, bn_data, batch_size):
    wa, wb = a.get_weights(), b.get_weights()
    fixed = _fixed(probe)
    errors, metrics = [], []
    for alpha in alphas:
        probe.set_weights([
            x if i in fixed else ((1.0 - alpha) * x + alpha * y).astype(x.dtype)
            for i, (x, y) in enumerate(zip(wa, wb))
        ])
        if bn_data is not None and bn_data is not False:
            recompute_batchnorm(probe, bn_data, batch_size)
        result = eval_fn(probe)
        errors.append(error_of(result, metric))
        metrics.append({str(k): float(v) for k, v in result.items()})
    return errors, metrics
