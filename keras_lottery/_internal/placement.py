"""Where a variable's value lives: the host's CPU or an accelerator.

`prune` selects on the backend's device only where that is faster: on a
GPU or TPU, where copying every weight to the host costs more than the
selection. On a CPU the host path is faster (measured, docs/benchmarks.md:
NumPy against `keras.ops` on the same cores). `KERAS_LOTTERY_SELECTION`
(`"auto"`, `"host"` or `"device"`) overrides the choice; tests force the
device path on CPU with it.

Example:

>>> import numpy as np
>>> from keras_lottery._internal.placement import on_accelerator
>>> on_accelerator(np.ones(2))  # a host array
False
"""

from __future__ import annotations

import os

import keras

from keras_lottery._internal.processes import split_across_processes

#: Environment variable choosing where `prune` selects.
SELECTION_ENV = "KERAS_LOTTERY_SELECTION"
SELECTIONS = ("auto", "host", "device")


def on_accelerator(variable) -> bool:
    """Whether `variable`'s value is held by a GPU or TPU."""
    value = variable.value if isinstance(variable, keras.Variable) else variable
    backend = keras.backend.backend()
    if backend == "jax":
        devices = getattr(value, "devices", None)
        return bool(devices) and any(d.platform != "cpu" for d in devices())
    if backend == "torch":
        # NumPy 2 arrays have a `device` too: the string "cpu".
        return getattr(getattr(value, "device", None), "type", "cpu") != "cpu"
    if backend == "tensorflow":
        device = str(getattr(value, "device", "") or "").upper()
        return ":GPU:" in device or ":TPU:" in device
    return False


def selection() -> str:
    """`KERAS_LOTTERY_SELECTION`, checked: `"auto"` when unset.

    Raises:
        ValueError: For another value, naming it and the choices.
    """
    value = os.environ.get(SELECTION_ENV, "auto").strip().lower() or "auto"
    if value not in SELECTIONS:
        raise ValueError(
            f"{SELECTION_ENV} must be one of {SELECTIONS}. Received: "
            f"{SELECTION_ENV}={os.environ[SELECTION_ENV]!r}"
        )
    return value


def select_on_device(variables) -> bool:
    """Whether `prune` selects on the device for these variables: as
    `KERAS_LOTTERY_SELECTION` says, or (`"auto"`) when the first of them
    lives on an accelerator. Never for a weight split across JAX processes
    (no process can read its selection back alone): the host path gathers
    it (`core.state.host_array`)."""
    choice = selection()
    if any(split_across_processes(v) for v in variables):
        return False
    if choice != "auto":
        return choice == "device"
    return bool(variables) and on_accelerator(variables[0])
