"""The study machinery in the library: schedulers, parameter groups, KeepBest, tuning, per-layer
evaluation and warm starts."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import ISTA
from lightning_unfold.core.metrics import layer_curves
from lightning_unfold.core.unfolded import ClassicalSolver
from lightning_unfold.training import (
    KeepBest,
    LRScheduler,
    layer_metrics,
    tune_classical,
    warm_start,
)

PROBLEM = SparseRecovery(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)


class _RecordLR(L.Callback):
    def __init__(self) -> None:
        self.lrs: list[list[float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        self.lrs.append([g["lr"] for g in trainer.optimizers[0].param_groups])


def _fit(module: UnfoldedModule, trainer: L.Trainer, **data: Any) -> None:
    opts: dict[str, Any] = dict(batch_size=16, train_batches=100, val_size=64)
    opts.update(data)
    trainer.fit(module, SyntheticDataModule(PROBLEM, **opts))


# -- schedulers ------------------------------------------------------------------------------
def test_cosine_schedule_follows_its_formula_over_the_fit(quiet_trainer: Any) -> None:
    module = UnfoldedModule(
        PROBLEM, paradigm="hyperparameters", depth=3, lr=1e-2, scheduler=LRScheduler(floor=0.1)
    )
    rec = _RecordLR()
    _fit(module, quiet_trainer(max_steps=10, limit_val_batches=0, callbacks=[rec]))
    want = [1e-2 * (0.1 + 0.45 * (1 + math.cos(math.pi * t / 10))) for t in range(10)]
    assert [lr[0] for lr in rec.lrs] == pytest.approx(want, rel=1e-12)
    assert rec.lrs[0][0] == pytest.approx(1e-2) and rec.lrs[-1][0] < 0.15e-2


def test_step_and_warmup_factors() -> None:
    step = LRScheduler("step", step_size=3, gamma=0.5)
    assert [step.factor(t, 100) for t in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    warm = LRScheduler("constant", warmup_steps=3)
    assert [warm.factor(t, 100) for t in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert LRScheduler("exponential", gamma=0.9).factor(2, 5) == pytest.approx(0.81)
    assert LRScheduler("cosine", steps=4).factor(8, 100) == 0.0  # past the horizon: the floor


def test_bad_scheduler_options_say_what_is_valid(quiet_trainer: Any) -> None:
    with pytest.raises(ValueError, match=r"valid:.*cosine"):
        LRScheduler("linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floor must lie in"):
        LRScheduler(floor=2.0)
    with pytest.raises(ValueError, match=r"lr_scaling.*valid"):
        UnfoldedModule(PROBLEM, depth=2, lr_scaling="size")
    module = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=2, scheduler="cosine")
    with pytest.raises(ValueError, match=r"no limit.*LRScheduler\(steps"):
        _fit(module, quiet_trainer(max_steps=-1, max_epochs=-1, limit_val_batches=0))


def test_scheduler_and_groups_from_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_unfold.cli import UnfoldCLI

    config = tmp_path / "c.yaml"
    config.write_text(
        "seed_everything: 0\n"
        "model:\n"
        "  problem:\n"
        "    class_path: lightning_unfold.SparseRecovery\n"
        "    init_args: {m: 16, n: 32, sparsity: 0.1, rho: 0.05, seed: 0}\n"
        "  paradigm: hyperparameters\n"
        "  depth: 3\n"
        "  lr: 0.01\n"
        "  scheduler: {name: step, step_size: 2, gamma: 0.5}\n"
        "  param_group_lr: {'model.learned.threshold.*': 0.1}\n"
        "data: {batch_size: 8, train_batches: 4, val_size: 8}\n"
        "trainer: {max_steps: 4, logger: false, enable_checkpointing: false,\n"
        "          enable_progress_bar: false, enable_model_summary: false}\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-unfold"])
    cli = UnfoldCLI(UnfoldedModule, SyntheticDataModule, args=["--config", str(config)], run=False)
    module = cli.model
    assert module.scheduler == LRScheduler("step", step_size=2, gamma=0.5)
    rec = _RecordLR()
    cli.trainer.callbacks.append(rec)
    cli.trainer.fit(module, cli.datamodule)
    names = [g["name"] for g in cli.trainer.optimizers[0].param_groups]
    step_lr = [lrs[names.index("model.learned.step.0")] for lrs in rec.lrs]
    thr_lr = [lrs[names.index("model.learned.threshold.0")] for lrs in rec.lrs]
    assert step_lr == pytest.approx([1e-2, 1e-2, 5e-3, 5e-3])
    assert thr_lr == pytest.approx([1e-3, 1e-3, 5e-4, 5e-4])
    # the checkpoint keeps the options
    path = tmp_path / "m.ckpt"
    cli.trainer.save_checkpoint(path)
    again = UnfoldedModule.load_from_checkpoint(path)
    assert again.scheduler == module.scheduler
    assert again.hparams["param_group_lr"] == {"model.learned.threshold.*": 0.1}


# -- parameter groups ------------------------------------------------------------------------
def test_param_group_lr_and_magnitude_scaling() -> None:
    module = UnfoldedModule(
        PROBLEM, paradigm="hyperparameters", depth=2, lr=1e-2, param_group_lr={"*step*": 0.5}
    )
    groups = module.configure_optimizers().param_groups
    lr = {g["name"]: g["lr"] for g in groups}
    assert lr["model.learned.step.0"] == pytest.approx(5e-3)
    assert lr["model.learned.threshold.1"] == pytest.approx(1e-2)
    plain = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=2, lr=1e-2)
    assert len(plain.configure_optimizers().param_groups) == 1  # no option: the plain optimizer
    scaled = UnfoldedModule(PROBLEM, paradigm="objective", depth=2, lr=1e-2, lr_scaling="magnitude")
    for g in scaled.configure_optimizers().param_groups:
        (p,) = g["params"]
        assert g["lr"] == pytest.approx(1e-2 * float(p.detach().abs().mean()))
    typo = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=2, param_group_lr={"stp*": 2})
    with pytest.raises(ValueError, match=r"match no trainable parameter.*model.learned.step.0"):
        typo.configure_optimizers()


# -- KeepBest --------------------------------------------------------------------------------
def _worsening() -> tuple[UnfoldedModule, dict[str, torch.Tensor]]:
    """Learned ISTA step sizes with a learning rate so large that training only does harm."""
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=4, lr=0.5)
    return module, {k: v.clone() for k, v in module.state_dict().items()}


def test_keep_best_restores_the_initial_model_when_training_only_hurts(quiet_trainer: Any) -> None:
    module, initial = _worsening()
    best = KeepBest()
    trainer = quiet_trainer(max_steps=6, val_check_interval=2, callbacks=[best])
    _fit(module, trainer)
    assert [s for s, _ in best.history] == [0, 2, 4, 6]
    values = [v for _, v in best.history]
    assert all(v > values[0] for v in values[1:])  # every validated state is worse (NMSE, dB)
    assert best.best_step == 0 and best.best == values[0]
    for k, v in module.state_dict().items():
        torch.testing.assert_close(v, initial[k], rtol=0, atol=0)
    # the initial score is the validation metric of the initial model
    check, _ = _worsening()
    data = SyntheticDataModule(PROBLEM, batch_size=16, train_batches=100, val_size=64)
    quiet_trainer().validate(check, data, verbose=False)
    assert check.primary_curves["val"][-1] == pytest.approx(values[0], rel=1e-6)


def test_keep_best_refuses_a_fit_without_validation(quiet_trainer: Any) -> None:
    module, _ = _worsening()
    trainer = quiet_trainer(max_steps=2, limit_val_batches=0, callbacks=[KeepBest()])
    with pytest.raises(ValueError, match="never validates"):
        _fit(module, trainer)


def test_keep_best_scores_the_batches_validation_scores(quiet_trainer: Any) -> None:
    module, _ = _worsening()
    best = KeepBest()
    _fit(module, quiet_trainer(max_steps=1, limit_val_batches=2, callbacks=[best]))
    check, _ = _worsening()
    data = SyntheticDataModule(PROBLEM, batch_size=16, train_batches=100, val_size=64)
    quiet_trainer(limit_val_batches=2).validate(check, data, verbose=False)
    assert best.history[0][1] == pytest.approx(check.primary_curves["val"][-1], rel=1e-6)


def test_keep_best_reads_dataloaders_given_to_fit(quiet_trainer: Any) -> None:
    module, _ = _worsening()
    best = KeepBest()
    data = SyntheticDataModule(PROBLEM, batch_size=16, train_batches=4, val_size=64)
    data.setup()
    trainer = quiet_trainer(max_steps=4, callbacks=[best])
    trainer.fit(module, data.train_dataloader(), data.val_dataloader())
    assert [s for s, _ in best.history] == [0, 4]


def test_keep_best_keeps_a_trained_state_that_is_better(quiet_trainer: Any) -> None:
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=4, lr=1e-2)
    best = KeepBest()
    _fit(module, quiet_trainer(max_steps=40, val_check_interval=20, callbacks=[best]))
    assert best.best_step == 40 and best.best < best.history[0][1]


def test_keep_best_survives_resume(quiet_trainer: Any, tmp_path: Path) -> None:
    """4 steps, a checkpoint (as ModelCheckpoint saves mid-fit), 4 resumed steps: the kept
    state, its score and the history come back, and the resumed model is not scored as an
    'initial' one."""

    def data() -> SyntheticDataModule:  # validation at every 2-step epoch's end
        return SyntheticDataModule(PROBLEM, batch_size=16, train_batches=2, val_size=64)

    module, initial = _worsening()
    first = KeepBest(restore=False)
    trainer = quiet_trainer(max_steps=4, callbacks=[first])
    trainer.fit(module, data())
    assert first.best_step == 0  # the two trained states are worse than the initial one
    path = tmp_path / "resume.ckpt"
    trainer.save_checkpoint(path)
    resumed, _ = _worsening()
    torch.nn.init.constant_(resumed.model.learned["step"][0], 0.0)  # overwritten by the resume
    again = KeepBest()
    trainer2 = quiet_trainer(max_steps=8, callbacks=[again])
    trainer2.fit(resumed, data(), ckpt_path=path)
    steps = [s for s, _ in again.history]
    values = [v for _, v in again.history]
    assert steps == [0, 2, 4, 6, 8] and again.history[:3] == first.history
    assert again.best == min(values) and again.best_step == steps[values.index(min(values))]
    assert again.state is not None
    for k, v in resumed.state_dict().items():  # the kept state is what the fit ends with
        torch.testing.assert_close(v, again.state[k], rtol=0, atol=0)
    if again.best_step == 0:
        torch.testing.assert_close(
            resumed.state_dict()["model.learned.step.0"], initial["model.learned.step.0"]
        )
    with pytest.raises(ValueError, match=r"cannot monitor 'val/psnr'.*val/nmse_db"):
        KeepBest("val/psnr").on_train_start(trainer2, resumed)


# -- tuning ----------------------------------------------------------------------------------
def test_tune_classical_finds_the_known_best_and_matches_brute_force() -> None:
    x, s = PROBLEM.sample(64, seed=(9, 0))
    L_ = PROBLEM.lipschitz
    steps = [0.05 / L_, 0.2 / L_, 1.0 / L_]  # ISTA is fastest at the largest admissible step
    result = tune_classical(PROBLEM, "ista", {"step": steps, "rho": [0.01, 0.05]}, x, s, 20)
    assert result.metric == "nmse_db" and len(result.scores) == 6
    assert result.best["step"] == steps[-1]
    # reference: every grid point run by hand
    brute = {}
    for st in steps:
        for rho in (0.01, 0.05):
            prob = SparseRecovery(**{**PROBLEM.init_args(), "rho": rho})
            traj = ClassicalSolver(ISTA(step=st), prob, 20, dtype=torch.float64)(x.double())
            brute[(st, rho)] = layer_curves(
                traj.stacked_estimates(), s.double(), x.double(), prob.metrics()
            )["nmse_db"][-1]
    want = min(brute, key=brute.__getitem__)
    assert (result.best["step"], result.best["rho"]) == want
    assert result.score == pytest.approx(brute[want], rel=1e-9)
    assert len(result.curves[0]) == 21


def test_tune_classical_refuses_unknown_keys() -> None:
    x, s = PROBLEM.sample(8, seed=(9, 0))
    with pytest.raises(ValueError, match="'stepsize' is neither an argument of ISTA"):
        tune_classical(PROBLEM, "ista", {"stepsize": [0.1]}, x, s, 3)
    with pytest.raises(ValueError, match="at least one value"):
        tune_classical(PROBLEM, "ista", {"step": []}, x, s, 3)


# -- per-layer evaluation --------------------------------------------------------------------
@pytest.mark.parametrize(
    "paradigm", ["classical", "hyperparameters", "objective", "correction", "inductive_bias"]
)
def test_layer_metrics_equal_validation_curves(quiet_trainer: Any, paradigm: str) -> None:
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(PROBLEM, paradigm=paradigm, depth=3, hidden=16)
    data = SyntheticDataModule(PROBLEM, batch_size=16, train_batches=2, val_size=48)
    quiet_trainer().validate(module, data, verbose=False)
    x, s = PROBLEM.sample(48, seed=(2, 0))
    curves = layer_metrics(module.model, PROBLEM, x, s)
    assert curves["nmse_db"] == pytest.approx(module.curves["val"]["nmse_db"], rel=1e-6)
    chunked = layer_metrics(module.model, PROBLEM, x, s, batch_size=7)
    assert chunked["nmse_db"] == pytest.approx(curves["nmse_db"], rel=1e-6)


def test_layer_metrics_of_the_black_box_is_flat_from_layer_one() -> None:
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(PROBLEM, paradigm="black_box", depth=4)
    x, s = PROBLEM.sample(32, seed=(2, 0))
    curve = layer_metrics(module.model, PROBLEM, x, s, depth=4)["nmse_db"]
    assert len(curve) == 5 and curve[1:] == [curve[1]] * 4
    with torch.no_grad():
        final = module.model(x).final_estimate
    assert curve[-1] == pytest.approx(
        layer_curves([final], s, x, PROBLEM.metrics())["nmse_db"][0], rel=1e-9
    )
    assert curve[0] == pytest.approx(0.0, abs=1e-9)  # layer 0: the zero estimate, NMSE 0 dB
    with pytest.raises(ValueError, match=r"no metric \['ber'\].*nmse_db"):
        layer_metrics(module.model, PROBLEM, x, s, metrics=["ber"])


def test_a_classical_curve_of_many_iterations_is_streamed() -> None:
    x, s = PROBLEM.sample(16, seed=(2, 0))
    solver = ClassicalSolver(ISTA(), PROBLEM, 1)  # depth 1, tied: runs any depth
    long = layer_metrics(solver, PROBLEM, x, s, depth=200)["nmse_db"]
    with torch.no_grad():
        ref = layer_curves(solver(x, depth=200).stacked_estimates(), s, x, PROBLEM.metrics())
    assert long == pytest.approx(ref["nmse_db"], rel=1e-9)


# -- warm start ------------------------------------------------------------------------------
def test_warm_start_copies_the_learned_hyperparameters() -> None:
    torch.manual_seed(0)
    src = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=3)
    with torch.no_grad():
        for p in src.parameters():
            p.mul_(0.5)
    dst = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=4)
    assert warm_start(dst, src) == ["step", "threshold"]
    for k in (1, 2, 3):
        for name in ("step", "threshold"):
            torch.testing.assert_close(
                dst.model.layer_params(k)[name], src.model.layer_params(k)[name]
            )
    other = UnfoldedModule(PROBLEM, paradigm="objective", depth=3)
    assert warm_start(other, src) == ["threshold"]
    with pytest.raises(ValueError, match=r"share are \['threshold'\]"):
        warm_start(other, src, names=["step"])
    with pytest.raises(TypeError, match="unfolded models; source is BlackBoxModel"):
        warm_start(dst, UnfoldedModule(PROBLEM, paradigm="black_box", depth=3))


def test_rpca_trains_on_its_own_relative_error_and_warm_starts_its_conv_layers() -> None:
    from lightning_unfold.algorithms.rpca import RPCAProblem, relative_frobenius_error

    prob = RPCAProblem(n1=8, n2=6, rank=2, seed=0)
    _, target = prob.sample(4, seed=0)
    est = target + 0.1 * torch.randn_like(target)
    loss = prob.supervised_loss(est, target)
    assert loss == pytest.approx(float(relative_frobenius_error(est, target).mean()), rel=1e-6)
    part = target.clone()
    part[1:] = float("nan")  # only row 0 labelled
    assert prob.supervised_loss(est, part) == pytest.approx(
        float(relative_frobenius_error(est[:1], target[:1]).mean()), rel=1e-6
    )
    assert prob.supervised_loss(est, torch.full_like(target, float("nan"))) is None
    src = UnfoldedModule(prob, algorithm="rpca", paradigm="hyperparameters", depth=3)
    with torch.no_grad():
        for p in src.parameters():
            p.mul_(0.7)
    dst = UnfoldedModule(prob, algorithm="rpca", paradigm="inductive_bias", depth=3, hidden=4)
    warm_start(dst, src, names=("eta_L", "eta_R", "zeta"))
    decay = src.model.algorithm.decay
    for k in (1, 2, 3):
        net, want = dst.model.nets[k - 1], src.model.layer_params(k)
        torch.testing.assert_close(net.eta_L, want["eta_L"])
        torch.testing.assert_close(net.zeta, want["zeta"] * decay ** (k - 1))
