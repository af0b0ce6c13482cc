"""TensorBoard scalars for gradual pruning, without TensorFlow.

`EventWriter` writes scalar summaries into a TensorBoard event file with
the `tensorboard` package alone (its event-file writer and protocol
buffers), so `GradualPruning(log_dir=...)` logs on JAX and PyTorch as on
TensorFlow, as tfmot's `PruningSummaries` does on TensorFlow. Files go to
`log_dir/train`, where `keras.callbacks.TensorBoard(log_dir)` writes its
training scalars, so TensorBoard shows both in one run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

INSTALL = (
    "TensorBoard summaries need the `tensorboard` package: "
    "pip install 'keras-lottery[tensorboard]' (or pip install tensorboard)."
)


class EventWriter:
    """Scalars into a TensorBoard event file under `log_dir/train`.

    Args:
        log_dir: The directory given to `GradualPruning(log_dir=...)`.

    Raises:
        ImportError: When `tensorboard` is not installed, saying how to
            install it.

    Example:

    >>> import tempfile
    >>> from keras_lottery.pruning.summaries import EventWriter
    >>> writer = EventWriter(tempfile.mkdtemp())
    >>> writer.scalars(3, {"pruning/sparsity": 0.5})
    >>> writer.close()
    """

    def __init__(self, log_dir: str | os.PathLike):
        try:
            from tensorboard.summary.writer.event_file_writer import (
                EventFileWriter,
            )
        except ImportError as error:
            raise ImportError(f"{INSTALL} Received: log_dir={log_dir!r}") from error
        self.directory = os.path.join(os.fspath(log_dir), "train")
        os.makedirs(self.directory, exist_ok=True)
        self._writer = EventFileWriter(self.directory)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Writes `values` (tag -> number) as scalars at `step`."""
        from tensorboard.compat.proto import event_pb2, summary_pb2

        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
            for tag, value in values.items()
        ])
        self._writer.add_event(
            event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary)
        )

    def write_event(self, event) -> None:
        """A `PruningEvent`: the model's and each weight's sparsity and
        target, at the event's step."""
        values = {"pruning/sparsity": event.sparsity, "pruning/target": event.target}
        for key, sparsity in event.layers.items():
            values[f"pruning/{key}/sparsity"] = sparsity
            if key in event.targets:
                values[f"pruning/{key}/target"] = event.targets[key]
        self.scalars(event.step, values)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


__all__ = ["EventWriter"]
