"""Selection on the backend's device (`pruning.on_device`): the host's masks.

`KERAS_LOTTERY_SELECTION=device` forces the device path on this CPU; each
test runs `prune` twice on the same weights and masks, once per path, and
requires the same masks and thresholds (ties included), on every backend.
The device runs are checked to have taken the device path: the host's
`prune_pool` is made to fail in them unless the device path must defer
(`min_remaining` binding, a weight not finite).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery._internal import placement
from keras_lottery.pruning import prune as prune_module
from tests.pruning.test_prune_device import conv_model

pytestmark = pytest.mark.filterwarnings("ignore:prune left:UserWarning")


def _host_forbidden(*args, **kwargs):
    raise AssertionError("the host path ran where the device path should")


def _run_both(monkeypatch, make_model, steps, *, defer=False, **options):
    """Masks and reports of `steps` prunes on each path, from one model's
    weights; the device run's host selection fails unless `defer`."""
    results = {}
    for path in ("host", "device"):
        model = make_model()
        with monkeypatch.context() as patch:
            patch.setenv(placement.SELECTION_ENV, path)
            if path == "device" and not defer:
                patch.setattr(prune_module, "prune_pool", _host_forbidden)
            reports = [kl.prune(model, **step, **options) for step in steps]
        results[path] = (kl.get_masks(model), reports)
    (host_masks, host_reports), (dev_masks, dev_reports) = (
        results["host"], results["device"])
    assert host_masks.keys() == dev_masks.keys()
    for key in host_masks:
        np.testing.assert_array_equal(dev_masks[key], host_masks[key], err_msg=key)
    for host, dev in zip(host_reports, dev_reports):
        assert [(w.name, w.before, w.after, w.threshold) for w in dev.weights] == [
            (w.name, w.before, w.after, w.threshold) for w in host.weights]
    return host_masks, host_reports


STEPS = [dict(rate=0.3), dict(rate=0.5), dict(rate=0.2)]


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_device_path_sets_the_host_masks_with_ties(scope, monkeypatch):
    """Weights of a few distinct values (most scores tie), pruned three
    times (pruned weights are then never candidates again)."""
    _, reports = _run_both(monkeypatch, conv_model, STEPS, scope=scope,
                           min_remaining=0)
    assert reports[-1].weights[0].after < reports[0].weights[0].before


def test_device_path_in_the_sparsity_mode(monkeypatch):
    _run_both(monkeypatch, conv_model,
              [dict(sparsity=0.4), dict(sparsity=0.75)], min_remaining=0)


def test_device_path_defers_where_min_remaining_binds(monkeypatch):
    """Global pruning empties the tiny depthwise kernel unless protected:
    the device path hands that step to the host, which keeps 5 of it."""
    masks, _ = _run_both(monkeypatch, conv_model, [dict(rate=0.9)],
                         defer=True, scope="global", min_remaining=5)
    assert int(masks["depthwise/kernel"].sum()) == 5


def test_device_path_refuses_a_nan_weight_like_the_host(monkeypatch):
    model = conv_model()
    wrapper = model.get_layer("fc")
    kernel = keras.ops.convert_to_numpy(wrapper.prunable_variable("kernel")).copy()
    kernel[0, 0] = np.nan
    wrapper.prunable_variable("kernel").assign(kernel)
    monkeypatch.setenv(placement.SELECTION_ENV, "device")
    with pytest.raises(ValueError, match=r"'fc/kernel' holds NaN or infinite"):
        kl.prune(model, 0.5)


def test_device_path_on_a_real_architecture(monkeypatch):
    """MobileNetV2 (keras.applications, random weights): two global steps
    (per-layer pools are the conv model's tests: under JAX each new
    tensor shape compiles the device ops once, too slow for a test)."""
    def make():
        keras.utils.set_random_seed(3)
        return kl.wrap(keras.applications.MobileNetV2(
            input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=4))

    _run_both(monkeypatch, make, [dict(rate=0.5), dict(rate=0.2)],
              scope="global", min_remaining=0)


def test_selection_setting_is_checked(monkeypatch):
    monkeypatch.setenv(placement.SELECTION_ENV, "gpu")
    with pytest.raises(ValueError,
                       match=r"KERAS_LOTTERY_SELECTION must be one of .*'gpu'"):
        kl.prune(conv_model(), 0.5)
    monkeypatch.setenv(placement.SELECTION_ENV, "auto")
    variable = conv_model().get_layer("fc").prunable_variable("kernel")
    # "auto" follows where the weight lives: the backend's default device.
    assert placement.on_accelerator(variable) is _default_is_accelerator()
    assert placement.select_on_device([variable]) is _default_is_accelerator()
    assert placement.on_accelerator(np.ones(2)) is False  # a host array
    for choice in ("host", "device"):
        monkeypatch.setenv(placement.SELECTION_ENV, choice.upper())
        assert placement.select_on_device([variable]) is (choice == "device")


def _default_is_accelerator() -> bool:
    """Whether the backend places new variables on a GPU or TPU, asked of
    the backend itself rather than of `placement`."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU")
                or tf.config.list_logical_devices("TPU"))


def test_a_magnitude_subclass_keeping_its_score_selects_on_device(monkeypatch):
    """A subclass that keeps |w| keeps the device path; one that changes
    the score does not (its own scores decide, on the host)."""
    from keras_lottery.pruning.scores import Magnitude

    class Logged(Magnitude):
        pass

    class Squared(Magnitude):
        def score(self, weights, context):
            return {k: np.square(w) for k, w in weights.items()}

    _run_both(monkeypatch, conv_model, STEPS[:1], criterion=Logged(),
              min_remaining=0)
    monkeypatch.setenv(placement.SELECTION_ENV, "device")
    monkeypatch.setattr(prune_module, "prune_pool", _host_forbidden)
    with pytest.raises(AssertionError, match="the host path ran"):
        kl.prune(conv_model(), 0.3, criterion=Squared())
