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
import warnings
from collections.abc import Mapping

import keras
import numpy as np

from keras_lottery.core.model import iter_weight_keys, require_wrappers
from keras_lottery.pruning.granularity import NMGranularity, get_granularity
from keras_lottery.pruning.names import resolve_layers
from keras_lottery.pruning.options import (
    check_layer_mapping,
    check_prune_options,
    check_sparsity,
)
from keras_lottery.pruning.prune import collapse_warning, planned_masks, prune
from keras_lottery.pruning.report import PruneReport
from keras_lottery.pruning.schedules import (
    ConstantSparsity,
    PolynomialDecay,
    PruningSchedule,
    _check_step,
)
from keras_lottery.pruning.summaries import EventWriter


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
    """One pruning step of `GradualPruning`.

    Attributes:
        step: The training step pruned before (see `GradualPruning`).
        target: The schedules' target for the model as a whole: the
            per-layer targets weighted by each weight tensor's size.
        sparsity: The sparsity of all prunable weights reached.
        layers: Sparsity of each prunable weight (`"layer/weight"` keys).
        targets: The target of each weight pruned at this step.
    """

    step: int
    target: float
    sparsity: float
    layers: Mapping[str, float] = dataclasses.field(default_factory=dict)
    targets: Mapping[str, float] = dataclasses.field(default_factory=dict)


def _check_schedule(value, what: str, *, allow_none: bool):
    if value is None and allow_none:
        return None
    if not isinstance(value, PruningSchedule):
        raise TypeError(
            f"`{what}` must be a keras_lottery PruningSchedule, e.g. "
            "PolynomialDecay(0.0, 0.8, begin_step=0, end_step=1000)"
            + (" (or None: these layers stay dense)" if allow_none else "")
            + f". Received: {what}={value!r}"
        )
    return value


def _check_layer_schedules(layer_schedules) -> dict:
    if layer_schedules is None:
        return {}
    return check_layer_mapping(
        layer_schedules, "layer_schedules",
        "a PruningSchedule or None (left dense), e.g. {'Conv2D': "
        "ConstantSparsity(0.5, 0), 'head': None}",
        lambda value, what: _check_schedule(value, what, allow_none=True),
    )


def _sparsity(mask: np.ndarray) -> float:
    return float(1.0 - np.count_nonzero(mask) / mask.size) if mask.size else 0.0


