"""`LotterySchedule`: iterative magnitude pruning with rewinding in one `fit`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence

import keras

from keras_lottery.criteria import Criterion, Group, _check_rate, prune
from keras_lottery.model import require_wrappers, summary
from keras_lottery.rewind import checkpoint, reset_optimizer, rewind


def check_rewind_to(rewind_to) -> str | int | None:
    """Validates a rewind target: "init", None, or a step k >= 0."""
    if rewind_to is None or rewind_to == "init":
        return rewind_to
    if isinstance(rewind_to, bool) or not isinstance(rewind_to, int) or rewind_to < 0:
        raise ValueError(
            "`rewind_to` must be 'init' (theta_0), a training step k >= 0 "
            "(late rewinding), or None (no rewinding: train, prune, "
            f"fine-tune). Received: rewind_to={rewind_to!r}"
        )
    return rewind_to


class RewindCheckpoint(keras.callbacks.Callback):
    """Takes `keras_lottery.checkpoint(model)` after training step `step`.

    Step 0 means before the first step. Used by `LotterySchedule`, and
    handed to `lottery_search`'s `fit_fn` for late rewinding.

    Args:
        step: The number of training steps after which to capture.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((2,)),
    ...                                   keras.layers.Dense(1)]))
    >>> model.compile("sgd", "mse")
    >>> capture = kl.RewindCheckpoint(step=2)
    >>> _ = model.fit(np.ones((8, 2)), np.ones((8, 1)), batch_size=2,
    ...               callbacks=[capture], verbose=0)
    >>> capture.taken
    True
    """

    def __init__(self, step: int):
        super().__init__()
        self.step = check_rewind_to(step)
        self.taken = False
        self._seen = 0

    def on_train_begin(self, logs=None):
        if self.step == 0 and not self.taken:
            self._take()

    def on_train_batch_end(self, batch, logs=None):
        self._seen += 1
        if not self.taken and self._seen == self.step:
            self._take()

    def _take(self):
        checkpoint(self.model)  # `self.model` syncs JAX state first
        self.taken = True


class LotterySchedule(keras.callbacks.Callback):
    """Iterative magnitude pruning with rewinding, inside one `model.fit`.

    Training is split into rounds of `epochs_per_round` epochs. Round 0
    trains the dense (wrapped) model; at the end of every round but the
    last, the callback prunes (`keras_lottery.prune` with the options
    given here), rewinds the weights, and resets the optimizer (moments and
    step count), so the next round starts as the first did, with a sparser
    mask. Fit for `rounds * epochs_per_round` epochs to get `rounds` rounds;
    the model ends trained at the sparsity of the last round.

    It adds `round` and `sparsity` to the epoch logs (History, TensorBoard
    and the progress bar show them) and keeps each round's last-epoch
    metrics in `self.rounds`.

    Args:
        rate: Fraction of the remaining weights pruned after each round.
        epochs_per_round: Epochs in each round.
        rewind_to: `"init"` (theta_0, captured at wrap time), a training
            step k (late rewinding; 0 is the start of this `fit`), or None
            (no rewinding: prune and keep training, the fine-tuning loop).
        scope: `"layer"` or `"global"`, as in `prune`.
        output_rate: Rate of the output layers; `rate / 2` when None.
        rates: Per-layer or per-type rate overrides, as in `prune`.
        groups: Layer groups pruned collectively, as in `prune`.
        criterion: `"magnitude"`, `"random"` or a callable, as in `prune`.
        reset_optimizer: Zero the optimizer's state after each pruning.
        seed: Seed of the `"random"` criterion.
        verbose: 1 prints one line per pruning step.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([
    ...     keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)]))
    >>> model.compile("adam", "mse")
    >>> x, y = np.ones((8, 4)), np.ones((8, 1))
    >>> schedule = kl.LotterySchedule(rate=0.5, epochs_per_round=1)
    >>> history = model.fit(x, y, epochs=3, callbacks=[schedule], verbose=0)
    >>> history.history["round"]
    [0, 1, 2]
    """

    def __init__(
        self,
        rate: float = 0.2,
        epochs_per_round: int = 1,
        rewind_to: str | int | None = "init",
        *,
        scope: str = "layer",
        output_rate: float | None = None,
        rates: Mapping[str | type, float] | None = None,
        groups: Sequence[Sequence[str] | Group] | None = None,
        criterion: Criterion = "magnitude",
        reset_optimizer: bool = True,
        seed: int | None = None,
        verbose: int = 0,
    ):
        super().__init__()
        self.rate = _check_rate(rate, "rate")
        if (
            isinstance(epochs_per_round, bool)
            or not isinstance(epochs_per_round, int)
            or epochs_per_round < 1
        ):
            raise ValueError(
                "`epochs_per_round` must be an int >= 1. "
                f"Received: epochs_per_round={epochs_per_round!r}"
            )
        self.epochs_per_round = epochs_per_round
        self.rewind_to = check_rewind_to(rewind_to)
        self.prune_kwargs = dict(
            scope=scope,
            output_rate=output_rate,
            rates=rates,
            groups=groups,
            criterion=criterion,
            seed=seed,
        )
        self.reset_optimizer = reset_optimizer
        self.verbose = verbose
        self.rounds: list[dict] = []
        self.reports = []
        self._capture = None

    @property
    def round(self) -> int:
        """Index of the round being trained (0: the dense round)."""
        return len(self.reports)

    def on_train_begin(self, logs=None):
        require_wrappers(self.model)
        if isinstance(self.rewind_to, int):
            self._capture = RewindCheckpoint(self.rewind_to)
            self._capture.set_model(self.model)
            self._capture.on_train_begin(logs)
        epochs = self.params.get("epochs") if self.params else None
        if epochs is not None and epochs % self.epochs_per_round:
            rounds = math.ceil(epochs / self.epochs_per_round)
            warnings.warn(
                f"fit(epochs={epochs}) is not a multiple of epochs_per_round="
                f"{self.epochs_per_round}; the last of {rounds} rounds is "
                "shorter than the others.",
                stacklevel=2,
            )

    def on_train_batch_end(self, batch, logs=None):
        if self._capture is not None and not self._capture.taken:
            self._capture.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        model = self.model  # syncs JAX state into the variables
        sparsity = summary(model, print_fn=None).sparsity
        if logs is not None:
            logs["round"] = self.round
            logs["sparsity"] = sparsity
        last_epoch = (self.params or {}).get("epochs", math.inf) - 1
        if (epoch + 1) % self.epochs_per_round and epoch != last_epoch:
            return
        self.rounds.append(
            {"round": self.round, "sparsity": sparsity, **dict(logs or {})}
        )
        if epoch == last_epoch:
            return  # the model ends trained, at the last round's sparsity
        report = prune(model, self.rate, **self.prune_kwargs)
        self.reports.append(report)
        if self.rewind_to == "init":
            rewind(model, "init")
        elif self.rewind_to is not None:
            if self._capture is None or not self._capture.taken:
                raise ValueError(
                    f"LotterySchedule(rewind_to={self.rewind_to}) ended round "
                    f"{self.round - 1} before step {self.rewind_to}; choose a "
                    "step within the first round."
                )
            rewind(model, "checkpoint")
        if self.reset_optimizer and model.optimizer is not None:
            reset_optimizer(model.optimizer)
        if self.verbose:
            print(
                f"LotterySchedule: round {self.round - 1} done, pruned to "
                f"{100 * report.sparsity:.2f}% sparsity; rewound to "
                f"{self.rewind_to!r}."
            )
