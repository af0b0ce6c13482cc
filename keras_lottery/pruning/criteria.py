"""Pruning at initialization: SNIP, GraSP and SynFlow criteria.

Each is a `Criterion` (one scoring method, registered by name), so `prune`
selects with their scores as with magnitudes: exact counts, both scopes,
the output-layer rule and every granularity. Gradients come from each
backend's own automatic differentiation (`_internal.gradients`), computed
for the masked network (pruned weights are 0.0 in their variables, so a
pruned weight scores 0 and is never a candidate anyway).

- `SNIP(data, loss)`: `|g * w|`, g the gradient of the loss on `data`
  (Lee et al. 2019, "SNIP: single-shot network pruning based on
  connection sensitivity").
- `GraSP(data, loss)`: Wang et al. (2020, "Picking winning tickets before
  training by preserving gradient flow") score `S = -w * Hg` (H the
  Hessian, g the gradient of the loss) and remove the weights with the
  highest `S`. keras-lottery keeps the highest score, so `GraSP.score`
  returns `w * Hg = -S`: `prune` removes exactly the paper's weights.
- `SynFlow(rounds=100)`: data-free (Tanaka et al. 2020, "Pruning neural
  networks without any data by iteratively conserving synaptic flow"):
  `|w| * dR/d|w|`, `R` the sum of the outputs of the network with every
  trainable weight replaced by its absolute value, on an all-ones input;
  `rounds` scoring rounds, masks recomputed each round on the exponential
  schedule.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
from keras import ops

from keras_lottery._internal.gradients import gradients, hessian_vector_product
from keras_lottery.pruning.scores import Criterion, register_criterion


def _batches(data, where: str) -> list[tuple]:
    """`data` as a list of `(x, y)` batches: one tuple, or an iterable."""
    given = data
    if isinstance(data, tuple):
        data = [data]
    elif data is None or isinstance(data, (str, bytes, dict)) or not isinstance(
        data, Iterable
    ):
        data = None
    else:
        data = list(data)
    if not data or any(
        not isinstance(b, (tuple, list)) or len(b) != 2 for b in data
    ):
        raise ValueError(
            f"{where} scores with data: pass one batch `data=(x, y)` or a "
            "list of such batches (e.g. the first batches of the training "
            f"set), as in prune(..., criterion=kl.{where}(data=(x, y), "
            f"loss=...)). Received: data={_short(given)}."
        )
    return [tuple(b) for b in data]


def _short(value) -> str:
    if hasattr(value, "shape"):
        return f"array of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) < 60 else text[:57] + "..."


def _loss_of(loss, model, where: str):
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                f"{where} needs a loss: pass `loss=` (a Keras loss or its "
                f"name, e.g. 'sparse_categorical_crossentropy') or compile "
                f"the model with one. Received: loss=None and model "
                f"'{model.name}' compiled without a loss."
            )
    return keras.losses.get(loss) if isinstance(loss, str) else loss


class _DataCriterion(Criterion):
    """A criterion of the loss on a few batches, at the current weights."""

    def __init__(self, data=None, loss=None):
        self.batches = _batches(data, type(self).__name__)
        if loss is not None and not (isinstance(loss, str) or callable(loss)):
            raise TypeError(
                f"`loss` is a Keras loss, its name, or fn(y_true, y_pred). "
                f"Received: loss={loss!r}"
            )
        self.loss = loss

    def _objectives(self, model):
        loss = _loss_of(self.loss, model, type(self).__name__)
        for x, y in self.batches:
            yield lambda x=x, y=y: ops.mean(loss(y, model(x, training=False)))

    def _gradient(self, model, variables) -> list[np.ndarray]:
        """The loss's gradient, averaged over the batches."""
        total = None
        for objective in self._objectives(model):
            _, grads = gradients(objective, variables)
            total = grads if total is None else [t + g for t, g in zip(total, grads)]
        return [t / len(self.batches) for t in total]

    def __repr__(self) -> str:
        n = sum(len(np.asarray(b[1])) for b in self.batches)
        return (f"{type(self).__name__}(data=<{len(self.batches)} batch(es), "
                f"{n} examples>, loss={self.loss!r})")


@register_criterion("snip")
class SNIP(_DataCriterion):
    """SNIP (Lee et al. 2019): connection sensitivity `|g * w|` at init.

    `g` is the gradient of the loss on `data` (averaged over its batches)
    at the current weights, for the masked network; a higher `|g * w|`
    means keep. Pass it as `prune(criterion=kl.SNIP(data=(x, y)))`.

    Args:
        data: One batch `(x, y)`, or a list of batches. The paper uses one
            batch of the training set.
        loss: A Keras loss, its name, or `fn(y_true, y_pred)`; the
            compiled model's loss when None.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]))
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> y = np.arange(16) % 3
    >>> from keras_lottery.pruning.criteria import SNIP
    >>> snip = SNIP(data=(x, y), loss=keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> report = kl.prune(model, sparsity=0.75, criterion=snip)
    >>> [w.after for w in report.weights], report.criterion
    ([8, 6], 'snip')
    """

    def score(self, weights, context):
        keys = list(weights)
        grads = self._gradient(context.model, [context.variables[k] for k in keys])
        return {k: np.abs(g * weights[k]) for k, g in zip(keys, grads)}


