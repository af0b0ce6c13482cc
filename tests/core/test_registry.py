"""Which weights are prunable: built-ins, subclasses and custom layers."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from harness import check_prunable_layer
from keras import ops

import keras_lottery as kl
from keras_lottery.core import registry
from keras_lottery.core.model import wrappers

# ------------------------------------------------------------ built-ins


def _built(layer, *shape):
    layer.build(shape)
    return layer


def test_builtin_weights_are_the_layers_own_variables():
    dense = _built(keras.layers.Dense(3), None, 4)
    assert kl.prunable_weights(dense) == {"kernel": dense.kernel}
    lstm = _built(keras.layers.LSTM(2), None, 5, 3)
    found = kl.prunable_weights(lstm)
    assert list(found) == ["cell/kernel", "cell/recurrent_kernel"]
    assert found["cell/kernel"] is lstm.cell.kernel
    assert "bias" not in " ".join(found)
    sep = _built(keras.layers.SeparableConv2D(3, 2), None, 5, 5, 2)
    assert kl.prunable_weights(sep) == {
        "depthwise_kernel": sep.depthwise_kernel,
        "pointwise_kernel": sep.pointwise_kernel,
    }
    depthwise = _built(keras.layers.DepthwiseConv2D(2), None, 5, 5, 2)
    assert kl.prunable_weights(depthwise) == {"kernel": depthwise.kernel}


def test_every_registered_builtin_finds_its_weights_once_built():
    cases = [
        (keras.layers.Conv1DTranspose(2, 2), (None, 4, 2)),
        (keras.layers.Conv3D(2, 2), (None, 3, 3, 3, 1)),
        (keras.layers.DepthwiseConv1D(2), (None, 4, 2)),
        (keras.layers.SeparableConv1D(2, 2), (None, 4, 2)),
        (keras.layers.Embedding(5, 2), (None, 3)),
        (keras.layers.GRU(2), (None, 3, 2)),
        (keras.layers.SimpleRNN(2), (None, 3, 2)),
        (keras.layers.TimeDistributed(keras.layers.Dense(2)), (None, 3, 4)),
        (keras.layers.EinsumDense("ab,bc->ac", (2,)), (None, 4)),
    ]
    for layer, shape in cases:
        layer.build(shape)
        found = kl.prunable_weights(layer)
        assert found, type(layer).__name__
        ids = {id(v) for v in layer.trainable_weights}
        assert all(id(v) in ids for v in found.values()), type(layer).__name__


def test_layers_without_prunable_weights():
    for layer in (
        keras.layers.Dropout(0.5),
        keras.layers.BatchNormalization(),
        keras.layers.LayerNormalization(),
        keras.layers.Flatten(),
    ):
        assert not registry.is_prunable_type(layer)
        assert not registry.is_prunable_class(type(layer))
        assert kl.prunable_weights(layer) == {}
    assert not registry.is_prunable_type(
        keras.layers.TimeDistributed(keras.layers.Dropout(0.5))
    )


def test_subclass_of_registered_layer_inherits_its_declaration():
    class MyDense(keras.layers.Dense):
        pass

    layer = _built(MyDense(2), None, 3)
    assert registry.is_prunable_class(MyDense)
    assert kl.prunable_weights(layer) == {"kernel": layer.kernel}


def test_multi_head_attention_and_bidirectional_names():
    mha = keras.layers.MultiHeadAttention(num_heads=2, key_dim=2)
    mha.build((None, 3, 4), (None, 3, 4))
    assert list(kl.prunable_weights(mha)) == [
        "query/kernel",
        "key/kernel",
        "value/kernel",
        "output/kernel",
    ]
    bi = _built(keras.layers.Bidirectional(keras.layers.GRU(2)), None, 3, 2)
    found = kl.prunable_weights(bi)
    assert list(found) == [
        "forward/cell/kernel",
        "forward/cell/recurrent_kernel",
        "backward/cell/kernel",
        "backward/cell/recurrent_kernel",
    ]
    assert found["backward/cell/kernel"] is bi.backward_layer.cell.kernel


# --------------------------------------------------------- registration
def test_register_prunable_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"subclass of keras.layers.Layer.*Received"):
        kl.register_prunable(object, ["kernel"])
    with pytest.raises(TypeError, match=r"subclass of keras.layers.Layer"):
        kl.register_prunable(keras.layers.Dense(2), ["kernel"])
    with pytest.raises(TypeError, match=r"list of attribute names.*Received"):
        kl.register_prunable(keras.layers.Layer, "kernel")


def test_get_prunable_weights_must_return_variables():
    class Bad(keras.layers.Layer):
        def get_prunable_weights(self):
            return ["kernel"]

    with pytest.raises(TypeError, match=r"get_prunable_weights\(\) must return"):
        kl.prunable_weights(Bad())


# -------------------------------------------------------- custom layers
@keras.saving.register_keras_serializable(package="keras_lottery_tests")
class Scale(keras.layers.Layer):
    """y = x @ w + b, declared prunable with `register_prunable`."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

    def call(self, x):
        return ops.matmul(x, self.w) + self.b

    def get_config(self):
        return {**super().get_config(), "units": self.units}


