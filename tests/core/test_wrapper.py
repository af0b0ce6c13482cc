"""PrunableWrapper: masked call, gradients, training flags, masking, dtypes."""

from __future__ import annotations

import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
from harness import (
    check_prunable_layer,
    numpy_list,
    random_masks,
    twins,
)
from keras import ops

import keras_lottery as kl


def _floats(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _ints(rng, *shape):
    return rng.integers(1, 10, shape).astype("int32")


# (id, factory, inputs(rng) -> tuple of call arguments)
LAYERS = [
    ("dense", lambda: keras.layers.Dense(3), lambda r: (_floats(r, 2, 4),)),
    (
        "einsum_dense",
        lambda: keras.layers.EinsumDense("ab,bc->ac", (3,), bias_axes="c"),
        lambda r: (_floats(r, 2, 4),),
    ),
    ("conv1d", lambda: keras.layers.Conv1D(3, 2), lambda r: (_floats(r, 2, 5, 2),)),
    (
        "conv2d",
        lambda: keras.layers.Conv2D(3, 2),
        lambda r: (_floats(r, 2, 4, 4, 2),),
    ),
    (
        "conv3d",
        lambda: keras.layers.Conv3D(2, 2),
        lambda r: (_floats(r, 1, 3, 3, 3, 2),),
    ),
    (
        "conv1d_transpose",
        lambda: keras.layers.Conv1DTranspose(3, 2),
        lambda r: (_floats(r, 2, 4, 2),),
    ),
    (
        "conv2d_transpose",
        lambda: keras.layers.Conv2DTranspose(3, 2),
        lambda r: (_floats(r, 2, 3, 3, 2),),
    ),
    (
        "conv3d_transpose",
        lambda: keras.layers.Conv3DTranspose(2, 2),
        lambda r: (_floats(r, 1, 2, 2, 2, 2),),
    ),
    (
        "depthwise_conv1d",
        lambda: keras.layers.DepthwiseConv1D(2),
        lambda r: (_floats(r, 2, 5, 3),),
    ),
    (
        "depthwise_conv2d",
        lambda: keras.layers.DepthwiseConv2D(2),
        lambda r: (_floats(r, 2, 4, 4, 3),),
    ),
    (
        "separable_conv1d",
        lambda: keras.layers.SeparableConv1D(3, 2),
        lambda r: (_floats(r, 2, 5, 2),),
    ),
    (
        "separable_conv2d",
        lambda: keras.layers.SeparableConv2D(3, 2),
        lambda r: (_floats(r, 2, 4, 4, 2),),
    ),
    ("embedding", lambda: keras.layers.Embedding(10, 3), lambda r: (_ints(r, 2, 4),)),
    # LSTM runs its default loop (a scan on JAX); the other recurrent layers
    # are unrolled, which is much faster on eager JAX, and the wrapper
    # handles both.
    (
        "simple_rnn",
        lambda: keras.layers.SimpleRNN(3, unroll=True),
        lambda r: (_floats(r, 2, 3, 2),),
    ),
    ("lstm", lambda: keras.layers.LSTM(3), lambda r: (_floats(r, 2, 3, 2),)),
    (
        "gru",
        lambda: keras.layers.GRU(3, unroll=True),
        lambda r: (_floats(r, 2, 3, 2),),
    ),
    (
        "multi_head_attention",
        lambda: keras.layers.MultiHeadAttention(num_heads=2, key_dim=2),
        lambda r: (_floats(r, 2, 3, 4), _floats(r, 2, 3, 4)),
    ),
    (
        "bidirectional_lstm",
        lambda: keras.layers.Bidirectional(keras.layers.LSTM(3, unroll=True)),
        lambda r: (_floats(r, 2, 3, 2),),
    ),
    (
        "time_distributed_dense",
        lambda: keras.layers.TimeDistributed(keras.layers.Dense(3)),
        lambda r: (_floats(r, 2, 3, 4),),
    ),
]
LAYER_IDS = [case[0] for case in LAYERS]

# Every layer type of the brief is covered, with the weights we expect masked.
EXPECTED_WEIGHTS = {
    "dense": ["kernel"],
    "einsum_dense": ["kernel"],
    "conv1d": ["kernel"],
    "conv2d": ["kernel"],
    "conv3d": ["kernel"],
    "conv1d_transpose": ["kernel"],
    "conv2d_transpose": ["kernel"],
    "conv3d_transpose": ["kernel"],
    "depthwise_conv1d": ["kernel"],
    "depthwise_conv2d": ["kernel"],
    "separable_conv1d": ["depthwise_kernel", "pointwise_kernel"],
    "separable_conv2d": ["depthwise_kernel", "pointwise_kernel"],
    "embedding": ["embeddings"],
    "simple_rnn": ["cell/kernel", "cell/recurrent_kernel"],
    "lstm": ["cell/kernel", "cell/recurrent_kernel"],
    "gru": ["cell/kernel", "cell/recurrent_kernel"],
    "multi_head_attention": [
        "query/kernel",
        "key/kernel",
        "value/kernel",
        "output/kernel",
    ],
    "bidirectional_lstm": [
        "forward/cell/kernel",
        "forward/cell/recurrent_kernel",
        "backward/cell/kernel",
        "backward/cell/recurrent_kernel",
    ],
    "time_distributed_dense": ["kernel"],
}


# ------------------------------------------- masked call, every layer type
@pytest.mark.parametrize(("kind", "factory", "make_inputs"), LAYERS, ids=LAYER_IDS)
def test_masked_call_matches_plain_layer(kind, factory, make_inputs, rng):
    check_prunable_layer(factory, make_inputs(rng), EXPECTED_WEIGHTS[kind], rng)


@hypothesis.settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture],
)
@hypothesis.given(
    conv=st.booleans(),
    units=st.integers(1, 5),
    channels=st.integers(1, 4),
    size=st.integers(1, 3),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_output_equals_layer_with_masked_kernel(
    conv, units, channels, size, keep, seed
):
    rng = np.random.default_rng(seed)
    if conv:
        x = _floats(rng, 2, size + 2, size + 2, channels)
        factory = lambda: keras.layers.Conv2D(units, size, padding="same")  # noqa: E731
    else:
        x = _floats(rng, 3, channels)
        factory = lambda: keras.layers.Dense(units)  # noqa: E731
    plain, wrapper = twins(factory, (x,))
    mask = (rng.random(plain.kernel.shape) < keep).astype("float32")
    wrapper.set_mask("kernel", mask)
    kernel, bias = plain.get_weights()
    plain.set_weights([kernel * mask, bias])
    np.testing.assert_allclose(
        numpy_list(wrapper(x))[0], numpy_list(plain(x))[0], rtol=1e-6, atol=1e-6
    )


# ---------------------------------------------------------- wrapper state
def test_state_variables_and_rewind_point(rng):
    layer = keras.layers.Dense(3)
    layer.build((None, 4))
    start = [w.copy() for w in layer.get_weights()]
    wrapper = kl.PrunableWrapper(layer)
    wrapper.build((None, 4))
    assert wrapper.name == layer.name  # model.get_layer(name) finds it
    assert wrapper.units == 3 and wrapper.kernel is layer.kernel
    np.testing.assert_array_equal(
        ops.convert_to_numpy(wrapper.initial_variable("kernel")), start[0]
    )
    # Only the wrapped layer's weights are trainable; masks are not.
    assert {id(v) for v in wrapper.trainable_variables} == {
        id(v) for v in layer.trainable_variables
    }
    assert not wrapper.mask_variable("kernel").trainable
    # The wrapper owns its state only once (no duplicate of the kernel).
    assert len(wrapper.weights) == len({id(v) for v in wrapper.weights})
    assert len(wrapper.get_weights()) == 5  # kernel, bias, mask, initial x2

    layer.set_weights([_floats(rng, 4, 3), _floats(rng, 3)])
    wrapper.restore_initial()
    for got, want in zip(layer.get_weights(), start):
        np.testing.assert_array_equal(got, want)
    wrapper.set_mask("kernel", np.eye(4, 3))
    np.testing.assert_array_equal(
        wrapper.effective_weight("kernel"), start[0] * np.eye(4, 3)
    )


def test_set_mask_accepts_booleans_and_rejects_bad_masks():
    wrapper = kl.PrunableWrapper(keras.layers.Dense(2))
    wrapper.build((None, 3))
    wrapper.set_mask("kernel", np.array([[True, False]] * 3))
    assert wrapper.get_mask("kernel").sum() == 3
    with pytest.raises(ValueError, match=r"shape \(3, 2\).*Received.*\(2, 3\)"):
        wrapper.set_mask("kernel", np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"only 0 and 1.*0\.5"):
        wrapper.set_mask("kernel", np.full((3, 2), 0.5))
    with pytest.raises(KeyError, match="no prunable weight named 'bias'"):
        wrapper.set_mask("bias", np.ones(2))


def test_unbuilt_wrapper_state_access_is_a_clear_error():
    wrapper = kl.PrunableWrapper(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="not built yet"):
        wrapper.get_mask("kernel")


@pytest.mark.parametrize(
    ("layer", "error", "match"),
    [
        (keras.layers.Dropout(0.5), ValueError, r"Dropout has no prunable.*Wrap a"),
        ("not a layer", TypeError, r"keras.layers.Layer.*Received: layer='not a"),
    ],
    ids=["dropout", "string"],
)
def test_wrapper_rejects_layers_without_prunable_weights(layer, error, match):
    with pytest.raises(error, match=match):
        kl.PrunableWrapper(layer)


def test_wrapper_rejects_wrapper_and_model():
    wrapper = kl.PrunableWrapper(keras.layers.Dense(2))
    with pytest.raises(ValueError, match="already a PrunableWrapper"):
        kl.PrunableWrapper(wrapper)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"not a model.*keras_lottery.wrap"):
        kl.PrunableWrapper(model)


