"""Gradual magnitude pruning: schedules, prune_to_sparsity, GradualPruning."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from conftest import mlp

import keras_lottery as kl
from keras_lottery.core.model import wrappers
from keras_lottery.pruning.gradual import (
    ConstantSparsity,
    GradualPruning,
    PolynomialDecay,
    PruningSchedule,
    prune_to_sparsity,
)


def zeros_for(sparsity: float, size: int) -> int:
    """The documented count: floor(sparsity * size + 0.5) zeros."""
    return math.floor(sparsity * size + 0.5)


def layer_sparsities(model) -> dict[str, float]:
    return {k: 1 - m.mean() for k, m in kl.get_masks(model).items()}


class Probe(keras.callbacks.Callback):
    """Records every mask before each batch, after GradualPruning ran."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def on_train_batch_begin(self, batch, logs=None):
        self.masks.append(kl.get_masks(self.model))  # self.model syncs JAX


def compiled_mlp(sizes=(6, 10, 4)):
    model = kl.wrap(mlp(sizes))
    model.compile(keras.optimizers.SGD(0.05), "mse")
    return model


def data(n, sizes=(6, 10, 4)):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, sizes[0])).astype("float32")
    y = rng.normal(size=(n, sizes[-1])).astype("float32")
    return x, y


# ------------------------------------------------------------- schedules
def test_polynomial_follows_zhu_gupta_formula():
    s = PolynomialDecay(0.1, 0.8, begin_step=10, end_step=30, power=3, frequency=5)
    for t in range(0, 40):
        p = min(1.0, max(0.0, (t - 10) / 20))
        assert s.sparsity(t) == pytest.approx(0.8 + (0.1 - 0.8) * (1 - p) ** 3)
    due = [t for t in range(40) if s(t)[0]]
    assert due == [10, 15, 20, 25, 30]
    assert s(30) == (True, pytest.approx(0.8))
    assert s(9)[1] == pytest.approx(0.1)


def test_polynomial_prunes_at_end_step_when_frequency_does_not_divide():
    s = PolynomialDecay(0.0, 0.5, begin_step=2, end_step=9, frequency=3)
    assert [t for t in range(20) if s(t)[0]] == [2, 5, 8, 9]


