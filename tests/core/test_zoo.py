"""The model zoo: every model kind, the whole user path, on every backend.

The models and the path live in `benchmarks/zoo.py`, shared with the docs
table (docs/supported-models.md). The representative models run here, on
every backend (TensorFlow also exports three to TFLite); every other model
runs in `test_zoo_families.py`, on one backend each.
"""

from __future__ import annotations

import keras
import pytest
from harness import assert_user_path

from benchmarks import zoo

BACKEND = keras.backend.backend()


@pytest.mark.parametrize("name", zoo.REPRESENTATIVE)
def test_zoo_representative(name):
    row = zoo.check(name, tflite=BACKEND == "tensorflow" and name in (
        "FunctionalAdd", "Subclassed", "MobileNetV3Small"))
    assert_user_path(row)
    if "tflite" in row:
        assert row["tflite"].startswith("ok"), row["tflite"]
    assert row["in_place"] == (name not in ("FunctionalAdd", "MobileNetV3Small"))
    if name == "NestedBertBackbone":  # wrapped inside, not only the head
        assert row["wrappers"] > 5


def test_subclassed_model_output_layer_is_its_head():
    model, *_ = zoo.build("Subclassed")
    import keras_lottery as kl
    from keras_lottery.core.model import output_layer_keys

    kl.wrap(model)
    assert output_layer_keys(model) == ["head"]
    report = kl.prune(model, rate=0.5)
    rates = {w.name: w.rate for w in report.weights}
    assert rates["head/kernel"] == 0.25 and rates["hidden/kernel"] == 0.5
