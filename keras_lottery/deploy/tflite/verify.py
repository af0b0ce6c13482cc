"""Checking a `.tflite` file's outputs against the Keras model's."""

from __future__ import annotations

import keras
import numpy as np

from keras_lottery._internal import graph
from keras_lottery.deploy.tflite.interpreter import first_line, load
from keras_lottery.deploy.tflite.report import ExportError

#: Largest accepted `max |tflite - keras| / max |keras|` over all outputs,
#: per quantization mode (checked by `export_tflite(verify=True)`).
TOLERANCES: dict[str | None, float] = {
    None: 1e-4,
    "float16": 1e-2,
    "dynamic": 5e-2,
    "int8": 1.5e-1,
}


def run_signature(interpreter, inputs: list[np.ndarray], names: list[str]):
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    if len(details) == 1:
        feed = {next(iter(details)): inputs[0]}
    else:
        feed = {}
        for name, array in zip(names, inputs):
            if name not in details:
                raise ExportError(
                    f"The .tflite signature has inputs {sorted(details)}, "
                    f"which do not include the model input '{name}'."
                )
            feed[name] = array
    result = runner(**feed)
    keys = sorted(result, key=lambda k: (len(k), k))
    return [np.asarray(result[k]) for k in keys]


def reference(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    from keras import ops

    outputs = model(graph.pack_inputs(model, inputs), training=False)
    return [np.asarray(ops.convert_to_numpy(o))
            for o in keras.tree.flatten(outputs)]


def verify(content: bytes, model, inputs, quantize, xnnpack_loads: bool):
    tolerance = TOLERANCES[quantize]
    expected = reference(model, inputs)
    names = [t.name for t in model.inputs]
    errors = {}
    for label, xnnpack in (("xnnpack", True), ("builtin", False)):
        if xnnpack and not xnnpack_loads:
            continue
        try:
            got = run_signature(load(content, xnnpack=xnnpack), inputs, names)
        except (RuntimeError, ValueError) as error:
            where = ("the default delegates (XNNPACK)" if xnnpack
                     else "the builtin kernels")
            raise ExportError(
                f"The converted model fails to run with {where}: "
                f"{first_line(error)}", runtime=label, kind="run",
            ) from error
        if len(got) != len(expected):
            raise ExportError(
                f"The .tflite model has {len(got)} outputs, the Keras model "
                f"{len(expected)}."
            )
        worst = 0.0
        for a, b in zip(got, expected):
            if a.shape != b.shape:
                raise ExportError(
                    f"Output shape {a.shape} of the .tflite model differs "
                    f"from the Keras model's {b.shape}."
                )
            scale = max(float(np.max(np.abs(b))), 1e-3)
            worst = max(worst, float(np.max(np.abs(a.astype("float64") -
                                                    b))) / scale)
        errors[label] = worst
        if not worst <= tolerance:
            raise ExportError(
                f"The .tflite model's outputs differ from the Keras model's "
                f"({label} kernels): max |tflite - keras| / max |keras| = "
                f"{worst:.3g}, above the tolerance {tolerance:g} for "
                f"quantize={quantize!r}." + (
                    " For int8, pass representative_data drawn from the "
                    "real input distribution." if quantize == "int8" else ""),
                runtime=label, kind="mismatch",
            )
    return errors, tolerance
