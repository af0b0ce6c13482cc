"""What keras_lottery keeps beside a layer's own variables.

Rewind points in host memory (`HostValue`), the registry of wrappers
attached in place, the small tools both use to stay out of Keras'
attribute tracking and weight files, and the one check of a mask.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import ops

from keras_lottery._internal.processes import split_across_processes

REWIND_POINTS = ("device", "host")


class HostValue:
    """A rewind point kept in host memory, with the part of a variable's API
    the wrapper uses (`assign`, `shape`, `dtype`, NumPy conversion).

    For models that do not fit on the device twice:
    `keras_lottery.wrap(model, rewind_point="host")`.
    """

    def __init__(self, like):
        self.array = host_copy(like)

    @property
    def shape(self):
        return self.array.shape

    @property
    def dtype(self):
        return str(self.array.dtype)

    def assign(self, value):
        array = np.asarray(host_array(value), dtype=self.array.dtype)
        self.array = array.reshape(self.array.shape).copy()
        return self.array

    def __array__(self, dtype=None, copy=None):
        return self.array if dtype is None else self.array.astype(dtype)


def host_array(value) -> np.ndarray:
    """`value` (a tensor or a variable) as a NumPy array on this host.

    `ops.convert_to_numpy`, except for a JAX array sharded across several
    processes (`keras.distribution.initialize` and a `ModelParallel`
    layout that splits a weight between hosts): no process holds all of
    it, and NumPy conversion fails. Such an array is gathered with
    `jax.experimental.multihost_utils.process_allgather`, a collective that
    every process must call at the same point (they all do: every process
    runs the same pruning code). Memory cost: each process then holds a
    full host copy of the weight, `4 * size` bytes for float32, for as long
    as the pruning arithmetic needs it. Arrays replicated on every process
    (`DataParallel`) are read locally, without communication.

    Example:

    >>> import keras
    >>> from keras_lottery.core.state import host_array
    >>> host_array(keras.ops.ones((2,))).tolist()
    [1.0, 1.0]
    """
    if not split_across_processes(value):
        return ops.convert_to_numpy(value)
    from jax.experimental import multihost_utils

    array = getattr(value, "value", value)  # a keras.Variable's tensor
    return np.asarray(multihost_utils.process_allgather(array, tiled=True))


def host_view(value) -> np.ndarray:
    """`value` (a tensor or a variable) on this host, sharing the backend's
    memory where it can: no copy of a JAX or PyTorch tensor on the CPU.

    For reading within one step (`prune` scores and reads masks through
    it). A view of shared memory is read-only and only as current as the
    buffer it shares, so it is not kept. Elsewhere (TensorFlow, whose
    variables hand out copies; an accelerator; a value split across JAX
    processes; bfloat16) it is `host_array`'s copy, which the caller owns
    and may write into (`flags.owndata` and `flags.writeable`).

    Example:

    >>> import keras
    >>> from keras_lottery.core.state import host_view
    >>> host_view(keras.Variable([1.0, 2.0])).tolist()
    [1.0, 2.0]
    """
    tensor = value.value if isinstance(value, keras.Variable) else value
    backend = keras.backend.backend()
    if split_across_processes(value) or "bfloat16" in str(
            getattr(tensor, "dtype", "")):
        return host_array(value)
    if backend == "torch" and tensor.device.type == "cpu":
        array = tensor.detach().numpy()
    elif backend == "jax" and all(
            d.platform == "cpu" for d in tensor.devices()):
        array = np.asarray(tensor)  # PJRT's CPU buffer, without a copy
    else:
        return host_array(value)
    view = array.view()
    view.flags.writeable = False
    return view


def host_copy(variable) -> np.ndarray:
    """A host copy of a variable's value.

    Assigning one variable's value to another would make both share one
    buffer, which JAX's buffer donation in `fit` then rejects.
    """
    if isinstance(variable, HostValue):
        return variable.array.copy()
    value = host_array(variable)
    # Some backends hand out a view of the device buffer: copy those only.
    return value if isinstance(value, np.ndarray) and value.flags.owndata else (
        np.array(value, copy=True)
    )


def fresh_copy(initial, *, masked: bool = False):
    """A rewind value, ready to assign, in a buffer no other variable holds.

    Only JAX needs a copy: its variables hold the array they are assigned
    (TensorFlow and PyTorch copy into their own buffer), and JAX's buffer
    donation in `fit` rejects two variables sharing one. A device rewind
    point is copied on the device (no round trip through the host; a value
    sharded across JAX processes keeps its sharding), a host one
    (`rewind_point="host"`) on the host. `masked=True` (the target's
    assign multiplies by its mask, making a new buffer anyway, see
    `_internal.masking.masks_on_assign`) skips the device copy.
    """
    if isinstance(initial, HostValue):
        return host_copy(initial)
    if masked or keras.backend.backend() != "jax":
        return initial.value
    return ops.copy(initial.value)


def set_untracked(layer, name: str, value) -> None:
    """Sets an attribute that Keras' attribute tracking does not see."""
    object.__setattr__(layer, name, value)


# layer -> the wrapper attached to it in place. Not an attribute of the
# layer: Keras' saving walks a layer's attributes, and would save the wrapper
# (which tracks the layer) as a child of its own layer.
ATTACHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def attached_wrapper(layer):
    """The wrapper attached to `layer` in place, if any."""
    try:
        return ATTACHED.get(layer)
    except TypeError:  # not weakly referenceable: never attached
        return None


class WithoutKeys:
    """A read-only view of a weights store without some keys."""

    def __init__(self, store, hidden: set):
        self._store = store
        self._hidden = hidden

    def keys(self):
        return [k for k in self._store.keys() if k not in self._hidden]  # noqa: SIM118

    def __getitem__(self, key):
        return self._store[key]

    def __len__(self):
        return len(self.keys())


def check_mask(value, shape: tuple[int, ...], key: str) -> np.ndarray:
    """`value` as a NumPy array if it is a valid mask of `shape`.

    The one validation of a mask given by a user: the shape of its weight,
    and only 0 and 1 (booleans are accepted).

    Raises:
        ValueError: For another shape or values other than 0/1, naming the
            weight and what was received.

    Example:

    >>> import numpy as np
    >>> from keras_lottery.core.state import check_mask
    >>> check_mask([[1, 0]], (1, 2), "fc/kernel").tolist()
    [[1, 0]]
    """
    array = np.asarray(host_array(value))
    if array.shape != tuple(shape):
        raise ValueError(
            f"Mask '{key}' must have shape {tuple(shape)}, the shape of its "
            f"weight. Received: mask with shape {array.shape}. Masks transfer "
            "only between models of the same architecture."
        )
    if array.dtype != bool and not np.all((array == 0) | (array == 1)):
        bad = array[(array != 0) & (array != 1)].ravel()[:3]
        raise ValueError(
            f"Mask '{key}' must hold only 0 and 1. Received values such as "
            f"{bad.tolist()}. Threshold your scores first, e.g. "
            "mask = (scores > t).astype('float32')."
        )
    return array
