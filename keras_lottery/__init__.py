"""keras-lottery: the Lottery Ticket Hypothesis for Keras 3.

Wrap a model, prune it by magnitude, rewind it, and ship the winning ticket,
on the TensorFlow, JAX and PyTorch backends alike.
"""

from keras_lottery.model import PruningSummary, WeightSummary, strip, summary, wrap
from keras_lottery.registry import prunable_weights, register_prunable
from keras_lottery.rewind import (
    capture_init,
    checkpoint,
    reset_optimizer,
    rewind,
)
from keras_lottery.wrapper import PrunableWrapper

__version__ = "0.1.0"

__all__ = [
    "PrunableWrapper",
    "PruningSummary",
    "WeightSummary",
    "capture_init",
    "checkpoint",
    "prunable_weights",
    "register_prunable",
    "reset_optimizer",
    "rewind",
    "strip",
    "summary",
    "wrap",
]
