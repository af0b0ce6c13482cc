"""Which weights of which layer types are prunable.

This module is the single place that answers "what does `PrunableWrapper`
mask in this layer?". Built-in Keras layers are registered below; custom
layers declare their prunable weights either by implementing a
`get_prunable_weights()` method (the same hook tfmot's `PrunableLayer`
uses) or by calling `register_prunable`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras

WeightGetter = Callable[[keras.layers.Layer], "dict[str, keras.Variable]"]

_REGISTRY: dict[type, WeightGetter] = {}

# Layers of other libraries, registered by their qualified class name so
# that keras_lottery never imports those libraries itself.
_BY_NAME: dict[str, WeightGetter] = {}


_MISSING = object()


def _attribute_getter(paths: Sequence[str]) -> WeightGetter:
    """Returns a getter that reads dotted attribute paths off a layer."""

    def getter(layer):
        weights = {}
        for path in paths:
            obj = layer
            for part in path.split("."):
                obj = getattr(obj, part, _MISSING)
                if obj is None or obj is _MISSING:
                    break
            if isinstance(obj, keras.Variable):
                weights[path.replace(".", "/")] = obj
            elif obj is not None and layer.built:  # None: an optional weight
                found = "no such attribute" if obj is _MISSING else (
                    f"a {type(obj).__name__}, not a keras.Variable, there")
                raise ValueError(
                    f"register_prunable declared weight '{path}' for "
                    f"{type(layer).__name__}, but layer '{layer.name}' has "
                    f"{found} once built. Its variables: "
                    f"{[v.path for v in layer.variables]}. Register the "
                    "attribute names that hold them (e.g. 'kernel' for "
                    "self.kernel = self.add_weight(...))."
                )
        return weights

    return getter


def _nested_getter(children: dict[str, str]) -> WeightGetter:
    """Returns a getter that collects the prunable weights of sub-layers."""

    def getter(layer):
        weights = {}
        for prefix, attribute in children.items():
            child = getattr(layer, attribute, None)
            if child is None:
                continue
            for name, variable in prunable_weights(child).items():
                weights[f"{prefix}/{name}" if prefix else name] = variable
        return weights

    return getter


def register_prunable(
    layer_class: type,
    weights: Sequence[str] | WeightGetter,
) -> None:
    """Declares which weights of a layer class are prunable.

    The declaration applies to `layer_class` and to its subclasses (the
    closest registered class in the method resolution order wins). A layer
    may instead implement `get_prunable_weights()`, returning a list of its
    `keras.Variable`s; that method takes precedence over the registry.

    Args:
        layer_class: A subclass of `keras.layers.Layer`.
        weights: Either attribute names of the layer's variables (dotted
            paths such as `"cell.kernel"` are allowed) or a callable
            `fn(layer) -> dict[str, keras.Variable]` mapping a weight name
            to the variable, called once the layer is built.

    Raises:
        TypeError: If `layer_class` is not a Keras layer class, or
            `weights` is neither a sequence of strings nor a callable.

    Example:

    >>> import keras, keras_lottery as kl
    >>> class Scale(keras.layers.Layer):
    ...     def build(self, input_shape):
    ...         self.w = self.add_weight(shape=input_shape[-1:], name="w")
    ...     def call(self, x):
    ...         return x * self.w
    >>> kl.register_prunable(Scale, ["w"])
    >>> layer = Scale()
    >>> layer.build((None, 3))
    >>> list(kl.prunable_weights(layer))
    ['w']
    """
    if not (
        isinstance(layer_class, type)
        and issubclass(layer_class, keras.layers.Layer)
    ):
        raise TypeError(
            "`layer_class` must be a subclass of keras.layers.Layer. "
            f"Received: layer_class={layer_class!r}"
        )
    if callable(weights):
        getter = weights
    elif isinstance(weights, (list, tuple)) and all(
        isinstance(w, str) for w in weights
    ):
        getter = _attribute_getter(tuple(weights))
    else:
        raise TypeError(
            "`weights` must be a list of attribute names (e.g. ['kernel']) "
            "or a callable fn(layer) -> dict of name to variable. "
            f"Received: weights={weights!r}"
        )
    _REGISTRY[layer_class] = getter


def prunable_weights(layer: keras.layers.Layer) -> dict[str, keras.Variable]:
    """Returns the prunable weights of a built layer, by name.

    Args:
        layer: A built Keras layer.

    Returns:
        An ordered dict from weight name (e.g. `"kernel"`, or
        `"forward/cell/kernel"` inside a `Bidirectional`) to the variable.
        Empty when the layer has nothing to prune.

    Example:

    >>> import keras, keras_lottery as kl
    >>> dense = keras.layers.Dense(4)
    >>> dense.build((None, 3))
    >>> list(kl.prunable_weights(dense))
    ['kernel']
    """
    custom = getattr(layer, "get_prunable_weights", None)
    if callable(custom):
        weights = {}
        for variable in custom():
            if not isinstance(variable, keras.Variable):
                raise TypeError(
                    f"{type(layer).__name__}.get_prunable_weights() must "
                    "return keras.Variable objects. "
                    f"Received an element of type {type(variable).__name__}."
                )
            weights[variable.name] = variable
        return weights
    getter = _getter(type(layer))
    return {} if getter is None else dict(getter(layer))


def _getter(layer_class: type) -> WeightGetter | None:
    """The registered getter of the closest class in the MRO, if any."""
    for cls in layer_class.__mro__:
        getter = _REGISTRY.get(cls)
        if getter is None:
            getter = _BY_NAME.get(f"{cls.__module__}.{cls.__qualname__}")
        if getter is not None:
            return getter
    return None


def is_prunable_class(layer_class: type) -> bool:
    """Whether instances of a layer class can have prunable weights.

    True for registered classes and their subclasses, and for classes that
    implement `get_prunable_weights()`. (Whether a `Bidirectional` or
    `TimeDistributed` instance has any depends on the layer it holds; see
    `is_prunable_type`.)
    """
    if callable(getattr(layer_class, "get_prunable_weights", None)):
        return True
    return isinstance(layer_class, type) and _getter(layer_class) is not None


def is_prunable_type(layer: keras.layers.Layer) -> bool:
    """Whether the layer's type declares prunable weights at all."""
    if callable(getattr(layer, "get_prunable_weights", None)):
        return True
    if isinstance(layer, (keras.layers.Bidirectional,)):
        return is_prunable_type(layer.forward_layer)
    if isinstance(layer, keras.layers.TimeDistributed):
        return is_prunable_type(layer.layer)
    return _getter(type(layer)) is not None