def test_constant_sparsity_steps():
    s = ConstantSparsity(0.3, begin_step=1, end_step=7, frequency=3)
    assert [t for t in range(12) if s(t)[0]] == [1, 4, 7]
    forever = ConstantSparsity(0.3, begin_step=0, frequency=5)
    assert [t for t in range(12) if forever(t)[0]] == [0, 5, 10]
    assert all(forever(t)[1] == 0.3 for t in range(12))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: PolynomialDecay(0.0, 1.0, 0, 10), "final_sparsity"),
        (lambda: PolynomialDecay(-0.1, 0.5, 0, 10), "initial_sparsity"),
        (lambda: PolynomialDecay(0.0, 0.5, 5, 5), "end_step"),
        (lambda: PolynomialDecay(0.0, 0.5, -1, 5), "begin_step"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 5, frequency=0), "frequency"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 5, power=0), "power"),
        (lambda: ConstantSparsity(0.5, 4, end_step=2), "end_step"),
        (lambda: ConstantSparsity(0.5, 0, end_step=-2), "end_step"),
    ],
)
def test_schedule_validation(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_schedule_type_errors():
    with pytest.raises(TypeError, match="initial_sparsity"):
        PolynomialDecay("0", 0.5, 0, 10)
    with pytest.raises(TypeError, match="schedule"):
        GradualPruning(0.5)
    with pytest.raises(ValueError, match="scope"):
        GradualPruning(ConstantSparsity(0.5, 0), scope="model")


# ------------------------------------------------------ prune_to_sparsity
def test_prune_to_sparsity_layer_scope_is_exact_and_by_magnitude():
    model = kl.wrap(mlp((6, 10, 4)))
    report = prune_to_sparsity(model, 0.37)
    for wrapper in wrappers(model).values():
        kernel = np.asarray(keras.ops.convert_to_numpy(wrapper.layer.kernel))
        mask = wrapper.get_mask("kernel")
        assert mask.size - mask.sum() == zeros_for(0.37, mask.size)
        # Every pruned weight is no larger than every kept one.
        assert np.abs(kernel[mask == 0]).max() <= np.abs(kernel[mask == 1]).min()
    assert report.after == sum(int(m.sum()) for m in kl.get_masks(model).values())


def test_prune_to_sparsity_never_revives_and_global_scope():
    model = kl.wrap(mlp((6, 10, 4)))
    small, big = (w for w in wrappers(model).values())
    small.layer.kernel.assign(0.001 * np.ones((6, 10)))
    big.layer.kernel.assign(np.ones((10, 4)))
    prune_to_sparsity(model, 0.5, scope="global")
    masks = kl.get_masks(model)
    total = 60 + 40
    assert total - sum(m.sum() for m in masks.values()) == zeros_for(0.5, total)
    assert masks["dense/kernel"].sum() == 10  # the small weights went first
    assert masks["dense_1/kernel"].sum() == 40
    # A lower target prunes nothing and revives nothing.
    report = prune_to_sparsity(model, 0.2, scope="global")
    assert report.before == report.after
    for key, mask in kl.get_masks(model).items():
        np.testing.assert_array_equal(mask, masks[key])
    # Per layer, the 83%-sparse layer is left alone; the dense one is pruned.
    rows = {w.name: w for w in prune_to_sparsity(model, 0.2).weights}
    assert rows["dense/kernel"].after == 10
    assert rows["dense_1/kernel"].after == 40 - zeros_for(0.2, 40)
    np.testing.assert_array_equal(
        kl.get_masks(model)["dense/kernel"], masks["dense/kernel"]
    )


def test_prune_to_sparsity_rejects_bad_input():
    model = kl.wrap(mlp())
    with pytest.raises(ValueError, match="sparsity"):
        prune_to_sparsity(model, 1.0)
    with pytest.raises(ValueError, match="scope"):
        prune_to_sparsity(model, 0.5, scope="channel")
    with pytest.raises(ValueError, match="PrunableWrapper"):
        prune_to_sparsity(mlp(), 0.5)


# --------------------------------------------------------------- callback
def test_gradual_pruning_follows_schedule_in_fit():
    sizes = (6, 10, 4)
    model = compiled_mlp(sizes)
    schedule = PolynomialDecay(0.1, 0.8, begin_step=2, end_step=9, frequency=3)
    pruning, probe = GradualPruning(schedule), Probe()
    x, y = data(12, sizes)
    history = model.fit(
        x, y, batch_size=1, epochs=1, shuffle=False,
        callbacks=[pruning, probe], verbose=0,
    )
    assert [e.step for e in pruning.events] == [2, 5, 8, 9]
    assert pruning.step == 12
    assert len(probe.masks) == 12
    for t, masks in enumerate(probe.masks):
        due = [s for s in (2, 5, 8, 9) if s <= t]
        for key, mask in masks.items():
            expected = zeros_for(schedule.sparsity(due[-1]), mask.size) if due else 0
            assert mask.size - mask.sum() == expected, (t, key)
        if t:  # never revived
            for key, mask in masks.items():
                assert np.all(mask <= probe.masks[t - 1][key])
    # The final sparsity is exact, per layer, and reported in the logs.
    final = kl.get_masks(model)
    for mask in final.values():
        assert mask.size - mask.sum() == zeros_for(0.8, mask.size)
    total = sum(m.size for m in final.values())
    zeros = sum(m.size - m.sum() for m in final.values())
    assert history.history["sparsity"] == [pytest.approx(zeros / total)]


def test_pruned_weights_stay_zero_while_training():
    sizes = (6, 10, 4)
    model = compiled_mlp(sizes)
    pruning = GradualPruning(ConstantSparsity(0.6, begin_step=0, frequency=100))
    x, y = data(16, sizes)
    model.fit(x, y, batch_size=2, epochs=3, callbacks=[pruning], verbose=0)
    assert [e.step for e in pruning.events] == [0]  # 24 steps, one prune
    plain = kl.strip(model)
    masks = kl.get_masks(model)
    for layer in plain.layers:
        kernel = np.asarray(keras.ops.convert_to_numpy(layer.kernel))
        mask = masks[f"{layer.name}/kernel"]
        assert np.all(kernel[mask == 0] == 0.0)
        assert np.count_nonzero(kernel) == mask.sum()  # survivors trained
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.predict(x, verbose=0)),
        keras.ops.convert_to_numpy(plain.predict(x, verbose=0)),
        atol=1e-6,
    )


