"""New models from a wrapped one: `copy_model` and `strip`."""

from __future__ import annotations

from collections.abc import Callable

import keras

from keras_lottery._internal import masking as _masking
from keras_lottery.core.model import check_model, is_rebuildable, iter_wrappers, walk
from keras_lottery.core.state import attached_wrapper, host_copy
from keras_lottery.core.wrapper import PrunableWrapper


def _clone_layer_with_weights(layer, weights=None):
    """Clones a layer from its config, built, with the given weights."""
    clone = layer.__class__.from_config(layer.get_config())
    if layer.built:
        build_config = layer.get_build_config()
        # Some layers build themselves from their config (KerasHub's
        # TransformerDecoder with `decoder_sequence_shape`): build once.
        if build_config is not None and not clone.built:
            clone.build_from_config(build_config)
        if clone.built:
            clone.set_weights(layer.get_weights() if weights is None else weights)
    return clone


def _clone(
    model, transform: Callable[[keras.layers.Layer], object], *, compiled=True
):
    """Clones a Sequential/functional model, `transform` picking each layer.

    `transform(layer)` returns the new layer, or None to copy it as is.
    Operation nodes (`x + y`, `x[..., 0]`) hold no state and are reused.
    `keras.models.clone_model` compiles the clone of a compiled model;
    `compiled=False` leaves it uncompiled (`model.compiled` is set aside
    while it runs).
    """

    def clone_function(layer):
        if not isinstance(layer, keras.layers.Layer):
            return layer  # an operation node
        if isinstance(layer, keras.Model):
            return _clone(layer, transform, compiled=compiled)
        result = transform(layer)
        if result is None:
            return _clone_layer_with_weights(layer)
        return result

    set_aside = not compiled and getattr(model, "compiled", False)
    if set_aside:
        model.compiled = False
    try:
        clone = keras.models.clone_model(model, clone_function=clone_function)
    finally:
        if set_aside:
            model.compiled = True
    if not clone.built and model.built:
        clone.build_from_config(model.get_build_config())
    return clone


def _fresh_copy(model) -> keras.Model:
    """A new model of the same class and config, with the same weights.

    For models whose graph cannot be rebuilt layer by layer: the model is
    recreated from its config (as `.keras` loading does), then given the
    weights. Wrappers attached in place are not part of the config, so the
    copy has none.
    """
    try:
        config = keras.saving.serialize_keras_object(model)
        config.pop("compile_config", None)
        # The class itself is at hand: no registration needed to copy.
        names = {config.get("registered_name"), config.get("class_name")}
        copy = keras.saving.deserialize_keras_object(
            config, custom_objects={n: type(model) for n in names if n}
        )
    except Exception as error:  # rethrown with the fix below
        raise TypeError(
            f"Could not copy model '{model.name}' ({type(model).__name__}) "
            f"from its config: {type(error).__name__}: {error}. A subclassed "
            "model needs get_config() and a registered class "
            "(@keras.saving.register_keras_serializable()) to be copied, "
            "stripped or saved."
        ) from error
    if not copy.built and model.built:
        copy.build_from_config(model.get_build_config())
    if len(copy.weights) != len(model.weights):
        raise TypeError(
            f"Model '{model.name}' ({type(model).__name__}) recreated from "
            f"its config has {len(copy.weights)} weights, not "
            f"{len(model.weights)}. If it holds PrunableWrapper layers built "
            "in its __init__, build it without them and call "
            "keras_lottery.wrap(model) instead."
        )
    copy.set_weights(model.get_weights())
    return copy


def _copy_attached(source, target) -> None:
    """Attaches to `target` the wrappers attached in place in `source`.

    Both models have the same architecture (one is a copy of the other);
    masks and rewind points are copied.
    """
    layers = dict(walk(target))
    for key, wrapper in iter_wrappers(source):
        if wrapper is not attached_wrapper(wrapper.layer):
            continue  # a wrapper in the graph: the copy has its own
        copy = PrunableWrapper.attach(layers[key], wrapper.rewind_point)
        for variable, value in zip(
            [*copy._state_variables(), *copy._host_values()],
            [*wrapper._state_variables(), *wrapper._host_values()],
        ):
            variable.assign(host_copy(value))
        for variable in copy._weights.values():
            _masking.reapply(variable)


def copy_model(model: keras.Model) -> keras.Model:
    """A copy of a wrapped model: layers, weights, masks, rewind points.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.core.copy import copy_model
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> copy_model(model).layers[0].weight_names
    ['kernel']
    """
    check_model(model)
    if is_rebuildable(model):
        copy = _clone(model, lambda layer: None)
    else:
        copy = _fresh_copy(model)
    _copy_attached(model, copy)
    return copy


def strip(model: keras.Model, *, compile: bool = False) -> keras.Model:
    """Returns a plain Keras model with every wrapper removed.

    Pruned weights are exactly 0.0 in the result, which has the original
    layer types and the same predictions as `model`; it saves and exports
    without keras_lottery installed. `model` itself is left as it is.

    The result is not compiled (as tfmot's `strip_pruning`), so its
    `.keras` file holds the weights alone, without optimizer variables.
    Pass `compile=True` (or call `compile` on it) to evaluate or fine-tune
    it: it is then compiled as `model` was, with a new optimizer (no state
    carried over).

    Args:
        model: A built model of any kind, wrapped or not.
        compile: Compile the result with `model`'s compile arguments.

    Returns:
        A new `keras.Model` without `PrunableWrapper`s.

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...                                   keras.layers.Dense(2)]))
    >>> model.layers[0].set_mask("kernel", np.zeros((3, 2)))
    >>> plain = kl.strip(model)
    >>> kernel = keras.ops.convert_to_numpy(plain.layers[0].kernel)
    >>> type(plain.layers[0]).__name__, float(np.abs(kernel).sum())
    ('Dense', 0.0)
    >>> plain.compiled
    False
    """
    check_model(model)
    if not isinstance(compile, bool):
        raise TypeError(
            f"`compile` must be True or False. Received: compile={compile!r}"
        )
    stripped = _strip(model)
    if compile and getattr(model, "compiled", False):
        stripped.compile_from_config(model.get_compile_config())
    return stripped


def _strip(model: keras.Model) -> keras.Model:
    if not is_rebuildable(model):
        return _fresh_copy(model)

    def transform(layer):
        if not isinstance(layer, PrunableWrapper):
            return None
        inner = layer.layer
        effective = {
            id(v): layer.effective_weight(name)
            for name, v in layer._weights.items()
        }
        weights = [
            effective.get(id(v), w)
            for v, w in zip(inner.weights, inner.get_weights())
        ]
        return _clone_layer_with_weights(inner, weights)

    return _clone(model, transform, compiled=False)
