"""The masking mechanism: a pruned weight is 0.0 in its variable, always.

Whatever writes to the variable: `fit` (eager or compiled), a custom loop
with a Keras optimizer, gradient clipping, `set_weights`, loading weights
saved before `wrap`, `rewind`, a mask assigned directly.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

import keras_lottery as kl
from keras_lottery._internal import masking as _masking
from keras_lottery.core.model import wrappers


def _mlp():
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="fc"),
        keras.layers.Dense(3, name="out"),
    ])


def _pruned_nonzero(model) -> int:
    count = 0
    for wrapper in wrappers(model).values():
        for name in wrapper.weight_names:
            raw = ops.convert_to_numpy(wrapper.prunable_variable(name))
            count += int(np.count_nonzero(raw[wrapper.get_mask(name) == 0]))
    return count


def _data(rng, n=32):
    return (rng.normal(size=(n, 8)).astype("float32"),
            rng.integers(0, 3, n).astype("int32"))


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.Adam(0.05),
    lambda: keras.optimizers.SGD(0.5, momentum=0.9, global_clipnorm=0.1),
    lambda: keras.optimizers.AdamW(0.05, clipnorm=0.1, weight_decay=0.1),
    lambda: keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.05)),
], ids=["adam", "sgd_global_clipnorm", "adamw_clipnorm", "loss_scale"])
def test_fit_keeps_pruned_weights_at_zero(optimizer, rng):
    model = kl.wrap(_mlp())
    kl.prune(model, rate=0.6)
    model.compile(optimizer(),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [ops.convert_to_numpy(v) for v in model.trainable_weights]
    model.fit(*_data(rng), batch_size=8, epochs=2, verbose=0)
    assert _pruned_nonzero(model) == 0
    after = [ops.convert_to_numpy(v) for v in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_custom_loop_with_a_keras_optimizer(rng):
    model = kl.wrap(_mlp())
    kl.prune(model, rate=0.5)
    optimizer = keras.optimizers.Adam(0.1)
    optimizer.build(model.trainable_variables)
    for _ in range(3):  # gradients of ones: every pruned weight is pushed
        optimizer.apply(
            [ops.ones(v.shape, v.dtype) for v in model.trainable_variables],
            model.trainable_variables,
        )
    assert _pruned_nonzero(model) == 0


def test_train_on_batch_with_pruning_between_steps(rng):
    """A custom loop of train_on_batch calls with a prune between them (a
    gradual schedule by hand). Under JAX, train_on_batch donates the masks'
    buffers to its step and assigns the results back one by one: the masked
    assign must not read the donated mask."""
    model = kl.wrap(_mlp())
    model.compile(keras.optimizers.Adam(0.05),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(rng)
    total = kl.summary(model, print_fn=None).total
    for step, sparsity in enumerate([0.25, 0.5, 0.75]):
        model.train_on_batch(x, y)
        kl.prune_to_sparsity(model, sparsity)
        assert kl.summary(model, print_fn=None).remaining == round(
            total * (1 - sparsity)), step
        model.train_on_batch(x, y)
        assert _pruned_nonzero(model) == 0


def test_set_weights_and_assign_cannot_revive(rng):
    model = kl.wrap(_mlp())
    kl.prune(model, rate=0.5)
    model.set_weights([np.ones(w.shape, w.dtype) if w.dtype != bool else w
                       for w in model.get_weights()])
    assert _pruned_nonzero(model) == 0
    fc = model.get_layer("fc")
    fc.layer.kernel.assign(np.full((8, 16), 7.0, "float32"))
    assert _pruned_nonzero(model) == 0
    kept = ops.convert_to_numpy(fc.layer.kernel)[fc.get_mask("kernel") == 1]
    assert np.all(kept == 7.0)


def test_pretrained_weights_set_after_wrap_cannot_revive(rng):
    pretrained = _mlp()
    model = kl.wrap(_mlp())
    kl.prune(model, rate=0.5)
    masks = kl.get_masks(model)
    # Pretrained weights, layer by layer, after wrapping and pruning.
    for wrapper, source in zip(model.layers, pretrained.layers):
        wrapper.layer.set_weights(source.get_weights())
    assert _pruned_nonzero(model) == 0
    for key, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])


def test_load_weights_into_an_in_place_model_cannot_revive(rng, tmp_path):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(16, activation="relu", name="fc")
            self.out = keras.layers.Dense(3, name="out")

        def call(self, x):
            return self.out(self.fc(x))

    x, y = _data(rng)
    source = Net()
    source(x)
    path = str(tmp_path / "plain.weights.h5")
    source.save_weights(path)
    model = Net()
    model(x)
    assert kl.wrap(model) is model
    kl.prune(model, rate=0.5)
    model.load_weights(path)  # plain weights, saved before any wrap
    assert _pruned_nonzero(model) == 0
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert _pruned_nonzero(model) == 0


def test_a_mask_assigned_directly_masks_its_weight(rng):
    model = kl.wrap(_mlp())
    fc = model.get_layer("fc")
    fc.mask_variable("kernel").assign(np.zeros((8, 16), bool))
    assert np.all(ops.convert_to_numpy(fc.layer.kernel) == 0.0)


@pytest.mark.parametrize("rewind_to", ["init", None])
def test_prune_and_rewind_masks_each_weight_once(rewind_to, rng, monkeypatch):
    """Between a prune and its rewind the weights are not masked a first
    time (the rewind writes them through their new masks); without a
    rewind they are masked when the step ends. Either way no pruned
    weight is left nonzero."""
    from keras_lottery.pruning.cycle import prune_and_rewind

    model = kl.wrap(_mlp())
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(*_data(rng), epochs=1, verbose=0)
    remasked = []
    reapply = _masking.reapply
    monkeypatch.setattr(_masking, "reapply",
                        lambda v: remasked.append(v.path) or reapply(v))
    prune_and_rewind(model, 0.5, rewind_to=rewind_to)
    assert _pruned_nonzero(model) == 0
    assert len(remasked) == (0 if rewind_to else 2)  # fc and out kernels


def test_a_failing_step_still_masks_its_weights(rng):
    model = kl.wrap(_mlp())
    fc = model.get_layer("fc")
    with pytest.raises(RuntimeError, match="stop"), _masking.remask_at_end():
        fc.mask_variable("kernel").assign(np.zeros((8, 16), bool))
        raise RuntimeError("stop")
    assert np.all(ops.convert_to_numpy(fc.layer.kernel) == 0.0)


def test_rewind_sets_pruned_weights_to_zero_not_to_theta0(rng):
    model = kl.wrap(_mlp())
    theta0 = ops.convert_to_numpy(model.get_layer("fc").layer.kernel)
    kl.prune(model, rate=0.5)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    model.fit(*_data(rng), epochs=1, verbose=0)
    kl.rewind(model, "init")
    fc = model.get_layer("fc")
    mask = fc.get_mask("kernel")
    kernel = ops.convert_to_numpy(fc.layer.kernel)
    np.testing.assert_array_equal(kernel, np.where(mask > 0, theta0, 0.0))


def test_a_model_built_around_a_wrapped_one_trains(rng):
    """The masks reach the optimizer of an outer model too (JAX's fit)."""
    inner = kl.wrap(_mlp())
    kl.prune(inner, rate=0.5)
    inputs = keras.Input((8,))
    outer = keras.Model(inputs, keras.layers.Activation("softmax")(inner(inputs)))
    outer.compile("adam", "sparse_categorical_crossentropy")
    outer.fit(*_data(rng), batch_size=8, epochs=1, verbose=0)
    assert _pruned_nonzero(inner) == 0


def test_strip_leaves_plain_variables(rng):
    model = kl.wrap(_mlp())
    plain = kl.strip(model)
    assert not any(_masking.is_attached(v) for v in plain.weights)
    assert all(v.constraint is None for v in plain.weights)


def test_mask_is_one_byte_per_weight():
    model = kl.wrap(_mlp())
    fc = model.get_layer("fc")
    assert keras.backend.standardize_dtype(fc.mask_variable("kernel").dtype) == "bool"


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_rewind_point_on_the_host(kind, rng, tmp_path):
    if kind == "sequential":
        model = _mlp()
    else:
        model = HostNet()
        model(np.zeros((1, 8), "float32"))
    theta0 = [ops.convert_to_numpy(v) for v in model.trainable_weights]
    wrapped = kl.wrap(model, rewind_point="host")
    # On the device: the mask only (1 byte per weight), no initial copy.
    for wrapper in wrappers(wrapped).values():
        assert all(v.dtype == "bool" for v in wrapper.non_trainable_variables
                   if v.path.endswith("_mask"))
        assert not [v for v in wrapper.weights if "initial" in v.path]
    kl.prune(wrapped, rate=0.5)
    wrapped.compile("adam", keras.losses.SparseCategoricalCrossentropy(
        from_logits=True))
    wrapped.fit(*_data(rng), batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "host.keras")
    wrapped.save(path)
    for target in (wrapped, kl.load_model(path)):
        kl.rewind(target, "init")
        pruned = {
            id(w.prunable_variable(n)): w.get_mask(n)
            for w in wrappers(target).values() for n in w.weight_names
        }
        for a, v in zip(theta0, target.trainable_weights):
            expected = np.where(pruned[id(v)] > 0, a, 0.0) if id(v) in pruned else a
            np.testing.assert_array_equal(expected, ops.convert_to_numpy(v))


def test_rewind_point_must_be_device_or_host():
    with pytest.raises(ValueError, match=r"Received: rewind_point='gpu'"):
        kl.wrap(_mlp(), rewind_point="gpu")


@keras.saving.register_keras_serializable(package="keras_lottery_tests")
class HostNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.fc = keras.layers.Dense(16, activation="relu", name="fc")
        self.out = keras.layers.Dense(3, name="out")

    def call(self, x):
        return self.out(self.fc(x))