def test_step_count_continues_across_fits_and_initial_step():
    sizes = (6, 10, 4)
    model = compiled_mlp(sizes)
    x, y = data(4, sizes)
    schedule = PolynomialDecay(0.0, 0.5, begin_step=3, end_step=7, frequency=2)
    pruning = GradualPruning(schedule)
    model.fit(x, y, batch_size=1, epochs=1, callbacks=[pruning], verbose=0)
    assert [e.step for e in pruning.events] == [3]
    model.fit(x, y, batch_size=1, epochs=1, callbacks=[pruning], verbose=0)
    assert [e.step for e in pruning.events] == [3, 5, 7]
    assert pruning.step == 8
    resumed = GradualPruning(schedule, initial_step=6)
    other = compiled_mlp(sizes)
    other.fit(x, y, batch_size=1, epochs=1, callbacks=[resumed], verbose=0)
    assert [e.step for e in resumed.events] == [7]


@pytest.mark.skipif(
    keras.backend.backend() == "torch",
    reason="Keras' PyTorch trainer requires steps_per_execution=1.",
)
def test_steps_per_execution_applies_latest_due_step():
    sizes = (6, 10, 4)
    model = kl.wrap(mlp(sizes))
    model.compile(keras.optimizers.SGD(0.05), "mse", steps_per_execution=4)
    x, y = data(8, sizes)
    schedule = PolynomialDecay(0.0, 0.5, begin_step=1, end_step=6, frequency=1)
    pruning = GradualPruning(schedule)
    model.fit(x, y, batch_size=1, epochs=1, callbacks=[pruning], verbose=0)
    # Executions begin at steps 0 and 4. Nothing is due at 0; at 4 the steps
    # 1-4 are due and the latest, 4, is applied. Steps 5 and 6 fall inside
    # the last execution, and no execution begins after them.
    assert [e.step for e in pruning.events] == [4]
    assert pruning.events[0].target == pytest.approx(schedule.sparsity(4))


def test_subclassed_schedule_and_global_scope():
    class EveryOther(PruningSchedule):
        def __call__(self, step):
            return step % 2 == 0, min(0.9, 0.1 * step)

    sizes = (6, 10, 4)
    model = compiled_mlp(sizes)
    x, y = data(6, sizes)
    pruning = GradualPruning(EveryOther(), scope="global")
    model.fit(x, y, batch_size=1, callbacks=[pruning], verbose=0)
    assert [e.step for e in pruning.events] == [0, 2, 4]
    total = 60 + 40
    assert kl.summary(model, print_fn=None).remaining == total - zeros_for(0.4, total)


# ------------------------------------------- granularity, per-layer schedules
def nm_holds(mask: np.ndarray, n: int, m: int) -> bool:
    groups = np.moveaxis(mask, -2, -1).reshape(-1, m)
    return bool((groups.sum(axis=1) <= n).all())


@pytest.mark.parametrize("final", [0.3, 0.5, 0.7])
def test_gradual_n_m_ends_exactly_on_the_pattern(final):
    sizes = (8, 16, 8, 4)
    model = compiled_mlp(sizes)
    x, y = data(16, sizes)
    probe = Probe()
    schedule = PolynomialDecay(0.0, final, begin_step=0, end_step=6, frequency=2)
    pruning = GradualPruning(pruning_schedule=schedule, granularity="2:4")
    model.fit(x, y, batch_size=1, callbacks=[pruning, probe], verbose=0)
    assert [e.step for e in pruning.events] == [0, 2, 4, 6]
    if schedule.sparsity(4) < 0.5:  # at step 5: on the way, below the pattern
        assert any(m.sum() > m.size / 2 for m in probe.masks[5].values())
    for masks in probe.masks[6:]:  # from end_step on, exactly 2:4, held
        for key, mask in masks.items():
            assert nm_holds(mask, 2, 4), key
            assert mask.sum() == mask.size // 2, key  # the output layer too
    assert pruning.events[-1].sparsity == 0.5


def test_constant_sparsity_n_m_is_the_pattern_at_once_as_tfmot():
    model = compiled_mlp((8, 16, 4))
    x, y = data(4, (8, 16, 4))
    pruning = GradualPruning(ConstantSparsity(0.5, begin_step=0), granularity="2:4")
    model.fit(x, y, batch_size=1, callbacks=[pruning], verbose=0)
    assert all(nm_holds(m, 2, 4) and m.mean() == 0.5
               for m in kl.get_masks(model).values())


