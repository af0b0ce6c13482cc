"""No silent layer collapse: `prune` warns when it leaves a weight tensor
(almost) empty, and `min_remaining` takes a fraction of each tensor."""

from __future__ import annotations

import math
import time
import warnings

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.pruning.pools import keep_count as _keep_count


def collapse_warnings(call) -> list[str]:
    """Runs `call()` and returns the messages of its collapse warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [
        str(w.message) for w in caught
        if issubclass(w.category, UserWarning)
        and str(w.message).startswith("prune left")
    ]


def counts(model) -> dict[str, int]:
    return {k: int(np.count_nonzero(v)) for k, v in kl.get_masks(model).items()}


def tiny_middle(scale: float = 1e-3) -> keras.Model:
    """Dense 32-64-64-2 whose middle kernel is scaled down before wrapping,
    so that global magnitude pruning takes it first."""
    model = keras.Sequential([
        keras.Input((32,)),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(64, activation="relu", name="fc2"),
        keras.layers.Dense(2, name="out"),
    ])
    fc2 = model.get_layer("fc2")
    fc2.kernel.assign(scale * keras.ops.convert_to_numpy(fc2.kernel))
    return kl.wrap(model)


def test_global_prune_that_empties_a_layer_warns_and_names_it():
    model = tiny_middle()
    with pytest.warns(UserWarning, match="prune left") as record:
        kl.prune(model, rate=0.8, scope="global")
    assert counts(model)["fc2/kernel"] == 1  # min_remaining=1 held it
    messages = [str(w.message) for w in record if "prune left" in str(w.message)]
    assert len(messages) == 1  # one warning per call, listing the tensors
    message = messages[0]
    assert "'fc2/kernel' (1 of 4,096 left)" in message
    assert "fc1/kernel" not in message and "out/kernel" not in message
    assert "min_remaining=" in message and "scope='layer'" in message


def test_an_emptied_tensor_is_named_as_cutting_every_path():
    model = tiny_middle()
    with pytest.warns(UserWarning, match="cuts every path") as record:
        kl.prune(model, rate=0.8, scope="global", min_remaining=0)
    assert counts(model)["fc2/kernel"] == 0
    message = next(str(w.message) for w in record if "prune left" in str(w.message))
    assert "'fc2/kernel' (0 of 4,096 left: this cuts every path through it)" in (
        message
    )


def test_a_tensor_already_collapsed_is_not_reported_again():
    model = tiny_middle()
    assert collapse_warnings(lambda: kl.prune(model, rate=0.8, scope="global"))
    # fc2 keeps its one weight (min_remaining); fc1 loses half, still far
    # from collapse: nothing new to report.
    assert collapse_warnings(lambda: kl.prune(model, rate=0.5, scope="global")) == []


@pytest.mark.parametrize("fraction", [0.05, 0.3])
def test_fractional_min_remaining_keeps_that_fraction_of_each_tensor(fraction):
    model = tiny_middle()
    sizes = {k: v.size for k, v in kl.get_masks(model).items()}
    messages = collapse_warnings(
        lambda: kl.prune(model, rate=0.8, scope="global", min_remaining=fraction)
    )
    assert messages == []
    kept = counts(model)
    for key, size in sizes.items():
        assert kept[key] >= math.ceil(fraction * size), key
    # The small weights still go first: fc2 is cut to exactly its floor.
    assert kept["fc2/kernel"] == math.ceil(fraction * 4096)
    # The pool loses its count (4915 of 6144) where the floors allow it.
    floors = math.ceil(fraction * 2048) + math.ceil(fraction * 4096)
    assert kept["fc1/kernel"] + kept["fc2/kernel"] == max(6144 - 4915, floors)


def test_fractional_min_remaining_at_layer_scope_and_in_units():
    model = kl.wrap(mlp((10, 20, 30, 5)))
    kl.prune(model, rate=0.9, output_rate=0.9, min_remaining=0.25)
    assert counts(model) == {
        "dense/kernel": 50,  # ceil(0.25 * 200)
        "dense_1/kernel": 150,  # ceil(0.25 * 600)
        "dense_2/kernel": 38,  # ceil(0.25 * 150) = ceil(37.5)
    }
    # Channel granularity: a fraction of the output units (columns).
    model = kl.wrap(mlp((10, 20, 30, 5)))
    kl.prune(model, rate=0.9, output_rate=0.9, granularity="channel",
             min_remaining=0.25)
    columns = [int(v.any(axis=0).sum()) for v in kl.get_masks(model).values()]
    # ceil(0.25 * 20), ceil(0.25 * 30); the output layer's classes are
    # never a channel group.
    assert columns == [5, 8, 5]


def test_keep_count_rounds_up_without_float_noise():
    assert _keep_count(0.07, 100) == 7  # 0.07 * 100 == 7.000000000000001
    assert _keep_count(0.1, 10) == 1
    assert _keep_count(0.001, 10) == 1
    assert _keep_count(0.0, 10) == 0
    assert _keep_count(3, 10) == 3


def test_fractional_min_remaining_passes_through_lottery_search():
    model = tiny_middle()
    model.compile("sgd", "mse")
    x, y = np.ones((8, 32), "float32"), np.ones((8, 2), "float32")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kl.lottery_search(
            model, lambda m: m.fit(x, y, epochs=1, verbose=0), rounds=1,
            rate=0.8, scope="global", verbose=0,
            min_remaining=0.05,
        )
    assert not [w for w in caught if "prune left" in str(w.message)]
    assert counts(model)["fc2/kernel"] >= math.ceil(0.05 * 4096)


@pytest.mark.parametrize(
    "value",
    [-1, -0.5, 1.0, 1.5, float("nan"), True, False, "0.1", None, [1]],
    ids=repr,
)
def test_bad_min_remaining_is_a_clear_error(value):
    model = kl.wrap(mlp((4, 3, 2)))
    with pytest.raises(ValueError, match="Received: min_remaining="):
        kl.prune(model, 0.5, min_remaining=value)


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_lenet_300_100_at_half_rate_does_not_warn(scope):
    model = kl.wrap(mlp((784, 300, 100, 10)))
    assert collapse_warnings(lambda: kl.prune(model, rate=0.5, scope=scope)) == []


def test_uniformly_sparse_model_does_not_warn():
    # Layer-wise IMP to 99.9% sparsity: every tensor is nearly empty, but
    # none far sparser than the rest, and none empty.
    model = kl.wrap(mlp((200, 100, 50, 10)))
    for _ in range(10):
        assert collapse_warnings(lambda: kl.prune(model, rate=0.5)) == []
    assert counts(model)["dense/kernel"] < 0.001 * 20000


def test_resnet50_global_half_rate_does_not_warn():
    start = time.perf_counter()
    model = kl.wrap(
        keras.applications.ResNet50(
            weights=None, input_shape=(32, 32, 3), classes=10
        )
    )
    messages = collapse_warnings(
        lambda: kl.prune(model, rate=0.5, scope="global")
    )
    assert messages == []
    print(f"ResNet50 build, wrap and prune: {time.perf_counter() - start:.1f} s")
