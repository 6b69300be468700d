"""The training engine: seeded runs repeat bit for bit, interrupted runs resume to the same
weights, diverging runs are recorded."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from cnnrepro.data import load_dataset
from cnnrepro.train import (
    RunConfig,
    TrainState,
    build_model,
    derive_seed,
    load_checkpoint,
    lr_factor,
    make_optimizer,
    save_atomic,
    train_run,
)

SMALL = dict(
    model="lenet5",
    dataset="mnist5k",
    epochs=2,
    batch_size=32,
    lr=0.05,
    train_subset=1000,
    test_subset=500,
    model_config=(("activation", "relu"), ("input_size", 28), ("pooling", "max")),
)

# A narrow ImageNet-style net on a few 32 px digits: seconds per epoch.
TINY = dict(dataset="mnist5k", batch_size=32, lr=0.01, input_size=32)


@pytest.fixture(scope="module")
def mnist5k():
    return load_dataset("mnist5k")


def test_same_seed_same_bits_different_seed_different(mnist5k, tmp_path):
    one = train_run(RunConfig(**SMALL, seed=1), mnist5k, tmp_path / "a")
    two = train_run(RunConfig(**SMALL, seed=1), mnist5k, tmp_path / "b")
    other = train_run(RunConfig(**SMALL, seed=2), mnist5k, tmp_path / "c")
    assert one.status == "finished" and len(one.history) == 2
    assert one.weights_sha256 == two.weights_sha256
    assert [e.train_loss for e in one.history] == [e.train_loss for e in two.history]
    assert [e.test_acc for e in one.history] == [e.test_acc for e in two.history]
    assert other.weights_sha256 != one.weights_sha256
    assert one.history[-1].test_acc > 0.5, "LeNet learns mnist5k digits well above chance"


def test_finished_runs_are_not_retrained(mnist5k, tmp_path):
    first = train_run(RunConfig(**SMALL), mnist5k, tmp_path)
    calls = []
    again = train_run(RunConfig(**SMALL), mnist5k, tmp_path, on_epoch=lambda *a: calls.append(a))
    assert calls == [] and again.weights_sha256 == first.weights_sha256 and again.history == first.history


def test_sigkill_mid_training_then_resume_equals_uninterrupted(mnist5k, tmp_path):
    config = RunConfig(**(SMALL | {"epochs": 3}))
    uninterrupted = train_run(config, mnist5k, tmp_path / "clean")
    script = textwrap.dedent(
        f"""
        import os, signal, torch
        from cnnrepro.data import load_dataset
        torch.set_num_threads({torch.get_num_threads()})  # the bits depend on it: resumed with the same
        from cnnrepro.train import RunConfig, train_run
        config = RunConfig(**{SMALL!r} | {{"epochs": 3}})
        def die(result, epoch):
            if epoch.epoch == 1:
                os.kill(os.getpid(), signal.SIGKILL)
        train_run(config, load_dataset("mnist5k"), {str(tmp_path / "killed")!r}, on_epoch=die)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = load_checkpoint(tmp_path / "killed" / f"{config.key()}.pt")
    assert len(state["history"]) == 1 and state["status"] == "running"
    resumed = train_run(config, mnist5k, tmp_path / "killed")
    assert resumed.status == "finished" and resumed.weights_sha256 == uninterrupted.weights_sha256
    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in uninterrupted.history]


class Interrupted(Exception):
    pass


def test_resume_restores_the_dropout_generator_on_every_device(mnist5k, tmp_path, device):
    """VGG's dropout draws from the global generator of the run's device (CUDA's own on a GPU):
    a run stopped after epoch 1 and resumed in the same process must draw the masks an
    uninterrupted run draws, not the ones a freshly seeded generator would."""
    config = RunConfig(**TINY, model="vgg11", epochs=2, width=0.0625, train_subset=128, test_subset=64)
    uninterrupted = train_run(config, mnist5k, tmp_path / "clean", device)

    def stop(result, epoch):
        raise Interrupted

    with pytest.raises(Interrupted):
        train_run(config, mnist5k, tmp_path / "stopped", device, on_epoch=stop)
    resumed = train_run(config, mnist5k, tmp_path / "stopped", device)
    assert resumed.weights_sha256 == uninterrupted.weights_sha256
    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in uninterrupted.history]