# ------------------------------------------------------- training & masking
def test_lstm_dropout_training_flag_and_seed_state(rng):
    x = _floats(rng, 2, 5, 3)
    plain, wrapper = twins(
        lambda: keras.layers.LSTM(4, dropout=0.5, recurrent_dropout=0.5), (x,)
    )
    inference = numpy_list(wrapper(x, training=False))[0]
    np.testing.assert_allclose(inference, numpy_list(plain(x))[0], atol=1e-6)
    first = numpy_list(wrapper(x, training=True))[0]
    second = numpy_list(wrapper(x, training=True))[0]
    assert not np.allclose(first, inference)  # dropout is applied
    assert not np.allclose(first, second)  # the seed state advances


def test_dropout_and_batch_norm_around_wrapped_layers(rng):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(2),
        ]
    )
    wrapped = kl.wrap(model)
    x, y = _floats(rng, 32, 6), _floats(rng, 32, 2)
    inference = numpy_list(wrapped(x, training=False))[0]
    np.testing.assert_array_equal(numpy_list(wrapped(x, training=False))[0], inference)
    assert not np.allclose(numpy_list(wrapped(x, training=True))[0], inference)
    np.testing.assert_allclose(inference, numpy_list(model(x))[0], atol=1e-6)

    norm = wrapped.layers[1]
    assert isinstance(norm, keras.layers.BatchNormalization)
    before = ops.convert_to_numpy(norm.moving_mean).copy()
    wrapped.compile(optimizer="adam", loss="mse")
    wrapped.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert not np.allclose(ops.convert_to_numpy(norm.moving_mean), before)
    np.testing.assert_allclose(
        wrapped.predict(x, verbose=0), kl.strip(wrapped).predict(x, verbose=0),
        atol=1e-6,
    )


