"""The model zoo: every model kind, the whole user path, on every backend.

The models and the path live in `benchmarks/zoo.py`, shared with the docs
table (docs/supported-models.md). The representative models run on every
backend; every other keras.applications family runs on TensorFlow (whose
process also exports to TFLite), where the suite has the most time left.
"""

from __future__ import annotations

import keras
import pytest

from benchmarks import zoo

BACKEND = keras.backend.backend()
OTHERS = [name for name in zoo.ALL if name not in zoo.REPRESENTATIVE]


def _assert_user_path(row):
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


@pytest.mark.parametrize("name", zoo.REPRESENTATIVE)
def test_zoo_representative(name):
    row = zoo.check(name, tflite=BACKEND == "tensorflow" and name in (
        "FunctionalAdd", "Subclassed", "MobileNetV3Small"))
    _assert_user_path(row)
    if "tflite" in row:
        assert row["tflite"].startswith("ok"), row["tflite"]
    assert row["in_place"] == (name not in ("FunctionalAdd", "MobileNetV3Small"))
    if name == "NestedBertBackbone":  # wrapped inside, not only the head
        assert row["wrappers"] > 5


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="all families: TF only")
@pytest.mark.parametrize("name", OTHERS)
def test_zoo_every_family(name):
    _assert_user_path(zoo.check(name))


def test_subclassed_model_output_layer_is_its_head():
    model, *_ = zoo.build("Subclassed")
    import keras_lottery as kl
    from keras_lottery.core.model import output_layer_keys

    kl.wrap(model)
    assert output_layer_keys(model) == ["head"]
    report = kl.prune(model, rate=0.5)
    rates = {w.name: w.rate for w in report.weights}
    assert rates["head/kernel"] == 0.25 and rates["hidden/kernel"] == 0.5
