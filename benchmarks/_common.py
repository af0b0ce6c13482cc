"""Shared by the benchmark scripts: data, the docs table writer, subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
BACKENDS = ("tensorflow", "jax", "torch")


def mnist_path() -> Path:
    return Path(
        os.environ.get(
            "KERAS_LOTTERY_MNIST", ROOT.parent / "shared" / "data" / "mnist.npz"
        )
    )


def load_flat_mnist(n: int, split: str = "train"):
    """The first `n` MNIST images as float32 (n, 784) in [0, 1], and labels.

    Falls back to random data (for timing only) when the file is absent;
    the third value says which was used.
    """
    import numpy as np

    path = mnist_path()
    if path.is_file():
        with np.load(path) as d:
            x = d[f"x_{split}"][:n].reshape(-1, 784).astype("float32") / 255.0
            y = d[f"y_{split}"][:n].astype("int32")
        return x, y, f"MNIST ({path})"
    rng = np.random.default_rng(0)
    return (
        rng.random((n, 784), dtype="float32"),
        rng.integers(0, 10, n).astype("int32"),
        "random (MNIST not found; timing only)",
    )


def write_docs_section(name: str, body: str) -> None:
    """Replaces the `<!-- name:start -->...<!-- name:end -->` part of
    docs/benchmarks.md with `body`, appending it the first time."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    section = f"{start}\n{body.strip()}\n{end}"
    text = DOCS.read_text() if DOCS.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + section + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    DOCS.write_text(text)


def run_in_backend(script: str, backend: str, args: list[str]) -> dict:
    """Runs `script --json-only args` under `backend`; returns its last JSON line."""
    out = subprocess.run(
        [sys.executable, script, "--json-only", *args],
        env={**os.environ, "KERAS_BACKEND": backend},
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])