@keras.saving.register_keras_serializable(package="keras_lottery_tests")
class SelfDeclared(Scale):
    """The same layer, declaring its weights with `get_prunable_weights`."""

    def get_prunable_weights(self):
        return [self.w]


kl.register_prunable(Scale, ["w"])


@pytest.mark.parametrize("layer_class", [Scale, SelfDeclared])
def test_custom_layer_passes_the_per_layer_checks(layer_class, rng):
    x = rng.standard_normal((3, 4)).astype("float32")
    check_prunable_layer(lambda: layer_class(5), (x,), ["w"], rng)


def test_keras_hub_layers_pass_the_per_layer_checks(rng):
    keras_hub = pytest.importorskip("keras_hub")
    x = rng.standard_normal((2, 6, 4)).astype("float32")
    check_prunable_layer(
        lambda: keras_hub.layers.PositionEmbedding(sequence_length=6), (x,),
        ["position_embeddings"], rng,
    )
    tokens = rng.integers(0, 10, (2, 6)).astype("int32")
    check_prunable_layer(
        lambda: keras_hub.layers.ReversibleEmbedding(10, 4), (tokens,),
        ["embeddings"], rng,
    )


@pytest.mark.parametrize("layer_class", [Scale, SelfDeclared])
def test_custom_layer_end_to_end(layer_class, rng):
    model = keras.Sequential(
        [keras.Input((6,)), layer_class(5, name="custom"), keras.layers.Dense(2)]
    )
    wrapped = kl.wrap(model)
    wrapper = wrappers(wrapped)["custom"]
    assert isinstance(wrapper.layer, layer_class)
    assert wrapper.weight_names == ["w"]
    mask = (rng.random((6, 5)) < 0.5).astype("float32")
    mask[0, 0], mask[-1, -1] = 0.0, 1.0
    wrapper.set_mask("w", mask)

    x, y = rng.standard_normal((16, 6)).astype("float32"), rng.standard_normal(
        (16, 2)
    ).astype("float32")
    wrapped.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    wrapped.fit(x, y, epochs=2, batch_size=8, verbose=0)
    effective = wrapper.effective_weight("w")
    assert np.all(effective[mask == 0] == 0.0)
    assert np.any(effective[mask == 1] != 0.0)

    plain = kl.strip(wrapped)
    stripped = plain.get_layer("custom")
    assert type(stripped) is layer_class
    np.testing.assert_array_equal(ops.convert_to_numpy(stripped.w), effective)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-6
    )


def test_training_flag_reaches_a_wrapped_layer_that_takes_it(rng):
    class Shifted(Scale):
        """Adds 1 in training: tells which flag reached its call."""

        def call(self, x, training=None):
            return super().call(x) + (1.0 if training else 0.0)

    kl.register_prunable(Shifted, ["w"])
    model = keras.Sequential([keras.Input((3,)), Shifted(2, name="shifted")])
    wrapped = kl.wrap(model)
    wrapper = wrapped.layers[0]
    x = rng.standard_normal((4, 3)).astype("float32")
    inference = ops.convert_to_numpy(wrapper(x))
    np.testing.assert_allclose(
        ops.convert_to_numpy(wrapper(x, training=True)) - inference, 1.0, atol=1e-6
    )
    # Through the model: the flag comes from the call context.
    np.testing.assert_allclose(
        ops.convert_to_numpy(wrapped(x, training=True)) - inference, 1.0, atol=1e-6
    )
    np.testing.assert_allclose(
        ops.convert_to_numpy(wrapped(x, training=False)), inference, atol=1e-6
    )
    np.testing.assert_allclose(ops.convert_to_numpy(model(x)), inference, atol=1e-6)


def test_custom_layer_without_declaration_is_rejected():
    class Plain(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(input_shape[-1], 2), name="w")

        def call(self, x):
            return ops.matmul(x, self.w)

    with pytest.raises(ValueError, match=r"Plain has no prunable weights.*register"):
        kl.PrunableWrapper(Plain())


def test_declared_attribute_missing_once_built_is_a_clear_error():
    class Misnamed(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="k")

        def call(self, x):
            return ops.matmul(x, self.kernel)

    kl.register_prunable(Misnamed, ["weight"])
    wrapper = kl.PrunableWrapper(Misnamed())
    # The error names the declared attribute and the variables there are.
    with pytest.raises(ValueError, match=r"'weight'.*Misnamed.*no such attribute.*k"):
        wrapper.build((None, 3))
    layer = Misnamed()
    layer.build((None, 3))
    model = keras.Sequential([keras.Input((3,)), layer])
    with pytest.raises(ValueError, match=r"declared weight 'weight'"):
        kl.wrap(model)


def test_declared_attribute_set_to_none_is_an_optional_weight():
    class MaybeBias(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 2), name="k")
            self.bias = None  # the Keras convention for use_bias=False

        def call(self, x):
            return ops.matmul(x, self.kernel)

    kl.register_prunable(MaybeBias, ["kernel", "bias"])
    layer = MaybeBias()
    layer.build((None, 3))
    assert list(kl.prunable_weights(layer)) == ["kernel"]
