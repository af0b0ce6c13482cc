"""The wrapper's fast path: calling the wrapped layer's `call` directly.

Where the layer's own `__call__` would add nothing to what the wrapper's
`__call__` already did (same dtype policy, no activity regularizer, no
quantization, a `call(inputs[, training])`), the wrapper calls
`layer.call(inputs)` itself. That saves a second pass through Keras' call
machinery on every step, which is most of a wrapper's cost in eager
execution (PyTorch).
"""

from __future__ import annotations

import inspect

import keras

from keras_lottery._internal import masking

_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
_POSITIONAL = (
    inspect.Parameter.POSITIONAL_ONLY,
    inspect.Parameter.POSITIONAL_OR_KEYWORD,
)


def plan(layer, wrapper) -> tuple[bool, bool]:
    """Whether `wrapper` may skip `layer.__call__`.

    Returns:
        `(direct, takes_training)`.
    """
    if (
        type(layer).__call__ is not keras.layers.Layer.__call__
        or getattr(layer, "activity_regularizer", None) is not None
        or getattr(layer, "quantization_mode", None) is not None
        or layer.dtype_policy.name != wrapper.dtype_policy.name
        or layer.autocast != wrapper.autocast
        or getattr(layer, "_convert_input_args", True)
        != getattr(wrapper, "_convert_input_args", True)
        or set(getattr(layer, "_call_context_args", ())) - {"training"}
    ):
        return False, False
    try:
        parameters = list(inspect.signature(layer.call).parameters.values())
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return False, False
    if not parameters or parameters[0].kind not in _POSITIONAL:
        return False, False
    rest = parameters[1:]
    if any(p.name != "training" or p.kind in _VARIADIC for p in rest):
        return False, False
    return True, bool(rest)


def call(layer, inputs, training, takes_training: bool):
    """`layer.call(inputs[, training])`, `training` taken from the call
    context when the caller did not pass it."""
    if not takes_training:
        return layer.call(inputs)
    if training is None:
        training = getattr(masking.current_call_context(), "training", None)
    if training is None:
        return layer.call(inputs)
    return layer.call(inputs, training=training)
