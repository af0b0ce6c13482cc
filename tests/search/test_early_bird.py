"""Early-bird tickets: EarlyBird, mask_distance, lottery_search(early_bird=)."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.search.early_bird import mask_distance

RNG = np.random.default_rng(0)
X = RNG.normal(size=(32, 6)).astype("float32")
Y = RNG.normal(size=(32, 2)).astype("float32")


def mlp(lr=0.0):
    model = kl.wrap(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, name="fc"),
        keras.layers.Dense(2, name="out")]))
    model.compile(keras.optimizers.SGD(lr), "mse")
    return model


def masks(*values):
    return {"fc/kernel": np.array(values, dtype="float32")}


def test_mask_distance_counts_the_entries_that_differ():
    a = {"fc/kernel": np.array([[1, 0], [1, 1]]), "out/kernel": np.ones(4)}
    b = {"fc/kernel": np.array([[1, 1], [0, 1]]), "out/kernel": np.ones(4)}
    assert mask_distance(a, a) == 0.0
    assert mask_distance(a, b) == pytest.approx(2 / 8)
    with pytest.raises(ValueError, match="same weights"):
        mask_distance(a, {"fc/kernel": a["fc/kernel"]})
    with pytest.raises(ValueError, match="shape"):
        mask_distance(a, {**a, "out/kernel": np.ones(3)})


def test_fires_exactly_when_the_last_distances_are_small():
    bird = kl.EarlyBird(patience=2, threshold=0.25)
    script = [
        masks(1, 1, 1, 1),  # nan
        masks(1, 1, 0, 0),  # 0.5
        masks(1, 0, 0, 0),  # 0.25
        masks(0, 1, 0, 0),  # 0.5
        masks(0, 1, 0, 0),  # 0.0
        masks(0, 1, 0, 1),  # 0.25: the last two are <= 0.25, fires here
        masks(1, 0, 1, 0),  # 1.0: after firing, nothing changes
    ]
    fired = []
    for m in script:
        bird.observe(m)
        fired.append(bird.fired_epoch)
    assert math.isnan(bird.distances[0])
    assert bird.distances[1:] == [0.5, 0.25, 0.5, 0.0, 0.25, 1.0]
    assert fired == [None] * 5 + [6, 6]
    np.testing.assert_array_equal(bird.masks["fc/kernel"], [0, 1, 0, 1])
    strict = kl.EarlyBird(patience=2, threshold=0.2)
    for m in script:
        strict.observe(m)
    assert strict.fired_epoch is None  # 0.25 > 0.2
    one = kl.EarlyBird(patience=1, threshold=0.0)
    for m in script[:5]:
        one.observe(m)
    assert one.fired_epoch == 5


def test_unchanged_model_gives_zero_distances_and_stops_training():
    model = mlp(lr=0.0)  # the weights never move
    weights = model.get_weights()
    bird = kl.EarlyBird(rate=0.5, patience=3)
    history = model.fit(X, Y, epochs=20, verbose=0, callbacks=[bird])
    distances = history.history["mask_distance"]
    assert math.isnan(distances[0]) and distances[1:] == [0.0, 0.0, 0.0]
    assert bird.fired_epoch == 4 and len(distances) == 4  # stopped
    assert int(bird.masks["fc/kernel"].sum()) == 24  # half of 48
    # The model's masks and weights are untouched.
    assert all(m.all() for m in kl.get_masks(model).values())
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_signal_only_keeps_training_and_draws_channels():
    model = kl.wrap(keras.Sequential([
        keras.Input((6, 6, 2)), keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, name="out")]))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    bird = kl.EarlyBird(sparsity=0.5, granularity="channel", patience=2,
                        stop=False)
    x = RNG.normal(size=(8, 6, 6, 2)).astype("float32")
    history = model.fit(x, Y[:8], epochs=5, verbose=0, callbacks=[bird])
    assert len(history.history["mask_distance"]) == 5  # not stopped
    assert bird.fired_epoch == 3
    conv = bird.masks["conv/kernel"]
    per_channel = conv.reshape(-1, 8)
    assert np.all((per_channel == 0).all(0) | (per_channel == 1).all(0))
    assert int((per_channel == 1).all(0).sum()) == 4  # whole output channels
    assert all(m.all() for m in kl.get_masks(model).values())


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="patience"):
        kl.EarlyBird(patience=0)
    with pytest.raises(ValueError, match="threshold"):
        kl.EarlyBird(threshold=1.5)
    with pytest.raises(TypeError, match="unexpected"):
        kl.EarlyBird(granularty="channel")
    with pytest.raises(ValueError, match="rate"):
        kl.EarlyBird(rate=1.0)
    with pytest.raises(TypeError, match="stop"):
        kl.EarlyBird(stop="yes")
    config = kl.EarlyBird(0.3, patience=2, scope="global").get_config()
    assert kl.EarlyBird.from_config(config).get_config() == config



def test_lottery_search_ends_each_round_when_the_bird_fires(tmp_path):
    epochs = []

    def fit_fn(model, callbacks=None):
        history = model.fit(X, Y, epochs=30, verbose=0, callbacks=callbacks)
        epochs.append(len(history.history["loss"]))
        return history

    result = kl.lottery_search(
        mlp(lr=0.0), fit_fn, rounds=2, rate=0.5, verbose=0,
        early_bird=kl.EarlyBird(patience=2), directory=tmp_path / "search")
    # Weights that never move: the mask settles at once, the bird fires at
    # epoch 3 (two zero distances) and ends every round there.
    assert epochs == [3, 3, 3]
    assert [r.early_bird for r in result.rounds] == [3, 3, 3]
    assert result.rounds[1].metrics["mask_distance"] == 0.0
    again = kl.SearchResult.load(tmp_path / "search")
    assert [r.early_bird for r in again.rounds] == [3, 3, 3]
    # A record written before the field existed reads as None.
    old = {k: v for k, v in result.rounds[0].to_dict().items()
           if k != "early_bird"}
    assert kl.RoundRecord.from_dict(old).early_bird is None
    plain = kl.lottery_search(mlp(lr=0.0), fit_fn, rounds=1, rate=0.5,
                              verbose=0)
    assert [r.early_bird for r in plain.rounds] == [None, None]
    assert epochs[-2:] == [30, 30]
    with pytest.raises(ValueError, match="callbacks"):
        kl.lottery_search(mlp(), lambda m: m.fit(X, Y, verbose=0), rounds=1,
                          early_bird=True, verbose=0)
    with pytest.raises(TypeError, match="early_bird"):
        kl.lottery_search(mlp(), fit_fn, rounds=1, early_bird="yes", verbose=0)