def test_embedding_mask_zero_into_lstm_keeps_sequence_masking(rng):
    model = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(10, 4, mask_zero=True),
            keras.layers.LSTM(3),
        ]
    )
    wrapped = kl.wrap(model)
    assert [type(layer).__name__ for layer in wrapped.layers] == [
        "PrunableWrapper",
        "PrunableWrapper",
    ]
    padded = np.array([[3, 7, 0, 0, 0], [5, 1, 2, 8, 0]], "int32")
    out = numpy_list(wrapped(padded))[0]
    np.testing.assert_allclose(out, numpy_list(model(padded))[0], atol=1e-6)
    # Padding is skipped: the padded row gives what the unpadded one gives.
    short = numpy_list(wrapped(np.array([[3, 7]], "int32")))[0]
    np.testing.assert_allclose(out[0], short[0], atol=1e-6)
    mask = wrapped.layers[0].compute_mask(padded)
    np.testing.assert_array_equal(ops.convert_to_numpy(mask), padded != 0)


def test_activity_regularizer_loss_of_wrapped_layer_is_kept(rng):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, activity_regularizer="l2")]
    )
    wrapped = kl.wrap(model)
    x, y = _floats(rng, 8, 4), _floats(rng, 8, 3)
    model(x)
    wrapped(x)
    assert len(model.losses) == 1
    assert len(wrapped.losses) == 1
    np.testing.assert_allclose(
        ops.convert_to_numpy(wrapped.losses[0]),
        ops.convert_to_numpy(model.losses[0]),
        rtol=1e-6,
    )
    for m in (model, wrapped):
        m.compile(optimizer="sgd", loss="mse")
    np.testing.assert_allclose(
        wrapped.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0),
        rtol=1e-5,
    )


