"""`LotterySchedule`: iterative magnitude pruning with rewinding in one `fit`."""

from __future__ import annotations

import math
import warnings

import keras

from keras_lottery.core.model import require_wrappers
from keras_lottery.core.rewind import checkpoint
from keras_lottery.core.summary import summary
from keras_lottery.pruning.cycle import check_rewind_to, prune_and_rewind
from keras_lottery.pruning.options import check_prune_options, check_rate


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
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(
                "RewindCheckpoint takes the training step k >= 0 after which "
                "to capture the rewind point. Received: "
                f"step={step!r}. (Rewinding to theta_0 needs no callback: "
                "the wrappers captured it at wrap time.)"
            )
        self.step = step
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
    step count) in one step (`keras_lottery.pruning.cycle.prune_and_rewind`,
    as `lottery_search` does), so the next round starts as the first did,
    with a sparser mask. Fit for `rounds * epochs_per_round` epochs to get
    `rounds` rounds; the model ends trained at the sparsity of the last
    round.

    It adds `round` and `sparsity` to the epoch logs (History, TensorBoard
    and the progress bar show them) and keeps each round's last-epoch
    metrics in `self.rounds`.

    Args:
        rate: Fraction of the remaining weights pruned after each round.
        epochs_per_round: Epochs in each round.
        rewind_to: `"init"` (theta_0, captured at wrap time), a training
            step k (late rewinding; 0 is the start of this `fit`), or None
            (no rewinding: prune and keep training, the fine-tuning loop).
        reset_optimizer: Zero the optimizer's state after each pruning.
        verbose: 1 prints one line per pruning step.
        **prune_options: The keyword arguments of `keras_lottery.prune`
            that say how to prune, with its defaults: `scope`,
            `output_rate` (`rate / 2` when None), `rates`, `groups`,
            `criterion`, `granularity`, `block_shape`, `norm`,
            `min_remaining` (1: every tensor keeps a weight), `seed`.
            Checked here, so a mistake fails before training.

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
        reset_optimizer: bool = True,
        verbose: int = 0,
        **prune_options,
    ):
        super().__init__()
        self.rate = check_rate(rate, "rate")
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
        self.prune_kwargs = check_prune_options(
            prune_options, where="LotterySchedule"
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
        if isinstance(self.rewind_to, int) and (
            self._capture is None or not self._capture.taken
        ):
            raise ValueError(
                f"LotterySchedule(rewind_to={self.rewind_to}) ended round "
                f"{self.round} before step {self.rewind_to}; choose a "
                "step within the first round."
            )
        report = prune_and_rewind(
            model, self.rate, rewind_to=self.rewind_to,
            reset_optimizer=self.reset_optimizer, **self.prune_kwargs,
        )
        self.reports.append(report)
        if self.verbose:
            print(
                f"LotterySchedule: round {self.round - 1} done, pruned to "
                f"{100 * report.sparsity:.2f}% sparsity; rewound to "
                f"{self.rewind_to!r}."
            )


class EarlyStopReadout(keras.callbacks.Callback):
    """Test metrics at the early-stop point, as lottery-ticket papers report.

    Frankle & Carbin train every round to the end (pruning uses the final
    weights) but report the *early-stop iteration* (the one of minimum
    validation loss) and the test accuracy at that iteration. This callback
    watches `monitor` after each epoch, evaluates `test_data` each time the
    monitor reaches a new best and once when training ends, and returns
    the numbers in the form `lottery_search` records (`metrics()`).
    Evaluating only at new bests gives the numbers an evaluation after every
    epoch would give, at a fraction of the cost once the monitor stops
    improving. Ties keep the earliest epoch.

    Train with `fit(..., epochs=n // k, steps_per_epoch=k)` and pass
    `steps_per_epoch=k` here to count the early stop in iterations (see
    `keras_lottery.iteration_batches`).

    Args:
        test_data: `(x, y)` arrays, or a dataset yielding `(x, y)` batches
            (anything `model.evaluate` takes as `x`).
        monitor: The logged metric that picks the early-stop epoch; needs
            `validation_data` in `fit` for the default `"val_loss"`.
        mode: `"min"` or `"max"`: whether lower or higher `monitor` is
            better.
        steps_per_epoch: Training steps per epoch, to report the early stop
            as an iteration count; None reports the epoch (1-based).
        batch_size: Batch size of the test evaluation, for arrays.

    Attributes:
        early_stop: The early-stop epoch or iteration, None before training.
        at_early_stop: The test metrics there, by name.
        final: The test metrics at the end of training, by name.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> x, y = np.random.default_rng(0).normal(size=(2, 64, 3))
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    >>> model.compile("adam", "mse", metrics=["mae"])
    >>> readout = kl.EarlyStopReadout((x[:16], y[:16, :1]), steps_per_epoch=4)
    >>> _ = model.fit(x[16:], y[16:, :1], batch_size=12, epochs=3, verbose=0,
    ...               validation_data=(x[:16], y[:16, :1]), callbacks=[readout])
    >>> sorted(readout.metrics())  # doctest: +NORMALIZE_WHITESPACE
    ['early_stop', 'test_loss', 'test_loss_at_early_stop', 'test_mae',
     'test_mae_at_early_stop']
    >>> readout.early_stop in (4, 8, 12)
    True
    """

    def __init__(
        self,
        test_data,
        *,
        monitor: str = "val_loss",
        mode: str = "min",
        steps_per_epoch: int | None = None,
        batch_size: int | None = None,
    ):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"`mode` must be 'min' or 'max'. Received: mode={mode!r}")
        if steps_per_epoch is not None and (
            isinstance(steps_per_epoch, bool)
            or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1
        ):
            raise ValueError(
                "`steps_per_epoch` must be an int >= 1 (the `steps_per_epoch` "
                "given to fit) or None. Received: "
                f"steps_per_epoch={steps_per_epoch!r}"
            )
        if isinstance(test_data, (tuple, list)):
            if len(test_data) != 2:
                raise ValueError(
                    "`test_data` must be (x, y) or a dataset of (x, y) "
                    f"batches. Received a {type(test_data).__name__} of "
                    f"{len(test_data)} items."
                )
            self._x, self._y = test_data
        else:
            self._x, self._y = test_data, None
        self.monitor, self.mode = monitor, mode
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self._reset()

    def _reset(self):
        self.early_stop: int | None = None
        self.at_early_stop: dict[str, float] = {}
        self.final: dict[str, float] = {}
        self._best = math.inf if self.mode == "min" else -math.inf

    def _evaluate(self) -> dict[str, float]:
        scores = self.model.evaluate(
            self._x, self._y, batch_size=self.batch_size, verbose=0,
            return_dict=True,
        )
        return {k: float(v) for k, v in scores.items()}

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.monitor not in logs:
            raise ValueError(
                f"EarlyStopReadout monitors '{self.monitor}', which is not in "
                f"the epoch's logs {sorted(logs)}. Pass validation_data to "
                "fit for 'val_loss', or choose `monitor` among the logs."
            )
        value = float(logs[self.monitor])
        better = value < self._best if self.mode == "min" else value > self._best
        if math.isfinite(value) and better:
            self._best = value
            self.early_stop = (epoch + 1) * (self.steps_per_epoch or 1)
            self.at_early_stop = self._evaluate()

    def on_train_end(self, logs=None):
        self.final = self._evaluate()

    def metrics(self) -> dict[str, float]:
        """`{"test_<m>": at the end, "test_<m>_at_early_stop": ..., "early_stop": ...}`.

        Ready to merge into the dict a `lottery_search` `fit_fn` returns.
        """
        out = {f"test_{k}": v for k, v in self.final.items()}
        out.update(
            {f"test_{k}_at_early_stop": v for k, v in self.at_early_stop.items()}
        )
        if self.early_stop is not None:
            out["early_stop"] = self.early_stop
        return out
