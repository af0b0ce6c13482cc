"""Gradual magnitude pruning: tfmot's sparsity schedules for Keras 3.

Pruning during one training run, to a target sparsity reached over many
steps (Zhu & Gupta 2017, "To prune, or not to prune"), as
`tfmot.sparsity.keras.prune_low_magnitude` does with its `PolynomialDecay`
and `ConstantSparsity` schedules. Here the schedule drives a Keras callback,
`GradualPruning`, which prunes the `PrunableWrapper`s of a wrapped model
with `prune_to_sparsity`; it works on TensorFlow, JAX and PyTorch.

Unlike the lottery loop (`LotterySchedule`, `lottery_search`), nothing is
rewound: the surviving weights keep training, which is the classic
"prune while training" recipe for a small deployable model.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_lottery.core.model import require_wrappers
from keras_lottery.core.summary import summary
from keras_lottery.pruning.options import check_prune_options, check_sparsity
from keras_lottery.pruning.prune import prune
from keras_lottery.pruning.report import PruneReport


# ---------------------------------------------------------------- checks
def _check_step(value, what: str, *, allow_minus_one: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{what}` must be an int. Received: {what}={value!r}")
    value = int(value)
    if value < 0 and not (allow_minus_one and value == -1):
        hint = " (or -1: never stop)" if allow_minus_one else ""
        raise ValueError(
            f"`{what}` is a training step and must be >= 0{hint}. "
            f"Received: {what}={value}"
        )
    return value


def _check_frequency(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
        value < 1
    ):
        raise ValueError(
            "`frequency` is the number of steps between pruning steps, an int "
            f">= 1. Received: frequency={value!r}"
        )
    return int(value)


# ------------------------------------------------------------- schedules
class PruningSchedule:
    """Base class: when to prune, and to what sparsity.

    A schedule is called with a training step (the number of training
    batches run before it, counted from 0) and returns
    `(should_prune, sparsity)`. Subclass it and implement `__call__` for a
    schedule of your own.

    Example: a step schedule, 50% sparse at step 100 and 80% at step 200.

    >>> import keras_lottery as kl
    >>> class Steps(kl.PruningSchedule):
    ...     def __call__(self, step):
    ...         targets = {100: 0.5, 200: 0.8}
    ...         return step in targets, targets.get(step, 0.0)
    >>> Steps()(100), Steps()(150)
    ((True, 0.5), (False, 0.0))
    """

    def __call__(self, step: int) -> tuple[bool, float]:
        raise NotImplementedError

    def _in_range(self, step: int, begin: int, end: int, frequency: int) -> bool:
        if step < begin or (end >= 0 and step > end):
            return False
        return (step - begin) % frequency == 0 or step == end


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` (tfmot's).

    The sparsity at step `t` (Zhu & Gupta 2017) is

        s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_n - t_0)) ** power

    with `t_0 = begin_step`, `t_n = end_step`, `s_i = initial_sparsity` and
    `s_f = final_sparsity`; `s_t = s_i` before `begin_step` and `s_f` after
    `end_step`. Pruning happens at `begin_step` and every `frequency` steps
    after it, up to `end_step`. Unlike tfmot, `end_step` itself is always a
    pruning step, so the model ends at exactly `final_sparsity` even when
    `end_step - begin_step` is not a multiple of `frequency`.

    Args:
        initial_sparsity: Sparsity at `begin_step`, in [0, 1).
        final_sparsity: Sparsity at and after `end_step`, in [0, 1).
        begin_step: First pruning step (>= 0).
        end_step: Last pruning step (> `begin_step`).
        power: Exponent of the decay; 3 as in the paper and tfmot.
        frequency: Steps between two pruning steps.

    Example:

    >>> from keras_lottery.pruning.gradual import PolynomialDecay
    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10,
    ...                            frequency=5)
    >>> [(t, schedule(t)[0], round(schedule(t)[1], 3)) for t in (0, 5, 7, 10)]
    [(0, True, 0.0), (5, True, 0.7), (7, False, 0.778), (10, True, 0.8)]
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
    ):
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
        self.begin_step = _check_step(begin_step, "begin_step")
        self.end_step = _check_step(end_step, "end_step")
        if self.end_step <= self.begin_step:
            raise ValueError(
                "`end_step` must come after `begin_step`. Received: "
                f"begin_step={begin_step}, end_step={end_step}"
            )
        if isinstance(power, bool) or not isinstance(power, (int, float)) or (
            not power > 0
        ):
            raise ValueError(f"`power` must be a number > 0. Received: power={power!r}")
        self.power = float(power)
        self.frequency = _check_frequency(frequency)

    def sparsity(self, step: int) -> float:
        """The schedule's sparsity at `step`, whether or not it prunes then."""
        span = self.end_step - self.begin_step
        p = min(1.0, max(0.0, (step - self.begin_step) / span))
        return self.final_sparsity + (
            self.initial_sparsity - self.final_sparsity
        ) * (1.0 - p) ** self.power

    def __call__(self, step: int) -> tuple[bool, float]:
        return (
            self._in_range(step, self.begin_step, self.end_step, self.frequency),
            self.sparsity(step),
        )

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"PolynomialDecay({args})"


