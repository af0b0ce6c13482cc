"""Finding things in a model: its wrappers, their keys, its output layers.

The lookups every other module uses (`walk`, `iter_wrappers`, `wrappers`,
`iter_weight_keys`, `output_layer_keys`), the one naming rule of layers
(`names_of`: own name, and key; `selects`: by name or by class) with
`wrap`'s selector resolver (`resolve_selectors`, `matches`), and `check_model`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import keras

from keras_lottery._internal import graph
from keras_lottery.core.state import attached_wrapper
from keras_lottery.core.wrapper import PrunableWrapper

LayerSelector = str | type


def is_rebuildable(model) -> bool:
    """Whether `keras.models.clone_model` can rebuild this model's graph.

    True for plain Sequential and functional models whose nested models are
    plain too; False for subclassed models and functional subclasses with a
    constructor of their own (every KerasHub model).
    """
    if not graph.is_plain_graph_model(model):
        return False
    return all(
        is_rebuildable(layer)
        for _, layer in walk(model)
        if isinstance(layer, keras.Model)
    )


def check_model(model, *, what: str = "model") -> keras.Model:
    """Raises a clear error unless `model` is a built Keras model."""
    if type(model).__name__ == "RoundRecord":
        raise TypeError(
            f"Expected a keras.Model for `{what}`, but received a RoundRecord "
            "(one round of a search: its numbers, not its model). Get the "
            "winning model with result.best_model(), or any round's with "
            "result.ticket(record, trained=True)."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Expected a keras.Model for `{what}`. Received: {what}={model!r} "
            f"of type {type(model).__name__}. If this is a tf_keras (Keras 2) "
            "model, rebuild it with Keras 3 (or use keras_lottery.from_tfmot "
            "for models pruned with tfmot)."
        )
    if not model.built:
        raise ValueError(
            f"Model '{model.name}' is not built, so its weights do not exist "
            "yet. Start a Sequential model with keras.Input(shape=...), or "
            "call model.build(input_shape) or the model on a batch first."
        )
    return model


# ------------------------------------------------------------ the walker
def _unwrap(layer):
    return layer.layer if isinstance(layer, PrunableWrapper) else None


def walk(
    model: keras.layers.Layer,
) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Yields `(key, layer)` for every layer inside `model`, depth first.

    The key is the layer's name, prefixed by the names of the layers that
    contain it (`"encoder/dense"`). A `PrunableWrapper` is yielded under its
    wrapped layer's name and not entered (see `graph.walk`).
    """
    return graph.walk(model, _unwrap)


# ------------------------------------------------------------------ lookup
def iter_wrappers(model: keras.Model) -> Iterator[tuple[str, PrunableWrapper]]:
    """Yields `(key, wrapper)` for every `PrunableWrapper` in the model.

    Wrappers in the layer graph and wrappers attached in place alike. The
    key is the wrapped layer's name, prefixed by the names of the nested
    models and composite layers that contain it (`"encoder/dense"`).
    """
    for key, layer in walk(model):
        if isinstance(layer, PrunableWrapper):
            yield key, layer
        else:
            attached = attached_wrapper(layer)
            if attached is not None:
                yield key, attached


def wrappers(model: keras.Model) -> dict[str, PrunableWrapper]:
    """Returns the model's `PrunableWrapper`s keyed as in `iter_wrappers`."""
    return dict(iter_wrappers(model))


def require_wrappers(model: keras.Model) -> dict[str, PrunableWrapper]:
    """Like `wrappers`, but a model without any is a clear error."""
    check_model(model)
    found = wrappers(model)
    if not found:
        raise ValueError(
            f"Model '{model.name}' has no PrunableWrapper layers, so there "
            "is nothing to prune. Call model = keras_lottery.wrap(model) "
            "first (then compile it)."
        )
    return found


def output_layer_keys(model: keras.Model) -> list[str]:
    """Keys of the wrappers whose outputs are outputs of the model.

    Found from the model's graph where it has one (Sequential, functional,
    KerasHub models): the layers that produce `model.outputs`, looking
    through layers and operations without weights (activations, reshapes,
    `x + y`) and into nested models. A subclassed model has no graph to
    read: its output layer is taken to be the wrapped layer whose weights
    it creates last, as `Dense` heads are.
    """
    keys = {id(w): k for k, w in iter_wrappers(model)}
    inner = {id(w.layer): id(w) for w in wrappers(model).values()}
    found: list[str] = []

    def producers(tensor):
        made = graph.producer(tensor)
        if made is None:
            return
        layer, node = made
        key = keys.get(inner.get(id(layer), id(layer)))
        if key is not None:
            if key not in found:
                found.append(key)
            return
        if isinstance(layer, keras.Model) and graph.is_graph_model(layer):
            for out in layer.outputs:
                producers(out)
            return
        if getattr(layer, "weights", None):  # has weights, not prunable
            return
        for inp in node.input_tensors:
            producers(inp)

    if graph.is_graph_model(model):
        for out in model.outputs:
            producers(out)
        return found
    order = {id(v): i for i, v in enumerate(model.weights)}
    last = max(
        iter_wrappers(model),
        key=lambda item: max(
            (order.get(id(v), -1) for v in item[1].layer.weights), default=-1
        ),
        default=None,
    )
    return [] if last is None else [last[0]]


