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


def describe_file(path: Path) -> str:
    """A data file by name and checksum, never by a path of this machine."""
    import hashlib

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return f"{Path(path).name} (sha256 {digest[:16]})"


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
        return x, y, f"MNIST, {describe_file(path)}"
    rng = np.random.default_rng(0)
    return (
        rng.random((n, 784), dtype="float32"),
        rng.integers(0, 10, n).astype("int32"),
        "random (MNIST not found; timing only)",
    )


def write_result(stem: str, entry: dict, *also: Path) -> Path:
    """Writes `entry` to benchmarks/results/<stem>_<backend>.json and says
    what was written (with `also`, e.g. the plot) and how long it took."""
    import keras

    out = RESULTS / f"{stem}_{keras.backend.backend()}.json"
    out.write_text(json.dumps(entry, indent=2) + "\n")
    names = " and ".join(str(p.relative_to(ROOT)) for p in (out, *also))
    print(f"wrote {names} in {entry['seconds']:.0f}s")
    return out


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
    done = subprocess.run(
        [sys.executable, script, "--json-only", *args],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True, text=True,
    )
    if done.returncode != 0:
        # The child's own traceback, not only "returned non-zero exit status".
        raise RuntimeError(
            f"{script} under KERAS_BACKEND={backend} exited with "
            f"{done.returncode}; its stderr ends with:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def benchmark_main(
    *,
    name: str,
    script: str,
    description: str,
    options: dict[str, int],
    quick: dict[str, int],
    measure,
    docs_body,
    summary,
    argv=None,
) -> None:
    """The command line shared by the per-backend benchmark scripts.

    `script --backend B|all [--<option> N ...] [--quick] [--no-docs]` runs
    `measure(**options)` in one fresh process per backend (Keras reads the
    backend once), merges the entries into results/<name>.json, prints
    `summary(backend, entry)` per backend, and refreshes the docs section.
    Called as `script --json-only --<option> N ...`, it is that child.
    """
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=description)
    for option, default in options.items():
        parser.add_argument(f"--{option}", type=int, default=default)
    if "--json-only" in argv:
        argv.remove("--json-only")
        args = parser.parse_args(argv)
        print(json.dumps(measure(**{k: getattr(args, k) for k in options})))
        return
    parser.add_argument("--backend", default=None, help="a backend, or 'all'")
    parser.add_argument("--quick", action="store_true",
                        help=", ".join(f"{k}={v}" for k, v in quick.items()))
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        for option, value in quick.items():
            setattr(args, option, value)
    backends = (
        BACKENDS if args.backend == "all"
        else [args.backend or os.environ.get("KERAS_BACKEND", "jax")]
    )
    out = RESULTS / f"{name}.json"
    entries = json.loads(out.read_text()) if out.exists() else {}
    child_args = [a for k in options for a in (f"--{k}", str(getattr(args, k)))]
    for backend in backends:
        entries[backend] = run_in_backend(script, backend, child_args)
        print(summary(backend, entries[backend]))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(entries, indent=2) + "\n")
    if not args.no_docs:
        write_docs_section(name, docs_body(entries))
