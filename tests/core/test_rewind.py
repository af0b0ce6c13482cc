"""Rewinding: theta_0 bit for bit, checkpoints, random re-init, optimizer reset."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.core.model import wrappers


def model_with_unwrapped_layers():
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dense(8, activation="relu", name="excluded")(x)
    outputs = keras.layers.Dense(3, name="head")(x)
    return kl.wrap(keras.Model(inputs, outputs), exclude=["excluded"])


def train(model, epochs=2):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype("float32")
    y = rng.integers(0, 3, 64)
    model.compile(
        keras.optimizers.Adam(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, epochs=epochs, batch_size=16, verbose=0)


def test_rewind_init_restores_every_trainable_weight_bit_for_bit():
    model = model_with_unwrapped_layers()
    theta0 = [np.array(v) for v in model.trainable_weights]
    kl.prune(model, 0.5)
    masks = kl.get_masks(model)
    train(model)
    assert any(
        not np.array_equal(a, np.array(v))
        for a, v in zip(theta0, model.trainable_weights)
    )
    kl.rewind(model, "init")
    # Kept weights at theta_0 bit for bit, pruned ones at exactly 0.0.
    pruned = {
        id(w.prunable_variable(n)): w.get_mask(n)
        for w in wrappers(model).values() for n in w.weight_names
    }
    for a, v in zip(theta0, model.trainable_weights):
        expected = np.where(pruned[id(v)] > 0, a, 0.0) if id(v) in pruned else a
        np.testing.assert_array_equal(expected, keras.ops.convert_to_numpy(v))
    for key, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])


def test_masks_keep_zero_effect_after_every_rewind():
    model = model_with_unwrapped_layers()
    kl.prune(model, 0.5)
    train(model)
    kl.checkpoint(model)
    for target in ("init", "checkpoint", "random"):
        kl.rewind(model, target, seed=0)
        for layer in model.layers:
            if isinstance(layer, kl.PrunableWrapper):
                effective = layer.effective_weight("kernel")
                assert np.all(effective[layer.get_mask("kernel") == 0] == 0)
        plain = kl.strip(model)
        x = np.ones((2, 6), "float32")
        np.testing.assert_allclose(
            plain.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
        )


def test_checkpoint_is_late_rewinding_target():
    model = kl.wrap(mlp())
    train_x = np.ones((8, 8), "float32")
    model.compile("adam", "mse")
    model.fit(train_x, np.ones((8, 4)), epochs=1, verbose=0)
    kl.checkpoint(model)
    at_k = [np.array(v) for v in model.trainable_weights]
    model.fit(train_x, np.ones((8, 4)), epochs=3, verbose=0)
    kl.rewind(model, "checkpoint")
    for a, v in zip(at_k, model.trainable_weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))


def test_rewind_to_a_checkpoint_never_taken_is_a_clear_error():
    with pytest.raises(ValueError, match="checkpoint"):
        kl.rewind(kl.wrap(mlp()), "checkpoint")


def test_unknown_target_is_a_clear_error():
    with pytest.raises(ValueError, match="init"):
        kl.rewind(kl.wrap(mlp()), "start")


def test_random_reinit_draws_new_values_from_the_layers_initializers():
    model = kl.wrap(mlp((400, 300, 10)))
    before = np.array(model.layers[0].layer.kernel)
    kl.rewind(model, "random", seed=1)
    after = np.array(model.layers[0].layer.kernel)
    assert not np.allclose(before, after)
    # glorot_uniform: U(-l, l) with l = sqrt(6 / (fan_in + fan_out)).
    limit = np.sqrt(6 / (400 + 300))
    assert np.abs(after).max() <= limit
    assert after.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    assert abs(after.mean()) < 0.01
    np.testing.assert_array_equal(np.array(model.layers[0].layer.bias), 0)
    # Seeded: the same seed gives the same draw.
    kl.rewind(model, "random", seed=1)
    np.testing.assert_array_equal(after, np.array(model.layers[0].layer.kernel))
    kl.rewind(model, "random", seed=2)
    assert not np.array_equal(after, np.array(model.layers[0].layer.kernel))


def test_reset_optimizer_zeroes_state_and_keeps_learning_rate():
    model = kl.wrap(mlp())
    optimizer = keras.optimizers.Adam(0.0123)
    model.compile(optimizer, "mse")
    model.fit(np.ones((8, 8)), np.ones((8, 4)), epochs=2, verbose=0)
    assert int(optimizer.iterations) > 0
    kl.reset_optimizer(optimizer)
    assert int(optimizer.iterations) == 0
    assert float(optimizer.learning_rate) == pytest.approx(0.0123)
    for variable in optimizer.variables:
        if variable is optimizer._learning_rate:
            continue
        assert not np.any(keras.ops.convert_to_numpy(variable))
    # Training still works after the reset.
    model.fit(np.ones((8, 8)), np.ones((8, 4)), epochs=1, verbose=0)
    assert int(optimizer.iterations) > 0


def test_reset_optimizer_rejects_other_objects():
    with pytest.raises(TypeError, match="Optimizer"):
        kl.reset_optimizer("adam")


def test_wrapped_model_loaded_from_disk_rewinds_its_wrappers(tmp_path):
    model = kl.wrap(mlp())
    theta0 = [np.array(v) for v in model.trainable_weights]
    train_x = np.ones((8, 8), "float32")
    model.compile("adam", "mse")
    model.fit(train_x, np.ones((8, 4)), epochs=2, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    kl.rewind(loaded, "init")  # all trainable weights live in wrappers
    for a, v in zip(theta0, loaded.trainable_weights):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))


def test_reloaded_model_rewinds_every_weight_normalization_included(tmp_path):
    """The rewind points of weights no wrapper holds (BatchNormalization, an
    excluded layer) are saved in the .keras file, and so are checkpoints."""
    model = model_with_unwrapped_layers()
    theta0 = [np.array(v) for v in model.trainable_weights]
    train(model, epochs=1)
    kl.checkpoint(model)
    at_k = [np.array(v) for v in model.trainable_weights]
    train(model, epochs=1)
    model.save(tmp_path / "m.keras")

    loaded = kl.load_model(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # nothing left un-rewound
        kl.rewind(loaded, "init")
    for a, v in zip(theta0, loaded.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))
    kl.rewind(loaded, "checkpoint")
    for a, v in zip(at_k, loaded.trainable_weights, strict=True):
        np.testing.assert_array_equal(a, keras.ops.convert_to_numpy(v))
    # The file is still a plain .keras file for Keras itself.
    plain = keras.saving.load_model(tmp_path / "m.keras")
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(plain.predict(np.ones((2, 6)), verbose=0)),
        keras.ops.convert_to_numpy(model.predict(np.ones((2, 6)), verbose=0)),
    )


def test_load_model_without_weights_entry_fails_naming_it(tmp_path):
    """A .keras file that lost its weights is refused, never loaded with
    fresh weights."""
    import zipfile

    path = tmp_path / "m.keras"
    kl.wrap(mlp()).save(path)
    broken = tmp_path / "broken.keras"
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            if name != "model.weights.h5":
                dst.writestr(name, src.read(name))
    with pytest.raises(ValueError, match=r"holds no model\.weights\.h5"):
        kl.load_model(broken)
