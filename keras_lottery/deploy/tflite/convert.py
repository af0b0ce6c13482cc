"""Keras to `.tflite` conversion, in this process or a TensorFlow child."""

from __future__ import annotations

import importlib
import os
import re
from pathlib import Path
from typing import Any

import keras
import numpy as np

from keras_lottery._internal.child import call_child, temporary_folder
from keras_lottery.deploy.tflite.interpreter import first_line
from keras_lottery.deploy.tflite.report import ExportError
from keras_lottery.deploy.tflite.reshapes import constant_shape_reshapes


def _converter_kwargs(sparse: bool, quantize: str | None,
                      representative: list[np.ndarray] | None,
                      select_tf_ops: bool) -> dict[str, Any]:
    import tensorflow as tf

    optimizations = []
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    if quantize:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "int8":
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if select_tf_ops:
        ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    target_spec: dict[str, Any] = {"supported_ops": ops}
    if quantize == "float16":
        target_spec["supported_types"] = [tf.float16]
    kwargs: dict[str, Any] = {"optimizations": optimizations,
                              "target_spec": target_spec}
    if quantize == "int8":
        count = len(representative[0])

        def dataset():
            for i in range(count):
                yield [a[i:i + 1] for a in representative]

        kwargs["representative_dataset"] = dataset
    return kwargs


def _convert_here(model, *, sparse: bool, quantize: str | None,
                  representative, select_tf_ops: bool) -> bytes:
    """Converts a model on the TensorFlow backend, returning the bytes."""
    kwargs = _converter_kwargs(sparse, quantize, representative,
                               select_tf_ops)
    with temporary_folder("convert") as tmp:
        out = os.path.join(tmp, "model.tflite")
        model.export(out, format="litert", verbose=False, **kwargs)
        return Path(out).read_bytes()


def _custom_modules(model) -> list[str]:
    """Modules defining the model's non-Keras layer classes."""
    modules = set()

    def visit(layer):
        module = type(layer).__module__
        if not module.startswith(("keras.", "keras_lottery.")):
            modules.add(module)
        for child in getattr(layer, "layers", []):
            visit(child)
        inner = getattr(layer, "layer", None)
        if isinstance(inner, keras.layers.Layer):
            visit(inner)

    visit(model)
    modules.discard("__main__")
    return sorted(modules)


def _convert_in_child(model, *, variants: dict[str, bool], quantize,
                      representative, select_tf_ops) -> dict[str, bytes]:
    """Saves `model` as .keras and converts it under KERAS_BACKEND=tensorflow
    (`python -m keras_lottery.deploy.tflite`, answering `convert_request`)."""
    with temporary_folder("convert") as tmp:
        saved = os.path.join(tmp, "model.keras")
        model.save(saved)
        request = {"model": saved, "out_dir": tmp, "variants": variants,
                   "quantize": quantize, "representative": None,
                   "select_tf_ops": select_tf_ops,
                   "imports": _custom_modules(model)}
        if representative is not None:
            request["representative"] = os.path.join(tmp, "representative.npz")
            np.savez(request["representative"], *representative)
        call_child(
            ["-m", "keras_lottery.deploy.tflite"], request,
            what="The TensorFlow child process converting the model",
            env={"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"},
            error=ExportError,
        )
        return {name: Path(tmp, f"{name}.tflite").read_bytes()
                for name in variants}


def _conversion_error(error: Exception, select_tf_ops: bool) -> ValueError:
    """A readable ValueError from the converter's MLIR diagnostics."""
    text = str(error)
    ops = dict.fromkeys(re.findall(
        r"'(tf\.\w+)' op is neither a custom op nor a flex op", text))
    ops.update(dict.fromkeys(re.findall(
        r"'(tf\.\w+)' op is not supported", text)))
    where = dict.fromkeys(re.findall(r'fused\["\w+:", "([^"@]+)@', text))
    if ops:
        detail = (f"Ops TFLite builtins lack: {', '.join(ops)}"
                  + (f" (at {', '.join(list(where)[:4])})" if where else "")
                  + ".")
    else:
        detail = "Converter said: " + first_line(error)
    hint = ("" if select_tf_ops else
            " Replace the layer with one built from ops TFLite has (see "
            "https://ai.google.dev/edge/litert/models/ops_compatibility), or "
            "pass select_tf_ops=True to embed TensorFlow ops (the app then "
            "needs the Flex delegate, several MB).")
    return ValueError(
        "The TFLite converter could not express this model with builtin ops "
        f"only. {detail}{hint}"
    )


def convert(model, *, variants: dict[str, bool], quantize,
             representative, select_tf_ops) -> dict[str, bytes]:
    if keras.backend.backend() != "tensorflow":
        return _convert_in_child(model, variants=variants, quantize=quantize,
                                 representative=representative,
                                 select_tf_ops=select_tf_ops)
    model = constant_shape_reshapes(model)
    out = {}
    for name, sparse in variants.items():
        try:
            out[name] = _convert_here(model, sparse=sparse, quantize=quantize,
                                      representative=representative,
                                      select_tf_ops=select_tf_ops)
        except Exception as error:
            if type(error).__name__ == "ConverterError" or (
                "converter" in str(error).lower()
            ):
                raise _conversion_error(error, select_tf_ops) from error
            raise
    return out


def convert_request(request: dict) -> dict:
    """The conversion child's work (`python -m keras_lottery.deploy.tflite`).

    Loads the `.keras` file the parent saved, converts it into one
    `<variant>.tflite` per variant in `out_dir`.

    Args:
        request: `{"model", "out_dir", "variants": {name: sparse},
            "quantize", "representative" (an .npz or None),
            "select_tf_ops", "imports": [modules defining custom layers]}`.

    Returns:
        `{"written": [paths]}`.
    """
    if keras.backend.backend() != "tensorflow":
        raise ExportError(
            "The conversion child process must run with "
            f"KERAS_BACKEND=tensorflow; it has {keras.backend.backend()}."
        )
    for module in request["imports"]:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ImportError(
                f"The model uses layers from module '{module}', which "
                "the TensorFlow conversion process cannot import "
                f"({error}). Make the module importable, or convert on "
                "the TensorFlow backend."
            ) from error
    # The file was written a moment ago by the parent, from the user's
    # own in-memory model; it may hold Lambda layers.
    model = keras.saving.load_model(request["model"], safe_mode=False)
    try:
        rebuilt = model.built and bool(model.inputs)
    except (AttributeError, ValueError):
        rebuilt = False
    if not rebuilt:
        raise ValueError(
            "The model saved to .keras could not be rebuilt on the "
            "TensorFlow backend for conversion (a Lambda layer whose "
            "function uses global names does not survive saving). Use a "
            "custom layer registered with "
            "keras.saving.register_keras_serializable, or build the "
            "model on the TensorFlow backend."
        )
    representative = None
    if request["representative"]:
        with np.load(request["representative"]) as data:
            representative = [data[f"arr_{i}"] for i in range(len(data))]
    out = convert(model, variants=request["variants"],
                  quantize=request["quantize"], representative=representative,
                  select_tf_ops=request["select_tf_ops"])
    written = []
    for name, content in out.items():
        written.append(str(Path(request["out_dir"], f"{name}.tflite")))
        Path(written[-1]).write_bytes(content)
    return {"written": written}
