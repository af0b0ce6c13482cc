"""`wrap`: makes every prunable weight of any Keras model maskable."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import keras

from keras_lottery._internal import graph
from keras_lottery.core import registry
from keras_lottery.core.copy import _clone, _clone_layer_with_weights, _copy_attached
from keras_lottery.core.model import (
    LayerSelector,
    check_model,
    is_rebuildable,
    matches,
    resolve_selectors,
    selected_layers,
    walk,
)
from keras_lottery.core.rewind import capture_init
from keras_lottery.core.state import attached_wrapper
from keras_lottery.core.summary import coverage
from keras_lottery.core.wrapper import PrunableWrapper


def _check_include(model, include, names, types) -> None:
    for name in names:
        layers = selected_layers(model, name)
        if not any(registry.is_prunable_type(layer) or _has_prunable_inside(layer)
                   for layer in layers):
            kinds = sorted({type(layer).__name__ for layer in layers})
            raise ValueError(
                f"`include` names '{name}', which selects layers of type "
                f"{', '.join(kinds)} with no prunable weights. "
                "Remove it from `include`, or declare its weights with "
                "keras_lottery.register_prunable."
            )
    available = [layer for _, layer in walk(model)]
    for cls in types:
        if not registry.is_prunable_class(cls) and not issubclass(
            cls, PrunableWrapper
        ):
            raise ValueError(
                f"`include` names layer class {cls.__name__}, which has no "
                "prunable weights. Remove it from `include`, or declare its "
                "weights with keras_lottery.register_prunable. "
                f"Received: include={include!r}"
            )
        layers = available
        if not any(isinstance(layer, cls) for layer in layers):
            present = sorted({type(layer).__name__ for layer in layers})
            raise ValueError(
                f"`include` names layer class {cls.__name__}, but model "
                f"'{model.name}' has no layer of that class, so nothing would "
                f"be wrapped. Layer classes in the model: {present}."
            )


def _has_prunable_inside(layer) -> bool:
    return any(registry.is_prunable_type(child) for _, child in walk(layer))


class _Selection:
    """Which layers `wrap` wraps: prunable, included, not excluded."""

    def __init__(self, include, exclude):
        self.include_names, self.include_types = include
        self.exclude_names, self.exclude_types = exclude
        self.selective = bool(self.include_names or self.include_types)

    def excluded(self, layer, key) -> bool:
        return matches(layer, key, self.exclude_names, self.exclude_types)

    def wants(self, layer, key, inside_included=False) -> bool:
        """Whether to wrap `layer` (a layer with prunable weights)."""
        if not registry.is_prunable_type(layer):
            return False
        if layer.built and not registry.prunable_weights(layer):
            return False
        if self.excluded(layer, key):
            return False
        if not self.selective or inside_included:
            return True
        return matches(layer, key, self.include_names, self.include_types)


def _attach_all(model, selection: _Selection, rewind_point: str) -> None:
    """Attaches a wrapper in place to every selected layer inside `model`.

    Layers already wrapped (in the graph or attached) are left as they are;
    excluded layers and their sub-layers are left alone. A composite layer
    named in `include` has all the prunable layers inside it wrapped.
    """

    def visit(layer, prefix, included):
        for child in graph.children(layer):
            key = prefix + child.name
            if isinstance(child, PrunableWrapper) or attached_wrapper(child):
                continue
            if registry.is_prunable_type(child):
                if selection.wants(child, key, included):
                    PrunableWrapper.attach(child, rewind_point)
                continue
            if selection.excluded(child, key):
                continue
            inside = included or (
                selection.selective
                and matches(child, key, selection.include_names, ())
            )
            visit(child, f"{key}/", inside)

    visit(model, "", False)


def wrap(
    model: keras.Model,
    include: Sequence[LayerSelector] | LayerSelector | None = None,
    exclude: Sequence[LayerSelector] | LayerSelector | None = None,
    *,
    rewind_point: str = "device",
) -> keras.Model:
    """Makes every prunable weight of a model maskable and rewindable.

    Every layer with prunable weights (see `keras_lottery.prunable_weights`)
    gets a `PrunableWrapper`, wherever it sits: at the top level, in nested
    models, and inside composite layers (a KerasHub transformer block's
    attention and feed-forward layers), unless `include` narrows or
    `exclude` removes it. The wrappers capture the current weights as the
    rewind point theta_0, and the model remembers the values of its other
    trainable weights for `keras_lottery.rewind(model, to="init")`.

    How the model changes depends on its kind:

    - A plain Sequential or functional model (operation nodes such as
      `x + y` included) is rebuilt: the result is a new model whose
      prunable layers are `PrunableWrapper`s in the graph; the original
      stays usable and unchanged. Composite layers in it are copied and
      wrapped inside.
    - Any other model (a subclassed `keras.Model`, a KerasHub backbone or
      task model, a functional model nesting one) is changed **in place**,
      the way `Model.quantize()` does: the wrappers are attached to its
      layers, the model keeps calling them, and the same object is
      returned. Save it with `model.save(...)` and load it with
      `keras_lottery.load_model(...)`.

    Either way the masking itself is the same (pruned weights held at 0.0
    in their variables; see `PrunableWrapper`), and `prune`, `rewind`,
    `summary`, `strip`, the searches and `export_tflite` work alike.
    A kernel or matrix that no wrapper reaches (a custom layer's weight not
    declared with `register_prunable`) is named in a warning.

    Compile the returned model before training it.

    Args:
        model: A built `keras.Model` of any kind.
        include: Layer names or layer classes to wrap (a class selects its
            subclasses; a composite layer's name selects the layers inside
            it); all prunable layers when None.
        exclude: Layer names or layer classes never to wrap.
        rewind_point: Where the wrappers keep theta_0: `"device"` (a
            variable beside each weight) or `"host"` (NumPy arrays in host
            memory: on the device, the wrapped model then needs only 1 byte
            per prunable weight more than the plain one, for the mask).

    Returns:
        The wrapped model: a new one for plain Sequential and functional
        models, `model` itself otherwise.

    Raises:
        TypeError: If `model` is not a Keras model, or a selector is
            neither a name nor a layer class.
        ValueError: If `model` is not built, a name or a class in `include`
            matches no layer, or a layer named in `include` has no
            prunable weights.

    Example:

    >>> import keras, keras_lottery as kl
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4),
    ...                           keras.layers.Dense(2)])
    >>> wrapped = kl.wrap(model, exclude=[model.layers[0].name])
    >>> [type(layer).__name__ for layer in wrapped.layers]
    ['Dense', 'PrunableWrapper']
    """
    check_model(model)
    selection = _Selection(
        resolve_selectors(model, include, "include"),
        resolve_selectors(model, exclude, "exclude"),
    )
    _check_include(model, include, selection.include_names,
                   selection.include_types)
    if is_rebuildable(model):

        def transform(layer):
            if isinstance(layer, PrunableWrapper):
                return None  # copied with its masks and rewind point
            if not selection.wants(layer, layer.name):
                return None
            return PrunableWrapper(
                _clone_layer_with_weights(layer), rewind_point=rewind_point
            )

        wrapped = _clone(model, transform)
        _copy_attached(model, wrapped)
    else:
        wrapped = model
    _attach_all(wrapped, selection, rewind_point)
    _warn_unreached(wrapped, selection)
    capture_init(wrapped, wrappers_too=False)
    return wrapped


def _warn_unreached(model, selection: _Selection) -> None:
    if selection.selective or selection.exclude_names or selection.exclude_types:
        return  # the user chose what to wrap
    _, _, unreached = coverage(model)
    if unreached:
        shown = ", ".join(unreached[:6]) + (" ..." if len(unreached) > 6 else "")
        warnings.warn(
            f"keras_lottery.wrap could not reach {len(unreached)} kernel or "
            f"matrix weights of model '{model.name}' ({shown}): their layers "
            "declare no prunable weights, so they will not be pruned. "
            "Declare them with keras_lottery.register_prunable(cls, "
            "['attribute']) to prune them too; keras_lottery.coverage(model) "
            "reports what is covered.",
            UserWarning,
            stacklevel=3,
        )
