"""Cost of one prune + rewind step against one training epoch.

A 784-2048-2048-2048-10 MLP (10.0 million prunable weights) on 10,000
samples (real MNIST where available), per backend; with `--apps 1`, also
one global prune of ResNet50 and of InceptionResNetV2 (keras.applications,
weights=None), per weight, to show the cost is linear in the weights.
Measured, not asserted: writes JSON to benchmarks/results/prune_step.json
(one entry per backend) and its table in docs/benchmarks.md. Each step is
timed in phases: masks read, scoring, selection (`prune_pool`), masks
assigned and the report, rewind, optimizer reset (JAX's asynchronous work
is waited for at the end of each).

    KERAS_BACKEND=jax python benchmarks/prune_step.py
    python benchmarks/prune_step.py --backend all      # one process each

With PRUNE_STEP_BEFORE=<git revision>, `prune` as it was at that revision
(its modules pruning/scores.py, pools.py and prune.py) is measured side by
side in the same process, on the same model state: after each epoch, both
versions prune the same masks and weights, in alternating order, and must
set the same masks.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import time
import types
from collections import defaultdict

from _common import BACKENDS, ROOT, benchmark_main, load_flat_mnist

BEFORE = os.environ.get("PRUNE_STEP_BEFORE")
APPS = {"ResNet50": (32, 32, 3), "InceptionResNetV2": (75, 75, 3)}
PHASES = {"host_masks": "masks read", "score_weights": "scoring",
          "prune_pool": "selection"}
# The device path's selection (`pruning/on_device.py`) counts as selection.
TIMED = {**{name: name for name in PHASES},
         "prune_pool_on_device": "prune_pool"}
SELECTION_ENV = "KERAS_LOTTERY_SELECTION"
LABELS = ("before", "after", "now", "device")


def load_before(rev: str):
    """The `keras_lottery.pruning.prune` module as it was at git `rev`: its
    scores.py, pools.py and prune.py from then, the rest of the package as
    it is now."""
    import keras_lottery.pruning.prune  # noqa: F401  (the current modules)

    names = ("scores", "pools", "prune")
    saved = {n: sys.modules[f"keras_lottery.pruning.{n}"] for n in names}
    loaded = {}
    try:
        for n in names:
            source = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{rev}:keras_lottery/pruning/{n}.py"],
                check=True, capture_output=True, text=True).stdout
            module = types.ModuleType(f"keras_lottery.pruning.{n}")
            module.__file__ = f"{rev}:keras_lottery/pruning/{n}.py"
            sys.modules[module.__name__] = module  # its imports find it
            exec(compile(source, module.__file__, "exec"), module.__dict__)
            loaded[n] = module
    finally:
        sys.modules.update(saved)
    return loaded["prune"]


def _sync(model) -> None:
    """Waits for the backend's queued work on the model (JAX dispatches
    asynchronously; TF and torch on a CPU do not)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        optimizer = getattr(model, "optimizer", None)
        optimizer = optimizer.variables if optimizer is not None else []
        jax.block_until_ready([v.value for v in [*model.variables, *optimizer]])


def _timers(module) -> dict:
    """Times `module`'s phase functions (once per module) into the dict
    this returns, under its "round" key while a `Version` steps."""
    sink = getattr(module, "_benchmark_sink", None)
    if sink is not None:
        return sink
    sink = {"round": None}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if sink["round"] is not None:
                    sink["round"][name] = (sink["round"].get(name, 0.0)
                                           + time.perf_counter() - start)
        return wrapper

    for name, phase in TIMED.items():
        fn = getattr(module, name, None)  # a `before` module may lack one
        if fn is not None:
            setattr(module, name, timed(phase, fn))
    module._benchmark_sink = sink
    return sink