def test_gradual_block_schedule_ends_on_whole_blocks():
    from keras_lottery.pruning.granularity import BlockGranularity

    sizes = (8, 16, 8)
    model = compiled_mlp(sizes)
    x, y = data(12, sizes)
    schedule = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=9, frequency=3)
    pruning = GradualPruning(schedule, granularity="block", block_shape=(4, 1))
    model.fit(x, y, batch_size=1, callbacks=[pruning], verbose=0)
    blocks = BlockGranularity((4, 1))
    for key, mask in kl.get_masks(model).items():
        assert blocks.aligned(mask), key
        units = mask.size // 4
        assert units - mask.sum() / 4 == zeros_for(0.75, units), key


def test_per_layer_schedules_by_name_and_class_with_dense_layers():
    sizes = (8, 16, 8, 4)  # dense, dense_1, dense_2 (the output)
    model = compiled_mlp(sizes)
    x, y = data(8, sizes)
    names = [layer.name for layer in model.layers]
    slow = PolynomialDecay(0.0, 0.75, begin_step=0, end_step=4, frequency=2)
    pruning = GradualPruning(
        ConstantSparsity(0.5, begin_step=1),
        layer_schedules={names[1]: slow, names[2]: None},
    )
    model.fit(x, y, batch_size=1, callbacks=[pruning], verbose=0)
    sparsity = layer_sparsities(model)
    assert sparsity[f"{names[0]}/kernel"] == 0.5
    assert sparsity[f"{names[1]}/kernel"] == zeros_for(0.75, 128) / 128
    assert sparsity[f"{names[2]}/kernel"] == 0.0  # left dense
    assert [e.step for e in pruning.events] == [0, 1, 2, 4]
    assert pruning.events[1].targets == {f"{names[0]}/kernel": 0.5}
    # A class selects every layer of it; a name wins over the class.
    other = compiled_mlp(sizes)
    names = [layer.name for layer in other.layers]
    only = GradualPruning(None, layer_schedules={"Dense": slow, names[0]: None})
    other.fit(x, y, batch_size=1, callbacks=[only], verbose=0)
    sparsity = layer_sparsities(other)
    assert sparsity[f"{names[0]}/kernel"] == 0.0
    assert sparsity[f"{names[2]}/kernel"] == 0.75


def test_gradual_argument_errors():
    schedule = ConstantSparsity(0.5, 0)
    with pytest.raises(TypeError, match="Give the schedule once"):
        GradualPruning(schedule, pruning_schedule=schedule)
    with pytest.raises(TypeError, match="Received: schedule=None"):
        GradualPruning()
    with pytest.raises(TypeError, match="layer_schedules"):
        GradualPruning(schedule, layer_schedules={"fc": 0.5})
    with pytest.raises(ValueError, match="per-layer schedules need scope='layer'"):
        GradualPruning(schedule, layer_schedules={"fc": None}, scope="global")
    model = compiled_mlp()
    pruning = GradualPruning(schedule, layer_schedules={"nope": None})
    with pytest.raises(ValueError, match="nope"):
        model.fit(*data(2), callbacks=[pruning], verbose=0)