def test_train_state_round_trips_every_generator(mnist5k):
    config = RunConfig(**SMALL)
    state = TrainState.create(config, build_model(config, mnist5k), steps_per_epoch=10)
    saved = state.state_dict()
    draws = [torch.rand(3, generator=g) for g in (state.data_rng, state.augment_rng)] + [torch.rand(3)]
    state.load_state_dict(saved)
    again = [torch.rand(3, generator=g) for g in (state.data_rng, state.augment_rng)] + [torch.rand(3)]
    assert all(torch.equal(a, b) for a, b in zip(draws, again, strict=True))
    with pytest.raises(ValueError, match="written on cuda, but it would resume on cpu.*--device cuda"):
        state.load_state_dict(saved | {"device_type": "cuda"})


def test_a_diverging_run_is_recorded(mnist5k, tmp_path):
    result = train_run(RunConfig(**(SMALL | {"lr": 1e12})), mnist5k, tmp_path)
    assert result.status == "diverged"
    assert load_checkpoint(tmp_path / f"{result.config.key()}.pt")["status"] == "diverged"


def test_googlenet_aux_losses_train(mnist5k, tmp_path):
    config = RunConfig(
        **TINY,
        model="googlenet",
        width=0.125,
        train_subset=64,
        test_subset=32,
        model_config=(("aux_logits", True),),
    )
    assert train_run(config, mnist5k, tmp_path).status == "finished"


def test_derived_seeds_are_distinct_and_stable():
    seeds = {derive_seed(0, p) for p in ("init", "data", "augment", "dropout")}
    assert len(seeds) == 4 and derive_seed(7, "init") == derive_seed(7, "init") != derive_seed(8, "init")
    with pytest.raises(ValueError, match="purpose"):
        derive_seed(0, "weights")


def test_config_errors_and_identity():
    assert RunConfig(**SMALL).key() == RunConfig(**SMALL).key() != RunConfig(**SMALL, seed=5).key()
    with pytest.raises(ValueError, match="schedule"):
        RunConfig(**SMALL, schedule="linear")
    with pytest.raises(ValueError, match="epochs"):
        RunConfig(**(SMALL | {"epochs": 0}))


def test_warmup_runs_the_first_iterations_at_a_tenth_of_the_lr_then_the_schedule():
    config = RunConfig(**SMALL, schedule="multistep", milestones=(6,), warmup_steps=3)
    factor = lr_factor(config, total_steps=10)
    assert [factor(step) for step in (0, 2, 3, 5, 6, 9)] == pytest.approx([0.1, 0.1, 1, 1, 0.1, 0.1])
    assert config.key() != RunConfig(**SMALL, schedule="multistep", milestones=(6,)).key()
    assert RunConfig(**SMALL).key() == "6be4dd5ab5fb2a1a", "no warm-up: the key from before the field"
    with pytest.raises(ValueError, match="warmup_steps"):
        RunConfig(**SMALL, warmup_steps=-1)


def test_adam_is_torch_adam_with_the_configs_settings_and_names_the_run(mnist5k, tmp_path):
    adam = dict(SMALL, lr=1e-3, optimizer="adam", betas=(0.8, 0.99), eps=1e-7, weight_decay=0.0, epochs=1)
    config = RunConfig(**adam)
    optimizer = make_optimizer(config, torch.nn.Linear(2, 2))
    assert isinstance(optimizer, torch.optim.Adam)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
        1e-3,
        (0.8, 0.99),
        1e-7,
        0.0,
    )
    assert isinstance(make_optimizer(RunConfig(**SMALL), torch.nn.Linear(2, 2)), torch.optim.SGD)
    keys = {RunConfig(**SMALL).key(), config.key(), RunConfig(**(adam | {"eps": 1e-8})).key()}
    assert len(keys) == 3 and RunConfig(**SMALL).key() == "6be4dd5ab5fb2a1a", "SGD keeps its older key"
    assert RunConfig(**(adam | {"betas": [0.8, 0.99]})).key() == config.key(), "betas read back from JSON"
    one, two = (train_run(config, mnist5k, tmp_path / name) for name in "ab")
    assert one.weights_sha256 == two.weights_sha256 and one.history[-1].test_acc > 0.5
    with pytest.raises(ValueError, match="optimizer"):
        RunConfig(**SMALL, optimizer="rmsprop")
    with pytest.raises(ValueError, match="betas"):
        RunConfig(**SMALL, betas=(0.9, 1.0))