@register_criterion("grasp")
class GraSP(_DataCriterion):
    """GraSP (Wang et al. 2020): keep the highest `w * Hg`, i.e. `-S`.

    The paper scores `S = -w * Hg`, `g` the gradient of the loss on `data`
    and `H` its Hessian (both for the prunable weights), and removes the
    weights with the highest `S`: those whose removal reduces the gradient
    norm least. keras-lottery keeps the highest score, so this criterion
    returns `w * Hg = -S`, and `prune` removes exactly the weights the
    paper removes. With `prune_highest=True`, the lowest `S` go instead.
    `Hg` is computed by differentiating twice, as in the authors' code;
    scores may be negative, which the `"block"` and `"channel"`
    granularities' norms do not preserve (use `"weight"`). The authors'
    code divides the logits by a temperature of 200 before the loss; pass
    such a `loss` to reproduce it.

    Args:
        data: One batch `(x, y)`, or a list of batches (the paper uses ten
            examples per class).
        loss: A Keras loss, its name, or `fn(y_true, y_pred)`; the
            compiled model's loss when None.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(2)]))
    >>> x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    >>> from keras_lottery.pruning.criteria import GraSP
    >>> grasp = GraSP(data=(x, x[:, :2]), loss="mse")
    >>> report = kl.prune(model, sparsity=0.5, criterion=grasp)
    >>> [w.after for w in report.weights]
    [16, 8]
    """

    def score(self, weights, context):
        keys = list(weights)
        variables = [context.variables[k] for k in keys]
        g = self._gradient(context.model, variables)
        hg = None
        for objective in self._objectives(context.model):
            _, product = hessian_vector_product(objective, variables, g)
            hg = product if hg is None else [a + b for a, b in zip(hg, product)]
        return {
            k: weights[k] * (h / len(self.batches)) for k, h in zip(keys, hg)
        }


def _ones_inputs(model, input_shape):
    """All-ones inputs of batch 1 for `model`."""
    if input_shape is not None:
        return np.ones((1, *input_shape), keras.config.floatx())
    inputs = getattr(model, "inputs", None) or []
    shapes = [tuple(i.shape[1:]) for i in inputs]
    if not shapes or any(d is None for s in shapes for d in s):
        raise ValueError(
            f"SynFlow runs the model on an all-ones input, but the input "
            f"shape of model '{model.name}' is not known. Pass "
            f"SynFlow(input_shape=...) without the batch axis, e.g. (784,). "
            f"Received: input shapes {shapes or None}."
        )
    ones = [np.ones((1, *s), i.dtype) for s, i in zip(shapes, inputs)]
    return ones[0] if len(ones) == 1 else ones


@register_criterion("synflow")
class SynFlow(Criterion):
    """SynFlow (Tanaka et al. 2020): data-free, iterative synaptic flow.

    Each round replaces every trainable weight by its absolute value
    (pruned weights: 0), runs the model (inference mode) on an all-ones
    input of batch 1, takes `R` the sum of its outputs, scores
    `|w| * dR/d|w|` and restores the weights. `prune` runs `rounds` rounds,
    each keeping `keep ** (i / rounds)` of what it started with (the
    paper's exponential schedule), the last round giving `prune`'s exact
    counts. In a network without biases, every layer's scores sum to `R`
    (the paper's conservation law). Computed in the model's dtype: a very
    deep network can overflow float32 (a clear error; build it in
    float64).

    Args:
        rounds: Scoring rounds; 100 as in the paper.
        input_shape: The input shape without the batch axis, where the
            model's is not known.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)]))
    >>> from keras_lottery.pruning.criteria import SynFlow
    >>> report = kl.prune(model, sparsity=0.9, scope="global",
    ...                   criterion=SynFlow(rounds=10))
    >>> sum(w.after for w in report.weights)
    5
    """

    def __init__(self, rounds: int = 100, input_shape=None):
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(
                f"`rounds` is the number of SynFlow scoring rounds, an int "
                f">= 1 (the paper uses 100). Received: rounds={rounds!r}"
            )
        self.rounds = rounds
        self.input_shape = None if input_shape is None else tuple(input_shape)

    def score(self, weights, context):
        model, keys = context.model, list(weights)
        ones = _ones_inputs(model, self.input_shape)
        prunable = {id(context.variables[k]): k for k in keys}
        saved = [(v, ops.convert_to_numpy(v)) for v in model.trainable_variables]
        try:
            for v, value in saved:
                key = prunable.get(id(v))
                v.assign(np.abs(weights[key] if key is not None else value))
            total, grads = gradients(
                lambda: sum(ops.sum(o) for o in keras.tree.flatten(
                    model(ones, training=False))),
                [context.variables[k] for k in keys],
            )
        finally:
            for v, value in saved:
                v.assign(value)
        if not np.isfinite(total):
            raise ValueError(
                f"SynFlow's R overflowed ({total}) in model '{model.name}': "
                "the product of |w| over its depth exceeds float32. Build the "
                "model in float64 (keras.config.set_floatx('float64'))."
            )
        return {k: np.abs(weights[k]) * g for k, g in zip(keys, grads)}

    def __repr__(self) -> str:
        return f"SynFlow(rounds={self.rounds}, input_shape={self.input_shape})"
