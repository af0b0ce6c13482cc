"""Instability analysis: linear mode connectivity (Frankle, Dziugaite, Roy &
Carbin 2020, "Linear Mode Connectivity and the Lottery Ticket Hypothesis").

From one starting point (the rewind point, with the model's masks), two
copies train with different seeds (data order, SGD noise); the error is
measured along the straight line between their final weights. The network
is stable when the error barrier on that line is small: then, the paper
finds, IMP's tickets rewound to that point are matching.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from keras_lottery.core.copy import copy_model
from keras_lottery.core.model import require_wrappers, walk
from keras_lottery.core.rewind import get_rewind_point
from keras_lottery.core.summary import summary
from keras_lottery.pruning.cycle import check_rewind_to
from keras_lottery.pruning.masks import get_masks
from keras_lottery.search.fit import call_fit, callbacks_call, signature
from keras_lottery.search.interpolation import (
    STABLE_BARRIER,
    Instability,
    InstabilitySweep,
    error_of,
    interpolate,
)


# ------------------------------------------------------------- checks
def _check(model, fit_fn, eval_fn, seeds, points, metric) -> list[int]:
    require_wrappers(model)
    if getattr(model, "optimizer", None) is None:
        raise ValueError(
            f"Model '{model.name}' is not compiled: instability trains two "
            "copies with its compile configuration. Call model.compile(...) "
            "first."
        )
    if not callable(fit_fn):
        raise TypeError(f"`fit_fn` must be callable. Received: {fit_fn!r}")
    if not callable(eval_fn):
        raise TypeError(
            "`eval_fn(model)` must be a callable returning a dict of metrics, "
            f"e.g. model.evaluate(x, y, return_dict=True). Received: {eval_fn!r}"
        )
    if (isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence)
            or len(seeds) != 2 or not all(
                isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
        raise ValueError(
            "`seeds` are the two copies' seeds, two ints. Received: "
            f"seeds={seeds!r}"
        )
    if isinstance(points, bool) or not isinstance(points, int) or points < 2:
        raise ValueError(
            "`points` is the number of points on the line, an int >= 2 "
            f"(both end points included). Received: points={points!r}"
        )
    if not isinstance(metric, str):
        raise TypeError(f"`metric` must be a metric name. Received: metric={metric!r}")
    return [int(s) for s in seeds]


# ------------------------------------------------------ starting points
class _Snapshots(keras.callbacks.Callback):
    """Keeps every weight of the model after the given training steps, and
    stops training after the last one."""

    def __init__(self, steps):
        super().__init__()
        self.steps, self.taken, self._seen = set(steps), {}, 0

    def _take(self):
        self.taken[self._seen] = [np.array(v) for v in self.model.get_weights()]

    def on_train_begin(self, logs=None):
        if 0 in self.steps:
            self._take()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if self._seen in self.steps:
            self._take()
        if self._seen >= max(self.steps):
            self.model.stop_training = True


def _fresh(model) -> keras.Model:
    copy = copy_model(model)
    copy.compile_from_config(model.get_compile_config())
    return copy


def _point(model, to: str) -> list[np.ndarray]:
    """Every weight of `model`, the trainable ones at the rewind point."""
    index = {id(v): i for i, v in enumerate(model.weights)}
    values = [np.array(w) for w in model.get_weights()]
    for v, a in zip(model.trainable_weights, get_rewind_point(model, to)):
        values[index[id(v)]] = a
    return values


def _starts(model, fit_fn, steps, seed) -> dict:
    """The starting weights for each rewind target in `steps`; training
    steps k > 0 come from one run of `fit_fn` from theta_0."""
    starts = {s: _point(model, s) for s in steps if isinstance(s, str)}
    late = sorted({s for s in steps if isinstance(s, int)})
    if late and late[-1] > 0:
        if callbacks_call(fit_fn) is None:
            raise ValueError(
                f"rewind_to={late[-1]} needs the weights at that training step,"
                f" captured by a callback, but fit_fn{signature(fit_fn)} takes "
                "no callbacks. Declare fit_fn(model, callbacks=None) and pass "
                "model.fit(..., callbacks=callbacks)."
            )
        parent = _fresh(model)
        parent.set_weights(_point(model, "init"))
        snapshots = _Snapshots(late)
        keras.utils.set_random_seed(seed)
        call_fit(fit_fn, parent, [snapshots], seed)
        missing = [k for k in late if k not in snapshots.taken]
        if missing:
            raise ValueError(
                f"fit_fn ended after {snapshots._seen} training steps, before "
                f"step(s) {missing}. Choose smaller steps or train longer."
            )
        starts.update(snapshots.taken)
    elif late:
        starts[0] = _point(model, "init")
    return starts


def _has_batchnorm(model) -> bool:
    return any(isinstance(layer, keras.layers.BatchNormalization)
               for _, layer in walk(model))


def _run(model, fit_fn, start, rewind_to, seeds, points, eval_fn, metric,
         bn_data, batch_size) -> Instability:
    trained = []
    for seed in seeds:
        copy = _fresh(model)
        copy.set_weights(start)
        keras.utils.set_random_seed(seed)
        call_fit(fit_fn, copy, [], seed)
        trained.append(copy)
    masks_a, masks_b = get_masks(trained[0]), get_masks(trained[1])
    if any(not np.array_equal(masks_a[k], masks_b[k]) for k in masks_a):
        raise ValueError(
            "The two trained copies have different masks: fit_fn pruned them "
            "(a GradualPruning callback?). Instability compares copies that "
            "share the starting masks; train without pruning in fit_fn."
        )
    end_metrics = []
    for copy in trained:
        result = eval_fn(copy)
        error_of(result, metric)
        end_metrics.append({str(k): float(v) for k, v in result.items()})
    alphas = [float(a) for a in np.linspace(0.0, 1.0, points)]
    errors, metrics = interpolate(trained[0], trained[1], _fresh(model), eval_fn,
                            metric, alphas, bn_data, batch_size)
    finite = [e for e in errors if math.isfinite(e)]
    barrier = max(finite) - (errors[0] + errors[-1]) / 2 if finite else math.nan
    return Instability(
        alphas=alphas, errors=errors, metrics=metrics, end_metrics=end_metrics,
        barrier=float(barrier), metric=metric, rewind_to=rewind_to,
        seeds=list(seeds), remaining=1 - summary(model, print_fn=None).sparsity,
        bn_recomputed=bn_data is not None and bn_data is not False,
    )


def _check_bn(model, bn_data) -> None:
    if bn_data is None and _has_batchnorm(model):
        raise ValueError(
            f"Model '{model.name}' has BatchNormalization layers, whose moving "
            "statistics do not fit interpolated weights; the paper recomputes "
            "them at each point. Pass bn_data= some training inputs (e.g. "
            "bn_data=x_train[:2048]), or bn_data=False to interpolate the "
            "statistics as they are."
        )


def instability(
    model: keras.Model,
    fit_fn: Callable,
    *,
    eval_fn: Callable[[keras.Model], Mapping[str, float]],
    rewind_to: str | int = "init",
    seeds: Sequence[int] = (0, 1),
    points: int = 30,
    metric: str = "accuracy",
    bn_data=None,
    batch_size: int = 256,
) -> Instability:
    """Instability analysis: the error barrier between two trained copies.

    Linear mode connectivity (Frankle, Dziugaite, Roy & Carbin 2020): two
    copies of `model` start from the same weights, the rewind point
    `rewind_to`, with the model's current masks (a dense model or a
    ticket), and train with `fit_fn`, each under its own seed (data order,
    SGD noise). The error is then measured at `points` evenly spaced
    points of the straight line between their final weights, masks fixed
    (pruned weights are 0 in both copies, so in every point too). The
    barrier is the largest error on the line minus the mean of the two end
    points' errors; under 2% (the paper's threshold), the network is
    stable at that point. `model` itself is left unchanged.

    BatchNormalization: an interpolated network's moving statistics are
    not those of its weights, so with `bn_data` they are recomputed at
    every point, end points included (reset, then set to the average
    batch statistics of `bn_data` in training mode:
    `keras_lottery.search.interpolation.recompute_batchnorm`). A model
    with BatchNormalization needs `bn_data` (or `bn_data=False` to
    interpolate the statistics as they are).

    Args:
        model: A compiled model holding `PrunableWrapper`s.
        fit_fn: `fit_fn(model)` trains the model, as for `lottery_search`.
            Keras is seeded with each copy's seed before it is called; a
            parameter named `seed` also gets the seed, and a `callbacks`
            parameter the callbacks (needed for `rewind_to=k > 0`).
        eval_fn: `eval_fn(model)` returns a dict of metrics, e.g.
            `model.evaluate(x_test, y_test, return_dict=True)`.
        rewind_to: Where both copies start: `"init"` (theta_0, captured
            at wrap time), `"checkpoint"` (the model's late-rewinding
            point, `keras_lottery.checkpoint`), or a step k: the weights
            after k steps of `fit_fn` from theta_0 (one extra, partial
            run, seeded with `seeds[0]`). Each copy then trains for all of
            `fit_fn`, with a fresh optimizer.
        seeds: The two copies' seeds. Equal seeds give a barrier of 0.
        points: Points on the line, both end points included.
        metric: The metric of `eval_fn` the error comes from: `1 - value`
            for an accuracy (a name containing "acc"), else the value.
        bn_data: Inputs for recomputing BatchNormalization statistics (see
            above): an array, a dict of arrays, or an iterable of batches.
        batch_size: Rows per batch of `bn_data` arrays.

    Returns:
        An `Instability`: `barrier`, `errors` by `alphas`, `end_metrics`,
        `plot(path)`.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x.sum(axis=1) > 0).astype("int32")
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8, activation="relu"),
    ...     keras.layers.Dense(2, activation="softmax")]))
    >>> model.compile("sgd", "sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> result = kl.instability(
    ...     model, lambda m: m.fit(x, y, epochs=2, verbose=0),
    ...     eval_fn=lambda m: m.evaluate(x, y, return_dict=True, verbose=0),
    ...     seeds=(0, 0), points=3)
    >>> abs(result.barrier) < 1e-6
    True
    """
    seeds = _check(model, fit_fn, eval_fn, seeds, points, metric)
    rewind_to = check_rewind_to(rewind_to, checkpoint=True)
    _check_bn(model, bn_data)
    start = _starts(model, fit_fn, [rewind_to], seeds[0])[rewind_to]
    return _run(model, fit_fn, start, rewind_to, seeds, points, eval_fn,
                metric, bn_data, batch_size)


def instability_sweep(
    model: keras.Model,
    fit_fn: Callable,
    *,
    eval_fn: Callable[[keras.Model], Mapping[str, float]],
    steps: Sequence[str | int] = (0, 100, 500, 2000),
    threshold: float = STABLE_BARRIER,
    **options,
) -> InstabilitySweep:
    """`instability` at several rewind steps; reports the first stable one.

    The weights at every step k come from one run of `fit_fn` from
    theta_0 (stopped after the largest k); then, for each step, two copies
    train from there and the barrier is measured, as `instability` does.
    The paper finds the smallest k whose barrier is under 2%: from there
    on, IMP's tickets rewound to k are matching.

    Args:
        model: A compiled model holding `PrunableWrapper`s.
        fit_fn: As for `instability`; for steps k > 0 it must take
            `callbacks`.
        eval_fn: As for `instability`.
        steps: Training steps k (and/or `"init"`, `"checkpoint"`).
        threshold: The barrier under which a step is stable.
        **options: `instability`'s other arguments: `seeds`, `points`,
            `metric`, `bn_data`, `batch_size`.

    Returns:
        An `InstabilitySweep`: `first_stable`, `results`, `table()`,
        `plot(path)`.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    >>> y = (x.sum(axis=1) > 0).astype("int32")
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(2, activation="softmax")]))
    >>> model.compile("sgd", "sparse_categorical_crossentropy",
    ...               metrics=["accuracy"])
    >>> def fit(m, callbacks=None):
    ...     return m.fit(x, y, epochs=2, batch_size=16, verbose=0,
    ...                  callbacks=callbacks)
    >>> sweep = kl.instability_sweep(
    ...     model, fit, steps=(0, 2), points=3,
    ...     eval_fn=lambda m: m.evaluate(x, y, return_dict=True, verbose=0))
    >>> [r.rewind_to for r in sweep.results]
    [0, 2]
    """
    unknown = sorted(set(options) - {"seeds", "points", "metric", "bn_data",
                                     "batch_size"})
    if unknown:
        raise TypeError(
            f"instability_sweep got unexpected keyword argument(s) {unknown}; "
            "it takes instability's seeds, points, metric, bn_data and "
            "batch_size."
        )
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence) or not steps:
        raise ValueError(
            "`steps` is a list of rewind steps, e.g. (0, 100, 500, 2000). "
            f"Received: steps={steps!r}"
        )
    if not isinstance(threshold, (int, float)) or not 0.0 < threshold < 1.0:
        raise ValueError(
            f"`threshold` is a barrier in (0, 1). Received: threshold={threshold!r}"
        )
    steps = [check_rewind_to(s, checkpoint=True) for s in steps]
    seeds = _check(model, fit_fn, eval_fn, options.get("seeds", (0, 1)),
                   options.get("points", 30), options.get("metric", "accuracy"))
    _check_bn(model, options.get("bn_data"))
    starts = _starts(model, fit_fn, steps, seeds[0])
    results = [
        _run(model, fit_fn, starts[s], s, seeds, options.get("points", 30),
             eval_fn, options.get("metric", "accuracy"), options.get("bn_data"),
             options.get("batch_size", 256))
        for s in steps
    ]
    return InstabilitySweep(results, float(threshold))
