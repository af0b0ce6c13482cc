"""from_tfmot: tf_keras models pruned with tfmot, rebuilt as wrapped Keras 3."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery.core.copy import copy_model
from keras_lottery.core.model import wrappers
from keras_lottery.interop.tfmot import from_tfmot

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("tf_keras") is None
    or importlib.util.find_spec("tensorflow_model_optimization") is None,
    reason="needs tf-keras and tensorflow-model-optimization (the peer extra)",
)

# Runs in a child process with tf_keras: builds, prunes (tfmot) and saves the
# models, and records what they predict, their weights and tfmot's masks.
MAKE_MODELS = r'''
import os, sys
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
import tensorflow as tf
import tf_keras as k
import tensorflow_model_optimization as tfmot
out = sys.argv[1]
sparsity = tfmot.sparsity.keras
L = k.layers
tf.random.set_seed(0)
rng = np.random.default_rng(0)

def save_expected(name, model, x):
    arrays = {"x": x, "y": model.predict(x, verbose=0)}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        for i, w in enumerate(inner.get_weights()):
            arrays[f"weight/{inner.name}/{i}"] = w
        for w, m, _ in getattr(layer, "pruning_vars", []):
            arrays[f"mask/{inner.name}"] = m.numpy()
    np.savez(os.path.join(out, name + ".npz"), **arrays)

def fit(pruned, x, y):
    pruned.compile(k.optimizers.Adam(0.01),
                   k.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, batch_size=8, epochs=2, verbose=0,
               callbacks=[sparsity.UpdatePruningStep()])

# A LeNet-like Sequential model, pruned to 75% over a few steps.
lenet = k.Sequential([
    L.InputLayer((16, 16, 1)),
    L.Conv2D(6, 3, activation="relu"),
    L.MaxPooling2D(),
    L.Conv2D(8, 3, activation="relu"),
    L.Flatten(),
    L.Dropout(0.1),
    L.Dense(32, activation="relu"),
    L.Dense(10),
])
schedule = sparsity.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=6,
                                    frequency=2)
pruned = sparsity.prune_low_magnitude(lenet, pruning_schedule=schedule)
x = rng.random((32, 16, 16, 1)).astype("float32")
y = rng.integers(0, 10, 32)
fit(pruned, x, y)
pruned.save(os.path.join(out, "lenet.h5"))
pruned.save(os.path.join(out, "lenet_savedmodel"))
save_expected("lenet", pruned, x)
stripped = sparsity.strip_pruning(pruned)
stripped.save(os.path.join(out, "lenet_stripped.h5"))

# A functional model with every other supported layer type.
inp = k.Input((10, 10, 3), name="image")
h = L.ZeroPadding2D(1)(inp)
h = L.Conv2D(4, 3, name="conv")(h)
h = L.BatchNormalization()(h)
h = L.ReLU()(h)
h = L.Add()([L.MaxPooling2D()(h), L.AveragePooling2D()(h)])
s = L.Reshape((25, 4))(h)
s = L.Conv1D(4, 3, activation="tanh")(s)
s = L.AveragePooling1D()(L.MaxPooling1D()(s))
h = L.Concatenate()([
    L.GlobalAveragePooling2D()(h), L.GlobalMaxPooling2D()(h),
    L.GlobalAveragePooling1D()(s), L.GlobalMaxPooling1D()(s), L.Flatten()(s),
])
h = L.Activation("relu")(L.Dense(8)(L.Dropout(0.2)(h)))
out_ = L.Softmax()(L.Dense(3)(h))
zoo = k.Model(inp, out_)
pruned = sparsity.prune_low_magnitude(
    zoo, pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
x = rng.random((16, 10, 10, 3)).astype("float32")
fit(pruned, x, rng.integers(0, 3, 16))
pruned.save(os.path.join(out, "zoo.h5"))
save_expected("zoo", pruned, x)

# MobileNet-like (tfmot's XNNPACK tutorial): a DepthwiseConv2D and a 1x1
# conv given to prune_low_magnitude (tfmot wraps the depthwise conv but
# prunes none of its weights), the stem conv and the head left dense.
inp = k.Input((8, 8, 3))
h = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
h = L.DepthwiseConv2D(3, padding="same", name="dw")(h)
h = L.Conv2D(16, 1, activation="relu", name="pw")(h)
h = L.GlobalAveragePooling2D()(h)
mobile = k.Model(inp, L.Dense(4, name="head")(h))
pruned = k.models.clone_model(mobile, clone_function=lambda layer: (
    sparsity.prune_low_magnitude(
        layer, pruning_schedule=sparsity.ConstantSparsity(0.5, 0, frequency=1))
    if layer.name in ("dw", "pw") else layer.__class__.from_config(
        layer.get_config())))
x = rng.random((16, 8, 8, 3)).astype("float32")
fit(pruned, x, rng.integers(0, 4, 16))
pruned.save(os.path.join(out, "mobile.h5"))
save_expected("mobile", pruned, x)

# The batches (from 0) after which tfmot's masks changed, and the zeros per
# layer then, for a schedule whose end_step (5) is off the frequency grid.
class MaskLog(k.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.batch, self.events, self.last = 0, [], None

    def on_train_batch_end(self, batch, logs=None):
        zeros = [int(np.sum(layer.pruning_vars[0][1].numpy() == 0))
                 for layer in self.model.layers]
        if zeros != self.last and any(zeros):
            self.events.append([self.batch, zeros])
        self.last, self.batch = zeros, self.batch + 1

small = k.Sequential([L.InputLayer((8,)), L.Dense(32), L.Dense(4)])
pruned = sparsity.prune_low_magnitude(small, pruning_schedule=sparsity.PolynomialDecay(
    0.2, 0.9, begin_step=0, end_step=5, frequency=2))
log = MaskLog()
pruned.compile(k.optimizers.Adam(0.01), "mse")
pruned.fit(rng.random((32, 8)), rng.random((32, 4)), batch_size=8, epochs=2,
           verbose=0, callbacks=[sparsity.UpdatePruningStep(), log])
with open(os.path.join(out, "steps.json"), "w") as f:
    f.write(repr(log.events))

# Not supported: a LayerNormalization.
k.Sequential([L.InputLayer((4,)), L.Dense(3), L.LayerNormalization()]).save(
    os.path.join(out, "unsupported.h5"))
'''


@pytest.fixture(scope="session")
def tfmot_dir(tmp_path_factory) -> Path:
    """The tfmot models, built once per test session (it is slow)."""
    out = tmp_path_factory.mktemp("tfmot")
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("KERAS_BACKEND", None)
    run = subprocess.run(
        [sys.executable, "-c", MAKE_MODELS, str(out)],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


_LOADED: dict[str, keras.Model] = {}


def load(directory: Path, name: str) -> keras.Model:
    """from_tfmot, once per file and session (each call starts TensorFlow)."""
    if name not in _LOADED:
        _LOADED[name] = from_tfmot(directory / name)
    return _LOADED[name]


def expected(directory: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(directory / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def check_same_model(model, ref, *, exact_weights=True):
    masks = kl.get_masks(model)
    ref_masks = {k[5:]: v for k, v in ref.items() if k.startswith("mask/")}
    assert ref_masks, "the tfmot model has no masks: the fixture is broken"
    assert sorted(masks) == sorted(f"{n}/kernel" for n in ref_masks)
    for name, mask in ref_masks.items():
        assert 0 < mask.mean() < 1  # really pruned
        np.testing.assert_array_equal(masks[f"{name}/kernel"], mask)
    for key, wrapper in wrappers(model).items():
        for i, w in enumerate(wrapper.layer.weights):
            value = ref[f"weight/{key}/{i}"]
            if exact_weights:
                np.testing.assert_array_equal(numpy(w), value)
            else:
                np.testing.assert_allclose(numpy(w), value, atol=1e-6)
    np.testing.assert_allclose(
        numpy(model.predict(ref["x"], verbose=0)), ref["y"], atol=1e-5
    )


@pytest.mark.parametrize("name", ["lenet.h5", "lenet_savedmodel"])
def test_pruned_lenet_round_trips(tfmot_dir, name):
    model = load(tfmot_dir, name)
    ref = expected(tfmot_dir, "lenet")
    assert isinstance(model, keras.Sequential)
    assert [type(layer).__name__ for layer in model.layers] == [
        "PrunableWrapper", "MaxPooling2D", "PrunableWrapper", "Flatten",
        "Dropout", "PrunableWrapper", "PrunableWrapper",
    ]
    check_same_model(model, ref)
    # Every weight of the unwrapped layers too (none here besides kernels
    # and biases), and the sparsity tfmot reached: 75% in every layer.
    for mask in kl.get_masks(model).values():
        assert mask.size - mask.sum() == round(0.75 * mask.size)


def test_stripped_lenet_masks_come_from_zeros(tfmot_dir):
    model = load(tfmot_dir, "lenet_stripped.h5")
    check_same_model(model, expected(tfmot_dir, "lenet"))


def test_functional_model_with_every_supported_layer(tfmot_dir):
    model = load(tfmot_dir, "zoo.h5")
    ref = expected(tfmot_dir, "zoo")
    assert not isinstance(model, keras.Sequential)
    assert model.input_shape == (None, 10, 10, 3)
    check_same_model(model, ref)
    batch_norm = model.get_layer("batch_normalization")
    for i, w in enumerate(batch_norm.weights):  # moving statistics included
        np.testing.assert_array_equal(
            numpy(w), ref[f"weight/batch_normalization/{i}"]
        )


def test_loaded_model_prunes_rewinds_and_strips(tfmot_dir):
    model = copy_model(load(tfmot_dir, "lenet.h5"))
    ref = expected(tfmot_dir, "lenet")
    loaded = [numpy(v) for v in model.trainable_weights]
    tfmot_masks = kl.get_masks(model)
    report = kl.prune(model, rate=0.5)
    assert report.after < report.before
    for key, mask in kl.get_masks(model).items():  # tfmot's zeros stay zero
        assert np.all(mask <= tfmot_masks[key])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.fit(ref["x"], ref["y"], epochs=1, verbose=0)
    trained = [numpy(v) for v in model.trainable_weights]
    assert any(not np.array_equal(a, b) for a, b in zip(trained, loaded))
    kl.rewind(model, "init")  # the rewind point is the loaded weights
    masks = {
        id(w.prunable_variable(n)): w.get_mask(n)
        for w in wrappers(model).values() for n in w.weight_names
    }
    for variable, value in zip(model.trainable_weights, loaded):
        if id(variable) in masks:  # the weights pruned since stay at 0.0
            value = np.where(masks[id(variable)] > 0, value, 0.0)
        np.testing.assert_array_equal(numpy(variable), value)
    plain = kl.strip(model)
    np.testing.assert_allclose(
        numpy(plain.predict(ref["x"], verbose=0)),
        numpy(model.predict(ref["x"], verbose=0)),
        atol=1e-5,
    )


def test_depthwise_and_layers_tfmot_left_dense(tfmot_dir):
    model = load(tfmot_dir, "mobile.h5")
    ref = expected(tfmot_dir, "mobile")
    assert sorted(wrappers(model)) == ["pw"]  # only what tfmot pruned
    assert type(model.get_layer("dw")).__name__ == "DepthwiseConv2D"
    assert type(model.get_layer("stem")).__name__ == "Conv2D"
    assert type(model.get_layer("head")).__name__ == "Dense"
    check_same_model(model, ref)
    # Told otherwise: every prunable layer, or a selection.
    everything = from_tfmot(tfmot_dir / "mobile.h5", layers="all", exclude="head")
    assert sorted(wrappers(everything)) == ["dw", "pw", "stem"]
    chosen = from_tfmot(tfmot_dir / "mobile.h5", include=["pw", "dw"])
    assert sorted(wrappers(chosen)) == ["dw", "pw"]
    masks = kl.get_masks(chosen)
    assert masks["dw/kernel"].all()  # never pruned: its nonzeros, all of them
    np.testing.assert_array_equal(masks["pw/kernel"], ref["mask/pw"])
    np.testing.assert_allclose(
        numpy(chosen.predict(ref["x"], verbose=0)), ref["y"], atol=1e-5)
    with pytest.raises(ValueError, match=r"'pruned'.*Received: layers='some'"):
        from_tfmot(tfmot_dir / "mobile.h5", layers="some")


def test_a_keras3_file_is_sent_to_keras_load_model(tmp_path):
    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]).save(path)
    with pytest.raises(ValueError, match=r"Keras 3.*keras\.saving\.load_model"):
        from_tfmot(path)


def test_stripped_keras_file_has_no_optimizer_state(tmp_path):
    import zipfile

    import h5py

    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((32,)), keras.layers.Dense(64),
                                 keras.layers.Dense(10)])

    x = np.ones((8, 32), "float32")
    y = np.ones((8, 10), "float32")
    model = kl.wrap(build())
    model.compile(keras.optimizers.Adam(), "mse")
    model.fit(x, y, verbose=0)
    kl.prune(model, 0.5)
    plain = kl.strip(model)
    assert not plain.compiled
    plain.save(tmp_path / "stripped.keras")
    build().save(tmp_path / "never_compiled.keras")
    with zipfile.ZipFile(tmp_path / "stripped.keras") as archive:
        archive.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5") as weights:
        names = []
        weights.visit(names.append)
    assert not [n for n in names if n.startswith("optimizer")], names
    sizes = [os.path.getsize(tmp_path / f)
             for f in ("stripped.keras", "never_compiled.keras")]
    assert abs(sizes[0] - sizes[1]) < 0.05 * sizes[1], sizes
    again = kl.strip(model, compile=True)  # to evaluate or fine-tune
    assert again.compiled and again.optimizer is not model.optimizer
    assert int(numpy(again.optimizer.iterations)) == 0
    with pytest.raises(TypeError, match="Received: compile='yes'"):
        kl.strip(model, compile="yes")


def test_unsupported_layer_is_named(tfmot_dir):
    with pytest.raises(ValueError, match=r"LayerNormalization.*not supported"):
        from_tfmot(tfmot_dir / "unsupported.h5")


def test_not_a_model(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not a model")
    with pytest.raises(ValueError, match="not a tf_keras model"):
        from_tfmot(text)
    fake = tmp_path / "fake.h5"  # an HDF5 file, but not a tf_keras model
    fake.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="not a tf_keras model"):
        from_tfmot(fake)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        from_tfmot(tmp_path / "missing.h5")
    with pytest.raises(ValueError, match=r"saved_model\.pb"):
        from_tfmot(tmp_path)


def test_check_xnnpack_sparse_names_an_under_pruned_conv_once():
    # tfmot's PruneForLatencyOnXNNPack counterpart, on a plain Keras 3 model.
    from keras_lottery.deploy.xnnpack import check_xnnpack_sparse

    x = keras.Input((16, 16, 3))
    h = keras.layers.ZeroPadding2D(1)(x)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(h)
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    text = str(check_xnnpack_sparse(keras.Model(x, h)))
    assert text.count("pw") == 1, text
    assert "needs > 66.7%" in text


class MaskLog(keras.callbacks.Callback):
    """The batches after which the masks changed, and the zeros then."""

    def on_train_begin(self, logs=None):
        self.batch, self.events, self.last = 0, [], None

    def on_train_batch_end(self, batch, logs=None):
        zeros = [int(m.size - np.count_nonzero(m))
                 for m in kl.get_masks(self.model).values()]
        if zeros != self.last and any(zeros):
            self.events.append([self.batch, zeros])
        self.last, self.batch = zeros, self.batch + 1


def test_step_offset_and_the_guides_recipe_prune_on_tfmots_steps(tfmot_dir):
    import ast

    tfmot_events = ast.literal_eval((tfmot_dir / "steps.json").read_text())
    # tfmot 0.8.1 prunes at its steps 2 and 4 (batches 1 and 3), not at 5.
    assert [batch for batch, _ in tfmot_events] == [1, 3], tfmot_events
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8)), rng.random((32, 4))
    found = {}
    for name, kind, offset in (("guide", kl.PolynomialDecay, 0),
                               ("offset", kl.PolynomialDecay, 1),
                               ("recipe", functools.partial(
                                   kl.PolynomialDecay, prune_at_end_step=False), 1)):
        model = kl.wrap(keras.Sequential([keras.Input((8,)), keras.layers.Dense(32),
                                          keras.layers.Dense(4)]))
        model.compile(keras.optimizers.Adam(0.01), "mse")
        log = MaskLog()
        schedule = kind(0.2, 0.9, begin_step=0, end_step=5, frequency=2)
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[
            kl.GradualPruning(schedule, step_offset=offset), log])
        found[name] = log.events
    assert found["recipe"] == tfmot_events  # same batches, same zeros
    # step_offset=1 alone: tfmot's steps, then end_step (batch 4) as well.
    assert found["offset"][:2] == tfmot_events
    assert found["offset"][2] == [4, [230, 115]]  # 0.9 of 256 and 128
    assert [batch for batch, _ in found["guide"]] == [0, 2, 4, 5]
