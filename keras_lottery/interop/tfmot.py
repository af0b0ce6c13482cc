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

import json
import os
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np

from keras_lottery._internal.child import call_child
from keras_lottery.core.model import wrappers
from keras_lottery.core.wrap import wrap
from keras_lottery.interop.tfmot_build import (
    SUPPORTED_LAYERS,
    build_functional,
    build_sequential,
    check_supported,
)
from keras_lottery.pruning.masks import set_masks

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"

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
            "wrapped_by_tfmot": bool(is_wrapper),
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


def _keras3_file(path: Path) -> bool:
    """Whether `path` is a `.keras` file written by Keras 3."""
    try:
        with zipfile.ZipFile(path) as archive:
            metadata = json.loads(archive.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError):
        return False
    return str(metadata.get("keras_version", "")).startswith("3")


def _to_wrap(records: list[dict], arrays: dict, layers: str) -> list[str] | None:
    """The layers `layers="pruned"` wraps (None: every prunable layer)."""
    if layers == "all":
        return None
    if any(r.get("wrapped_by_tfmot") for r in records):
        return [r["name"] for r in records if r.get("pruned_by_tfmot")]
    # No tfmot wrapper in the file (strip_pruning ran, or it never was
    # pruned): the layers holding exact zeros, or all of them if none does.
    zeros = {key.split("/")[0] for key, value in arrays.items()
             if key.split("/")[1] == "weight" and value.ndim >= 2
             and not np.all(value)}
    return [r["name"] for r in records if r["name"] in zeros] or None


def from_tfmot(
    path: str | os.PathLike,
    *,
    layers: str = "pruned",
    include=None,
    exclude=None,
    timeout: float = 600.0,
) -> keras.Model:
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

    Which layers are wrapped: by default (`layers="pruned"`) the layers
    tfmot pruned, so a layer tfmot left dense stays a plain layer, never
    pruned by keras-lottery either. In a file saved after `strip_pruning`
    (no tfmot wrapper left) these are the layers whose weights hold exact
    zeros, and every prunable layer when none does (a dense model).
    `layers="all"` wraps every prunable layer; `include` (which then
    replaces `layers`) and `exclude` select layers by name or class, as in
    `keras_lottery.wrap`.

    Supported layer types are listed in `SUPPORTED_LAYERS`: every layer
    type tfmot prunes that Keras 3 has (Dense, Conv1D/2D/3D,
    DepthwiseConv2D, SeparableConv1D/2D, Conv2DTranspose, Embedding), and
    pooling, Flatten, Dropout, Reshape, activations, BatchNormalization,
    UpSampling2D and the merge layers.

    Args:
        path: A `.h5` / `.keras` file or a SavedModel directory written by
            tf_keras.
        layers: `"pruned"` (the layers tfmot pruned) or `"all"`.
        include: Layer names or classes to wrap, instead of `layers`.
        exclude: Layer names or classes not to wrap.
        timeout: Seconds the child process may take.

    Returns:
        A wrapped, uncompiled `keras.Model` (Sequential if the tf_keras
        model was Sequential, else functional).

    Raises:
        FileNotFoundError: If `path` does not exist.
        ValueError: If `path` is not a tf_keras model (a Keras 3 `.keras`
            file is named as one: load it with `keras.saving.load_model`),
            or holds layer types or nested models that are not supported.
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
    if layers not in ("pruned", "all"):
        raise ValueError(
            "`layers` says which layers to wrap: 'pruned' (those tfmot "
            f"pruned) or 'all'. Received: layers={layers!r}"
        )
    if path.is_file() and _keras3_file(path):
        raise ValueError(
            f"{path} was saved by Keras 3, not tf_keras, so from_tfmot does "
            "not read it: use keras.saving.load_model (or "
            "keras_lottery.load_model for a model saved wrapped)."
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
    check_supported(records, path)
    if description["kind"] == "sequential":
        model = build_sequential(description)
    else:
        model = build_functional(description)

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

    if include is None:
        include = _to_wrap(records, arrays, layers)
        if include == []:
            return model  # tfmot pruned no layer: nothing to wrap
    # The loaded weights become the rewind point.
    wrapped = wrap(model, include=include, exclude=exclude)
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


__all__ = ["SUPPORTED_LAYERS", "from_tfmot"]
