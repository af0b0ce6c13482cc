"""`EarlyBird`: stop training once the mask that pruning would draw settles.

Early-bird tickets (You et al. 2020, "Drawing Early-Bird Tickets: Towards
More Efficient Training of Deep Networks") are masks drawn early in
training: the mask that pruning would produce stops changing long before
the weights have converged. At the end of every epoch the callback asks
`keras_lottery.prune` which masks it would set now (without setting them),
measures the normalized Hamming distance to the previous epoch's masks,
and fires when the last `patience` distances are all at most `threshold`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import keras
import numpy as np

from keras_lottery.pruning.options import (
    check_prune_options,
    check_rate,
    check_sparsity,
)
from keras_lottery.pruning.prune import planned_masks


def mask_distance(
    a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]
) -> float:
    """The normalized Hamming distance between two sets of masks.

    The fraction of mask entries (weights) that differ, over every weight
    of both: 0.0 for equal masks, 1.0 for complementary ones.

    Args:
        a: Masks keyed `"layer/weight"` (`keras_lottery.get_masks`).
        b: Masks with the same keys and shapes.

    Raises:
        ValueError: When the keys or shapes differ.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.search.early_bird import mask_distance
    >>> mask_distance({"fc/kernel": np.array([1, 1, 0, 0])},
    ...               {"fc/kernel": np.array([1, 0, 0, 1])})
    0.5
    """
    if set(a) != set(b):
        raise ValueError(
            "mask_distance compares masks of the same weights. Received: "
            f"keys {sorted(a)} and {sorted(b)}."
        )
    differ = total = 0
    for key, mask in a.items():
        x, y = np.asarray(mask) != 0, np.asarray(b[key]) != 0
        if x.shape != y.shape:
            raise ValueError(
                f"mask_distance: '{key}' has shape {x.shape} in one set of "
                f"masks and {y.shape} in the other."
            )
        differ += int(np.count_nonzero(x != y))
        total += x.size
    return differ / total if total else 0.0


def _check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"`{what}` must be an int >= 1. Received: {what}={value!r}")
    return value


class EarlyBird(keras.callbacks.Callback):
    """Finds early-bird tickets: stops training once the pruning mask settles.

    At the end of every epoch it computes the masks that
    `keras_lottery.prune(model, rate, **prune_options)` (or, with
    `sparsity`, `prune(model, sparsity=...)`) would set now, without
    changing the model's masks or weights, and their normalized Hamming
    distance to the previous epoch's masks (`mask_distance`: the fraction
    of weights whose keep/prune decision changed). The distance goes into
    the epoch logs as `mask_distance` (NaN for the first epoch, which has
    no previous mask), so History and the progress bar show it. When the
    last `patience` distances are all at most `threshold`, the early bird
    has emerged: `fired_epoch` is set (1-based), `masks` holds the masks
    drawn at that epoch, and, with `stop=True`, training stops.

    You et al. (2020) prune channels by BatchNormalization scale and keep
    a FIFO of 5 masks, comparing the newest with each of the others (a
    strict `< 0.1`); here any criterion, scope and granularity of `prune`
    works (channels with `granularity="channel"`), the distance is
    between consecutive epochs and counts weights, and the rule is
    `<= threshold` over the last `patience` distances (5 and 0.1 by
    default, the paper's values).

    Args:
        rate: Fraction of the remaining weights the mask would prune (as
            `prune`'s `rate`; the output layers at `output_rate`).
        sparsity: Instead of `rate`, the fraction of zeros of the mask
            (as `prune`'s `sparsity`: one target for every pool).
        patience: How many consecutive distances must be small.
        threshold: The largest distance that counts as settled.
        stop: True stops training when the early bird emerges; False only
            records it (`fired_epoch`, `masks`).
        verbose: 1 prints a line when it fires.
        **prune_options: How the mask is drawn: the keyword arguments of
            `keras_lottery.prune` (`scope`, `output_rate`, `rates`,
            `groups`, `criterion`, `granularity`, `block_shape`, `norm`,
            `min_remaining`, `seed`), checked now.

    Attributes:
        distances: The distance logged at each epoch (NaN first).
        fired_epoch: The epoch (1-based) at which it fired, or None.
        masks: The masks drawn at `fired_epoch`, or None.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8), keras.layers.Dense(1)]))
    >>> model.compile("sgd", "mse")
    >>> bird = kl.EarlyBird(rate=0.5, patience=2)
    >>> history = model.fit(np.ones((8, 4)), np.ones((8, 1)), epochs=10,
    ...                     callbacks=[bird], verbose=0)
    >>> len(history.history["mask_distance"]) <= 10
    True
    """

    def __init__(
        self,
        rate: float = 0.2,
        *,
        sparsity: float | None = None,
        patience: int = 5,
        threshold: float = 0.1,
        stop: bool = True,
        verbose: int = 0,
        **prune_options,
    ):
        super().__init__()
        self.rate = check_rate(rate, "rate")
        self.sparsity = None if sparsity is None else check_sparsity(sparsity)
        self.patience = _check_positive_int(patience, "patience")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
                or not 0.0 <= threshold <= 1.0:
            raise ValueError(
                "`threshold` is a normalized Hamming distance in [0, 1]. "
                f"Received: threshold={threshold!r}"
            )
        self.threshold = float(threshold)
        if not isinstance(stop, bool):
            raise TypeError(f"`stop` must be True or False. Received: stop={stop!r}")
        self.stop = stop
        self.verbose = verbose
        self.prune_options = check_prune_options(
            prune_options, where="EarlyBird", sparsity=sparsity is not None
        )
        self.reset()

    def reset(self) -> None:
        """Forgets every epoch seen (`on_train_begin` calls it)."""
        self.distances: list[float] = []
        self.fired_epoch: int | None = None
        self.masks: dict[str, np.ndarray] | None = None
        self._previous: dict[str, np.ndarray] | None = None

    def get_config(self) -> dict:
        """The arguments this callback was built with."""
        return {
            "rate": self.rate, "sparsity": self.sparsity,
            "patience": self.patience, "threshold": self.threshold,
            "stop": self.stop, "verbose": self.verbose, **self.prune_options,
        }

    @classmethod
    def from_config(cls, config: dict) -> EarlyBird:
        """A fresh callback from `get_config()`."""
        return cls(**config)

    def observe(self, masks: Mapping[str, np.ndarray]) -> float:
        """Adds one epoch's masks; returns the distance to the previous ones.

        `on_epoch_end` calls it with the masks `prune` would set; call it
        yourself to apply the rule to masks from elsewhere.

        Returns:
            The distance (NaN for the first masks). After the call,
            `fired_epoch` says whether the rule has fired.
        """
        masks = {k: np.asarray(v) != 0 for k, v in masks.items()}
        distance = (
            math.nan if self._previous is None
            else mask_distance(self._previous, masks)
        )
        self._previous = masks
        self.distances.append(distance)
        recent = self.distances[-self.patience:]
        if (
            self.fired_epoch is None
            and len(recent) == self.patience
            and all(d <= self.threshold for d in recent)  # NaN is never <=
        ):
            self.fired_epoch = len(self.distances)
            self.masks = {k: v.astype("float32") for k, v in masks.items()}
        return distance

    def on_train_begin(self, logs=None):
        self.reset()

    def on_epoch_end(self, epoch, logs=None):
        masks = planned_masks(
            self.model, self.rate, sparsity=self.sparsity, **self.prune_options
        )
        fired_before = self.fired_epoch is not None
        distance = self.observe(masks)
        if logs is not None:
            logs["mask_distance"] = distance
        if self.fired_epoch is not None and not fired_before:
            if self.verbose:
                print(
                    f"EarlyBird: the mask settled at epoch {self.fired_epoch}"
                    f" (last {self.patience} distances <= {self.threshold})."
                )
            if self.stop:
                self.model.stop_training = True
