"""Naming wrapped layers: the one resolver of layer selectors.

Every pruning function that takes a layer (`prune(rates=..., groups=...)`,
`Group`, `set_masks` keys) resolves it here, with the selection rule
`keras_lottery.core.model.selects` that `wrap(include=...)` uses too: the
wrapped layer's own name (`"fc"`, which its wrapper shares), and its
key (`"encoder/fc"`, the name prefixed by the models and composite layers
that contain it). A layer class selects its instances and those of its
subclasses; a class name (`"Dense"`) selects what the class would.
"""

from __future__ import annotations

from collections.abc import Mapping

from keras_lottery.core.model import selects
from keras_lottery.core.wrapper import PrunableWrapper

LayerSelector = str | type


def resolve_layers(
    found: Mapping[str, PrunableWrapper], selector, *, argument: str
) -> tuple[list[str], list[str]]:
    """The keys of the wrapped layers `selector` names, by name and by type.

    Args:
        found: Wrappers by key, as `keras_lottery.core.model.wrappers`.
        selector: A layer name (own, wrapper's or key), a layer class or a
            class name.
        argument: Where the selector came from, for the messages
            (`"rates"`, `"groups[0]"`, `"masks"`).

    Returns:
        `(named, typed)`: the keys selected by name, and those selected by
        type and not by name, both in model order. A caller that lets a
        name win over a type (`rates`) tells them apart.

    Raises:
        TypeError: If `selector` is neither a string nor a class.
        ValueError: If it selects no wrapped layer.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.core.model import wrappers
    >>> from keras_lottery.pruning.names import resolve_layers
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(2, name="fc"), keras.layers.Dense(1, name="out")]))
    >>> resolve_layers(wrappers(model), "fc", argument="rates")
    (['fc'], [])
    >>> resolve_layers(wrappers(model), keras.layers.Layer, argument="rates")
    ([], ['fc', 'out'])
    """
    if isinstance(selector, (str, type)):
        how = {key: selects(selector, key, w) for key, w in found.items()}
        named = [key for key, by in how.items() if by == "name"]
        typed = [key for key, by in how.items() if by == "type"]
    else:
        raise TypeError(
            f"`{argument}` names layers by name (the layer's own or its key) "
            "or by class. Received: "
            f"{selector!r} of type {type(selector).__name__}."
        )
    if not named and not typed:
        shown = selector.__name__ if isinstance(selector, type) else repr(selector)
        raise ValueError(
            f"`{argument}` names {shown}, which matches no wrapped layer name "
            "(the layer's own or its key) "
            f"or layer type. Wrapped layers: {sorted(found)}."
        )
    return named, typed


def select_layers(
    found: Mapping[str, PrunableWrapper], selector, *, argument: str
) -> list[str]:
    """All the keys `selector` names, by name or by type, in model order.

    Example:

    >>> import keras, keras_lottery as kl
    >>> from keras_lottery.core.model import wrappers
    >>> from keras_lottery.pruning.names import select_layers
    >>> model = kl.wrap(keras.Sequential([keras.Input((3,)),
    ...     keras.layers.Dense(2, name="fc"), keras.layers.Dense(1, name="out")]))
    >>> select_layers(wrappers(model), "Dense", argument="groups[0]")
    ['fc', 'out']
    """
    named, typed = resolve_layers(found, selector, argument=argument)
    chosen = set(named) | set(typed)
    return [key for key in found if key in chosen]
