"""The `.tflite` path check."""

from __future__ import annotations

import os


def check_path(path, *, must_exist: bool = False) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            "`path` must be a str or os.PathLike naming a .tflite file. "
            f"Received: path={path!r} of type {type(path).__name__}."
        )
    path = os.fspath(path)
    if not path.endswith(".tflite"):
        raise ValueError(
            "`path` must end with '.tflite', the extension LiteRT tools "
            f"expect. Received: path={path!r}. Use e.g. 'model.tflite'."
        )
    if must_exist and not os.path.isfile(path):
        raise ValueError(f"No .tflite file at the given path. Received: "
                         f"path={path!r}.")
    return path

