"""`load_model`: loads a `.keras` file saved from a wrapped model of any kind."""

from __future__ import annotations

import keras

from keras_lottery.core import registry
from keras_lottery.core.model import walk
from keras_lottery.core.rewind import ASSET, capture_init, restore_points
from keras_lottery.core.state import attached_wrapper
from keras_lottery.core.wrapper import PrunableWrapper

# The weights entry of a `.keras` file (Keras' saving_lib writes it).
_WEIGHTS = "model.weights.h5"


def load_model(
    filepath, custom_objects: dict | None = None, compile: bool = True,
    safe_mode: bool = True,
) -> keras.Model:
    """Loads a `.keras` file saved from a wrapped model of any kind.

    `keras.saving.load_model` loads wrapped Sequential and functional
    models by itself (their `PrunableWrapper`s are in the saved config).
    Models wrapped in place (subclassed, KerasHub, layers inside composite
    layers) save their masks and rewind points with the layers' weights
    but not in the config, so `keras.saving.load_model` refuses them
    ("Layer 'x' expected 2 variables, but received 4"); this function
    recreates the model, wraps the layers the file holds masks for, and
    loads everything. It loads plain `.keras` files too.

    Args:
        filepath: Path of a `.keras` file.
        custom_objects: As for `keras.saving.load_model`.
        compile: Whether to compile the model as it was saved.
        safe_mode: As for `keras.saving.load_model`.

    Returns:
        The model, with the masks, rewind points and weights it was saved
        with.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> model.save("/tmp/ticket.keras")
    >>> kl.load_model("/tmp/ticket.keras").layers[0].weight_names
    ['kernel']
    """
    import json
    import zipfile

    try:
        with zipfile.ZipFile(filepath) as archive:
            config = json.loads(archive.read("config.json"))
            points = _read_points(archive)
    except (OSError, KeyError, zipfile.BadZipFile, ValueError) as error:
        raise ValueError(
            f"Could not read '{filepath}' as a .keras file ({error}). "
            "keras_lottery.load_model loads files written by model.save("
            "'name.keras')."
        ) from error
    if not compile:
        config.pop("compile_config", None)
    with keras.saving.custom_object_scope(custom_objects or {}):
        model = keras.saving.deserialize_keras_object(
            config, safe_mode=safe_mode
        )
    loaders = []
    for _, layer in walk(model):
        if isinstance(layer, PrunableWrapper) or not layer.built:
            continue
        if registry.is_prunable_type(layer) and registry.prunable_weights(layer):
            loaders.append(layer)
            object.__setattr__(
                layer, "load_own_variables", _attaching_loader(layer)
            )
    try:
        _load_weights(model, filepath)
    finally:
        for layer in loaders:
            if attached_wrapper(layer) is None:
                object.__delattr__(layer, "load_own_variables")
    if points is None:  # saved without keras_lottery: theta_0 is now
        capture_init(model, wrappers_too=False)
    else:
        restore_points(model, points)
    return model


def _load_weights(model, filepath) -> None:
    """`model.load_weights` from the file's weights, extracted first.

    Given a `.keras` file, `load_weights` reads its HDF5 weights through
    the zip archive, where every backward seek re-reads (and re-checks)
    the entry from its start: minutes for a large model.
    `keras.saving.load_model` avoids that by reading the entry whole
    first; this does the same through the public API, with a temporary
    file.
    """
    import os
    import tempfile
    import zipfile

    with zipfile.ZipFile(filepath) as archive:
        names = archive.namelist()
        if _WEIGHTS not in names:
            raise ValueError(
                f"'{filepath}' holds no {_WEIGHTS} (its entries: {names}): "
                "it is not a whole .keras file. Save the model again with "
                "model.save('name.keras')."
            )
        with tempfile.TemporaryDirectory() as tmp:
            archive.extract(_WEIGHTS, tmp)
            model.load_weights(os.path.join(tmp, _WEIGHTS))


def _read_points(archive) -> dict | None:
    """The rewind points `model.save` wrote (see `rewind.ASSET`), if any."""
    import io

    import numpy as np

    name = f"assets/{ASSET}"
    if name not in archive.namelist():
        return None
    with np.load(io.BytesIO(archive.read(name))) as arrays:
        return {key: arrays[key] for key in arrays.files}


def _attaching_loader(layer):
    """A `load_own_variables` that attaches a wrapper if the file has masks."""

    def load_own_variables(store):
        keys = store.keys()  # a weights store, not a dict
        if any(key.startswith("lottery_") for key in keys):
            host = any(key.startswith("lottery_host_") for key in keys)
            wrapper = PrunableWrapper.attach(layer, "host" if host else "device")
            wrapper.layer.load_own_variables(store)
        else:
            type(layer).load_own_variables(layer, store)

    return load_own_variables