class Version:
    """One implementation of `prune`, its calls timed by phase; with
    `selection`, run under `KERAS_LOTTERY_SELECTION=selection`."""

    def __init__(self, label: str, module, selection: str = "host"):
        self.label, self.module, self.selection = label, module, selection
        self.times: dict[str, list[float]] = defaultdict(list)
        self._sink = _timers(module)

    def step(self, model, rate: float, **options) -> dict[str, float]:
        """One timed prune (+ rewind and reset when `model` has an
        optimizer); seconds by phase."""
        import contextlib

        import keras_lottery as kl
        from keras_lottery._internal.masking import remask_at_end

        compiled = getattr(model, "optimizer", None) is not None
        round_times: dict[str, float] = {}
        self._sink["round"] = round_times
        os.environ[SELECTION_ENV] = self.selection
        # As `prune_and_rewind` runs them: the rewind masks the weights.
        step = remask_at_end() if compiled else contextlib.nullcontext()
        with step:
            start = time.perf_counter()
            try:
                self.module.prune(model, rate, **options)
                _sync(model)
            finally:
                self._sink["round"] = None
                os.environ.pop(SELECTION_ENV)
            out = {"prune": time.perf_counter() - start,
                   **dict.fromkeys(PHASES, 0.0), **round_times}
            start = time.perf_counter()
            if compiled:
                kl.rewind(model, "init")
        out["assign_and_report"] = out["prune"] - sum(round_times.values())
        if compiled:
            _sync(model)
            out["rewind"] = time.perf_counter() - start
            start = time.perf_counter()
            kl.reset_optimizer(model.optimizer)
            _sync(model)
            out["reset_optimizer"] = time.perf_counter() - start
        for key, value in out.items():
            self.times[key].append(value)
        return out

    def medians(self) -> dict[str, float]:
        import numpy as np

        return {k: float(np.median(v)) for k, v in self.times.items()}


def versions(device: bool = False) -> list[Version]:
    """The versions measured side by side: `prune` now (host selection),
    as it was at PRUNE_STEP_BEFORE, and (`device`) now with selection on
    the backend's device (here the same CPU)."""
    import keras_lottery.pruning.prune as current

    found = [Version("after" if BEFORE else "now", current)]
    if BEFORE:
        found.insert(0, Version("before", load_before(BEFORE)))
    if device:
        found.append(Version("device", current, selection="device"))
    return found


def _same_state(model, masks, weights) -> None:
    import keras_lottery as kl

    kl.set_masks(model, masks)
    model.set_weights(weights)
    _sync(model)


def _side_by_side(model, found, i: int, rate: float, **options) -> bool:
    """Each version prunes the model's current state (order alternating
    with `i`); whether they set the same masks."""
    import numpy as np

    import keras_lottery as kl

    masks, weights = kl.get_masks(model), model.get_weights()
    got = []
    for version in found[i % len(found):] + found[: i % len(found)]:
        _same_state(model, masks, weights)
        version.step(model, rate, **options)
        got.append(kl.get_masks(model))
    return all(np.array_equal(g[k], got[0][k]) for g in got for k in got[0])


def measure_apps(repeats: int, found) -> dict:
    """Median seconds of one global prune at 0.2, per keras.applications
    model and version."""
    import keras

    import keras_lottery as kl

    out = {}
    for name, shape in APPS.items():
        model = kl.wrap(getattr(keras.applications, name)(
            weights=None, input_shape=shape, classes=10))
        kl.prune(model, 0.0, scope="global")  # warm up
        weights = int(kl.summary(model, print_fn=None).total)
        for v in found:
            v.times.clear()
        same = all(_side_by_side(model, found, i, 0.2, scope="global")
                   for i in range(repeats))
        out[name] = {"prunable_weights": weights, "identical_masks": same}
        for v in found:
            seconds = v.medians()["prune"]
            out[name][v.label] = {
                "prune_seconds_median": seconds,
                "ms_per_10M_weights": 1000 * seconds / (weights / 1e7)}
        del model
    return out


def measure_ops(model, repeats: int) -> dict:
    """Median ms of the selection's primitives over the model's prunable
    weights, in NumPy on host copies and in keras.ops on the backend's
    device (eager): |w|, a count below a threshold, the positions in a 1%
    band (what `prune_pool` extracts), and the host copy itself."""
    import numpy as np
    from keras import ops

    from keras_lottery.core.model import iter_weight_keys, require_wrappers

    found = [w.prunable_variable(n).value
             for _, w, n in iter_weight_keys(require_wrappers(model))]
    host = [np.asarray(ops.convert_to_numpy(v)) for v in found]
    lo, hi = (float(np.quantile(np.abs(host[1]), q)) for q in (0.2, 0.21))
    tasks = {
        "host copy": (lambda: [ops.convert_to_numpy(v) for v in found], None),
        "abs": (lambda: [np.abs(h) for h in host],
                lambda: [ops.abs(v) for v in found]),
        "count below": (lambda: [np.count_nonzero(np.abs(h) < lo) for h in host],
                        lambda: [ops.count_nonzero(ops.abs(v) < lo) for v in found]),
        "band positions": (
            lambda: [np.flatnonzero((np.abs(h) >= lo) & (np.abs(h) <= hi))
                     for h in host],
            lambda: [ops.nonzero(ops.logical_and(ops.abs(v) >= lo, ops.abs(v) <= hi))
                     for v in found]),
    }
    out = {}
    for name, pair in tasks.items():
        for where, fn in zip(("numpy", "keras.ops"), pair):
            if fn is None:
                continue
            times = []
            for _ in range(max(3, repeats)):
                start = time.perf_counter()
                result = fn()
                _sync_values(result)
                times.append(time.perf_counter() - start)
            out[f"{name}, {where}"] = 1000 * float(np.median(times))
    return out


