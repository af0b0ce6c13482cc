"""shrink: channel-pruned units removed, predictions kept, clear errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.core.model import walk
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


def test_same_padding_reading_a_constant_is_refused_naming_it(rng):
    model = conv_net(pad="same")
    randomize(model, rng)
    wrapped = kl.wrap(model, include=["c1"])  # c2's input rows stay whole
    kl.prune(wrapped, 0.5, granularity="channel")
    with pytest.raises(ShrinkError, match=r"'c2'.*padding='same'") as info:
        shrink(wrapped)
    assert info.value.layer == "c2"


def test_one_error_lists_every_blocking_layer(rng):
    x = keras.Input((4, 6))
    h = keras.layers.Dense(8, name="a")(x)
    h = keras.layers.LayerNormalization(name="norm")(h)
    h = keras.layers.Dense(6, name="b", use_bias=False)(h)
    h = keras.layers.Conv1D(5, 3, padding="same", name="conv")(h)
    model = keras.Model(x, keras.layers.Dense(3, name="out")(h))
    randomize(model, rng)
    for name, columns in (("a", [1, 2]), ("b", [0]), ("out", [2])):
        kernel = keras.ops.convert_to_numpy(model.get_layer(name).kernel).copy()
        kernel[..., columns] = 0.0
        model.get_layer(name).kernel.assign(kernel)
    with pytest.raises(ShrinkError) as info:
        shrink(model)
    assert info.value.layers == ["a", "out"]
    message = str(info.value)
    assert "'norm' (LayerNormalization) mixes" in message
    assert "model output 'out'" in message
    # b's pruned column (no bias: it outputs exactly 0) is no blocker.
    assert "'b'" not in message


def hub_resnet():
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64, 32], stackwise_num_blocks=[1, 1],
        stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(32, 32, 3))
    return keras_hub.models.ResNetImageClassifier(backbone=backbone, num_classes=4)


def randomize_batchnorm(model, rng):
    """Random BatchNormalization statistics, so removed channels carry
    nonzero constants (weights=None leaves them at zero)."""
    for _, layer in walk(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, mean, var = layer.get_weights()
            layer.set_weights([
                rng.uniform(0.5, 1.5, g.shape), rng.normal(0, 0.3, b.shape),
                rng.normal(0, 0.3, mean.shape), rng.uniform(0.5, 1.5, var.shape)])


def check_shrinks_with_parity(model, rng, rate=0.5):
    randomize_batchnorm(model, rng)
    wrapped = kl.wrap(model)
    kl.prune(wrapped, rate, granularity="channel")
    small, report = shrink(wrapped, return_report=True)
    assert report.params_after < 0.75 * report.params_before, report
    x = rng.normal(size=(2, *model.input_shape[1:])).astype("float32")
    got = keras.ops.convert_to_numpy(small(x))
    want = keras.ops.convert_to_numpy(wrapped(x))
    assert np.abs(got - want).max() <= 1e-5
    return small, report


def test_mobilenet_v2_shrinks_through_depthwise_and_residual_adds(rng):
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)
    small, report = check_shrinks_with_parity(model, rng)
    assert small.get_layer("predictions").kernel.shape[-1] == 10
    assert report.units["block_1_expand"][0] < report.units["block_1_expand"][1]


def test_keras_hub_resnet_shrinks_inside_its_nested_backbone(rng):
    small, report = check_shrinks_with_parity(hub_resnet(), rng)
    assert any(key.startswith("res_net_backbone/") for key in report.units)
    assert isinstance(small.get_layer("res_net_backbone"), keras.Model)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="big graphs: one backend (benchmarks/shrink_speed.py "
                    "checks parity on every backend)")
@pytest.mark.parametrize("name", ["ResNet50", "MobileNet", "EfficientNetB0"])
def test_keras_applications_shrink_after_a_channel_prune(name, rng):
    model = getattr(keras.applications, name)(
        weights=None, input_shape=(32, 32, 3), classes=10)
    check_shrinks_with_parity(model, rng, rate=0.3)


def attention_net(rng, **call):
    x = keras.Input((5, 6))
    h = keras.layers.Dense(8, activation="relu", name="pre")(x)
    a = keras.layers.MultiHeadAttention(4, 3, name="mha")(h, h, **call)
    a = a[0] if isinstance(a, (list, tuple)) else a
    h = keras.layers.Dense(7, name="post")(a)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(
        keras.layers.Flatten()(h)))
    randomize(model, rng)
    return model


def assert_same_outputs(small, model, x):
    """Direct calls (no predict: a compiled function per model on JAX)."""
    got = keras.ops.convert_to_numpy(small(x))
    np.testing.assert_allclose(got, keras.ops.convert_to_numpy(model(x)),
                               atol=1e-5, rtol=0)


def test_attention_heads_shrink_with_the_masked_predictions(rng):
    wrapped = kl.wrap(attention_net(rng), exclude=["head"])
    kl.prune(wrapped, 0.5, granularity="channel")
    masks = kl.get_masks(wrapped)
    alive = masks["mha/query/kernel"].any(axis=(0, 2))
    assert alive.sum() == 2  # floor(0.5 * 4 heads + 0.5)
    small, report = shrink(wrapped, return_report=True)
    mha = small.get_layer("mha")
    assert mha.num_heads == 2 and report.units["mha"] == (2, 4)
    assert report.units["mha/output"] == (4, 8)  # post pruned 4 of its 8 inputs
    assert tuple(mha.weights[0].shape) == (4, 2, 3)  # pre kept 4 of 8
    assert tuple(mha.weights[-2].shape) == (2, 3, 4)  # post reads 4 of 8
    assert_same_outputs(small, wrapped, rng.normal(size=(3, 5, 6)).astype("float32"))


def test_attention_head_with_zero_projections_folds_its_value_bias(rng):
    model = attention_net(rng)
    mha = model.get_layer("mha")
    weights = mha.get_weights()  # query, key, value kernels at 0, 2, 4
    for i in (0, 2, 4):
        weights[i][:, [0, 3], :] = 0.0
    mha.set_weights(weights)  # output rows stay: heads 0, 3 output biases
    small = shrink(model)
    assert small.get_layer("mha").num_heads == 2
    assert_same_outputs(small, model, rng.normal(size=(3, 5, 6)).astype("float32"))


def test_attention_returning_scores_is_refused_in_the_one_error(rng):
    model = attention_net(rng, return_attention_scores=True)
    mha = model.get_layer("mha")
    weights = mha.get_weights()
    for i in (0, 2, 4):
        weights[i][:, 1, :] = 0.0
    mha.set_weights(weights)
    kernel = keras.ops.convert_to_numpy(model.get_layer("pre").kernel).copy()
    kernel[:, 0] = 0.0
    model.get_layer("pre").kernel.assign(kernel)
    with pytest.raises(ShrinkError, match=r"'mha' .*not a plain attention") as info:
        shrink(model)
    assert info.value.layers == ["pre", "mha"]
    assert "1 of the 4 heads of 'mha' are pruned" in str(info.value)


def test_attention_with_every_head_pruned_is_refused_saying_heads(rng):
    model = attention_net(rng)
    mha = model.get_layer("mha")
    weights = mha.get_weights()
    for i in (0, 2, 4):
        weights[i][:] = 0.0
    mha.set_weights(weights)
    with pytest.raises(ShrinkError, match=(
            r"every one of the 4 heads of 'mha' is pruned, so they cannot be "
            r"shrunk to zero heads")):
        shrink(model)


def test_gated_attention_is_not_shrunk_with_fewer_heads(rng):
    x = keras.Input((5, 6))
    h = keras.layers.MultiHeadAttention(4, 3, use_gate=True, name="mha")(x, x)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(
        keras.layers.Flatten()(h)))
    randomize(model, rng)
    mha = model.get_layer("mha")
    for dense in (mha._query_dense, mha._key_dense, mha._value_dense):
        kernel = keras.ops.convert_to_numpy(dense.kernel).copy()
        kernel[:, 1] = 0.0
        dense.kernel.assign(kernel)
    with pytest.raises(ShrinkError, match=r"1 of the 4 heads of 'mha' .*gate"):
        shrink(model)
