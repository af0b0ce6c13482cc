"""Tests of keras_lottery.apps.data: MNIST from a file, MNIST-1D generated here."""

from __future__ import annotations

import numpy as np
import pytest

from keras_lottery.apps import data as kd


def _fake_mnist(path, n_train=60, n_test=20, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_load_mnist_from_path_scales_splits_and_flattens(tmp_path):
    raw = _fake_mnist(tmp_path / "m.npz")
    data = kd.load_mnist(tmp_path / "m.npz", validation=10)
    assert data.x_train.shape == (50, 784) and data.x_val.shape == (10, 784)
    assert data.x_test.shape == (20, 784)
    for x in (data.x_train, data.x_val, data.x_test):
        assert x.dtype == np.float32 and x.min() >= 0.0 and x.max() <= 1.0
    assert data.y_train.dtype == np.int64
    # The validation split is the *last* images of the training set.
    np.testing.assert_array_equal(data.y_val, raw["y_train"][50:])
    np.testing.assert_allclose(
        data.x_val[0], raw["x_train"][50].reshape(-1) / 255.0, rtol=1e-6
    )
    unflat = kd.load_mnist(tmp_path / "m.npz", validation=0, flatten=False)
    assert unflat.x_train.shape == (60, 28, 28) and len(unflat.y_val) == 0


def test_load_mnist_reads_the_environment_variable(tmp_path, monkeypatch):
    _fake_mnist(tmp_path / "env.npz")
    monkeypatch.setenv(kd.MNIST_ENV, str(tmp_path / "env.npz"))
    data = kd.load_mnist(validation=5)
    assert len(data.y_train) == 55 and str(tmp_path) in data.source


def test_load_mnist_missing_file_says_what_is_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"x_train.*KERAS_LOTTERY_MNIST"):
        kd.load_mnist(tmp_path / "nope.npz")


def test_load_mnist_missing_key(tmp_path):
    _fake_mnist(tmp_path / "m.npz", y_test=None)
    with pytest.raises(ValueError, match=r"lacks \['y_test'\]"):
        kd.load_mnist(tmp_path / "m.npz")


def test_load_mnist_bad_shapes_and_labels(tmp_path):
    _fake_mnist(tmp_path / "a.npz", x_train=np.zeros((60, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"\(n, 28, 28\).*\(60, 32, 32\)"):
        kd.load_mnist(tmp_path / "a.npz")
    _fake_mnist(tmp_path / "b.npz", y_train=np.zeros(59, np.uint8))
    with pytest.raises(ValueError, match="one label per image"):
        kd.load_mnist(tmp_path / "b.npz")
    _fake_mnist(tmp_path / "c.npz", y_test=np.full(20, 12, np.uint8))
    with pytest.raises(ValueError, match="digits 0-9"):
        kd.load_mnist(tmp_path / "c.npz")


def test_load_mnist_not_an_npz(tmp_path):
    (tmp_path / "m.npz").write_text("not a zip file")
    with pytest.raises(ValueError, match=r"Could not read .* as a NumPy .npz"):
        kd.load_mnist(tmp_path / "m.npz")


def test_load_mnist_bad_validation(tmp_path):
    _fake_mnist(tmp_path / "m.npz")
    with pytest.raises(ValueError, match=r"\[0, 60\).*validation=60"):
        kd.load_mnist(tmp_path / "m.npz", validation=60)
    with pytest.raises(TypeError, match="validation"):
        kd.load_mnist(tmp_path / "m.npz", validation=0.1)


def test_load_mnist_without_path_explains_offline_failure(monkeypatch):
    import keras

    monkeypatch.delenv(kd.MNIST_ENV, raising=False)

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(RuntimeError, match=r"no network.*KERAS_LOTTERY_MNIST"):
        kd.load_mnist()


def test_real_mnist_split(mnist_path):
    data = kd.load_mnist(mnist_path)
    assert data.x_train.shape == (55000, 784)
    assert data.x_val.shape == (5000, 784)
    assert data.x_test.shape == (10000, 784)
    assert data.x_train.dtype == np.float32 and float(data.x_train.max()) == 1.0
    # First labels of the official files (see shared/data/README.md).
    assert data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_mnist1d_is_generated_offline_with_the_published_split(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    state = np.random.get_state()[1].copy()
    data = kd.load_mnist1d()
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.x_val.shape == (0, 40)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert set(np.unique(data.y_train)) == set(range(10))
    assert abs(float(data.x_train.mean())) < 0.1  # mnist1d standardizes
    # The global NumPy generator, which mnist1d reseeds, is restored.
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_mnist1d_seed_and_validation():
    a = kd.load_mnist1d(seed=1, num_samples=200, validation=20)
    b = kd.load_mnist1d(seed=1, num_samples=200, validation=20)
    c = kd.load_mnist1d(seed=2, num_samples=200, validation=20)
    assert a.x_train.shape == (140, 40) and a.x_val.shape == (20, 40)
    assert a.x_test.shape == (40, 40)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    with pytest.raises(ValueError, match="num_samples"):
        kd.load_mnist1d(num_samples=5)


def test_subset_and_describe():
    data = kd.load_mnist1d(num_samples=200, validation=50)
    small = data.subset(train=40, test=10)
    assert (len(small.y_train), len(small.y_val), len(small.y_test)) == (40, 4, 10)
    assert small.describe().startswith("mnist1d: 40 train / 4 validation / 10 test")


def test_iteration_batches_counts_steps_across_passes():
    x = np.arange(10, dtype="float32")[:, None]
    y = np.arange(10)
    batches = kd.iteration_batches(x, y, batch_size=3, steps=7, seed=0)
    assert len(batches) == 7
    seen = [batches[i][1] for i in range(7)]
    assert all(len(b) == 3 for b in seen)
    # Each pass (3 batches of 3) draws distinct examples.
    first_pass = np.concatenate(seen[:3])
    assert len(set(first_pass.tolist())) == 9
    ordered = kd.iteration_batches(x, y, batch_size=4, steps=3, shuffle=False)
    assert [ordered[i][1].tolist() for i in range(3)] == [
        [0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]
    ]


def test_iteration_batches_drive_fit_for_exactly_the_steps():
    import keras

    x = np.random.default_rng(0).normal(size=(50, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = kd.iteration_batches(x, y, batch_size=10, steps=12)
    model.fit(batches, epochs=4, steps_per_epoch=3, verbose=0)
    assert int(model.optimizer.iterations) == 12  # 2.4 passes over the data


def test_iteration_batches_errors():
    x, y = np.zeros((5, 2)), np.zeros(5)
    with pytest.raises(ValueError, match="batch_size"):
        kd.iteration_batches(x, y, batch_size=0, steps=1)
    with pytest.raises(ValueError, match="larger than the data"):
        kd.iteration_batches(x, y, batch_size=6, steps=1)
    with pytest.raises(ValueError, match="same number of examples"):
        kd.iteration_batches(x, y[:4], batch_size=2, steps=1)