_L = keras.layers
register_prunable(_L.Dense, ["kernel"])
register_prunable(_L.EinsumDense, ["kernel"])
for _cls in (
    _L.Conv1D,
    _L.Conv2D,
    _L.Conv3D,
    _L.Conv1DTranspose,
    _L.Conv2DTranspose,
    _L.Conv3DTranspose,
):
    register_prunable(_cls, ["kernel"])
# Keras 3 names the depthwise kernel of DepthwiseConv `kernel` (but keeps
# `depthwise_kernel` for SeparableConv).
register_prunable(_L.DepthwiseConv1D, ["kernel"])
register_prunable(_L.DepthwiseConv2D, ["kernel"])
register_prunable(_L.SeparableConv1D, ["depthwise_kernel", "pointwise_kernel"])
register_prunable(_L.SeparableConv2D, ["depthwise_kernel", "pointwise_kernel"])
register_prunable(_L.Embedding, ["embeddings"])
for _cls in (_L.SimpleRNN, _L.LSTM, _L.GRU):
    register_prunable(_cls, ["cell.kernel", "cell.recurrent_kernel"])
register_prunable(
    _L.MultiHeadAttention,
    _nested_getter(
        {
            "query": "_query_dense",
            "key": "_key_dense",
            "value": "_value_dense",
            "output": "_output_dense",
        }
    ),
)
register_prunable(
    _L.Bidirectional,
    _nested_getter({"forward": "forward_layer", "backward": "backward_layer"}),
)
register_prunable(_L.TimeDistributed, _nested_getter({"": "layer"}))
# KerasHub's learned position embeddings (BERT, GPT-2, ViT, ...).
_BY_NAME[
    "keras_hub.src.layers.modeling.position_embedding.PositionEmbedding"
] = _attribute_getter(("position_embeddings",))
del _L, _cls
