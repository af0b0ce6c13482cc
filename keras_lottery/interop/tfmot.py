"""`from_tfmot`: bring a model pruned with tfmot (tf_keras) into Keras 3.

The TensorFlow Model Optimization Toolkit works with tf_keras (Keras 2)
only, and tf_keras and Keras 3 do not share a process well. So the saved
model is read in a child process (`TF_USE_LEGACY_KERAS=1`, `tf_keras`,
`tensorflow_model_optimization`), which writes a neutral description: the
layer configs and graph as JSON, the weights and tfmot's masks as NumPy
arrays. This process rebuilds the same architecture with Keras 3 layers,
sets the weights, wraps it (`keras_lottery.wrap`) and sets the masks.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import keras
import numpy as np

from keras_lottery._internal.child import call_child
from keras_lottery.core.model import wrappers
from keras_lottery.core.wrap import wrap
from keras_lottery.pruning.masks import set_masks

#: Layer types `from_tfmot` rebuilds (their tf_keras configs load in Keras 3).
SUPPORTED_LAYERS = (
    "InputLayer",
    "Dense",
    "Conv1D",
    "Conv2D",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "ZeroPadding2D",
    "Flatten",
    "Dropout",
    "Reshape",
    "Activation",
    "ReLU",
    "Softmax",
    "BatchNormalization",
    "Add",
    "Concatenate",
)

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"

# Keys of a tf_keras layer config that Keras 3 layers do not take; the
# input shape they carry is read from the model itself.
_LEGACY_KEYS = ("batch_input_shape", "input_shape", "input_dim", "batch_size")

# Runs in the child process, `python -c _CHILD request.json response.json`,
# through `call_child`: the request names the model and the output
# directory. It imports tf_keras and tfmot only, never Keras 3 (and of
# keras_lottery only the stdlib-only child helper).
_CHILD = r"""
import contextlib, os, sys
from keras_lottery._internal.child import serve

def describe(request):
    path, out = request["path"], request["out"]
    try:
        import numpy as np
        import tf_keras
    except ImportError as error:
        return {"error": "missing", "message": f"{type(error).__name__}: {error}"}
    try:
        import tensorflow_model_optimization as tfmot
        from tensorflow_model_optimization.python.core.sparsity.keras import (
            pruning_wrapper,
        )
        scope = tfmot.sparsity.keras.prune_scope()
        wrapper_types = (pruning_wrapper.PruneLowMagnitude,)
    except ImportError:
        scope, wrapper_types = contextlib.nullcontext(), ()
    try:
        with scope:
            model = tf_keras.models.load_model(path, compile=False)
    except Exception as error:
        return {"error": "load", "message": f"{type(error).__name__}: {error}"}
    if not isinstance(model, tf_keras.Model) or not getattr(
        model, "_is_graph_network", False
    ):
        return {"error": "load", "message": f"tf_keras loaded a "
                f"{type(model).__name__}, not a Sequential or functional "
                "tf_keras model"}
    sequential = isinstance(model, tf_keras.Sequential)
    arrays, records, rename = {}, [], {}
    for layer in model.layers:
        inner = layer
        is_wrapper = isinstance(layer, wrapper_types)
        if is_wrapper:
            inner = layer.layer
        if isinstance(inner, tf_keras.Model):
            return {"error": "unsupported",
                    "message": f"nested model '{inner.name}'"}
        rename[layer.name] = inner.name
        masked = []
        for weight, mask, _ in (getattr(layer, "pruning_vars", [])
                                if is_wrapper else []):
            index = next(i for i, v in enumerate(inner.weights) if v is weight)
            arrays[f"{inner.name}/mask/{index}"] = mask.numpy()
            masked.append(index)
        for i, value in enumerate(inner.get_weights()):
            arrays[f"{inner.name}/weight/{i}"] = value
        records.append({
            "name": inner.name,
            "class_name": type(inner).__name__,
            "config": inner.get_config(),
            "weights": [w.name for w in inner.weights],
            "masks": masked,
            "pruned_by_tfmot": bool(is_wrapper and masked),
        })
    config = model.get_config()
    payload = {
        "format": 1,
        "name": model.name,
        "kind": "sequential" if sequential else "functional",
        "layers": records,
    }
    if sequential:
        first = config["layers"][0]
        payload["input"] = {
            "batch_shape": list(model.input_shape),
            "dtype": model.inputs[0].dtype.name if model.inputs else "float32",
            "name": first["config"]["name"]
            if first["class_name"] == "InputLayer" else None,
        }
    else:
        nodes = {}
        for entry in config["layers"]:
            name = rename.get(entry["name"], entry["name"])
            nodes[name] = [
                [[rename.get(n[0], n[0]), *n[1:]] for n in node]
                for node in entry["inbound_nodes"]
            ]
        order = [rename.get(e["name"], e["name"]) for e in config["layers"]]
        records.sort(key=lambda r: order.index(r["name"]))
        for record in records:
            record["inbound_nodes"] = nodes[record["name"]]
        for key, entry in (("inputs", "input_layers"),
                           ("outputs", "output_layers")):
            payload[key] = [[rename.get(n, n), i, j]
                            for n, i, j in config[entry]]
    np.savez(os.path.join(out, "arrays.npz"), **arrays)
    return payload

