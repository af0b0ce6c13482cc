"""wrap / strip / summary over whole models, training, saving and errors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import mlp
from keras import ops

import keras_lottery as kl
from keras_lottery.core.model import wrappers


def _floats(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def _numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def convnet() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3),
        ],
        name="convnet",
    )


def set_random_masks(model, rng, keep=0.5) -> dict[str, np.ndarray]:
    """Random 0/1 masks on every prunable weight, keyed `layer/weight`."""
    masks = {}
    for key, wrapper in wrappers(model).items():
        for name in wrapper.weight_names:
            mask = (rng.random(wrapper.get_mask(name).shape) < keep).astype("float32")
            mask.flat[0], mask.flat[-1] = 0.0, 1.0
            wrapper.set_mask(name, mask)
            masks[f"{key}/{name}"] = mask
    return masks


def weights_of(model) -> list[np.ndarray]:
    return [w.copy() for w in model.get_weights()]


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


# ------------------------------------------------------------- training
FIT_MODES = [
    pytest.param({}, id="default"),
    pytest.param({"run_eagerly": True}, id="eager"),
    # XLA on TensorFlow and JAX, torch.compile on PyTorch (compiling takes
    # the torch suite's longest minute: 70 s measured beside another job).
    pytest.param({"jit_compile": True}, id="jit"),
]


@pytest.mark.parametrize("compile_kwargs", FIT_MODES)
def test_fit_keeps_pruned_weights_at_zero(compile_kwargs, rng):
    wrapped = kl.wrap(convnet())
    masks = set_random_masks(wrapped, rng)
    found = wrappers(wrapped)
    before = {
        f"{k}/{n}": _numpy(w.prunable_variable(n)).copy()
        for k, w in found.items()
        for n in w.weight_names
    }
    x, y = _floats(rng, 24, 6, 6, 1), rng.integers(0, 3, 24)
    wrapped.compile(
        optimizer=keras.optimizers.Adam(0.05),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    wrapped.fit(x, y, epochs=3, batch_size=8, verbose=0)

    plain = kl.strip(wrapped)
    stripped = {
        f"{k}/{n}": _numpy(getattr(layer, n))
        for k, w in found.items()
        for n in w.weight_names
        for layer in [plain.get_layer(w.layer.name)]
    }
    for key, mask in masks.items():
        layer_key, name = key.rsplit("/", 1)
        effective = found[layer_key].effective_weight(name)
        pruned = mask == 0
        assert np.all(effective[pruned] == 0.0), key
        assert np.all(stripped[key][pruned] == 0.0), key
        # Training moved the kept weights; a gradient of exactly zero left
        # Adam's moments, hence the raw pruned values, untouched.
        raw = _numpy(found[layer_key].prunable_variable(name))
        assert np.any(raw[~pruned] != before[key][~pruned]), key
        np.testing.assert_array_equal(raw[pruned], before[key][pruned])

    predictions = wrapped.predict(x, verbose=0)
    assert _max_diff(predictions, plain.predict(x, verbose=0)) <= 1e-6
    plain.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        **compile_kwargs,
    )
    np.testing.assert_allclose(
        wrapped.evaluate(x, y, verbose=0), plain.evaluate(x, y, verbose=0),
        rtol=1e-5,
    )


# ---------------------------------------------------------------- strip
def test_strip_parity_and_layer_types(rng):
    model = convnet()
    wrapped = kl.wrap(model)
    masks = set_random_masks(wrapped, rng)
    plain = kl.strip(wrapped)
    assert [type(layer) for layer in plain.layers] == [
        type(layer) for layer in model.layers
    ]
    x = _floats(rng, 5, 6, 6, 1)
    assert _max_diff(plain.predict(x, verbose=0), wrapped.predict(x, verbose=0)) <= 1e-6
    dense = plain.get_layer(model.layers[2].name)
    np.testing.assert_array_equal(
        _numpy(dense.kernel),
        _numpy(model.layers[2].kernel) * masks[f"{model.layers[2].name}/kernel"],
    )
    # The stripped model is plain Keras: it needs no keras_lottery to save.
    assert "keras_lottery" not in str(plain.get_config())


# ------------------------------------------------------------ wrap: kinds
def test_wrap_sequential_keeps_outputs_and_weights(rng):
    model = mlp((8, 16, 4))
    wrapped = kl.wrap(model)
    assert isinstance(wrapped, keras.Sequential)
    assert all(isinstance(layer, kl.PrunableWrapper) for layer in wrapped.layers)
    x = _floats(rng, 3, 8)
    np.testing.assert_array_equal(
        _numpy(wrapped(x)), _numpy(model(x))
    )
    for layer, wrapper in zip(model.layers, wrapped.layers):
        np.testing.assert_array_equal(
            _numpy(wrapper.initial_variable("kernel")), _numpy(layer.kernel)
        )


def test_wrap_functional_with_nested_sequential(rng):
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(6, activation="relu")], name="enc"
    )
    inputs = keras.Input((8,))
    hidden = inner(inputs)
    side = keras.layers.Dense(6, name="side")(inputs)
    merged = keras.layers.Add()([hidden, side])
    outputs = keras.layers.Dense(2, name="head")(merged)
    model = keras.Model(inputs, outputs, name="outer")

    wrapped = kl.wrap(model)
    keys = sorted(wrappers(wrapped))
    assert keys == sorted([f"enc/{inner.layers[0].name}", "side", "head"])
    nested = wrapped.get_layer("enc")
    assert isinstance(nested, keras.Sequential)
    assert isinstance(nested.layers[0], kl.PrunableWrapper)
    x = _floats(rng, 4, 8)
    np.testing.assert_allclose(_numpy(wrapped(x)), _numpy(model(x)), atol=1e-6)

    masks = set_random_masks(wrapped, rng)
    assert set(masks) == {f"{k}/kernel" for k in keys}
    wrapped.compile(optimizer="adam", loss="mse")
    wrapped.fit(x, _floats(rng, 4, 2), epochs=2, verbose=0)
    for key, mask in masks.items():
        layer_key = key.rsplit("/", 1)[0]
        effective = wrappers(wrapped)[layer_key].effective_weight("kernel")
        assert np.all(effective[mask == 0] == 0.0)
    plain = kl.strip(wrapped)
    assert not wrappers(plain)
    assert _max_diff(plain.predict(x, verbose=0), wrapped.predict(x, verbose=0)) <= 1e-6


def test_original_model_stays_usable_and_unchanged(rng):
    model = mlp((8, 16, 4))
    original = weights_of(model)
    wrapped = kl.wrap(model)
    set_random_masks(wrapped, rng)
    x, y = _floats(rng, 16, 8), _floats(rng, 16, 4)
    wrapped.compile(optimizer="adam", loss="mse")
    wrapped.fit(x, y, epochs=2, verbose=0)

    assert not any(isinstance(layer, kl.PrunableWrapper) for layer in model.layers)
    for got, want in zip(weights_of(model), original):
        np.testing.assert_array_equal(got, want)
    shared = {id(v) for v in model.weights} & {id(v) for v in wrapped.weights}
    assert not shared
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=1, verbose=0)
    assert model.predict(x, verbose=0).shape == (16, 4)


def test_wrapping_twice_keeps_masks_and_does_not_nest(rng):
    wrapped = kl.wrap(mlp((8, 16, 4)))
    masks = set_random_masks(wrapped, rng)
    first = wrappers(wrapped)
    again = kl.wrap(wrapped)
    second = wrappers(again)
    assert list(second) == list(first)
    for key, wrapper in second.items():
        assert not isinstance(wrapper.layer, kl.PrunableWrapper)
        np.testing.assert_array_equal(
            wrapper.get_mask("kernel"), masks[f"{key}/kernel"]
        )
        np.testing.assert_array_equal(
            _numpy(wrapper.initial_variable("kernel")),
            _numpy(first[key].initial_variable("kernel")),
        )
    x = _floats(rng, 3, 8)
    np.testing.assert_array_equal(_numpy(again(x)), _numpy(wrapped(x)))


# ------------------------------------------------------ include / exclude
def _model_with_names():
    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(2, 3, name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(8, name="hidden"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.Dense(2, name="out"),
        ]
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["conv", "hidden", "out"]),
        ({"include": ["hidden"]}, ["hidden"]),
        ({"include": "out"}, ["out"]),
        ({"include": [keras.layers.Conv2D]}, ["conv"]),
        ({"exclude": ["out"]}, ["conv", "hidden"]),
        ({"exclude": keras.layers.Dense}, ["conv"]),
        ({"include": [keras.layers.Dense], "exclude": ["hidden"]}, ["out"]),
        ({"include": "Conv2D"}, ["conv"]),
        ({"exclude": ["Dense"]}, ["conv"]),
    ],
    ids=[
        "all",
        "include-name",
        "include-str",
        "include-class",
        "exclude-name",
        "exclude-class",
        "include-class-exclude-name",
        "include-class-name",
        "exclude-class-name",
    ],
)
def test_include_and_exclude(kwargs, expected):
    wrapped = kl.wrap(_model_with_names(), **kwargs)
    assert sorted(wrappers(wrapped)) == sorted(expected)


def test_include_class_matching_no_layer_is_an_error():
    with pytest.raises(ValueError, match=r"Conv1D.*has no layer of that class.*Dense"):
        kl.wrap(_model_with_names(), include=[keras.layers.Conv1D])


# ------------------------------------------------------------- saving
def test_keras_round_trip(tmp_path, rng):
    wrapped = kl.wrap(convnet())
    set_random_masks(wrapped, rng)
    x, y = _floats(rng, 8, 6, 6, 1), rng.integers(0, 3, 8)
    wrapped.compile(
        optimizer="adam",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    wrapped.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "wrapped.keras"
    wrapped.save(path)

    loaded = keras.saving.load_model(path)  # no custom_objects needed
    found, restored = wrappers(wrapped), wrappers(loaded)
    assert list(restored) == list(found)
    for key, wrapper in found.items():
        twin = restored[key]
        assert type(twin.layer) is type(wrapper.layer)
        for name in wrapper.weight_names:
            np.testing.assert_array_equal(twin.get_mask(name), wrapper.get_mask(name))
            np.testing.assert_array_equal(
                _numpy(twin.initial_variable(name)),
                _numpy(wrapper.initial_variable(name)),
            )
            np.testing.assert_array_equal(
                _numpy(twin.prunable_variable(name)),
                _numpy(wrapper.prunable_variable(name)),
            )
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), wrapped.predict(x, verbose=0)
    )
    # The loaded model keeps training with its masks.
    loaded.fit(x, y, epochs=1, verbose=0)
    for key, wrapper in found.items():
        mask = wrapper.get_mask("kernel")
        assert np.all(restored[key].effective_weight("kernel")[mask == 0] == 0.0)


def test_saved_weights_hold_each_variable_once(tmp_path):
    h5py = pytest.importorskip("h5py")
    wrapped = kl.wrap(mlp((8, 16, 4)))
    path = tmp_path / "wrapped.weights.h5"
    wrapped.save_weights(path)
    stored = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: stored.append(name)
            if isinstance(obj, h5py.Dataset)
            else None
        )
    assert len(stored) == len(wrapped.weights)


# ------------------------------------------------------------- summary
def test_summary_counts_and_table(rng):
    wrapped = kl.wrap(mlp((8, 16, 4)))
    first, second = wrapped.layers
    first.set_mask("kernel", np.arange(8 * 16).reshape(8, 16) % 4 == 0)
    printed = []
    result = kl.summary(wrapped, print_fn=printed.append)
    assert [(w.layer, w.weight, w.shape) for w in result.weights] == [
        (first.layer.name, "kernel", (8, 16)),
        (second.layer.name, "kernel", (16, 4)),
    ]
    assert [w.total for w in result.weights] == [128, 64]
    assert [w.remaining for w in result.weights] == [32, 64]
    assert result.total == 192 and result.remaining == 96
    assert result.sparsity == pytest.approx(0.5)
    assert result.weights[0].sparsity == pytest.approx(0.75)
    assert result.to_dict()["remaining"] == 96

    (table,) = printed
    lines = table.splitlines()
    assert lines[0].split() == ["Weight", "Shape", "Total", "Remaining", "Sparsity"]
    assert lines[2].split() == [f"{first.layer.name}/kernel", "(8,", "16)", "128",
                                "32", "75.00%"]
    assert lines[-2].split() == ["Total", "192", "96", "50.00%"]
    assert lines[-1].startswith("Coverage: 192 of 192 kernel and matrix weights")
    # Masks (1 byte), rewind points of kernels and biases (4 bytes each).
    assert result.state_bytes == 192 * (1 + 4) + (16 + 4) * 4
    assert result.coverage == 1.0
    assert kl.summary(wrapped, print_fn=None) == result


# ------------------------------------------------------------- errors
class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(2)

    def call(self, x):
        return self.dense(x)


def test_wrap_rejects_non_keras_objects():
    with pytest.raises(TypeError, match=r"Expected a keras.Model.*Received: model="):
        kl.wrap("not a model")
    with pytest.raises(TypeError, match=r"Expected a keras\.Model"):
        kl.wrap(keras.layers.Dense(2))


def test_wrap_rejects_unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"not built.*keras.Input\(shape=...\)"):
        kl.wrap(model)


def test_wrap_changes_a_subclassed_model_in_place(rng):
    model = _Subclassed()
    x = _floats(rng, 4, 3)
    before = keras.ops.convert_to_numpy(model(x))
    wrapped = kl.wrap(model)
    assert wrapped is model
    covered, total, unreached = kl.coverage(model)
    assert list(wrappers(model)) == ["dense"]
    assert covered == total == 6 and unreached == []
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model(x)), before)


def test_subclassed_model_with_wrapper_inside_init_works(rng):
    class Pruned(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = kl.PrunableWrapper(keras.layers.Dense(4))

        def call(self, x):
            return self.dense(x)

    model = Pruned()
    x = _floats(rng, 8, 3)
    model(x)
    masks = set_random_masks(model, rng)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, _floats(rng, 8, 4), epochs=2, verbose=0)
    (key,) = masks
    assert np.all(model.dense.effective_weight("kernel")[masks[key] == 0] == 0.0)
    assert kl.summary(model, print_fn=None).remaining == int(masks[key].sum())


@pytest.mark.parametrize("argument", ["include", "exclude"])
def test_unknown_layer_name_is_an_error(argument):
    with pytest.raises(
        ValueError, match=rf"`{argument}` names a layer 'nope'.*Layers:"
    ):
        kl.wrap(_model_with_names(), **{argument: ["nope"]})


@pytest.mark.parametrize(
    "include", [["drop"], [keras.layers.Dropout], ["Dropout"]],
    ids=["name", "class", "class-name"]
)
def test_include_of_layer_without_prunable_weights_is_an_error(include):
    with pytest.raises(ValueError, match=r"`include`.*Dropout.*no prunable weights"):
        kl.wrap(_model_with_names(), include=include)


def test_selector_of_wrong_type_is_an_error():
    with pytest.raises(TypeError, match=r"layer names or layer classes.*Received: 3"):
        kl.wrap(_model_with_names(), exclude=[3])


def test_model_functions_need_wrappers():
    with pytest.raises(ValueError, match=r"no PrunableWrapper.*keras_lottery.wrap"):
        kl.summary(mlp(), print_fn=None)


def test_get_layer_finds_a_wrapped_layer_by_its_own_name():
    """After wrap, model.get_layer("fc") still works, and the wrapper it
    returns answers for the layer's attributes."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="fc"),
                              keras.layers.Dense(2, name="out")])
    wrapped = kl.wrap(model)
    fc = wrapped.get_layer("fc")
    assert isinstance(fc, kl.PrunableWrapper)
    assert fc.units == 4 and fc.kernel is fc.layer.kernel
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        fc.nothing  # noqa: B018
