"""Rebuilding a tf_keras model's description with Keras 3 layers.

`from_tfmot`'s child process describes the tf_keras model (layer configs,
graph, weights); this module turns the description into a Keras 3
Sequential or functional model with the same layers.
"""

from __future__ import annotations

from pathlib import Path

import keras

#: Layer types `from_tfmot` rebuilds (their tf_keras configs load in Keras 3).
SUPPORTED_LAYERS = (
    "InputLayer",
    "Dense",
    "Conv1D",
    "Conv2D",
    "Conv3D",
    "DepthwiseConv2D",
    "SeparableConv1D",
    "SeparableConv2D",
    "Conv2DTranspose",
    "Embedding",
    "UpSampling2D",
    "Multiply",
    "Subtract",
    "Average",
    "Maximum",
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

# Keys of a tf_keras layer config that Keras 3 layers do not take; the
# input shape they carry is read from the model itself.
_LEGACY_KEYS = ("batch_input_shape", "input_shape", "input_dim", "batch_size")
# Keys tf_keras writes (always at their default) that these Keras 3 layers
# do not take.
_NOT_IN_KERAS3 = {
    "DepthwiseConv2D": ("groups",),
    "SeparableConv1D": ("groups",),
    "SeparableConv2D": ("groups",),
}


def layer_config(record: dict) -> dict:
    """A tf_keras layer config, translated to what the Keras 3 layer takes."""
    dropped = _LEGACY_KEYS + _NOT_IN_KERAS3.get(record["class_name"], ())
    config = {k: v for k, v in record["config"].items() if k not in dropped}
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


def check_supported(records: list[dict], path: Path) -> None:
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
        return cls.from_config(layer_config(record))
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


def build_sequential(description: dict) -> keras.Model:
    layers = [
        _make_layer(r) for r in description["layers"]
        if r["class_name"] != "InputLayer"
    ]
    return keras.Sequential(
        [_input(description["input"]), *layers], name=description["name"]
    )


def build_functional(description: dict) -> keras.Model:
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


__all__ = [
    "SUPPORTED_LAYERS",
    "build_functional",
    "build_sequential",
    "check_supported",
    "layer_config",
]
