"""Which layers global pruning at initialization strips: Xception, MobileNetV2.

Builds `keras.applications.Xception` (input 75x75x3, the smallest it
accepts is 71) and `MobileNetV2` (32x32x3), both `weights=None,
classes=10`, wraps each with `kl.wrap` and prunes it once with
`kl.prune(model, rate=0.5, scope="global")` (magnitude, at init: no
training). Per kind of prunable tensor (Conv2D kernel, DepthwiseConv2D
kernel, SeparableConv2D depthwise and pointwise kernels, Dense kernel) it
reports the fraction pruned, the mean |w| at init, the initializer and the
fans Keras computes for that shape (glorot_uniform draws from
U(-limit, limit), limit = sqrt(6 / (fan_in + fan_out)), so mean |w| is
limit / 2), and which tensors the collapse warning of `prune` named.

Measured, not asserted. Writes benchmarks/results/collapse.json and prints
a table (Markdown, for docs/guides/scopes.md).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/collapse.py
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import sys
import time
import warnings

from _common import RESULTS

OUT = RESULTS / "collapse.json"
KINDS = (
    "Conv2D/kernel",
    "DepthwiseConv2D/kernel",
    "SeparableConv2D/depthwise_kernel",
    "SeparableConv2D/pointwise_kernel",
    "Dense/kernel",
)
INIT_ATTRS = {  # DepthwiseConv2D names its kernel `kernel`
    "kernel": ("kernel_initializer", "depthwise_initializer"),
    "depthwise_kernel": ("depthwise_initializer",),
    "pointwise_kernel": ("pointwise_initializer",),
}
FRACTION = 0.05  # the min_remaining of the second prune


def keras_fans(shape) -> tuple[int, int]:
    """Keras' `compute_fans`: the last two axes are (in, out), the rest is
    the receptive field, for every kernel including depthwise ones."""
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    receptive = math.prod(shape[:-2])
    return int(shape[-2] * receptive), int(shape[-1] * receptive)


def dead_units(mask, depthwise: bool) -> tuple[int, int]:
    """(output channels without any weight left, output channels).

    A depthwise kernel (kh, kw, channels, multiplier) has channels x
    multiplier output channels, each fed by its own kh x kw slice; other
    kernels (..., in, out) have `out`, each fed by everything before.
    """
    import numpy as np

    shape = mask.shape
    flat = mask.reshape(math.prod(shape[:-2]), -1) if depthwise else (
        mask.reshape(-1, shape[-1])
    )
    alive = np.asarray(flat != 0).any(axis=0)
    return int(alive.size - np.count_nonzero(alive)), int(alive.size)


def prune_once(kl, model, **options) -> tuple[object, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = kl.prune(model, rate=0.5, scope="global", **options)
    messages = [
        str(w.message) for w in caught
        if issubclass(w.category, UserWarning)
        and str(w.message).startswith("prune left")
    ]
    return report, messages


def measure(name: str, build) -> dict:
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    import keras
    import numpy as np

    import keras_lottery as kl
    from keras_lottery.core.model import iter_weight_keys, require_wrappers

    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model = kl.wrap(build(keras))
    tensors = {}
    for key, wrapper, weight in iter_weight_keys(require_wrappers(model)):
        layer = wrapper.layer
        kind = f"{type(layer).__name__}/{weight}"
        init = next(
            (getattr(layer, a) for a in INIT_ATTRS.get(weight, ())
             if hasattr(layer, a)),
            None,
        )
        values = np.asarray(
            keras.ops.convert_to_numpy(wrapper.prunable_variable(weight))
        )
        fan_in, fan_out = keras_fans(values.shape)
        tensors[key] = {
            "kind": kind,
            "shape": list(values.shape),
            "initializer": type(init).__name__ if init is not None else None,
            "fan_in": fan_in,
            "fan_out": fan_out,
            "mean_abs": float(np.abs(values).mean()),
        }
    report, messages = prune_once(kl, model)
    seconds = time.perf_counter() - start
    named = [k for k in tensors if messages and f"'{k}' (" in messages[0]]
    threshold = None
    masks = kl.get_masks(model)
    for row in report.weights:
        dead, channels = dead_units(
            masks[row.name], tensors[row.name]["kind"].startswith("Depthwise")
            or row.name.endswith("/depthwise_kernel"),
        )
        tensors[row.name].update(
            size=row.total, kept=row.after, pool=row.pool,
            collapsed=row.name in named, channels=channels, dead_channels=dead,
        )
        if row.pool == "global":
            threshold = row.threshold

    # The same initial weights, pruned again with a fractional min_remaining.
    kl.set_masks(model, {k: np.ones_like(v) for k, v in masks.items()})
    fraction_report, fraction_messages = prune_once(
        kl, model, min_remaining=FRACTION
    )
    fraction_kept = {row.name: row.after for row in fraction_report.weights}

    kinds = {}
    for kind in KINDS:
        rows = [t for t in tensors.values() if t["kind"] == kind]
        if not rows:
            continue
        size = sum(t["size"] for t in rows)
        pruned = [1 - t["kept"] / t["size"] for t in rows]
        fans = sorted({(t["fan_in"], t["fan_out"]) for t in rows})
        kinds[kind] = {
            "tensors": len(rows),
            "weights": size,
            "pruned": 1 - sum(t["kept"] for t in rows) / size,
            "pruned_min": min(pruned),
            "pruned_max": max(pruned),
            "mean_abs_init": sum(t["mean_abs"] * t["size"] for t in rows) / size,
            "glorot_mean_abs": sum(
                0.5 * math.sqrt(6 / (t["fan_in"] + t["fan_out"])) * t["size"]
                for t in rows
            ) / size,
            "initializers": sorted({str(t["initializer"]) for t in rows}),
            "fans_min": list(fans[0]),
            "fans_max": list(fans[-1]),
            "pools": sorted({t["pool"] for t in rows}),
            "collapsed": sum(t["collapsed"] for t in rows),
            "channels": sum(t["channels"] for t in rows),
            "dead_channels": sum(t["dead_channels"] for t in rows),
            "pruned_with_min_remaining": 1 - sum(
                fraction_kept[k] for k, t in tensors.items() if t["kind"] == kind
            ) / size,
        }
    return {
        "model": name,
        "prunable_weights": report.total,
        "sparsity": report.sparsity,
        "global_threshold": threshold,
        "warned": bool(messages),
        "warning": messages[0] if messages else None,
        "collapsed": named,
        "seconds": seconds,
        "min_remaining": FRACTION,
        "sparsity_with_min_remaining": fraction_report.sparsity,
        "warned_with_min_remaining": bool(fraction_messages),
        "kinds": kinds,
        "tensors": tensors,
    }


MODELS = {
    "Xception": lambda keras: keras.applications.Xception(
        weights=None, input_shape=(75, 75, 3), classes=10
    ),
    "MobileNetV2": lambda keras: keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10
    ),
}


def table(results: list[dict]) -> str:
    lines = [
        "| Model | Kernel | Tensors | Pruned | Pruned per tensor | "
        "Mean \\|w\\| at init | Glorot limit/2 | Keras fan_in, fan_out | "
        f"Dead channels | Collapsed | Pruned, min_remaining={FRACTION} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        for kind, k in r["kinds"].items():
            lo, hi = k["fans_min"], k["fans_max"]
            fans = f"{lo[0]}, {lo[1]}" if lo == hi else (
                f"{lo[0]}, {lo[1]} ... {hi[0]}, {hi[1]}"
            )
            lines.append(
                f"| {r['model']} | {kind} | {k['tensors']} | "
                f"{100 * k['pruned']:.1f}% | "
                f"{100 * k['pruned_min']:.1f}-{100 * k['pruned_max']:.1f}% | "
                f"{k['mean_abs_init']:.4f} | {k['glorot_mean_abs']:.4f} | {fans} | "
                f"{100 * k['dead_channels'] / k['channels']:.0f}% | "
                f"{k['collapsed']} | {100 * k['pruned_with_min_remaining']:.1f}% |"
            )
    return "\n".join(lines)


def main() -> None:
    import keras

    results = [measure(name, build) for name, build in MODELS.items()]
    data = {
        "date": datetime.date.today().isoformat(),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
        "command": f"KERAS_BACKEND={keras.backend.backend()} "
        + " ".join(["python benchmarks/collapse.py", *sys.argv[1:]]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), "
        f"Python {platform.python_version()}",
        "prune": 'kl.prune(model, rate=0.5, scope="global")',
        "table": table(results),
        "models": results,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(table(results))
    for r in results:
        print(
            f"{r['model']}: {r['prunable_weights']:,} prunable weights, "
            f"{100 * r['sparsity']:.1f}% sparse, global threshold "
            f"{r['global_threshold']:.4g}, warned: {r['warned']} "
            f"({len(r['collapsed'])} tensors), {r['seconds']:.0f} s; with "
            f"min_remaining={FRACTION}: {100 * r['sparsity_with_min_remaining']:.1f}%"
            f" sparse, warned: {r['warned_with_min_remaining']}"
        )
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main()
