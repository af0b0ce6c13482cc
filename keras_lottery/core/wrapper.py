"""`PrunableWrapper`: a mask and a rewind point for every prunable weight."""

from __future__ import annotations

import warnings

import keras
import numpy as np

from keras_lottery._internal import masking as _masking
from keras_lottery.core import attached, direct_call, registry
from keras_lottery.core.state import (
    REWIND_POINTS,
    HostValue,
    WithoutKeys,
    check_mask,
    fresh_copy,
    host_array,
    host_copy,
    set_untracked,
)


def _warn_if_distribution_ignored(layer_name: str) -> None:
    """Warns when a `keras.distribution` is set on a backend that ignores it."""
    distribution = keras.distribution.distribution()
    backend = keras.backend.backend()
    if distribution is None or backend == "jax":
        return
    hint = (
        "build and compile the model under tf.distribute.MirroredStrategy()"
        ".scope() instead"
        if backend == "tensorflow"
        else "use KERAS_BACKEND=jax for keras.distribution"
    )
    warnings.warn(
        f"The {backend} backend ignores keras.distribution (received "
        f"{type(distribution).__name__}): Keras implements it on JAX only, so "
        f"'{layer_name}', its masks included, lives and trains on one device. "
        f"To train on several devices, {hint}. See "
        "docs/guides/scaling-up.md.",
        UserWarning,
        stacklevel=4,
    )


def _variable_name(weight_name: str, suffix: str) -> str:
    return f"{weight_name.replace('/', '_')}_{suffix}"