def _sync_values(values) -> None:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        jax.block_until_ready(values)


def _mlp(samples: int):
    import keras

    import keras_lottery as kl

    x, y, source = load_flat_mnist(samples)
    keras.utils.set_random_seed(0)
    model = kl.wrap(
        keras.Sequential(
            [keras.Input((784,))]
            + [keras.layers.Dense(2048, activation="relu") for _ in range(3)]
            + [keras.layers.Dense(10)]
        )
    )
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x[:200], y[:200], batch_size=100, epochs=1, verbose=0)  # compile
    return model, x, y, source


def _summed(m: dict) -> dict:
    step = m["prune"] + m["rewind"] + m["reset_optimizer"]
    return {**{f"{k}_seconds_median": v for k, v in m.items()},
            "step_seconds": step}


def measure(repeats: int, samples: int, apps: int, steps: int) -> dict:
    if os.environ.get("KERAS_BACKEND") == "torch":
        import torch  # noqa: F401
    import keras
    import numpy as np

    import keras_lottery as kl

    model, x, y, source = _mlp(samples)
    prunable = kl.summary(model, print_fn=None).total
    found = versions(device=True)
    masks, weights = kl.get_masks(model), model.get_weights()
    _side_by_side(model, found, 0, 0.2)  # warm up: conversions, compilation
    _same_state(model, masks, weights)
    for v in found:
        v.times.clear()
    epochs, same = [], True
    for i in range(repeats):
        start = time.perf_counter()
        model.fit(x, y, batch_size=100, epochs=1, verbose=0)
        _sync(model)
        epochs.append(time.perf_counter() - start)
        for j in range(steps):  # each from the state the epoch left
            same = _side_by_side(model, found, i * steps + j, 0.2) and same
    epoch = float(np.median(epochs))
    primitives = measure_ops(model, repeats)
    del model
    entry = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "data": source,
        "prunable_weights": int(prunable),
        "samples": samples,
        "batch_size": 100,
        "repeats": repeats,
        "steps_per_epoch": steps,
        "before_revision": BEFORE,
        "identical_masks": same,
        "epoch_seconds_median": epoch,
        "load_average": os.getloadavg()[0],
        "date": datetime.date.today().isoformat(),
    }
    for v in found:
        m = _summed(v.medians())
        m["fraction_of_epoch"] = m["step_seconds"] / epoch
        m["ms_per_10M_weights"] = 1000 * m["step_seconds"] / (prunable / 1e7)
        entry[v.label] = m
    entry["primitives_ms"] = primitives
    hosts = [v for v in found if v.selection == "host"]
    entry["apps"] = measure_apps(repeats, hosts) if apps else {}
    return entry


def _ms(e: dict, phase: str) -> str:
    return f"{1000 * e[f'{phase}_seconds_median']:.0f}"


