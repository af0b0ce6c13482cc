"""The shared harness of per-layer checks, as Keras' `run_layer_test`.

`check_prunable_layer(factory, inputs)` is what every prunable layer type
must satisfy, built-in or registered: wrapped with an all-ones mask it
computes the same outputs and gradients as the plain layer; with a random
mask it computes what the layer with `w * mask` baked in computes, pruned
weights get no update from an optimizer step, and kept weights still learn.
`outputs_and_gradients` is the one per-backend gradient helper of the suite;
`assert_user_path` checks a row of the model zoo (`benchmarks/zoo.py`).
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

import keras_lottery as kl
from keras_lottery._internal.gradients import gradients


def flat(outputs) -> list:
    return [o for o in keras.tree.flatten(outputs) if o is not None]


def outputs_and_gradients(
    layer, inputs: tuple, variables, **kwargs
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`layer(*inputs)` and the gradients of its sum w.r.t. raw `variables`.

    The one per-backend helper of the suite, on the package's own
    (`keras_lottery._internal.gradients`, which SNIP, GraSP and SynFlow
    use). `variables` are Keras variables among `layer.trainable_variables`
    (for a wrapper: the wrapped layer's own, unmasked variables). Returns
    NumPy arrays.
    """

    def total():
        outputs = flat(layer(*inputs, **kwargs))
        return sum(ops.sum(o) for o in outputs), outputs

    (_, outputs), grads = gradients(total, list(variables), has_aux=True)
    return numpy_list(outputs), grads


def numpy_list(outputs) -> list[np.ndarray]:
    return [np.asarray(ops.convert_to_numpy(o)) for o in flat(outputs)]


def symbolic(inputs) -> list:
    return [keras.KerasTensor(x.shape, dtype=x.dtype) for x in inputs]


def twins(factory, inputs):
    """A built layer and a wrapper around a built copy with equal weights."""
    plain = factory()
    plain(*symbolic(inputs))  # builds without running (fast on JAX)
    copy = factory()
    copy(*symbolic(inputs))
    copy.set_weights(plain.get_weights())
    wrapper = kl.PrunableWrapper(copy)
    wrapper(*symbolic(inputs))
    return plain, wrapper


def random_masks(wrapper, rng, keep=0.5):
    masks = {}
    for name in wrapper.weight_names:
        shape = wrapper.get_mask(name).shape
        mask = (rng.random(shape) < keep).astype("float32")
        mask.flat[0] = 0.0  # at least one pruned and one kept entry
        mask.flat[-1] = 1.0
        wrapper.set_mask(name, mask)
        masks[name] = mask
    return masks


def assert_close(actual, expected, atol=1e-6):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=atol)




def check_prunable_layer(factory, inputs: tuple, expected_weights=None,
                         rng=None) -> kl.PrunableWrapper:
    """Runs the per-layer checks on a fresh layer from `factory()`.

    Args:
        factory: Builds the layer (called twice: the plain twin and the
            wrapped one get equal weights).
        inputs: The call arguments, NumPy arrays.
        expected_weights: The weight names the wrapper must mask.
        rng: A NumPy generator for the random masks.

    Returns:
        The wrapper, with its random masks set.
    """
    rng = rng or np.random.default_rng(0)
    kind = type(factory()).__name__
    plain, wrapper = twins(factory, inputs)
    if expected_weights is not None:
        assert wrapper.weight_names == expected_weights

    # All-ones mask (as built): the same outputs and gradients as the layer.
    for name in wrapper.weight_names:
        assert np.all(wrapper.get_mask(name) == 1.0)
    inner = wrapper.layer.trainable_variables
    assert [v.shape for v in inner] == [v.shape for v in plain.trainable_variables]
    outputs, grads = outputs_and_gradients(wrapper, inputs, inner)
    expected, expected_grads = outputs_and_gradients(
        plain, inputs, plain.trainable_variables
    )
    assert_close(outputs, expected)
    assert_close(grads, expected_grads, atol=1e-5)

    # Random mask: the layer with `w * mask` baked in computes the same
    # outputs and the same gradients for every kept weight; pruned weights
    # are exactly zero in the variable, and an optimizer step keeps them so.
    masks = random_masks(wrapper, rng)
    by_id = {id(v): n for n, v in kl.prunable_weights(plain).items()}
    plain.set_weights(
        [
            w * masks[by_id[id(v)]] if id(v) in by_id else w
            for v, w in zip(plain.weights, plain.get_weights())
        ]
    )
    names = wrapper.weight_names
    outputs, grads = outputs_and_gradients(
        wrapper, inputs, [wrapper.prunable_variable(n) for n in names]
    )
    assert_close(outputs, numpy_list(plain(*inputs)), atol=1e-5)
    plain_weights = kl.prunable_weights(plain)
    _, plain_grads = outputs_and_gradients(
        plain, inputs, [plain_weights[n] for n in names]
    )
    optimizer = keras.optimizers.SGD(1.0)
    optimizer.build([wrapper.prunable_variable(n) for n in names])
    optimizer.apply(
        [keras.ops.ones(tuple(wrapper.prunable_variable(n).shape))
         for n in names],
        [wrapper.prunable_variable(n) for n in names],
    )
    for name, grad, plain_grad in zip(names, grads, plain_grads):
        pruned = masks[name] == 0
        assert_close(grad[~pruned], plain_grad[~pruned], atol=1e-5)
        raw = np.asarray(ops.convert_to_numpy(wrapper.prunable_variable(name)))
        assert np.all(raw[pruned] == 0.0), f"{kind}/{name}: pruned weight moved"
        # Kept weights still learn (the check above would pass vacuously).
        assert np.any(grad[~pruned] != 0.0), f"{kind}/{name}: no gradient at all"
    return wrapper


def assert_user_path(row: dict) -> None:
    """The whole user path held on one zoo model (`benchmarks.zoo.check`)."""
    name = row["model"]
    assert row["all_ones_diff"] <= 1e-5, f"{name}: wrap changed the outputs"
    assert row["coverage"] >= 0.95, f"{name}: coverage {row['coverage']:.3f}"
    assert not row["unreached_warning"] or row["unreached"]
    if not name.endswith("Backbone"):  # a backbone ends in a normalization
        assert row["outputs"], f"{name}: no output layer found"
    assert 0.3 < row["sparsity"] < 0.6
    assert row["pruned_nonzero_after_training"] == 0, f"{name}: revived"
    assert row["strip_diff"] <= 1e-4 and not row["strip_has_wrappers"]
    assert row["keras_round_trip_masks_equal"], f"{name}: masks lost"
    assert row["keras_round_trip_diff"] <= 1e-5, f"{name}: .keras differs"


def tiny_search(seed: int, directory, before_fit=None) -> None:
    """The suite's tiny real search, for the trial tests (local and Ray).

    A 6-8-2 MLP seeded by `seed`, on fixed data, searched for 2 rounds at
    rate 0.5 and saved in `directory`. `before_fit()` runs before each
    training (the fault tests' hooks: raise, or wait to be killed). A
    top-level function, so `run_trials` can run it in another process.
    """
    # The same layer names wherever it runs.
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(seed)
    model = kl.wrap(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
        keras.layers.Dense(2),
    ]))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6)).astype("float32")
    y = rng.normal(size=(32, 2)).astype("float32")

    def fit_fn(m):
        if before_fit is not None:
            before_fit()
        return m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)

    kl.lottery_search(model, fit_fn, rounds=2, rate=0.5, seed=seed,
                      directory=directory, verbose=0)
