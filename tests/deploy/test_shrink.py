"""shrink: channel-pruned units removed, predictions kept, clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.deploy.shrink import ShrinkError, shrink


def randomize(model, rng, scale=0.5):
    """Random weights (biases too, so removed units carry constants)."""
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            g, b, mean, var = inner.get_weights()
            inner.set_weights([
                rng.uniform(0.5, 1.5, g.shape).astype("float32"),
                rng.normal(0, 0.3, b.shape).astype("float32"),
                rng.normal(0, 0.3, mean.shape).astype("float32"),
                rng.uniform(0.5, 1.5, var.shape).astype("float32"),
            ])
        elif inner.weights:
            inner.set_weights([rng.normal(0, scale, w.shape).astype("float32")
                               for w in inner.get_weights()])


def assert_same_predictions(small, model, x):
    got = small.predict(x, verbose=0)
    want = model.predict(x, verbose=0)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_sequential_mlp_shrinks_with_the_masked_predictions(rng):
    model = keras.Sequential([
        keras.Input((12,)),
        keras.layers.Dense(20, activation="relu"),
        keras.layers.BatchNormalization(),
        keras.layers.Dropout(0.3),
        keras.layers.Dense(16, activation="tanh"),
        keras.layers.Dense(3, name="out"),
    ])
    randomize(model, rng)
    wrapped = kl.wrap(model)
    kl.prune(wrapped, 0.5, granularity="channel", rates={"out": 0.0})
    kl.prune(wrapped, 0.3, granularity="channel", rates={"out": 0.0})
    small, report = shrink(wrapped, return_report=True)
    assert isinstance(small, keras.Sequential)
    assert [type(layer).__name__ for layer in small.layers] == [
        "Dense", "BatchNormalization", "Dropout", "Dense", "Dense"]
    assert small.layers[0].units == 7 and small.layers[3].units == 6
    assert small.layers[1].gamma.shape == (7,)
    assert small.layers[4].kernel.shape == (6, 3)
    assert report.units == {"dense": (7, 20), "dense_1": (6, 16)}
    assert report.params_after < report.params_before
    x = rng.normal(size=(32, 12)).astype("float32")
    assert_same_predictions(small, wrapped, x)
    # Removed units carried nonzero constants, which had to be folded.
    plain = kl.strip(wrapped)
    dead = ~kl.get_masks(wrapped)["dense/kernel"].any(axis=0)
    bias = keras.ops.convert_to_numpy(plain.layers[0].bias)
    assert np.maximum(bias[dead], 0).max() > 0


def conv_net(pad="valid"):
    x = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu", name="c1")(x)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Conv2D(6, 3, padding=pad, name="c2")(h)
    h = keras.layers.ReLU()(h)
    a = keras.layers.Flatten()(h)
    b = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(12, activation="relu", name="d1")(a)
    h = keras.layers.Dense(5, name="d3")(h)
    h = keras.layers.Concatenate()([h, keras.layers.Dense(4, name="d2")(b)])
    return keras.Model(x, keras.layers.Dense(2, name="head")(h))


def test_functional_conv_net_shrinks_with_the_masked_predictions(rng):
    model = conv_net()
    randomize(model, rng)
    wrapped = kl.wrap(model, exclude=["head", "d2", "d3"])
    kl.prune(wrapped, 0.5, granularity="channel")
    small, report = shrink(wrapped, return_report=True)
    assert not isinstance(small, keras.Sequential)
    assert report.units == {"c1": (4, 8), "c2": (3, 6), "d1": (6, 12)}
    layers = {layer.name: layer for layer in small.layers}
    assert layers["c2"].kernel.shape == (3, 3, 4, 3)
    assert layers["d1"].kernel.shape == (2 * 2 * 3, 6)  # Flatten: per position
    assert layers["d3"].kernel.shape == (6, 5)
    assert layers["d2"].kernel.shape == (3, 4)  # through global pooling
    x = rng.normal(size=(8, 10, 10, 3)).astype("float32")
    assert_same_predictions(small, wrapped, x)


def test_plain_model_zero_units_and_same_padding_without_constants(rng):
    x = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(6, 3, padding="same", use_bias=False,
                            activation="relu", name="c1")(x)
    h = keras.layers.Conv2D(4, 3, padding="same", name="c2")(h)
    h = keras.layers.GlobalMaxPooling2D()(h)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(h))
    randomize(model, rng)
    kernel = keras.ops.convert_to_numpy(model.get_layer("c1").kernel).copy()
    kernel[..., [1, 4]] = 0.0  # no bias: removed filters output exactly 0
    model.get_layer("c1").kernel.assign(kernel)
    small = shrink(model)
    assert small.get_layer("c1").filters == 4
    assert small.get_layer("c2").kernel.shape == (3, 3, 4, 4)
    assert_same_predictions(
        small, model, rng.normal(size=(4, 8, 8, 2)).astype("float32"))


def test_errors_name_the_layer(rng):
    model = conv_net(pad="same")
    randomize(model, rng)
    wrapped = kl.wrap(model, include=["c1"])
    kl.prune(wrapped, 0.5, granularity="channel")
    with pytest.raises(ShrinkError, match=r"'c2'.*padding='same'") as info:
        shrink(wrapped)
    assert info.value.layer == "c2"

    keras.backend.clear_session()
    x = keras.Input((6,))
    a = keras.layers.Dense(8, name="a")(x)
    b = keras.layers.Dense(8, name="b")(x)
    merged = keras.layers.Add(name="add")([a, b])
    model = keras.Model(x, keras.layers.Dense(2, name="head")(merged))
    wrapped = kl.wrap(model, include=["a"])
    kl.prune(wrapped, 0.5, granularity="channel")
    with pytest.raises(ShrinkError, match=r"'add'.*'a' pruned") as info:
        shrink(wrapped)
    assert info.value.layer == "add"

    keras.backend.clear_session()
    wrapped = kl.wrap(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(4, name="out")]))
    kl.prune(wrapped, 0.5, granularity="channel")
    with pytest.raises(ShrinkError, match="'out' produces an output") as info:
        shrink(wrapped)
    assert info.value.layer == "out"