def _earlier() -> dict:
    """Entries measured by this script as it was at an earlier revision,
    in its own process (`results/prune_step_earlier.json`: `revision`, and
    an entry per backend), for changes outside the modules that
    PRUNE_STEP_BEFORE can swap (the masking, rewind and reset code)."""
    import json

    from _common import RESULTS

    path = RESULTS / "prune_step_earlier.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _rows(entries: dict) -> list[str]:
    rows, earlier = [], _earlier()
    for backend in BACKENDS:
        e = entries.get(backend) or {}
        versions = [(f"at {earlier.get('revision')}", earlier.get(backend) or {},
                     "now")] + [(label, e, label) for label in LABELS]
        for label, e, key in versions:
            m = e.get(key)
            if m is None:
                continue
            rows.append(
                f"| {label} | {backend} | {e['epoch_seconds_median']:.2f} s | "
                + " | ".join(_ms(m, p) for p in (*PHASES, "assign_and_report"))
                + f" | **{_ms(m, 'prune')}** | {_ms(m, 'rewind')} | "
                f"{_ms(m, 'reset_optimizer')} | {1000 * m['step_seconds']:.0f} | "
                f"{m['ms_per_10M_weights']:.0f} | "
                f"{100 * m['fraction_of_epoch']:.2f}% |"
            )
    return rows


def _app_rows(entries: dict) -> list[str]:
    rows, earlier = [], _earlier()
    for backend in BACKENDS:
        apps = (entries.get(backend) or {}).get("apps") or {}
        if len(apps) != len(APPS):
            continue
        before = (earlier.get(backend) or {}).get("apps") or {}
        versions = [(label, apps, label) for label in LABELS]
        if len(before) == len(APPS):
            versions.insert(0, (f"at {earlier['revision']}", before, "now"))
        for label, found, key in versions:
            small, big = (found[n] for n in APPS)
            if key not in small or key not in big:
                continue
            a, b = small[key], big[key]
            rows.append(
                f"| {label} | {backend} | "
                + " | ".join(f"{1000 * x['prune_seconds_median']:,.0f} ms "
                             f"({x['ms_per_10M_weights']:.0f} ms / 10M)"
                             for x in (a, b))
                + f" | {b['ms_per_10M_weights'] / a['ms_per_10M_weights']:.2f}x |"
            )
    return rows


def _met(entries: dict) -> str:
    met = [b for b, e in entries.items()
           if (m := e.get("after", e.get("now"))) is not None
           and (m["fraction_of_epoch"] < 0.01 or m["ms_per_10M_weights"] < 50)]
    return ", ".join(met) or "none"