# ------------------------------------------------------------ the step
def test_step_travels_in_the_keras_file(tmp_path):
    sizes = (6, 10, 4)
    x, y = data(8, sizes)
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=14, frequency=3)
    keras.utils.set_random_seed(3)
    straight = compiled_mlp(sizes)
    keras.utils.set_random_seed(3)
    halves = compiled_mlp(sizes)
    straight.fit(x, y, batch_size=1, epochs=2, shuffle=False,
                 callbacks=[GradualPruning(schedule)], verbose=0)
    halves.fit(x, y, batch_size=1, epochs=1, shuffle=False,
               callbacks=[GradualPruning(schedule)], verbose=0)
    halves.save(tmp_path / "half.keras")
    loaded = kl.load_model(tmp_path / "half.keras")
    second = GradualPruning(schedule)  # no argument to remember
    loaded.fit(x, y, batch_size=1, epochs=1, shuffle=False,
               callbacks=[second], verbose=0)
    assert [e.step for e in second.events] == [9, 12, 14]
    # Same architecture, layer names numbered apart: compare in order.
    for got, want in zip(kl.get_masks(loaded).values(),
                         kl.get_masks(straight).values(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert kl.summary(loaded, print_fn=None).sparsity == pytest.approx(0.8, abs=0.01)


RESUME_CHILD = """
import os, sys, json
import keras, numpy as np
import keras_lottery as kl

class Kill(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            os._exit(3)  # killed between epochs, after the backup

def run(backup, kill):
    keras.utils.set_random_seed(5)
    model = kl.wrap(keras.Sequential([
        keras.Input((6,)), keras.layers.Dense(10), keras.layers.Dense(4)]))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32")
    y = rng.normal(size=(8, 4)).astype("float32")
    pruning = kl.GradualPruning(
        kl.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=3))
    callbacks = [pruning]
    if backup:
        callbacks.append(keras.callbacks.BackupAndRestore(backup))
    if kill:
        callbacks.append(Kill())
    model.fit(x, y, batch_size=2, epochs=6, shuffle=False,
              callbacks=callbacks, verbose=0)
    print(json.dumps([e.step for e in pruning.events]))
    return list(kl.get_masks(model).values())

mode, backup, out = sys.argv[1:]
if mode == "kill":
    run(backup, kill=True)
else:  # resume the killed run, then the same run uninterrupted
    resumed, straight = run(backup, kill=False), run(None, kill=False)
    np.savez(out, *resumed, *straight)
"""


def test_kill_and_resume_continues_the_schedule(tmp_path):
    from keras_lottery._internal.child import ChildError, run_child

    script = tmp_path / "child.py"
    script.write_text(RESUME_CHILD)
    backup, out = str(tmp_path / "backup"), str(tmp_path / "masks.npz")
    env = {"KERAS_BACKEND": keras.backend.backend()}
    with pytest.raises(ChildError, match="status 3"):
        run_child([script, "kill", backup, out], what="The run", env=env)
    done = run_child([script, "resume", backup, out], what="The resumed run",
                     env=env)
    resumed, straight = done.stdout.strip().splitlines()[-2:]
    # Epochs 0 and 1 (steps 0-7) ran before the kill; the schedule goes on
    # at step 8 (its first pruning step there is 9), not at 0.
    assert resumed == "[9, 12, 15, 18, 20]"
    assert straight == "[0, 3, 6, 9, 12, 15, 18, 20]"
    masks = np.load(out)
    arrays = [masks[f"arr_{i}"] for i in range(len(masks.files))]
    half = len(arrays) // 2
    assert half == 2
    for got, want in zip(arrays[:half], arrays[half:], strict=True):
        np.testing.assert_array_equal(got, want)
    assert 1 - arrays[0].mean() == pytest.approx(0.8, abs=0.02)


def test_step_offset_gives_tfmots_first_step():
    model = compiled_mlp()
    schedule = PolynomialDecay(0.5, 0.8, begin_step=0, end_step=8, frequency=4)
    pruning = GradualPruning(schedule, step_offset=1)
    model.fit(*data(8), batch_size=1, callbacks=[pruning], verbose=0)
    assert [e.step for e in pruning.events] == [4, 8]  # tfmot: no step 0


# --------------------------------------------------------------- logging
def test_per_layer_logs_and_tensorboard_event_file(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    model = compiled_mlp()
    names = [layer.name for layer in model.layers]
    schedule = PolynomialDecay(0.0, 0.5, begin_step=0, end_step=4, frequency=2)
    pruning = GradualPruning(schedule, log_dir=str(tmp_path), log_layers=True)
    history = model.fit(*data(6), batch_size=1, callbacks=[pruning], verbose=0)
    key = f"{names[0]}/kernel"
    assert history.history[f"sparsity/{key}"] == [0.5]
    assert history.history["target_sparsity"] == [0.5]
    assert pruning.events[1].layers[key] == zeros_for(schedule.sparsity(2), 60) / 60
    events = EventAccumulator(str(tmp_path / "train"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"pruning/sparsity", "pruning/target", f"pruning/{key}/sparsity",
            f"pruning/{key}/target"} <= set(tags)
    targets = events.Scalars(f"pruning/{key}/target")
    curve = [(e.step, round(e.value, 6)) for e in targets]
    assert curve == [(t, round(schedule.sparsity(t), 6)) for t in (0, 2, 4)]
    assert events.Scalars("pruning/sparsity")[-1].value == pytest.approx(0.5)
