"""Shared fixtures. The suite runs once per backend: KERAS_BACKEND is set by
`make test` for each process, and read once when Keras is imported."""

from __future__ import annotations

import os
from pathlib import Path

# torch before tensorflow where both load (see DESIGN.md).
if os.environ.get("KERAS_BACKEND") == "torch":
    import torch  # noqa: F401

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MNIST = ROOT.parent / "shared" / "data" / "mnist.npz"


def pytest_report_header(config):
    return f"keras backend: {BACKEND}, keras {keras.__version__}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts with a clean Keras session and fixed seeds.

    Without a forced garbage collection (`free_memory=False`): Python's own
    collector still runs, and a full collection before each of a thousand
    tests, in a worker holding many models, cost a third of the suite.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(1234)
    yield


@pytest.fixture
def mnist_path() -> Path:
    """Path to a real mnist.npz, from $KERAS_LOTTERY_MNIST or ../shared."""
    path = Path(os.environ.get("KERAS_LOTTERY_MNIST", DEFAULT_MNIST))
    if not path.is_file():
        pytest.skip(
            f"MNIST not found at {path}; set KERAS_LOTTERY_MNIST to an "
            "mnist.npz in Keras layout to run this test."
        )
    return path


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def mlp(sizes=(8, 16, 4), name=None) -> keras.Model:
    """A small Sequential MLP with an Input, for tests."""
    layers = [keras.Input((sizes[0],))]
    for i, units in enumerate(sizes[1:]):
        last = i == len(sizes) - 2
        layers.append(
            keras.layers.Dense(units, activation=None if last else "relu")
        )
    return keras.Sequential(layers, name=name)
