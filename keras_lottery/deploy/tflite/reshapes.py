"""Constant-shape reshapes for conversion, so XNNPACK takes the whole graph.

Keras 3's `Flatten` and `Reshape` reshape to `(batch size read at run time,
*shape)`. With a batch axis of unknown size, the converter turns that into
SHAPE, STRIDED_SLICE and PACK ops feeding a RESHAPE, none of which XNNPACK
takes: a MobileNet-like model ending in `GlobalAveragePooling2D`, `Flatten`,
`Dense` runs partly off XNNPACK, where the same tf_keras model (whose
`Flatten` reshapes to the constant `(-1, n)`) runs wholly on it. Before
converting, `constant_shape_reshapes` swaps each such layer for
`ConstantReshape`, which reshapes to `(-1, *shape)`: the same values, a
constant shape in the file.
"""

from __future__ import annotations

import keras

_SWAPPED = (keras.layers.Flatten, keras.layers.Reshape)


class ConstantReshape(keras.layers.Layer):
    """Reshapes to `(-1, *target_shape)`: no run-time shape computation.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.deploy.tflite.reshapes import ConstantReshape
    >>> tuple(ConstantReshape((6,))(np.zeros((2, 2, 3))).shape)
    (2, 6)
    """

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        self.target_shape = tuple(int(d) for d in target_shape)

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, *self.target_shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.target_shape)

    def get_config(self):
        return {**super().get_config(), "target_shape": self.target_shape}


def _swap(layer):
    if type(layer) in _SWAPPED:
        try:
            shape = tuple(layer.output.shape[1:])
        except (AttributeError, ValueError):  # shared: several outputs
            return layer
        if shape and all(isinstance(d, int) for d in shape):
            return ConstantReshape(shape, name=layer.name)
    return layer


def constant_shape_reshapes(model: keras.Model) -> keras.Model:
    """`model` with each Flatten / Reshape of a fully known output shape
    swapped for a `ConstantReshape` (the other layers are shared, not
    copied); `model` itself when it has none or cannot be cloned.

    Example:

    >>> import keras
    >>> from keras_lottery.deploy.tflite.reshapes import (
    ...     constant_shape_reshapes)
    >>> model = keras.Sequential([keras.Input((2, 3)),
    ...                           keras.layers.Flatten(name="flat")])
    >>> type(constant_shape_reshapes(model).layers[0]).__name__
    'ConstantReshape'
    """
    layers = getattr(model, "layers", [])
    if not any(type(layer) in _SWAPPED for layer in layers):
        return model
    try:
        return keras.models.clone_model(model, clone_function=_swap)
    except (TypeError, ValueError, AttributeError, NotImplementedError):
        return model  # subclassed: converted as it is


__all__ = ["ConstantReshape", "constant_shape_reshapes"]