sys.exit(serve(describe))
"""


def _describe(path: Path, directory: Path, timeout: float) -> dict:
    """Runs the child process; returns the description it wrote."""
    description = call_child(
        ["-c", _CHILD], {"path": str(path), "out": str(directory)},
        what=f"The tf_keras process reading {path}",
        env={"TF_USE_LEGACY_KERAS": "1", "KERAS_BACKEND": None,
             "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL",
                                                    "2")},
        timeout=timeout, fix="Pass from_tfmot a larger `timeout`.",
    )
    error = description.get("error")
    if error == "missing":
        raise ImportError(
            "from_tfmot reads the model with tf_keras and "
            "tensorflow-model-optimization, which are not installed: "
            f"{description['message']}. Install them with "
            "`pip install tf-keras tensorflow-model-optimization` (or the "
            "keras-lottery[peer] extra)."
        )
    if error == "load":
        raise ValueError(
            f"{path} is not a tf_keras model that tf_keras can load (a "
            "Sequential or functional model saved as .h5, .keras or a "
            "SavedModel directory, pruned with tfmot or not). tf_keras said: "
            f"{description['message']}"
        )
    if error == "unsupported":
        raise ValueError(
            f"from_tfmot cannot rebuild {path}: it holds a "
            f"{description['message']}. Only flat Sequential and functional "
            "models are supported."
        )
    return description


def _layer_config(record: dict) -> dict:
    """A tf_keras layer config, translated to what the Keras 3 layer takes."""
    config = {k: v for k, v in record["config"].items() if k not in _LEGACY_KEYS}
    dtype = config.get("dtype")
    if isinstance(dtype, dict):  # a serialized dtype policy
        config["dtype"] = dtype.get("config", {}).get("name", "float32")
    if record["class_name"] == "BatchNormalization":
        axis = config.get("axis")
        if isinstance(axis, list):  # tf_keras stores [axis]
            if len(axis) != 1:
                raise ValueError(
                    f"Layer '{record['name']}' normalizes over axes {axis}; "
                    "Keras 3 BatchNormalization takes a single axis."
                )
            config["axis"] = axis[0]
    return config


def _check_supported(records: list[dict], path: Path) -> None:
    unknown = sorted(
        {r["class_name"] for r in records} - set(SUPPORTED_LAYERS)
    )
    if unknown:
        names = [r["name"] for r in records if r["class_name"] in unknown]
        raise ValueError(
            f"from_tfmot cannot rebuild {path}: layer type(s) {unknown} "
            f"(layers {names}) are not supported. Supported layer types: "
            f"{', '.join(SUPPORTED_LAYERS)}. Rebuild the model with Keras 3 "
            "layers and copy its weights, then keras_lottery.wrap it."
        )


def _make_layer(record: dict) -> keras.layers.Layer:
    cls = getattr(keras.layers, record["class_name"])
    try:
        return cls.from_config(_layer_config(record))
    except Exception as error:
        raise ValueError(
            f"Could not rebuild layer '{record['name']}' "
            f"({record['class_name']}) in Keras 3 from its tf_keras config: "
            f"{type(error).__name__}: {error}"
        ) from error


def _input(spec: dict) -> keras.KerasTensor:
    return keras.Input(
        batch_shape=tuple(spec["batch_shape"]),
        dtype=spec.get("dtype") or "float32",
        name=spec.get("name"),
    )


def _build_sequential(description: dict) -> keras.Model:
    layers = [
        _make_layer(r) for r in description["layers"]
        if r["class_name"] != "InputLayer"
    ]
    return keras.Sequential(
        [_input(description["input"]), *layers], name=description["name"]
    )


def _build_functional(description: dict) -> keras.Model:
    tensors: dict[tuple, object] = {}
    pending = list(description["layers"])
    while pending:
        left = []
        for record in pending:
            nodes = record["inbound_nodes"]
            if record["class_name"] == "InputLayer":
                config = record["config"]
                tensors[(record["name"], 0, 0)] = _input({
                    "batch_shape": config["batch_input_shape"],
                    "dtype": config.get("dtype"),
                    "name": record["name"],
                })
                continue
            if not all(tuple(i[:3]) in tensors for node in nodes for i in node):
                left.append(record)
                continue
            layer = _make_layer(record)
            for index, node in enumerate(nodes):
                args = [tensors[tuple(i[:3])] for i in node]
                kwargs = node[0][3] if node and len(node[0]) > 3 else {}
                outputs = layer(args[0] if len(args) == 1 else args, **kwargs)
                if not isinstance(outputs, (list, tuple)):
                    outputs = [outputs]
                for j, tensor in enumerate(outputs):
                    tensors[(record["name"], index, j)] = tensor
        if len(left) == len(pending):
            raise ValueError(
                "from_tfmot could not resolve the inputs of layers "
                f"{[r['name'] for r in left]} in the saved functional graph."
            )
        pending = left
    inputs = [tensors[tuple(i)] for i in description["inputs"]]
    outputs = [tensors[tuple(o)] for o in description["outputs"]]
    return keras.Model(
        inputs[0] if len(inputs) == 1 else inputs,
        outputs[0] if len(outputs) == 1 else outputs,
        name=description["name"],
    )


def from_tfmot(path: str | os.PathLike, *, timeout: float = 600.0) -> keras.Model:
    """Loads a tf_keras model pruned with tfmot as a wrapped Keras 3 model.

    Reads a Sequential or functional tf_keras model saved as `.h5`,
    `.keras` or a SavedModel directory, pruned with
    `tfmot.sparsity.keras.prune_low_magnitude` (with or without
    `strip_pruning`) or not pruned at all, and returns a Keras 3 model with
    the same architecture and weights, in which every prunable layer is a
    `PrunableWrapper`. A layer's masks are tfmot's mask variables where the
    file has them (a model saved before `strip_pruning`), and otherwise the
    nonzero pattern of its weights (exact zeros are pruned). The result
    predicts what the tf_keras model predicts, and is ready for
    `keras_lottery.prune`, `lottery_search` or `strip` and export.

    The file is read in a child Python process with tf_keras and
    tensorflow-model-optimization (they do not share a process with Keras
    3), so those must be installed; the calling process may use any Keras
    backend.

    tfmot does not keep a model's initial weights, so the rewind point
    theta_0 of the result (`rewind(model, "init")`) is the loaded weights.
    To rewind elsewhere, assign the weights you want and call
    `keras_lottery.capture_init(model)`.

    Supported layer types are listed in `SUPPORTED_LAYERS` (Dense, Conv1D,
    Conv2D, pooling, Flatten, Dropout, Reshape, activations,
    BatchNormalization, Add, Concatenate, ...).

    Args:
        path: A `.h5` / `.keras` file or a SavedModel directory written by
            tf_keras.
        timeout: Seconds the child process may take.

    Returns:
        A wrapped, uncompiled `keras.Model` (Sequential if the tf_keras
        model was Sequential, else functional).

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If `path` is not a tf_keras model, or holds layer types
            or nested models that are not supported.
        ImportError: If tf_keras is not installed.

    Example:

    >>> from keras_lottery.interop.tfmot import from_tfmot
    >>> from_tfmot("no_such_model.h5")
    Traceback (most recent call last):
      ...
    FileNotFoundError: No tf_keras model at no_such_model.h5...
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"No tf_keras model at {path}: the path does not exist. Pass the "
            "file (.h5, .keras) or SavedModel directory that tf_keras saved."
        )
    if path.is_dir() and not (path / "saved_model.pb").is_file():
        raise ValueError(
            f"{path} is a directory without saved_model.pb, so it is not a "
            "SavedModel. Pass a SavedModel directory, or a .h5 / .keras file."
        )
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(8)
        if not head.startswith((_HDF5_SIGNATURE, _ZIP_SIGNATURE)):
            raise ValueError(
                f"{path} is not a tf_keras model: it is neither an HDF5 (.h5) "
                "nor a zip (.keras) file. Pass the file or SavedModel "
                "directory that tf_keras saved."
            )
    with tempfile.TemporaryDirectory(prefix="keras_lottery_tfmot_") as tmp:
        description = _describe(path.resolve(), Path(tmp), timeout)
        with np.load(Path(tmp) / "arrays.npz", allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    records = description["layers"]
    _check_supported(records, path)
    if description["kind"] == "sequential":
        model = _build_sequential(description)
    else:
        model = _build_functional(description)

    for record in records:
        if record["class_name"] == "InputLayer":
            continue
        layer = model.get_layer(record["name"])
        values = [
            arrays[f"{record['name']}/weight/{i}"]
            for i in range(len(record["weights"]))
        ]
        expected = [tuple(v.shape) for v in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"Layer '{record['name']}' ({record['class_name']}) has "
                f"weights of shapes {expected} in Keras 3 but "
                f"{[v.shape for v in values]} in {path}."
            )
        layer.set_weights(values)

    wrapped = wrap(model)  # the loaded weights become the rewind point
    masks = {}
    for key, wrapper in wrappers(wrapped).items():
        inner = wrapper.layer
        for name in wrapper.weight_names:
            variable = wrapper.prunable_variable(name)
            index = next(i for i, v in enumerate(inner.weights) if v is variable)
            mask = arrays.get(f"{inner.name}/mask/{index}")
            if mask is None:
                raw = np.asarray(keras.ops.convert_to_numpy(variable))
                mask = raw != 0
            masks[f"{key}/{name}"] = np.asarray(mask).astype("float32")
    if masks:
        set_masks(wrapped, masks)
    return wrapped