def test_kernel_regularizer_sees_only_kept_weights(rng):
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer="l2")]
    )
    wrapped = kl.wrap(model)
    wrapper = wrapped.layers[0]
    mask = random_masks(wrapper, rng)["kernel"]
    raw = np.array(ops.convert_to_numpy(wrapper.prunable_variable("kernel")))
    (penalty,) = wrapped.losses
    expected = 0.01 * np.sum((raw * mask) ** 2)  # Keras' default l2 = 0.01
    np.testing.assert_allclose(ops.convert_to_numpy(penalty), expected, rtol=1e-5)

    x, y = _floats(rng, 16, 4), _floats(rng, 16, 3)
    wrapped.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    wrapped.fit(x, y, epochs=2, batch_size=8, verbose=0)
    after = ops.convert_to_numpy(wrapper.prunable_variable("kernel"))
    # A zero gradient leaves Adam's moments at zero: pruned raw values stay.
    np.testing.assert_array_equal(after[mask == 0], raw[mask == 0])
    assert np.all(after[mask == 1] != raw[mask == 1])
    # Stripping gives the plain layer its plain regularizer back.
    plain = kl.strip(wrapped)
    np.testing.assert_allclose(
        ops.convert_to_numpy(plain.losses[0]),
        0.01 * np.sum(wrapper.effective_weight("kernel") ** 2),
        rtol=1e-5,
    )


# --------------------------------------------------------- mixed precision
@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_mixed_precision(mixed_precision, rng):
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(2, dtype="float32"),
        ]
    )
    wrapped = kl.wrap(model)
    first = wrapped.layers[0]
    assert first.dtype_policy.name == "mixed_float16"
    assert first.mask_variable("kernel").dtype == "bool"  # 1 byte per weight
    x, y = _floats(rng, 16, 6), _floats(rng, 16, 2)
    hidden = first(x)
    assert keras.backend.standardize_dtype(hidden.dtype) == "float16"
    mask = random_masks(first, rng)["kernel"]
    wrapped.compile(optimizer="adam", loss="mse")
    wrapped.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(first.effective_weight("kernel")[mask == 0] == 0.0)
    assert np.any(first.effective_weight("kernel")[mask == 1] != 0.0)
    plain = kl.strip(wrapped)
    np.testing.assert_allclose(
        plain.predict(x, verbose=0), wrapped.predict(x, verbose=0), atol=1e-3
    )
