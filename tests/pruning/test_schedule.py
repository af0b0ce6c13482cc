"""LotterySchedule's prune options and the one prune -> rewind -> reset step."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.core.model import wrappers
from keras_lottery.pruning.cycle import prune_and_rewind

X = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
Y = np.random.default_rng(1).normal(size=(64, 4)).astype("float32")


def trained(optimizer="adam"):
    model = kl.wrap(mlp((8, 16, 4)))
    model.compile(optimizer, "mse")
    model.fit(X, Y, batch_size=16, verbose=0)
    return model


def test_prune_and_rewind_prunes_rewinds_and_resets_the_optimizer():
    model = trained()
    init = {k: np.asarray(keras.ops.convert_to_numpy(w.initial_variable("kernel")))
            for k, w in wrappers(model).items()}
    report = prune_and_rewind(model, 0.5, rewind_to="init", scope="global",
                              granularity="block", block_shape=(2, 1))
    assert report.scope == "global" and report.after < report.before
    assert int(model.optimizer.iterations) == 0
    for key, wrapper in wrappers(model).items():
        mask = wrapper.get_mask("kernel")
        kernel = np.asarray(keras.ops.convert_to_numpy(wrapper.layer.kernel))
        np.testing.assert_allclose(kernel, init[key] * mask, atol=1e-7)
        np.testing.assert_array_equal(mask[0::2], mask[1::2])  # (2, 1) blocks


def test_prune_and_rewind_keeps_going_without_rewinding_or_reset():
    model = trained()
    steps = int(model.optimizer.iterations)
    wrapper = model.layers[0]
    before = np.asarray(keras.ops.convert_to_numpy(wrapper.layer.kernel))
    prune_and_rewind(model, 0.5, rewind_to=None, reset_optimizer=False)
    assert int(model.optimizer.iterations) == steps
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(wrapper.layer.kernel),
        before * wrapper.get_mask("kernel"), atol=1e-7,
    )


def test_prune_and_rewind_checks_before_it_prunes():
    model = trained()
    masks = kl.get_masks(model)
    with pytest.raises(ValueError, match="none was taken; nothing was pruned"):
        prune_and_rewind(model, 0.5, rewind_to=3)
    with pytest.raises(ValueError, match="rewind_to"):
        prune_and_rewind(model, 0.5, rewind_to="start")
    with pytest.raises(TypeError, match="prune_and_rewind got unexpected"):
        prune_and_rewind(model, 0.5, rewind_to="init", scop="global")
    for key, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])


def test_lottery_schedule_takes_every_prune_option():
    model = kl.wrap(mlp((8, 16, 4)))
    model.compile("adam", "mse")
    schedule = kl.LotterySchedule(
        rate=0.5, epochs_per_round=1, granularity="block", block_shape=(4, 1),
        min_remaining=0.25, scope="global", output_rate=0.5,
    )
    model.fit(X, Y, epochs=3, batch_size=16, verbose=0, callbacks=[schedule])
    assert len(schedule.reports) == 2
    mask = kl.get_masks(model)["dense/kernel"]
    np.testing.assert_array_equal(mask[0::4], mask[3::4])  # whole (4, 1) blocks
    assert {r.scope for r in schedule.reports} == {"global"}


def test_lottery_schedule_checks_its_options_before_training():
    with pytest.raises(ValueError, match="granularity"):
        kl.LotterySchedule(0.2, granularity="row")
    with pytest.raises(TypeError, match="LotterySchedule got unexpected"):
        kl.LotterySchedule(0.2, sparsity=0.5)


def test_gradual_pruning_takes_every_prune_option():
    model = kl.wrap(mlp((8, 16, 4)))
    model.compile("sgd", "mse")
    pruning = kl.GradualPruning(kl.ConstantSparsity(0.5, 0), granularity="channel")
    model.fit(X, Y, batch_size=16, verbose=0, callbacks=[pruning])
    mask = kl.get_masks(model)["dense/kernel"]
    assert set(mask.sum(axis=0).tolist()) == {0.0, 8.0}  # whole units
    assert pruning.events[0].sparsity == pytest.approx(0.5)