class ConstantSparsity(PruningSchedule):
    """One sparsity, applied from `begin_step` on (tfmot's `ConstantSparsity`).

    Pruning happens at `begin_step` and every `frequency` steps after it,
    up to `end_step` (-1: until training ends). Since a pruned weight stays
    pruned, the steps after the first only act on weights that the first
    left alive, so the sparsity stays at `target_sparsity`.

    Args:
        target_sparsity: The sparsity, in [0, 1).
        begin_step: First pruning step (>= 0).
        end_step: Last pruning step, or -1 for no end.
        frequency: Steps between two pruning steps.

    Example:

    >>> from keras_lottery.pruning.gradual import ConstantSparsity
    >>> schedule = ConstantSparsity(0.5, begin_step=2, frequency=4)
    >>> [schedule(t)[0] for t in range(8)]
    [False, False, True, False, False, False, True, False]
    """

    def __init__(
        self,
        target_sparsity: float,
        begin_step: int,
        end_step: int = -1,
        frequency: int = 100,
    ):
        self.target_sparsity = check_sparsity(target_sparsity, "target_sparsity")
        self.begin_step = _check_step(begin_step, "begin_step")
        self.end_step = _check_step(end_step, "end_step", allow_minus_one=True)
        if self.end_step != -1 and self.end_step < self.begin_step:
            raise ValueError(
                "`end_step` must be -1 or >= `begin_step`. Received: "
                f"begin_step={begin_step}, end_step={end_step}"
            )
        self.frequency = _check_frequency(frequency)

    def __call__(self, step: int) -> tuple[bool, float]:
        return (
            self._in_range(step, self.begin_step, self.end_step, self.frequency),
            self.target_sparsity,
        )

    def get_config(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ConstantSparsity({args})"


# ------------------------------------------------------------- one step
def prune_to_sparsity(
    model: keras.Model, sparsity: float, **prune_options
) -> PruneReport:
    """Prunes the lowest-scored weights until `sparsity` is reached.

    `keras_lottery.prune(model, sparsity=sparsity, **prune_options)`: with
    `scope="layer"` every pool (each prunable weight tensor, or each of
    `groups`) ends with `floor(sparsity * size + 0.5)` zeros in its mask,
    in units of the granularity (tfmot's behaviour); with `scope="global"`
    the count applies to all prunable weights together, on one threshold
    (which can empty a small layer; `prune` then warns, naming it). A
    weight already pruned is never revived: a tensor already sparser than
    the target is left as it is. Ties in score go to the earliest
    position.

    As in `prune`, every weight tensor keeps at least `min_remaining`
    units (1 by default), so a tensor of fewer than `1 / (1 - sparsity)`
    weights keeps one more than the count; pass `min_remaining=0` for
    tfmot's exact count.

    Args:
        model: A model holding `PrunableWrapper` layers.
        sparsity: The fraction of weights to be zero, in [0, 1).
        **prune_options: The keyword arguments of `keras_lottery.prune`
            that say how to prune, with its defaults: `scope`, `groups`,
            `criterion`, `granularity`, `block_shape`, `norm`,
            `min_remaining`, `seed`. (`output_rate` and `rates` belong to
            pruning by rate and are refused.)

    Returns:
        A `PruneReport` (`print` it for a table).

    Raises:
        TypeError: For an unknown keyword argument.
        ValueError: For a sparsity outside [0, 1), a bad prune option, a
            model without wrappers, or NaN/infinite weights.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((10,)),
    ...                                   keras.layers.Dense(10)]))
    >>> kl.prune_to_sparsity(model, 0.75).sparsity
    0.75
    >>> kl.prune_to_sparsity(model, 0.999).after  # min_remaining=1 by default
    1
    """
    sparsity = check_sparsity(sparsity)
    check_prune_options(prune_options, where="prune_to_sparsity", sparsity=True)
    return prune(model, sparsity=sparsity, **prune_options)


# -------------------------------------------------------------- callback
@dataclasses.dataclass(frozen=True)
class PruningEvent:
    """One pruning step of `GradualPruning`: the step and the sparsities."""

    step: int
    target: float
    sparsity: float


class GradualPruning(keras.callbacks.Callback):
    """Prunes a wrapped model during `fit`, following a sparsity schedule.

    The counterpart of tfmot's `prune_low_magnitude(model, pruning_schedule)`
    plus its `UpdatePruningStep` callback. Before each training batch whose
    step the schedule marks, the callback prunes the smallest-magnitude
    weights of every `PrunableWrapper` until the schedule's sparsity is
    reached (`prune_to_sparsity`). Pruned weights are masked, so they stay
    exactly zero in the forward pass and get no gradient; nothing is
    rewound.

    Steps count training batches from 0 across every `fit` this callback
    instance is used in (reuse the instance, or pass `initial_step`, to
    continue a schedule). With `steps_per_execution > 1` the callback runs
    once per execution and applies the latest step due in it.

    It adds `sparsity` (of all prunable weights) to the epoch logs, where
    `History`, the progress bar and a `TensorBoard` callback placed after it
    in `callbacks` pick it up; `self.events` lists every pruning step.

    Args:
        schedule: A `PolynomialDecay`, a `ConstantSparsity` or another
            `PruningSchedule`.
        initial_step: The step the first batch of the first `fit` has.
        verbose: 1 prints one line per pruning step.
        **prune_options: The keyword arguments of `keras_lottery.prune`
            that say how to prune, as in `prune_to_sparsity`, with the
            same defaults: `scope` (`"layer"`: each weight tensor at the
            target sparsity, as tfmot; `"global"`: one threshold over all
            prunable weights), `groups`, `criterion`, `granularity`,
            `block_shape`, `norm`, `min_remaining` (1 by default: every
            tensor keeps a weight; 0 for tfmot's exact counts), `seed`.
            Checked here, so a mistake fails before training.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> from keras_lottery.pruning.gradual import GradualPruning, PolynomialDecay
    >>> model = kl.wrap(keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)]))
    >>> model.compile("sgd", "mse")
    >>> pruning = GradualPruning(
    ...     PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=2))
    >>> history = model.fit(np.ones((6, 4)), np.ones((6, 1)), batch_size=1,
    ...                     callbacks=[pruning], verbose=0)
    >>> [(e.step, round(e.sparsity, 3)) for e in pruning.events]
    [(0, 0.0), (2, 0.45), (4, 0.5)]
    >>> history.history["sparsity"]
    [0.5]
    """

    def __init__(
        self,
        schedule: PruningSchedule,
        *,
        initial_step: int = 0,
        verbose: int = 0,
        **prune_options,
    ):
        super().__init__()
        if not isinstance(schedule, PruningSchedule):
            raise TypeError(
                "`schedule` must be a keras_lottery PruningSchedule, e.g. "
                "PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000). "
                f"Received: schedule={schedule!r}"
            )
        self.prune_options = check_prune_options(
            prune_options, where="GradualPruning", sparsity=True
        )
        self.schedule = schedule
        self.scope = self.prune_options.get("scope", "layer")
        self.step = _check_step(initial_step, "initial_step")
        self.verbose = verbose
        self.events: list[PruningEvent] = []
        self._epoch_start = self.step
        self._next_check = self.step

    def on_train_begin(self, logs=None):
        require_wrappers(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def on_train_batch_begin(self, batch, logs=None):
        step = self._epoch_start + batch
        due = None
        for t in range(self._next_check, step + 1):
            should_prune, _ = self.schedule(t)
            if should_prune:
                due = t
        self._next_check = step + 1
        if due is None:
            return
        target = float(self.schedule(due)[1])
        model = self.model  # under JAX, this syncs the training state first
        report = prune_to_sparsity(model, target, **self.prune_options)
        self.events.append(PruningEvent(due, target, report.sparsity))
        if self.verbose:
            print(
                f"GradualPruning: step {due}: pruned to "
                f"{100 * report.sparsity:.2f}% sparsity (target "
                f"{100 * target:.2f}%)."
            )

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + batch + 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = summary(self.model, print_fn=None).sparsity