def iter_weight_keys(
    found: dict[str, PrunableWrapper],
) -> Iterable[tuple[str, PrunableWrapper, str]]:
    """Yields `("layer/weight", wrapper, weight)` for every prunable weight."""
    for key, wrapper in found.items():
        for name in wrapper.weight_names:
            yield f"{key}/{name}", wrapper, name


# ---------------------------------------------------- names and classes
def names_of(key: str, layer) -> set[str]:
    """Every name a layer goes by: its own (its wrapper's too) and its key.

    The one naming rule of keras_lottery: a wrapped layer `fc` at key
    `encoder/fc` is `"fc"` and `"encoder/fc"` in every function that takes
    a layer name (`wrap(include=...)`, `prune(rates=...)`, `groups=`,
    `set_masks` keys); `"prunable_fc"` also works (the name of a wrapper
    attached in place, and of wrappers in files saved by earlier versions).
    `layer` is a layer or its wrapper.

    Example:

    >>> import keras
    >>> from keras_lottery.core.model import names_of
    >>> sorted(names_of("encoder/fc", keras.layers.Dense(2, name="fc")))
    ['encoder/fc', 'fc', 'prunable_fc']
    """
    inner = layer.layer if isinstance(layer, PrunableWrapper) else layer
    return {key, key.rsplit("/", 1)[-1], inner.name, f"prunable_{inner.name}"}


def selects(selector, key: str, layer) -> str | None:
    """How `selector` picks `layer` at `key`: by `"name"`, by `"type"`, or not.

    The one selection rule of keras_lottery, used by `wrap(include=,
    exclude=)`, `prune(rates=, groups=)`, `Group` and `set_masks` keys: a
    string selects by name (any of `names_of`) or else by class name (the
    layer's class or a base class, as the class itself would); a class
    selects its instances and those of its subclasses. `layer` is a layer
    or its wrapper (the wrapped layer is what is matched).

    Example:

    >>> import keras
    >>> from keras_lottery.core.model import selects
    >>> fc = keras.layers.Dense(2, name="fc")
    >>> selects("fc", "fc", fc), selects("Dense", "fc", fc)
    ('name', 'type')
    >>> selects(keras.layers.Conv2D, "fc", fc) is None
    True
    """
    inner = layer.layer if isinstance(layer, PrunableWrapper) else layer
    if isinstance(selector, str):
        if selector in names_of(key, inner):
            return "name"
        mro = type(inner).__mro__
        return "type" if any(c.__name__ == selector for c in mro) else None
    if isinstance(selector, type):
        return "type" if isinstance(inner, selector) else None
    return None


def selected_layers(model, selector) -> list:
    """The layers inside `model` (unwrapped) that `selector` selects."""
    found = []
    for key, layer in walk(model):
        inner = layer.layer if isinstance(layer, PrunableWrapper) else layer
        if selects(selector, key, layer) and inner not in found:
            found.append(inner)
    return found


def resolve_selectors(model, selectors, argument) -> tuple[list, list]:
    """Checks `wrap`'s `include`/`exclude`: `(strings, classes)`.

    Raises:
        TypeError: For a selector that is neither a string nor a layer
            class.
        ValueError: For a string that names no layer and no layer class
            in `model`.
    """
    if selectors is None:
        return [], []
    if isinstance(selectors, (str, type)):
        selectors = [selectors]
    names, types = [], []
    for item in selectors:
        if isinstance(item, str):
            if not selected_layers(model, item):
                available = sorted(
                    {n for key, layer in walk(model) for n in names_of(key, layer)}
                )
                raise ValueError(
                    f"`{argument}` names a layer '{item}' that is not in "
                    f"model '{model.name}' (neither a layer name nor a layer "
                    f"class name). Layers: {available}."
                )
            names.append(item)
        elif isinstance(item, type) and issubclass(item, keras.layers.Layer):
            types.append(item)
        else:
            raise TypeError(
                f"`{argument}` takes layer names or layer classes. "
                f"Received: {item!r} of type {type(item).__name__}."
            )
    return names, types


def matches(layer, key, names, types) -> bool:
    """Whether any of `names` or `types` selects `layer` at `key`."""
    return any(selects(s, key, layer) for s in (*names, *types))
