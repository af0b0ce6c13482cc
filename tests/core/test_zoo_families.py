"""The rest of the zoo: every keras.applications family and KerasHub
backbone that `test_zoo.py` does not run on every backend, each on one.

The families alternate between TensorFlow and PyTorch, in zoo order
(NASNet on TensorFlow: Keras does not build it on PyTorch), so
that each backend runs real architectures of its own beyond the
representative ones, and neither process carries them all. This file is
apart from `test_zoo.py` so that the suite's workers (`--dist loadfile`)
run the two side by side. `python benchmarks/zoo.py --backend all
--others all` runs every model on every backend.
"""

from __future__ import annotations

import keras
import pytest
from harness import assert_user_path

from benchmarks import zoo

BACKEND = keras.backend.backend()
OTHERS = [name for name in zoo.ALL if name not in zoo.REPRESENTATIVE]
# Keras refuses NASNet on PyTorch ("not available with the torch backend").
PINNED = {"NASNetMobile": "tensorflow"}
RUNS_ON = {name: PINNED.get(name, ("tensorflow", "torch")[i % 2])
           for i, name in enumerate(OTHERS)}


@pytest.mark.slow
@pytest.mark.parametrize("name", OTHERS)
def test_zoo_every_family(name):
    if RUNS_ON[name] != BACKEND:
        pytest.skip(f"{name} runs on {RUNS_ON[name]} (this run: {BACKEND}); "
                    "each family runs on one backend")
    assert_user_path(zoo.check(name))