def docs_body(entries: dict) -> str:
    e = next(iter(entries.values()))
    apps = next((x["apps"] for x in entries.values() if x.get("apps")), None)
    before = e.get("before_revision")
    loads = " / ".join(f"{x['load_average']:.0f}" for x in entries.values())
    lines = [
        "## Prune + rewind step",
        "",
        "One `prune(model, 0.2)` plus `rewind(model, 'init')` and "
        "`reset_optimizer`, against one training epoch of the same "
        f"784-2048-2048-2048-10 MLP ({e['prunable_weights']:,} prunable "
        f"weights) on {e['samples']:,} samples (batch 100, Adam); median of "
        f"{e['repeats']} epochs and of {e['repeats'] * e['steps_per_epoch']} "
        f"steps ({e['steps_per_epoch']} after each epoch, each from the "
        f"state the epoch left); data: {e['data']}; measured {e['date']} on "
        "the project's 2-core CPU machine, shared with other jobs (load "
        f"average {loads} when each backend finished: timings are noisy). "
        "Goal: under 1% of the epoch, or under 50 ms per 10 million weights.",
        "",
        "Command, per backend B: `python benchmarks/prune_step.py --backend "
        f"B --repeats {e['repeats']} --samples {e['samples']} --steps "
        f"{e['steps_per_epoch']} --apps 0`"
        + (" (`--apps 1` for " + ", ".join(
            b for b, x in entries.items() if x.get("apps")) + ")"
           if apps else "")
        + (f" with `PRUNE_STEP_BEFORE={before}`: the before rows are `prune` "
           f"as it was at {before}, measured in the same process on the same "
           "model state (after each epoch both versions prune the same masks "
           "and weights, in alternating order); they set the same masks: "
           + ", ".join(f"{b} {'yes' if x['identical_masks'] else 'NO'}"
                       for b, x in entries.items()) + "." if before else "."),
        "",
        *([f"The rows `at {_earlier()['revision']}` were measured by this "
           f"script as it was at {_earlier()['revision']}, in a worktree of "
           "that revision and a process of its own, on the same machine within "
           "the hour of the other rows (`PYTHONPATH=. python "
           "benchmarks/prune_step.py --json-only` with the same options, "
           "collected in benchmarks/results/prune_step_earlier.json): they "
           "include the masking, rewind and reset code that "
           "PRUNE_STEP_BEFORE cannot swap.", ""] if _earlier() else []),
        "Phases in ms: masks read (`host_masks`), scoring (`score_weights`), "
        "selection (`prune_pool`, every pool), masks assigned and the "
        "report; then `prune` in all, rewind, optimizer reset, the whole "
        "step, run as `prune_and_rewind` runs it (the rewind masks the "
        "weights: `prune` alone masks each as it assigns its mask). The "
        "device rows are the same code under `KERAS_LOTTERY_SELECTION=device`: "
        "scoring and selection with `keras.ops` where the weights live (here "
        "the same CPU; the selection column then holds both), only the "
        "boolean masks copied to the host. On a GPU or TPU `prune` takes "
        "that path by itself; on a CPU the host path (the other rows).",
        "",
        "| code | backend | epoch | masks read | scoring | selection | assign "
        "+ report | prune | rewind | reset | step | step per 10M weights | "
        "step / epoch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *_rows(entries),
        "",
    ]
    ops_names = [k for k in e.get("primitives_ms", {}) if k.endswith("numpy")]
    if ops_names:
        lines += [
            "The selection's primitives over the same 10M weights, in ms "
            "(median of the repeats, after the run): NumPy on host copies "
            "against `keras.ops` on the backend's device (here the same CPU, "
            "eager). They decide where the selection runs.",
            "",
            "| backend | host copy | " + " | ".join(
                f"{k.split(',')[0]}: NumPy / keras.ops" for k in ops_names[1:]) + " |",
            "|---|" + "---:|" * len(ops_names),
            *(f"| {b} | {x['primitives_ms'][ops_names[0]]:.0f} | " + " | ".join(
                f"{x['primitives_ms'][k]:.0f} / "
                f"{x['primitives_ms'][k.replace('numpy', 'keras.ops')]:.0f}"
                for k in ops_names[1:]) + " |"
              for b, x in entries.items() if x.get("primitives_ms")),
            "",
        ]
    if apps:
        names = list(APPS)
        lines += [
            "One global `prune(model, 0.2, scope='global')` of keras.applications "
            f"models (weights=None, 10 classes): {names[0]} "
            f"({apps[names[0]]['prunable_weights']:,} prunable weights) and "
            f"{names[1]} ({apps[names[1]]['prunable_weights']:,}); median of "
            f"{e['repeats']}, side by side as above. Goal: {names[1]} within "
            f"3x of {names[0]} per weight.",
            "",
            f"| code | backend | {names[0]} | {names[1]} | per-weight ratio |",
            "|---|---|---:|---:|---:|",
            *_app_rows(entries),
            "",
        ]
    lines.append(
        "Goal (under 1% of an epoch or 50 ms per 10M weights) met on: "
        f"{_met(entries)}. Where the step's time goes now, largest first: "
        + "; ".join(f"{b}: {_largest(x)}" for b, x in entries.items()) + "."
    )
    return "\n".join(lines)


def _largest(e: dict) -> str:
    m = e.get("after", e.get("now"))
    names = {**PHASES, "assign_and_report": "masks assigned",
             "rewind": "rewind", "reset_optimizer": "optimizer reset"}
    ranked = sorted(names, key=lambda p: -m[f"{p}_seconds_median"])
    return ", ".join(f"{names[p]} {1000 * m[f'{p}_seconds_median']:.0f} ms"
                     for p in ranked[:4])


def summary(backend: str, e: dict) -> str:
    parts = []
    for label in LABELS:
        m = e.get(label)
        if m is not None:
            parts.append(
                f"{label}: prune {1000 * m['prune_seconds_median']:.0f} ms, "
                f"step {1000 * m['step_seconds']:.0f} ms = "
                f"{100 * m['fraction_of_epoch']:.2f}% of an epoch")
    return (f"{backend} (epoch {e['epoch_seconds_median']:.2f} s, same masks: "
            f"{e['identical_masks']}): " + "; ".join(parts))


if __name__ == "__main__":
    benchmark_main(
        script=__file__,
        description=__doc__.splitlines()[0],
        name="prune_step",
        options={"repeats": 5, "samples": 10_000, "apps": 0, "steps": 3},
        quick={"repeats": 2, "samples": 2000, "apps": 0, "steps": 1},
        measure=measure,
        docs_body=docs_body,
        summary=summary,
    )