def test_atomic_save_leaves_no_temp_files(tmp_path):
    save_atomic({"x": torch.ones(3)}, tmp_path / "c.pt")
    save_atomic({"x": torch.zeros(3)}, tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
    assert torch.equal(load_checkpoint(tmp_path / "c.pt")["x"], torch.zeros(3))
    assert load_checkpoint(tmp_path / "missing.pt") is None
    assert not os.path.exists(tmp_path / "missing.pt")


# --- How fast: channels-last, torch.compile, autocast (each part of the run's config) --------------

# LeNet on whole batches only (256 and 64 examples, batch 32): one compiled graph for training and
# one for evaluation, the least compiling a compiled run can do (inductor: tens of seconds on 2 cores).
FAST = SMALL | {"train_subset": 256, "test_subset": 64}
SPEEDS = {
    "channels_last": {"channels_last": True},
    "bf16": {"amp": "bf16"},
    "compile": {"compile": "default"},
}


def test_speed_fields_name_the_run_only_when_set():
    assert RunConfig(**SMALL, channels_last=False, compile="", amp="").key() == "6be4dd5ab5fb2a1a"
    keys = {RunConfig(**SMALL, **speed).key() for speed in SPEEDS.values()}
    assert len(keys) == 3 and "6be4dd5ab5fb2a1a" not in keys
    assert RunConfig(**SMALL, compile="max-autotune").key() != RunConfig(**SMALL, compile="default").key()
    with pytest.raises(ValueError, match="compile must be one of"):
        RunConfig(**SMALL, compile="fast")
    with pytest.raises(ValueError, match="amp must be one of"):
        RunConfig(**SMALL, amp="fp8")


def test_a_state_trains_as_its_config_says(mnist5k):
    plain = TrainState.create(RunConfig(**FAST), build_model(RunConfig(**FAST), mnist5k), 8)
    assert plain.network is plain.model is plain.evaluator and plain.amp_dtype is None
    config = RunConfig(**FAST, channels_last=True, amp="bf16", compile="default")
    model = build_model(config, mnist5k)
    state = TrainState.create(config, model, 8)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not all(w.is_contiguous() for w in convs)
    assert state.batch(torch.zeros(2, 3, 4, 4)).is_contiguous(memory_format=torch.channels_last)
    assert not state.batch(torch.zeros(2, 3, 4, 4)).is_contiguous()
    assert state.network is not model and state.evaluator is state.network  # compiled (lazily)
    with state.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16 and torch.is_autocast_enabled("cpu")


def test_fp16_autocast_is_refused_on_the_cpu(mnist5k):
    config = RunConfig(**FAST, amp="fp16")
    with pytest.raises(ValueError, match="fp16 runs on CUDA only: on the CPU use bf16"):
        TrainState.create(config, build_model(config, mnist5k), 8)


@pytest.mark.parametrize("speed", SPEEDS.values(), ids=list(SPEEDS))
def test_each_speed_setting_repeats_and_resumes_bit_for_bit(mnist5k, tmp_path, speed):
    """Same seed, same setting: same bits; stopped after epoch 1 and resumed (compiled afresh, for
    compile): the uninterrupted run's bits."""
    config = RunConfig(**FAST, **speed)
    uninterrupted = train_run(config, mnist5k, tmp_path / "clean")

    def stop(result, epoch):
        raise Interrupted

    with pytest.raises(Interrupted):
        train_run(config, mnist5k, tmp_path / "stopped", on_epoch=stop)
    resumed = train_run(config, mnist5k, tmp_path / "stopped")
    assert resumed.status == uninterrupted.status == "finished"
    assert resumed.weights_sha256 == uninterrupted.weights_sha256
    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in uninterrupted.history]
    assert [e.test_loss for e in resumed.history] == [e.test_loss for e in uninterrupted.history]


def test_the_float16_loss_scale_is_checkpointed(mnist5k):
    """fp16 runs on CUDA only; its GradScaler (scale, growth tracker) round-trips through the
    state's checkpoint as the generators do (the CPU's GradScaler stands in for CUDA's here)."""
    config = RunConfig(**FAST)
    state = TrainState.create(config, build_model(config, mnist5k), 8)
    state.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=1)
    state.scaler.scale(torch.ones((), requires_grad=True))  # the scale tensor exists from here on
    state.scaler.update(512.0)
    saved = state.state_dict()
    assert saved["grad_scaler"]["scale"] == 512.0
    state.scaler.update(64.0)
    state.load_state_dict(saved)
    assert state.scaler.get_scale() == 512.0