class GradualPruning(keras.callbacks.Callback):
    """Prunes a wrapped model during `fit`, following sparsity schedules.

    The counterpart of tfmot's `prune_low_magnitude(model,
    pruning_schedule=...)` with its `UpdatePruningStep` and
    `PruningSummaries` callbacks. Before each training batch whose step a
    schedule marks, the callback prunes the lowest-scored weights of the
    layers that schedule covers until its sparsity is reached
    (`prune_to_sparsity`). Pruned weights are masked: they stay exactly
    zero and get no gradient; nothing is rewound. The output layers are
    pruned like the others (the lottery search's half rate for them does
    not apply here).

    The step. By default the step of a batch is the optimizer's iteration
    count (`model.optimizer.iterations`, as for Keras' learning-rate
    schedules), plus `step_offset`. It is saved with the model: in the
    `.keras` file of a compiled model, in `model.save_weights` checkpoints
    and in `BackupAndRestore`'s backups, so a `fit` resumed from any of them
    continues the schedule where it stopped. A new optimizer (a second
    `compile`) starts again from 0: pass `initial_step` then. tfmot counts
    batches from 1 (its first pruning step is `begin_step + frequency`):
    `step_offset=1` gives tfmot's steps exactly.

    Granularity. Every granularity of `prune` works. `"N:M"` prunes towards
    the pattern and completes it exactly at the first pruning step at or
    after the schedule's `final_step` (`end_step` of a `PolynomialDecay`,
    `begin_step` of a `ConstantSparsity`), whatever the schedule's
    sparsity; the pattern then holds for the rest of training, as tfmot's
    `sparsity_m_by_n`.

    Logs. The epoch logs get `sparsity` (all prunable weights); with
    `log_layers=True` also `target_sparsity` and `sparsity/<layer>/<weight>`
    per weight. `self.events` lists every pruning step with per-weight
    sparsities and targets. With `log_dir`, the callback writes the same as
    TensorBoard scalars (`pruning/sparsity`, `pruning/target`,
    `pruning/<layer>/<weight>/sparsity` and `.../target`, at each pruning
    step) into `log_dir/train`, as tfmot's `PruningSummaries`; it needs the
    `tensorboard` package (`pip install keras-lottery[tensorboard]`), not
    TensorFlow.

    Args:
        schedule: The schedule of every layer `layer_schedules` does not
            name; None leaves them dense. A `PolynomialDecay`, a
            `ConstantSparsity` or another `PruningSchedule`.
        pruning_schedule: tfmot's name for `schedule`; give one of them.
        layer_schedules: A schedule per layer, by layer name or class as
            in `prune(rates=)` (a name wins over a class), or None to leave
            those layers dense.
        initial_step: None (the default): the step comes from the
            optimizer, as above. An int: the step of the first batch of the
            first `fit`, counted on across the `fit`s this instance is
            used in.
        step_offset: Added to the step; 1 for tfmot's step numbers.
        log_dir: A directory for TensorBoard event files, or None.
        log_layers: Per-weight sparsity in the epoch logs too.
        verbose: 1 prints one line per pruning step.
        **prune_options: The keyword arguments of `keras_lottery.prune`
            that say how to prune, as in `prune_to_sparsity`, with the same
            defaults: `scope`, `groups`, `criterion`, `granularity`,
            `block_shape`, `norm`, `min_remaining` (0 for tfmot's exact
            counts), `seed`. Checked here, so a mistake fails before
            training. `scope="global"` takes one schedule for every layer.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)]))
    >>> model.compile("sgd", "mse")
    >>> pruning = kl.GradualPruning(
    ...     kl.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=2))
    >>> history = model.fit(np.ones((6, 4)), np.ones((6, 1)), batch_size=1,
    ...                     callbacks=[pruning], verbose=0)
    >>> [(e.step, round(e.sparsity, 3)) for e in pruning.events]
    [(0, 0.0), (2, 0.45), (4, 0.5)]
    >>> history.history["sparsity"]
    [0.5]
    """

    def __init__(
        self,
        schedule: PruningSchedule | None = None,
        *,
        pruning_schedule: PruningSchedule | None = None,
        layer_schedules: Mapping[str | type, PruningSchedule | None] | None = None,
        initial_step: int | None = None,
        step_offset: int = 0,
        log_dir: str | None = None,
        log_layers: bool = False,
        verbose: int = 0,
        **prune_options,
    ):
        super().__init__()
        if schedule is not None and pruning_schedule is not None:
            raise TypeError(
                "Give the schedule once: `schedule` or tfmot's name "
                f"`pruning_schedule`. Received: schedule={schedule!r}, "
                f"pruning_schedule={pruning_schedule!r}"
            )
        schedule = schedule if schedule is not None else pruning_schedule
        self.layer_schedules = _check_layer_schedules(layer_schedules)
        self.schedule = _check_schedule(
            schedule, "schedule", allow_none=bool(self.layer_schedules)
        )
        self.prune_options = check_prune_options(
            prune_options, where="GradualPruning", sparsity=True
        )
        self.scope = self.prune_options.get("scope", "layer")
        if self.layer_schedules and self.scope == "global":
            raise ValueError(
                "scope='global' ranks every layer on one threshold, so it "
                "takes one schedule; per-layer schedules need scope='layer'. "
                f"Received: layer_schedules={self.layer_schedules!r}"
            )
        units = get_granularity(
            self.prune_options.get("granularity", "weight"),
            block_shape=self.prune_options.get("block_shape"),
            norm=self.prune_options.get("norm"),
        )
        self._pattern = (
            1.0 - units.n / units.m if isinstance(units, NMGranularity) else None
        )
        self.initial_step = (
            None if initial_step is None else _check_step(initial_step, "initial_step")
        )
        self.step_offset = _check_step(step_offset, "step_offset")
        self.step = (self.initial_step or 0) + self.step_offset
        self.log_dir = log_dir
        self.log_layers = bool(log_layers)
        self.verbose = verbose
        self.events: list[PruningEvent] = []
        self._writer = None
        self._epoch_start = self._next_check = self.step
        self._plan: list[tuple[PruningSchedule, list[str]]] = []
        self._first_batch = True

    # --------------------------------------------------------- the plan
    def _layer_plan(self, model) -> list[tuple[PruningSchedule, list[str]]]:
        """`(schedule, weight keys)` per schedule; dense layers left out."""
        found = require_wrappers(model)
        chosen, by_type = {}, {}
        for selector, value in self.layer_schedules.items():
            named, typed = resolve_layers(found, selector, argument="layer_schedules")
            chosen.update(dict.fromkeys(named, value))
            for key in typed:
                by_type.setdefault(key, value)
        plan: dict[int, tuple[PruningSchedule, list[str]]] = {}
        for key, _, name in iter_weight_keys(found):
            layer = key[: -len(name) - 1]
            if layer in chosen:
                value = chosen[layer]
            else:
                value = by_type.get(layer, self.schedule)
            if value is not None:
                plan.setdefault(id(value), (value, []))[1].append(key)
        return list(plan.values())

    def _target(self, schedule: PruningSchedule, step: int) -> float:
        target = float(schedule(step)[1])
        final = schedule.final_step
        if self._pattern is not None and final is not None and step >= final:
            target = max(target, self._pattern)  # N:M protects the rest
        return target

    # ---------------------------------------------------------- pruning
    def _prune(self, model, due: dict[int, int]) -> PruningEvent:
        """Prunes each schedule due (index in the plan -> step)."""
        entries = list(iter_weight_keys(require_wrappers(model)))
        targets = {}
        for i, step in due.items():
            schedule, keys = self._plan[i]
            targets.update(dict.fromkeys(keys, self._target(schedule, step)))
        if len(set(targets.values())) == 1 and len(targets) == len(entries):
            report = prune(model, sparsity=next(iter(targets.values())),
                           **self.prune_options)
            layers = {w.name: 1.0 - w.after / w.total if w.total else 0.0
                      for w in report.weights}
        else:
            before = {key: w.get_mask(name) for key, w, name in entries}
            after = dict(before)
            for target in sorted(set(targets.values())):
                planned = planned_masks(model, sparsity=target, **self.prune_options)
                after.update({k: planned[k] for k, t in targets.items() if t == target})
            for key, wrapper, name in entries:
                if key in targets:
                    wrapper.mask_variable(name).assign(after[key])
            message = collapse_warning(before, after)
            if message is not None:
                warnings.warn(message, UserWarning, stacklevel=3)
            layers = {key: _sparsity(mask) for key, mask in after.items()}
        sizes = {key: int(np.prod(w.get_mask(name).shape)) for key, w, name in entries}
        total = sum(sizes.values()) or 1
        sparsity = sum(layers[k] * sizes[k] for k in sizes) / total
        target = sum(targets.get(k, layers[k]) * sizes[k] for k in sizes) / total
        return PruningEvent(max(due.values()), float(target), float(sparsity),
                            layers, targets)

    # -------------------------------------------------------- callbacks
    def on_train_begin(self, logs=None):
        self._plan = self._layer_plan(self.model)
        self._first_batch = True
        if self.log_dir is not None and self._writer is None:
            self._writer = EventWriter(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = self.step

    def _start(self, batch: int) -> None:
        """At a `fit`'s first batch: where the schedule stands."""
        self._first_batch = False
        if self.initial_step is not None:
            return
        # After every on_train_begin: BackupAndRestore has loaded by now.
        iterations = keras.ops.convert_to_numpy(self.model.optimizer.iterations)
        self.step = int(iterations) + self.step_offset
        self._epoch_start = self.step - batch
        self._next_check = self.step

    def on_train_batch_begin(self, batch, logs=None):
        if self._first_batch:
            self._start(batch)
        step = self._epoch_start + batch
        due = {}
        for i, (schedule, _) in enumerate(self._plan):
            for t in range(self._next_check, step + 1):
                if schedule(t)[0]:
                    due[i] = t
        self._next_check = step + 1
        if not due:
            return
        event = self._prune(self.model, due)  # self.model syncs JAX state
        self.events.append(event)
        if self._writer is not None:
            self._writer.write_event(event)
        if self.verbose:
            print(
                f"GradualPruning: step {event.step}: pruned to "
                f"{100 * event.sparsity:.2f}% sparsity (target "
                f"{100 * event.target:.2f}%)."
            )

    def on_train_batch_end(self, batch, logs=None):
        self.step = self._epoch_start + batch + 1

    def on_epoch_end(self, epoch, logs=None):
        entries = list(iter_weight_keys(require_wrappers(self.model)))
        masks = {key: w.get_mask(name) for key, w, name in entries}
        total = sum(m.size for m in masks.values()) or 1
        zeros = sum(m.size - np.count_nonzero(m) for m in masks.values())
        if logs is not None:
            logs["sparsity"] = float(zeros / total)
            if self.log_layers:
                if self.events:
                    logs["target_sparsity"] = self.events[-1].target
                for key, mask in masks.items():
                    logs[f"sparsity/{key}"] = float(_sparsity(mask))
        if self._writer is not None:
            self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = [
    "ConstantSparsity",
    "GradualPruning",
    "PolynomialDecay",
    "PruningEvent",
    "PruningSchedule",
    "prune_to_sparsity",
]
