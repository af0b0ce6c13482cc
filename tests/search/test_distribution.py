"""Pruning under a distribution gives the masks of a single-device run.

Devices are fixed when a backend starts, so each check runs this file as a
worker in a fresh process: JAX with 4 host CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=4`), TensorFlow with 2
logical CPUs. The worker trains the same model on the same data, in the
same order (`shuffle=False`, one batch size), once on one device and once
under each distribution; it writes masks, predictions and variable layouts
to an `.npz` and a JSON file that the tests compare. Each backend's suite
runs its own worker and skips the others' tests.

Run a worker by hand: `KERAS_BACKEND=jax python tests/search/test_distribution.py
OUT_DIR` (set XLA_FLAGS as above first).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
BATCH = 16
EPOCHS = 2
JAX_DEVICES = 4
TF_DEVICES = 2


# ------------------------------------------------------------------ worker
def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 4, size=64).astype("int32")
    return x, y


def _initial_weights():
    """The same starting weights in every mode, whatever each initializes."""
    rng = np.random.default_rng(1)
    shapes = [(8, 32), (32,), (32, 4), (4,)]
    return [rng.normal(scale=0.3, size=s).astype("float32") for s in shapes]


def _wrapped_model():
    import keras

    import keras_lottery as kl

    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(32, activation="relu", name="dense"),
            keras.layers.Dense(4, name="dense_1"),
        ]
    )
    model.set_weights(_initial_weights())
    model = kl.wrap(model)
    model.compile(
        keras.optimizers.SGD(0.05),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _run(mode: str, scope, arrays: dict, layouts: dict, layout_of) -> None:
    """One search and one LotterySchedule fit; results go to arrays/layouts."""
    import keras

    import keras_lottery as kl
    from keras_lottery.core.model import iter_wrappers

    x, y = _data()

    def fit_fn(model):
        return model.fit(
            x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0
        )

    keras.utils.set_random_seed(0)
    with scope():
        model = _wrapped_model()
    result = kl.lottery_search(model, fit_fn, rounds=2, rate=0.5, seed=0, verbose=0)
    for r in range(len(result)):
        for key, mask in result.masks(r).items():
            arrays[f"{mode}/search/{r}/{key}"] = mask
    arrays[f"{mode}/loss"] = np.array([rec.metrics["loss"] for rec in result])
    with scope():
        plain = kl.strip(model)
    arrays[f"{mode}/predict"] = plain.predict(x, batch_size=BATCH, verbose=0)
    layouts[mode] = {
        f"{key}/{what}": layout_of(variable)
        for key, wrapper in iter_wrappers(model)
        for name in wrapper.weight_names
        for what, variable in [
            ("weight", wrapper.prunable_variable(name)),
            ("mask", wrapper.mask_variable(name)),
            ("initial", wrapper.initial_variable(name)),
        ]
    }

    keras.utils.set_random_seed(0)
    with scope():
        model = _wrapped_model()
    schedule = kl.LotterySchedule(rate=0.5, epochs_per_round=1)
    model.fit(
        x, y, batch_size=BATCH, epochs=3, shuffle=False, verbose=0,
        callbacks=[schedule],
    )
    for key, mask in kl.get_masks(model).items():
        arrays[f"{mode}/schedule/{key}"] = mask


def _jax_worker(arrays, layouts):
    import contextlib

    import keras

    devices = keras.distribution.list_devices()
    if len(devices) != JAX_DEVICES:
        raise RuntimeError(f"Expected {JAX_DEVICES} devices, got {devices}.")

    def layout_of(variable):
        sharding = variable.value.sharding
        spec = getattr(sharding, "spec", None)  # None on a single device
        return {
            "spec": None if spec is None else [
                None if axis is None else str(axis) for axis in spec
            ],
            "devices": len(sharding.device_set),
            "shard": list(sharding.shard_shape(variable.value.shape)),
        }

    _run("single", contextlib.nullcontext, arrays, layouts, layout_of)
    data_parallel = keras.distribution.DataParallel(devices=devices)
    _run("data_parallel", data_parallel.scope, arrays, layouts, layout_of)
    mesh = keras.distribution.DeviceMesh((2, 2), ("batch", "model"), devices)
    layout_map = keras.distribution.LayoutMap(mesh)
    layout_map["dense.*kernel"] = (None, "model")
    model_parallel = keras.distribution.ModelParallel(layout_map=layout_map)
    _run("model_parallel", model_parallel.scope, arrays, layouts, layout_of)


def _tf_worker(arrays, layouts):
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * TF_DEVICES
    )
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(TF_DEVICES)]
    )
    if strategy.num_replicas_in_sync != TF_DEVICES:
        raise RuntimeError(f"Expected {TF_DEVICES} replicas.")

    def layout_of(variable):
        value = variable._value if hasattr(variable, "_value") else variable
        mirrored = isinstance(value, tf.distribute.DistributedValues)
        return {
            "type": type(value).__name__,
            "devices": len(value.values) if mirrored else 1,
        }

    _run("single", tf.distribute.get_strategy().scope, arrays, layouts, layout_of)
    _run("mirrored", strategy.scope, arrays, layouts, layout_of)


def _worker(out_dir: str) -> None:
    backend = os.environ["KERAS_BACKEND"]
    arrays: dict = {}
    layouts: dict = {}
    if backend == "jax":
        _jax_worker(arrays, layouts)
    elif backend == "tensorflow":
        _tf_worker(arrays, layouts)
    else:
        raise ValueError(f"No distribution worker for backend {backend!r}.")
    out = Path(out_dir)
    np.savez(out / "arrays.npz", **arrays)
    (out / "layouts.json").write_text(json.dumps(layouts, indent=1))


if __name__ == "__main__":
    warnings.simplefilter("ignore")
    _worker(sys.argv[1])
    sys.exit(0)


# ------------------------------------------------------------------- tests
import keras  # noqa: E402
import pytest  # noqa: E402

import keras_lottery as kl  # noqa: E402

BACKEND = keras.backend.backend()


def _spawn(backend: str, out_dir: Path) -> tuple[dict, dict]:
    env = dict(os.environ, KERAS_BACKEND=backend, PYTHONPATH=str(ROOT))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if backend == "jax":
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={JAX_DEVICES}"
        ).strip()
        env["JAX_PLATFORMS"] = "cpu"
    done = subprocess.run(
        [sys.executable, __file__, str(out_dir)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    if done.returncode:
        raise AssertionError(
            f"The {backend} distribution worker failed:\n{done.stderr[-4000:]}"
        )
    with np.load(out_dir / "arrays.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return arrays, json.loads((out_dir / "layouts.json").read_text())


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    if BACKEND not in ("jax", "tensorflow"):
        pytest.skip(f"distribution workers run on jax and tensorflow, not {BACKEND}")
    return _spawn(BACKEND, tmp_path_factory.mktemp(f"distribution_{BACKEND}"))


def _modes():
    return {"jax": ["data_parallel", "model_parallel"], "tensorflow": ["mirrored"]}


def _same_masks(arrays, mode, what):
    keys = sorted(k[len("single/"):] for k in arrays if k.startswith(f"single/{what}/"))
    assert keys, f"no {what} masks recorded"
    for key in keys:
        expected, got = arrays[f"single/{key}"], arrays[f"{mode}/{key}"]
        assert expected.shape == got.shape, key
        assert np.array_equal(expected, got), (
            f"{mode}: {key} differs from the single-device mask in "
            f"{int(np.sum(expected != got))} of {expected.size} places"
        )


def _distributed_modes(backend):
    if backend != BACKEND:
        pytest.skip(
            f"this test runs when KERAS_BACKEND={backend} (now {BACKEND}); the "
            "suite runs once per backend"
        )
    return _modes()[backend]


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_search_masks_and_predictions_match_single_device(outputs, backend):
    arrays, _ = outputs
    for mode in _distributed_modes(backend):
        _same_masks(arrays, mode, "search")
        # The search did prune: round 2 keeps about a quarter of each kernel.
        last = [v for k, v in arrays.items() if k.startswith(f"{mode}/search/2/")]
        assert last and all(0.2 < v.mean() < 0.7 for v in last)
        np.testing.assert_allclose(
            arrays[f"{mode}/loss"], arrays["single/loss"], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            arrays[f"{mode}/predict"], arrays["single/predict"], atol=1e-5,
            err_msg=f"{mode}: the stripped model predicts differently",
        )


@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_lottery_schedule_masks_match_single_device(outputs, backend):
    arrays, _ = outputs
    for mode in _distributed_modes(backend):
        _same_masks(arrays, mode, "schedule")


def test_jax_masks_and_initial_values_are_laid_out_like_their_weight(outputs):
    _distributed_modes("jax")
    _, layouts = outputs
    for key, layout in layouts["data_parallel"].items():
        assert layout["spec"] == [None] * len(layout["spec"]), key
        assert layout["devices"] == JAX_DEVICES, key
    model_parallel = layouts["model_parallel"]
    for key, layout in model_parallel.items():
        weight = model_parallel[key.rsplit("/", 1)[0] + "/weight"]
        assert layout == weight, key
        # The LayoutMap shards every kernel over the 2-device "model" axis.
        assert layout["spec"] == [None, "model"], key
        assert layout["devices"] == JAX_DEVICES, key


def test_tensorflow_masks_and_initial_values_are_mirrored(outputs):
    _distributed_modes("tensorflow")
    _, layouts = outputs
    for key, layout in layouts["mirrored"].items():
        assert layout["type"] == "MirroredVariable", key
        assert layout["devices"] == TF_DEVICES, key
    for key, layout in layouts["single"].items():
        assert layout["devices"] == 1, key


def test_keras_distribution_ignored_off_jax_warns():
    if BACKEND == "jax":
        pytest.skip("keras.distribution is implemented on jax: nothing to warn")
    mesh = keras.distribution.DeviceMesh((1,), ("batch",), ["cpu:0"])
    distribution = keras.distribution.DataParallel(device_mesh=mesh)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    expected = f"{BACKEND} backend ignores keras.distribution"
    with distribution.scope(), pytest.warns(UserWarning, match=expected):
        wrapped = kl.wrap(model)
    # Training still works, on one device.
    wrapped.compile("sgd", "mse")
    wrapped.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        kl.wrap(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