@keras.saving.register_keras_serializable(package="keras_lottery")
class PrunableWrapper(keras.layers.Wrapper):
    """Wraps a layer so that its prunable weights can be masked and rewound.

    For every prunable weight `w` of the wrapped layer (see
    `keras_lottery.prunable_weights`) the wrapper holds two non-trainable
    variables of the same shape:

    - a mask of zeros and ones (all ones when built), and
    - the initial value of `w`, captured when the wrapper is built: the
      rewind point theta_0 of the Lottery Ticket Hypothesis.

    It also keeps the initial value of the layer's other trainable weights
    (biases), so that rewinding restores the whole layer.

    The wrapper adds nothing to the forward or backward pass: the pruned
    entries of each prunable variable are held at exactly 0.0 in the
    variable itself (a weight constraint after every optimizer update, and
    every assignment multiplied by the mask; see `keras_lottery._masking`).
    So a pruned weight has no effect on any output and stays pruned in
    `fit`, custom training loops, compiled or eager, on TensorFlow, JAX and
    PyTorch, and `set_weights`, `load_weights` or `rewind` cannot bring it
    back. The mask is a boolean variable: 1 byte per weight on the device,
    beside the 4-byte float32 rewind point.

    A wrapper sits in the layer graph of Sequential and functional models
    (`keras_lottery.wrap` rebuilds those); in models whose graph cannot be
    rebuilt (subclassed models, KerasHub models, layers inside composite
    layers) `wrap` attaches it to the layer in place instead, and the model
    keeps calling the layer itself. Both are the same object with the same
    state and methods.

    Args:
        layer: The `keras.layers.Layer` to wrap. Its type must have prunable
            weights: a built-in type listed in the registry, a layer that
            implements `get_prunable_weights()`, or one declared with
            `keras_lottery.register_prunable`.
        rewind_point: Where the initial weights are kept: `"device"` (a
            variable beside each weight, saved with the model) or `"host"`
            (NumPy arrays in host memory, also saved with the model), for
            models that do not fit on the device twice.
        **kwargs: Passed on to `keras.layers.Wrapper` (e.g. `name`).

    Example:

    >>> import keras, numpy as np, keras_lottery as kl
    >>> layer = kl.PrunableWrapper(keras.layers.Dense(2, use_bias=False))
    >>> x = np.ones((1, 3), "float32")
    >>> _ = layer(x)
    >>> layer.set_mask("kernel", np.array([[1, 0], [1, 0], [1, 0]]))
    >>> float(keras.ops.convert_to_numpy(layer(x))[0, 1]) == 0.0
    True
    """

    def __init__(
        self, layer: keras.layers.Layer, rewind_point: str = "device", **kwargs
    ):
        if rewind_point not in REWIND_POINTS:
            raise ValueError(
                f"`rewind_point` must be one of {REWIND_POINTS}: where the "
                "initial weights are kept ('host' saves device memory for "
                f"models that do not fit twice). Received: "
                f"rewind_point={rewind_point!r}"
            )
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(
                "PrunableWrapper wraps a keras.layers.Layer. "
                f"Received: layer={layer!r} of type {type(layer).__name__}."
            )
        if isinstance(layer, PrunableWrapper):
            raise ValueError(
                f"Layer '{layer.name}' is already a PrunableWrapper; wrapping "
                "it twice would mask its weights twice. Use it as it is."
            )
        if isinstance(layer, keras.Model):
            raise TypeError(
                "PrunableWrapper wraps a single layer, not a model. To make a "
                "whole model prunable use keras_lottery.wrap(model). "
                f"Received: layer={layer.name!r} ({type(layer).__name__})."
            )
        if not registry.is_prunable_type(layer):
            raise ValueError(
                f"Layer '{layer.name}' of type {type(layer).__name__} has no "
                "prunable weights. Wrap a Dense, EinsumDense, Conv, "
                "DepthwiseConv, SeparableConv, Embedding, SimpleRNN, LSTM, "
                "GRU, MultiHeadAttention, Bidirectional or TimeDistributed "
                "layer, or declare the weights of a custom layer with "
                "keras_lottery.register_prunable(cls, ['kernel']) or a "
                "get_prunable_weights() method."
            )
        # The layer's own name: `model.get_layer("fc")` finds the wrapper,
        # which answers for the layer's attributes (`.kernel`, `.units`).
        kwargs.setdefault("name", layer.name)
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)
        # Containers of the wrapped layer's variables are kept out of Keras'
        # attribute tracking: tracked, they would make those variables the
        # wrapper's own too, saved twice in every `.keras` file.
        set_untracked(self, "_weights", {})
        set_untracked(self, "_other_weights", [])
        set_untracked(self, "_direct_call", False)
        set_untracked(self, "_direct_call_training", False)
        set_untracked(self, "rewind_point", rewind_point)
        self._masks = {}
        self._initials = {}
        self._other_initials = []
        self.supports_masking = layer.supports_masking

    def __getattr__(self, name: str):
        """The wrapped layer's public attributes (`kernel`, `units`, ...).

        Only reached when normal lookup fails, so the wrapper's own
        attributes always win; private names are never forwarded.
        """
        try:  # the backend's own lookup (torch.nn.Module's on PyTorch)
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") or name == "layer":
                raise
        return getattr(self.layer, name)

    # ------------------------------------------------------------------ build
    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except Exception as error:  # rethrown with context below
                raise ValueError(
                    f"Could not build the wrapped layer '{self.layer.name}' "
                    f"({type(self.layer).__name__}) from input shape "
                    f"{input_shape}: {error}. Build the layer (or call it on "
                    "its inputs) before wrapping it."
                ) from error
            self.layer.built = True
        self._create_state()
        self.built = True

    def _create_state(self):
        weights = registry.prunable_weights(self.layer)
        if not weights:
            raise ValueError(
                f"Layer '{self.layer.name}' of type {type(self.layer).__name__} "
                "has no prunable weights once built (got none from the "
                "registry or get_prunable_weights())."
            )
        set_untracked(self, "_weights", weights)
        _warn_if_distribution_ignored(self.name)
        for name, variable in weights.items():
            self._masks[name] = self._add_state_like(
                variable, _variable_name(name, "mask"), "ones", dtype="bool"
            )
            self._initials[name] = self._rewind_state(
                variable, _variable_name(name, "initial")
            )
            _masking.attach(variable, self._masks[name])
        prunable_ids = {id(v) for v in weights.values()}
        set_untracked(
            self,
            "_other_weights",
            [v for v in self.layer.trainable_weights if id(v) not in prunable_ids],
        )
        direct, takes_training = direct_call.plan(self.layer, self)
        set_untracked(self, "_direct_call", direct)
        set_untracked(self, "_direct_call_training", takes_training)
        self._other_initials = []
        for i, variable in enumerate(self._other_weights):
            self._other_initials.append(
                self._rewind_state(variable, f"other_{i}_initial")
            )

    def _rewind_state(self, variable, name: str):
        """Holds the current value of `variable`: on the device or the host."""
        if self.rewind_point == "host":
            return HostValue(variable)
        state = self._add_state_like(variable, name, "zeros")
        state.assign(host_copy(variable))
        return state

    def _host_values(self) -> list[HostValue]:
        values = [*self._initials.values(), *self._other_initials]
        return [v for v in values if isinstance(v, HostValue)]

    def get_config(self):
        config = super().get_config()
        if self.rewind_point != "device":
            config["rewind_point"] = self.rewind_point
        return config

    def save_own_variables(self, store):
        super().save_own_variables(store)
        for i, value in enumerate(self._host_values()):
            store[f"host_{i}"] = value.array

    def load_own_variables(self, store):
        hidden = attached.load_host_values(self, store, "host_")
        super().load_own_variables(WithoutKeys(store, hidden))

    def _add_state_like(self, like, name: str, initializer: str, dtype=None):
        """A non-trainable variable of `like`'s shape, dtype and layout.

        Under a Keras distribution (JAX) a variable's layout comes from its
        path, and the path of a mask (`sequential/dense/kernel_mask`) need
        not match the `LayoutMap` key that shards its kernel (`dense/kernel`
        exactly): the mask would be replicated beside a sharded kernel. So
        the state takes the layout of its weight, as Keras' optimizers do
        for their slots (`add_variable_from_reference`).
        """
        layout = getattr(like, "_layout", None)
        if layout is None:
            return self.add_weight(
                name=name,
                shape=like.shape,
                initializer=initializer,
                dtype=dtype or like.dtype,
                trainable=False,
            )
        # What `add_weight` does, plus the layout it has no argument for.
        with keras.name_scope(self.name, caller=self):
            variable = keras.Variable(
                initializer=keras.initializers.get(initializer),
                shape=like.shape,
                dtype=dtype or like.dtype,
                trainable=False,
                name=name,
                layout=layout,
            )
        self._track_variable(variable)
        return variable

    def get_build_config(self):
        config = super().get_build_config() or {}
        layer_config = self.layer.get_build_config()
        if layer_config is not None:
            config["layer_build_config"] = layer_config
        return config

    def build_from_config(self, config):
        layer_config = config.get("layer_build_config")
        if layer_config is not None and not self.layer.built:
            self.layer.build_from_config(layer_config)
        self.build(config.get("input_shape"))

    # ------------------------------------------------------------------- call
    def call(self, inputs, *args, **kwargs):
        # Nothing to mask here: the variables hold the pruned zeros.
        if self._direct_call and not args and kwargs.keys() <= {"training"}:
            return direct_call.call(
                self.layer, inputs, kwargs.get("training"),
                self._direct_call_training,
            )
        return self.layer(inputs, *args, **kwargs)

    def compute_output_spec(self, *args, **kwargs):
        return self.layer.compute_output_spec(*args, **kwargs)

    def compute_output_shape(self, *args, **kwargs):
        return self.layer.compute_output_shape(*args, **kwargs)

    def compute_mask(self, inputs, previous_mask=None):
        return self.layer.compute_mask(inputs, previous_mask)

    # ---------------------------------------------------------- public state
    @property
    def weight_names(self) -> list[str]:
        """Names of the prunable weights, e.g. `["kernel"]`."""
        self._require_built()
        return list(self._weights)

    def prunable_variable(self, name: str) -> keras.Variable:
        """Returns the raw (unmasked) variable of a prunable weight."""
        self._require_built()
        return self._weights[self._check_name(name)]

    def mask_variable(self, name: str) -> keras.Variable:
        """Returns the mask variable of a prunable weight."""
        self._require_built()
        return self._masks[self._check_name(name)]

    def initial_variable(self, name: str) -> keras.Variable:
        """Returns the variable holding the rewind point of a weight."""
        self._require_built()
        return self._initials[self._check_name(name)]

    def get_mask(self, name: str) -> np.ndarray:
        """Returns the mask of a prunable weight as a NumPy array of 0/1.

        Args:
            name: The weight name, one of `weight_names`.
        """
        mask = host_array(self.mask_variable(name))
        return np.asarray(mask).astype("float32")

    def set_mask(self, name: str, mask) -> None:
        """Sets the mask of a prunable weight.

        Args:
            name: The weight name, one of `weight_names`.
            mask: An array of the weight's shape holding only 0 and 1
                (booleans are accepted).

        Pruned entries of the weight are set to 0.0 at once. Setting an
        entry of the mask back to 1 makes the weight trainable again from
        0.0: its old value is gone (`keras_lottery.rewind` restores values
        from the rewind point).

        Raises:
            ValueError: If the shape differs or values other than 0/1 occur.
        """
        variable = self.mask_variable(name)
        array = check_mask(mask, tuple(variable.shape), f"{self.layer.name}/{name}")
        variable.assign(array.astype(bool))  # masks the weight again too

    def effective_weight(self, name: str) -> np.ndarray:
        """Returns `w * mask` for a prunable weight as a NumPy array."""
        raw = np.asarray(host_array(self.prunable_variable(name)))
        return np.where(self.get_mask(name) > 0, raw, np.zeros_like(raw))

    def capture_initial(self) -> None:
        """Stores the current weights of the layer as its rewind point."""
        self._require_built()
        for name, variable in self._weights.items():
            self._initials[name].assign(host_copy(variable))
        for variable, initial in zip(self._other_weights, self._other_initials):
            initial.assign(host_copy(variable))

    def restore_initial(self) -> None:
        """Sets the layer's trainable weights back to the rewind point.

        Masks are unchanged: pruned weights are set to 0.0, not to their
        initial value.
        """
        self._require_built()
        for name, variable in self._weights.items():
            variable.assign(fresh_copy(
                self._initials[name], masked=_masking.masks_on_assign(variable)
            ))
        for variable, initial in zip(self._other_weights, self._other_initials):
            variable.assign(fresh_copy(initial))

    def release(self) -> None:
        """Stops masking the wrapped layer's variables (their values stay).

        Used by `keras_lottery.strip` on models changed in place; the
        wrapper is unusable afterwards.
        """
        for variable in self._weights.values():
            _masking.detach(variable)
        attached.detach(self)

    # ------------------------------------------------- attached (in place)
    @classmethod
    def attach(
        cls, layer: keras.layers.Layer, rewind_point: str = "device"
    ) -> PrunableWrapper:
        """Makes a built layer prunable in place, without changing the graph.

        The wrapper is not called: the model keeps calling `layer`, whose
        prunable variables the wrapper masks. `layer.save_own_variables`
        and `load_own_variables` then also save and load the wrapper's
        masks and rewind point, under keys `lottery_0`, `lottery_1`, ...
        of the layer (a plain `keras.saving.load_model` of such a file
        fails, naming the layer; `keras_lottery.load_model` loads it).

        Args:
            layer: A built layer with prunable weights, not yet wrapped.
            rewind_point: `"device"` or `"host"`, as for the constructor.

        Returns:
            The built wrapper (`keras_lottery.core.state.attached_wrapper(layer)`
            finds it again).
        """
        return attached.attach(cls, layer, rewind_point)

    def _state_variables(self) -> list:
        return self._trainable_variables + self._non_trainable_variables

    def _check_name(self, name):
        if name not in self._weights:
            raise KeyError(
                f"Layer '{self.layer.name}' has no prunable weight named "
                f"{name!r}. Its prunable weights are {list(self._weights)}."
            )
        return name

    def _require_built(self):
        if not self.built:
            raise ValueError(
                f"PrunableWrapper '{self.name}' is not built yet. Call it on "
                "inputs (or build the model) first."
            )
