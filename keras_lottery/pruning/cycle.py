"""The one step between two lottery rounds: prune, rewind, reset the optimizer.

`LotterySchedule` (inside one `fit`) and `lottery_search` (round by round)
both end a round with `prune_and_rewind`.
"""

from __future__ import annotations

import keras

from keras_lottery._internal.masking import remask_at_end
from keras_lottery.core.rewind import has_checkpoint, rewind
from keras_lottery.core.rewind import reset_optimizer as _reset_optimizer
from keras_lottery.pruning.options import check_prune_options
from keras_lottery.pruning.prune import prune
from keras_lottery.pruning.report import PruneReport


def check_rewind_to(rewind_to, *, checkpoint: bool = False) -> str | int | None:
    """Validates a rewind target: `"init"`, None, or a step k >= 0.

    Args:
        rewind_to: The target.
        checkpoint: Accept `"checkpoint"` (the model's late-rewinding
            point) instead of None: for `instability`, whose copies always
            start from a rewind point.

    Example:

    >>> from keras_lottery.pruning.cycle import check_rewind_to
    >>> check_rewind_to("init"), check_rewind_to(100)
    ('init', 100)
    >>> check_rewind_to("checkpoint", checkpoint=True)
    'checkpoint'
    """
    named = ("init", "checkpoint") if checkpoint else ("init",)
    if (rewind_to is None and not checkpoint) or (
        isinstance(rewind_to, str) and rewind_to in named
    ):
        return rewind_to
    if isinstance(rewind_to, bool) or not isinstance(rewind_to, int) or rewind_to < 0:
        raise ValueError(
            "`rewind_to` must be 'init' (theta_0), 'checkpoint' (the model's "
            "late-rewinding point) or a training step k >= 0. Received: "
            f"rewind_to={rewind_to!r}" if checkpoint else
            "`rewind_to` must be 'init' (theta_0), a training step k >= 0 "
            "(late rewinding), or None (no rewinding: train, prune, "
            f"fine-tune). Received: rewind_to={rewind_to!r}"
        )
    return rewind_to


def prune_and_rewind(
    model: keras.Model,
    rate: float,
    *,
    rewind_to: str | int | None,
    reset_optimizer: bool = True,
    **prune_options,
) -> PruneReport:
    """Prunes `model` at `rate`, rewinds it, and resets its optimizer.

    The step that ends an iterative-magnitude-pruning round (Frankle &
    Carbin 2019): `keras_lottery.prune(model, rate, **prune_options)`,
    then `keras_lottery.rewind` of the surviving weights, then
    `keras_lottery.reset_optimizer` (moments and step count), so the next
    round starts as the first did, with a sparser mask.

    Args:
        model: A model holding `PrunableWrapper` layers.
        rate: Fraction of the remaining weights to remove, in [0, 1).
        rewind_to: `"init"` (theta_0, captured at wrap time), a training
            step k (late rewinding: the weights `checkpoint(model)` saved,
            whatever its step), or None (no rewinding: the fine-tuning
            loop).
        reset_optimizer: Zero the optimizer's state, where the model has
            an optimizer.
        **prune_options: The keyword arguments of `keras_lottery.prune`
            that say how to prune (`scope`, `output_rate`, `rates`,
            `groups`, `criterion`, `granularity`, `block_shape`, `norm`,
            `min_remaining`, `seed`), with its defaults.

    Returns:
        The `PruneReport` of the pruning step.

    Raises:
        ValueError: For a bad `rewind_to` or prune option (before anything
            changes), or `rewind_to=k` before `checkpoint(model)`.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> from keras_lottery.pruning.cycle import prune_and_rewind
    >>> model = kl.wrap(keras.Sequential([keras.Input((4,)),
    ...     keras.layers.Dense(8), keras.layers.Dense(1)]))
    >>> model.compile("adam", "mse")
    >>> _ = model.fit(np.ones((8, 4)), np.ones((8, 1)), verbose=0)
    >>> report = prune_and_rewind(model, 0.5, rewind_to="init", scope="global")
    >>> report.after, int(model.optimizer.iterations)
    (22, 0)
    """
    rewind_to = check_rewind_to(rewind_to)
    check_prune_options(prune_options, where="prune_and_rewind")
    if isinstance(rewind_to, int) and not has_checkpoint(model):
        raise ValueError(
            f"rewind_to={rewind_to} rewinds to the weights saved by "
            "keras_lottery.checkpoint(model) at that step, but none was "
            "taken; nothing was pruned. Take the checkpoint during the first "
            "round (keras_lottery.RewindCheckpoint), or pass rewind_to='init'."
        )
    # The rewind writes the pruned weights through their new masks: no
    # pass to mask their old values first.
    with remask_at_end():
        report = prune(model, rate, **prune_options)
        if rewind_to == "init":
            rewind(model, "init")
        elif rewind_to is not None:
            rewind(model, "checkpoint")
    if reset_optimizer and model.optimizer is not None:
        _reset_optimizer(model.optimizer)
    return report
