"""tfmot's sparsity schedules: when to prune, and to what sparsity.

`PolynomialDecay` (Zhu & Gupta 2017) and `ConstantSparsity` say, for each
training step, whether `GradualPruning` prunes before that step's batch and
to which sparsity. A schedule also names its `final_step`, the step at
which it reaches its final sparsity; a granularity that is a pattern
(N:M) is completed there.
"""

from __future__ import annotations

import numpy as np

from keras_lottery.pruning.options import check_sparsity


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

    @property
    def final_step(self) -> int | None:
        """The step at which the schedule reaches its final sparsity, or
        None when it has none (the base class). `GradualPruning` completes
        an N:M pattern at the first pruning step at or after it."""
        return None

    def _in_range(self, step: int, begin: int, end: int, frequency: int,
                  at_end: bool = True) -> bool:
        if step < begin or (end >= 0 and step > end):
            return False
        return (step - begin) % frequency == 0 or (at_end and step == end)


def _check_flag(value, what: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{what}` must be True or False. Received: {what}={value!r}")
    return bool(value)


class PolynomialDecay(PruningSchedule):
    """Sparsity rising from `initial_sparsity` to `final_sparsity` (tfmot's).

    The sparsity at step `t` (Zhu & Gupta 2017) is

        s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_n - t_0)) ** power

    with `t_0 = begin_step`, `t_n = end_step`, `s_i = initial_sparsity` and
    `s_f = final_sparsity`; `s_t = s_i` before `begin_step` and `s_f` after
    `end_step`. Pruning happens at `begin_step` and every `frequency` steps
    after it, up to `end_step`. Unlike tfmot, `end_step` itself is a
    pruning step too (`prune_at_end_step=True`, the default), so a `fit`
    that runs past `end_step` ends at exactly `final_sparsity` even when
    `end_step - begin_step` is not a multiple of `frequency`. With
    `prune_at_end_step=False` the schedule prunes on tfmot's grid only, as
    tfmot 0.8.1 does (with `GradualPruning(step_offset=1)`: tfmot's exact
    pruning steps and sparsities).

    Args:
        initial_sparsity: Sparsity at `begin_step`, in [0, 1).
        final_sparsity: Sparsity at and after `end_step`, in [0, 1).
        begin_step: First pruning step (>= 0).
        end_step: Last pruning step (> `begin_step`).
        power: Exponent of the decay; 3 as in the paper and tfmot.
        frequency: Steps between two pruning steps.
        prune_at_end_step: Also prune at `end_step` when it is off the
            `frequency` grid (default); False prunes on the grid only.

    Example:

    >>> from keras_lottery.pruning.gradual import PolynomialDecay
    >>> schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=10,
    ...                            frequency=5)
    >>> [(t, schedule(t)[0], round(schedule(t)[1], 3)) for t in (0, 5, 7, 10)]
    [(0, True, 0.0), (5, True, 0.7), (7, False, 0.778), (10, True, 0.8)]
    >>> tfmot_like = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=12,
    ...                              frequency=5, prune_at_end_step=False)
    >>> [t for t in range(13) if tfmot_like(t)[0]], tfmot_like.final_step
    ([0, 5, 10], 10)
    """

    def __init__(
        self,
        initial_sparsity: float,
        final_sparsity: float,
        begin_step: int,
        end_step: int,
        power: float = 3,
        frequency: int = 100,
        prune_at_end_step: bool = True,
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
        self.prune_at_end_step = _check_flag(prune_at_end_step, "prune_at_end_step")

    def sparsity(self, step: int) -> float:
        """The schedule's sparsity at `step`, whether or not it prunes then."""
        span = self.end_step - self.begin_step
        p = min(1.0, max(0.0, (step - self.begin_step) / span))
        return self.final_sparsity + (
            self.initial_sparsity - self.final_sparsity
        ) * (1.0 - p) ** self.power

    def __call__(self, step: int) -> tuple[bool, float]:
        return (
            self._in_range(step, self.begin_step, self.end_step, self.frequency,
                           self.prune_at_end_step),
            self.sparsity(step),
        )

    @property
    def final_step(self) -> int:
        """`end_step`: the schedule is at `final_sparsity` from there on.
        With `prune_at_end_step=False`, the last pruning step on the grid
        (at or before `end_step`)."""
        if self.prune_at_end_step:
            return self.end_step
        span = self.end_step - self.begin_step
        return self.begin_step + span - span % self.frequency

    def get_config(self) -> dict:
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
            "prune_at_end_step": self.prune_at_end_step,
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
        prune_at_end_step: Also prune at an `end_step` off the `frequency`
            grid (default); False prunes on the grid only, as tfmot does.

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
        prune_at_end_step: bool = True,
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
        self.prune_at_end_step = _check_flag(prune_at_end_step, "prune_at_end_step")

    def __call__(self, step: int) -> tuple[bool, float]:
        return (
            self._in_range(step, self.begin_step, self.end_step, self.frequency,
                           self.prune_at_end_step),
            self.target_sparsity,
        )

    @property
    def final_step(self) -> int:
        """`begin_step`: the one sparsity is reached at the first step."""
        return self.begin_step

    def get_config(self) -> dict:
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
            "prune_at_end_step": self.prune_at_end_step,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"ConstantSparsity({args})"
