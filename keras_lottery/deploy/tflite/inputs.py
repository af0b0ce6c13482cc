"""The model and the inputs an export works on: specs, samples, data."""

from __future__ import annotations

import keras
import numpy as np

from keras_lottery.core.copy import strip
from keras_lottery.core.model import check_model, wrappers

VERIFY_SAMPLES = 8
MAX_REPRESENTATIVE = 200
#: Length given to an input axis of unknown size (a text model's sequence)
#: in the verification samples.
SEQUENCE_LENGTH = 8


def prepare_model(model) -> keras.Model:
    """The plain (stripped) model to export, with symbolic inputs."""
    check_model(model)
    if wrappers(model):
        model = strip(model)
    return _with_inputs(model)


def _with_inputs(model) -> keras.Model:
    """A subclassed model, as a functional one with symbolic inputs.

    The conversion and the checks read `model.inputs`, which a subclassed
    model does not have; its input shape comes from its build config.
    """
    try:
        if model.inputs:
            return model
    except (AttributeError, ValueError):
        pass
    shape = (model.get_build_config() or {}).get("input_shape")
    if not isinstance(shape, (list, tuple)) or not shape or isinstance(
            shape[0], (list, tuple, dict)):
        raise ValueError(
            f"Model '{model.name}' ({type(model).__name__}) has no symbolic "
            "inputs and no single input shape to give it one. Export "
            "keras.Model(inputs, model(inputs)) built on keras.Input(...) "
            "instead."
        )
    inputs = keras.Input(tuple(shape[1:]), batch_size=None)
    return keras.Model(inputs, model(inputs), name=model.name)


def input_specs(model) -> list[tuple[tuple, str]]:
    specs = []
    for tensor in model.inputs:
        specs.append((tuple(tensor.shape), str(tensor.dtype)))
    return specs


def normalize_data(data, model, what: str) -> list[np.ndarray]:
    """Representative or sample data as one array per model input."""
    specs = input_specs(model)
    if callable(data):
        samples = []
        for i, sample in enumerate(data()):
            if i >= MAX_REPRESENTATIVE:
                break
            samples.append(sample)
        if not samples:
            raise ValueError(f"`{what}` yielded no samples. Received: "
                             f"{what}={data!r}.")
        first = samples[0]
        if isinstance(first, dict):
            data = {k: np.concatenate([np.asarray(s[k]) for s in samples])
                    for k in first}
        else:
            seqs = [s if isinstance(s, (list, tuple)) else [s] for s in samples]
            data = [np.concatenate([np.asarray(s[i]) for s in seqs])
                    for i in range(len(seqs[0]))]
    if isinstance(data, dict):
        names = [t.name for t in model.inputs]
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(
                f"`{what}` is a dict but lacks the model inputs {missing}. "
                f"Received keys: {sorted(data)}."
            )
        arrays = [data[n] for n in names]
    elif isinstance(data, (list, tuple)) and len(specs) > 1:
        arrays = list(data)
    elif isinstance(data, (list, tuple)) and len(data) == 1 and np.ndim(
            data[0]) == len(specs[0][0]):
        arrays = [data[0]]
    else:
        arrays = [data]
    try:
        arrays = [np.asarray(a) for a in arrays]
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"`{what}` must be a NumPy array (one per model input), a "
            f"list/dict of them or a generator function. Received: "
            f"{what} of type {type(data).__name__}."
        ) from error
    if len(arrays) != len(specs):
        raise ValueError(
            f"The model has {len(specs)} inputs, `{what}` gives "
            f"{len(arrays)} arrays. Pass one array per input."
        )
    out = []
    for array, (shape, dtype) in zip(arrays, specs):
        if array.dtype == object or array.ndim != len(shape) or any(
            s is not None and s != a for s, a in zip(shape[1:], array.shape[1:])
        ):
            raise ValueError(
                f"`{what}` must hold a batch of model inputs of shape "
                f"{shape} (first axis: samples). Received: array of shape "
                f"{array.shape}."
            )
        out.append(array.astype(dtype))
    return out


def sample_inputs(model) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = []
    for shape, dtype in input_specs(model):
        full = (VERIFY_SAMPLES,
                *[SEQUENCE_LENGTH if s is None else s for s in shape[1:]])
        if "int" in dtype:
            arrays.append(rng.integers(0, 2, size=full).astype(dtype))
        else:
            arrays.append(rng.standard_normal(full).astype(dtype))
    return arrays
