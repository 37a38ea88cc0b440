"""Descending constraints: the dual ascent, its state (resume, DDP), logging, YAML, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.training import DescendingConstraints
from lightning_unfold.training.constrained import layer_measure
from lightning_unfold.training.study import study_trainer

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = SparseRecovery(m=12, n=24, seed=0)


def _trainer(callbacks: list[Any], **kw: Any) -> L.Trainer:
    """The library's quiet study trainer (no validation loop), two epochs unless told."""
    return study_trainer(kw.pop("max_steps", -1), callbacks=callbacks, **{"max_epochs": 2, **kw})


def _module(lr: float = 1e-2, depth: int = 4) -> UnfoldedModule:
    torch.manual_seed(0)
    return UnfoldedModule(PROBLEM, paradigm="objective", variant="lista_cp", depth=depth, lr=lr)


def _data(batches: int = 4) -> SyntheticDataModule:
    return SyntheticDataModule(PROBLEM, batch_size=16, train_batches=batches, val_size=32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": 0.0}, "eps must lie in"),
        ({"eps": 1.0}, "eps must lie in"),
        ({"eps": -0.1}, "eps must lie in"),
        ({"eps": 1.5}, "eps must lie in"),
        ({"dual_lr": 0.0}, "dual_lr"),
        ({"dual_lr": -1.0}, "dual_lr"),
        ({"dual_lr": math.inf}, "dual_lr"),
        ({"form": "nope"}, "valid"),
        ({"reference": "nope"}, "valid"),
        ({"dual_every_n_steps": 0}, "dual_every_n_steps"),
        ({"init_dual": -1.0}, "init_dual"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DescendingConstraints(**kwargs)


def test_models_without_layers_are_rejected() -> None:
    for paradigm in ("black_box", "classical"):
        module = UnfoldedModule(PROBLEM, paradigm=paradigm, depth=3)
        with pytest.raises(TypeError, match=r"intermediate iterates|no trainable layers"):
            _trainer([DescendingConstraints()], max_steps=1).fit(module, _data())


class _Batches(Callback):
    """Records every training batch (to recompute the window's constraint by hand)."""

    def __init__(self) -> None:
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, i: int) -> None:
        self.batches.append((batch[0].clone(), batch[1].clone()))


def test_dual_ascent_is_the_projected_step_on_the_pooled_window_constraint() -> None:
    # a model whose later layers move away from the target: their constraints are violated
    module = _module(lr=1e-12)
    with torch.no_grad():
        for w in module.model.learned["W1"][2:]:
            w.mul_(4.0)
    cons = DescendingConstraints(eps=0.05, dual_lr=0.5, dual_every_n_steps=3)
    rec = _Batches()
    trainer = _trainer([rec, cons], max_epochs=1)
    trainer.fit(module, _data(batches=3))
    # by hand: pooled means over the window's 48 samples, c_l = mean_l / mean_{l-1} - (1 - eps)
    model = module.model
    q = []
    with torch.no_grad():
        for x, s in rec.batches:
            q.append(layer_measure(model, model(x), x, "distance", s))
    means = torch.cat(q).double().mean(dim=0)
    c = means[1:] / means[:-1] - 0.95
    expected = torch.clamp(0.5 * c, min=0.0)
    assert len(cons.history) == 1
    assert torch.allclose(torch.tensor(cons.nu, dtype=torch.float64), expected, atol=1e-5)
    assert cons.nu[-1] > 0 and min(cons.nu) == 0.0  # violated layers priced, satisfied ones not
    logged = trainer.callback_metrics
    for layer in range(1, 5):
        assert f"descent/nu/{layer:02d}" in logged
        assert f"descent/constraint/{layer:02d}" in logged
        sat = float(logged[f"descent/satisfied/{layer:02d}"])
        assert sat == float(c[layer - 1] <= 0)
    assert "descent/satisfied_fraction" in logged


def test_noise_injection_constrains_descent_from_the_perturbed_input() -> None:
    # Hadou et al.'s noise injection: layer l + 1 reads s~(l) = s(l) + sigma ||s(l)|| z / ||z||,
    # and its constraint compares its output with that perturbed input
    sigma, seed = 0.5, 3
    module = _module(lr=1e-12)
    cons = DescendingConstraints(
        eps=0.05, dual_lr=0.5, dual_every_n_steps=3, noise=sigma, seed=seed, init_dual=1.0
    )
    rec = _Batches()
    _trainer([rec, cons], max_epochs=1).fit(module, _data(batches=3))
    assert module.train_perturbation is None  # detached at teardown
    # by hand: the same noise stream (seeded by seed and step), walked layer by layer
    model = module.model
    d_out, d_in, d_clean = [], [], []
    with torch.no_grad():
        for step, (x, target) in enumerate(rec.batches):
            gen = torch.Generator().manual_seed((seed * 1_000_003 + step * 7919) % 2**63)
            s = model.algorithm.init(x, model.layer_params(1))
            outs, ins = [], [(s - target).norm(dim=1)]
            for k in range(1, model.depth + 1):
                s = model.layer(s, x, k)
                outs.append((s - target).norm(dim=1))
                if k < model.depth:
                    noise = torch.randn(s.shape, generator=gen)
                    s = s + sigma * s.norm(dim=1, keepdim=True) * noise / noise.norm(
                        dim=1, keepdim=True
                    )
                    ins.append((s - target).norm(dim=1))
            d_out.append(torch.stack(outs, dim=1))
            d_in.append(torch.stack(ins, dim=1))
            d_clean.append(torch.stack([ins[0], *outs[:-1]], dim=1))
    out, inp, clean = (torch.cat(d).double().mean(dim=0) for d in (d_out, d_in, d_clean))
    expected = torch.clamp(1.0 + 0.5 * (out / inp - 0.95), min=0.0)
    assert torch.allclose(torch.tensor(cons.nu, dtype=torch.float64), expected, atol=1e-5)
    # measured from the clean previous output instead, the duals would differ: the test can fail
    against_clean = torch.clamp(1.0 + 0.5 * (out / clean - 0.95), min=0.0)
    assert not torch.allclose(against_clean, expected, atol=1e-3)
    # the perturbed inputs are farther from the code than the clean iterates
    assert bool((inp[1:] > clean[1:]).all())


@pytest.mark.parametrize("form", ["distance", "gradient", "objective"])
def test_each_form_trains_and_the_lagrangian_enters_the_loss(form: str) -> None:
    module = _module()
    cons = DescendingConstraints(eps=0.05, dual_lr=1.0, form=form, init_dual=1.0)
    trainer = _trainer([cons], max_epochs=1)
    trainer.fit(module, _data(batches=2))
    assert len(cons.history) == 1 and all(v >= 0 for v in cons.nu)
    assert module.loss_terms == [] and module.train_perturbation is None  # detached at teardown
    x, s = PROBLEM.sample(8, seed=1)
    traj = module.model(x)
    term = cons.lagrangian_term(module, traj, x, s)
    assert term.requires_grad and torch.isfinite(term)


def test_solution_reference_uses_the_classical_solver() -> None:
    module = _module()
    cons = DescendingConstraints(reference="solution", solution_tol=1e-6, dual_every_n_steps=2)
    _trainer([cons], max_epochs=1).fit(module, _data(batches=2))
    assert len(cons.history) == 1 and all(math.isfinite(c) for c in cons.history[0]["constraint"])


def _fit_with_checkpoint(tmp_path: Path, resume: bool) -> tuple[list[Any], list[torch.Tensor]]:
    def make() -> tuple[UnfoldedModule, DescendingConstraints]:
        module = _module()
        with torch.no_grad():  # later layers overshoot: their constraints start violated
            for w in module.model.learned["W1"][2:]:
                w.mul_(4.0)
        return module, DescendingConstraints(
            eps=0.05, dual_lr=1.0, dual_every_n_steps=3, noise=0.1, seed=3
        )

    module, cons = make()
    if not resume:
        _trainer([cons], max_epochs=3).fit(module, _data())
    else:
        trainer = _trainer([cons], max_epochs=1)
        trainer.fit(module, _data())
        ckpt = tmp_path / "mid.ckpt"
        trainer.save_checkpoint(ckpt)
        assert cons.steps_since_update == 1  # the dual window straddles the checkpoint
        module, cons = make()
        _trainer([cons], max_epochs=3).fit(module, _data(), ckpt_path=ckpt)
    return cons.history, [p.detach().clone() for p in module.parameters()]


def test_resume_with_duals_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    hist_a, params_a = _fit_with_checkpoint(tmp_path, resume=False)
    hist_b, params_b = _fit_with_checkpoint(tmp_path, resume=True)
    assert len(hist_a) == 4 and any(v > 0 for h in hist_a for v in h["nu"])
    assert hist_a == hist_b  # every dual step, including the one whose window straddles the resume
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b, strict=True))


def test_a_checkpoint_without_perturbed_input_sums_still_resumes() -> None:
    # checkpoints written before the perturbed-input sums existed hold only the output sums
    cons = DescendingConstraints()
    state = {
        "nu": [0.1, 0.2],
        "sums": [3.0, 2.0, 1.0],
        "counts": [4.0, 4.0, 4.0],
        "steps_since_update": 1,
        "history": [],
        "eps": 0.05,
        "form": "distance",
    }
    cons.load_state_dict(state)
    assert cons.state_dict()["in_sums"] == [3.0, 2.0]
    assert cons.window_constraints() == pytest.approx([2 / 3 - 0.95, 1 / 2 - 0.95])


def test_checkpoint_holds_the_duals(tmp_path: Path) -> None:
    module = _module()
    cons = DescendingConstraints(dual_every_n_steps=2, init_dual=0.25)
    trainer = _trainer([cons], max_epochs=1)
    trainer.fit(module, _data())
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    ckpt = torch.load(tmp_path / "c.ckpt", weights_only=False)
    (state,) = [v for k, v in ckpt["callbacks"].items() if "DescendingConstraints" in k]
    assert state["nu"] == cons.nu and len(state["history"]) == 2


# -- DDP -----------------------------------------------------------------------------------
_X, _S = PROBLEM.sample(64, seed=(9, 0))


class _RankData(L.LightningDataModule):
    """Rank r of w gets samples r, r + w, r + 2w, ... in order, batches of 16 / w: each step's
    batches over all ranks are the same 16 samples as one process's batch (no sampler shuffles)."""

    def train_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        r, w = self.trainer.global_rank, self.trainer.world_size  # type: ignore[union-attr]
        return DataLoader(TensorDataset(_X[r::w], _S[r::w]), batch_size=16 // w, shuffle=False)

    def val_dataloader(self) -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(TensorDataset(_X[:16], _S[:16]), batch_size=16)


class _DualsReport(Callback):
    def __init__(self, out: str) -> None:
        self.out = out

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        (cons,) = [c for c in trainer.callbacks if isinstance(c, DescendingConstraints)]  # type: ignore[attr-defined]
        path = Path(self.out, f"rank{trainer.global_rank}_of_{trainer.world_size}.json")
        path.write_text(json.dumps({"nu": cons.nu, "history": cons.history}))


def _dual_run(tmp_path: Path, devices: int) -> dict[str, Any]:
    module = _module(lr=1e-12)  # the primal hardly moves: duals must agree to rounding
    with torch.no_grad():
        for w in module.model.learned["W1"][2:]:
            w.mul_(4.0)
    cons = DescendingConstraints(eps=0.05, dual_lr=0.5, dual_every_n_steps=2)
    strategy = "ddp_spawn" if devices > 1 else "auto"
    trainer = _trainer(
        [cons, _DualsReport(str(tmp_path))],
        max_epochs=2,
        devices=devices,
        strategy=strategy,
        use_distributed_sampler=False,
    )
    trainer.fit(module, datamodule=_RankData())
    return json.loads((tmp_path / f"rank0_of_{devices}.json").read_text())


@pytest.mark.ddp
def test_ddp_two_processes_give_the_single_process_duals(tmp_path: Path) -> None:
    single = _dual_run(tmp_path, 1)
    ddp = _dual_run(tmp_path, 2)
    rank1 = json.loads((tmp_path / "rank1_of_2.json").read_text())
    assert ddp["nu"] == rank1["nu"]  # every rank holds the same duals
    assert len(ddp["history"]) == len(single["history"]) == 4
    assert any(v > 0 for v in single["nu"])
    for a, b in zip(ddp["history"], single["history"], strict=True):
        assert a["step"] == b["step"]
        assert a["nu"] == pytest.approx(b["nu"], abs=1e-7)


@pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")
def test_yaml_config_builds_the_constraints(monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_unfold.cli import UnfoldCLI

    monkeypatch.setattr("sys.argv", ["lightning-unfold"])
    cfg = ROOT / "examples" / "configs" / "descending_constraints.yaml"
    cli = UnfoldCLI(
        UnfoldedModule,
        SyntheticDataModule,
        args=["--config", str(cfg), "--trainer.logger=false"],
        run=False,
    )
    found = [cb for cb in cli.trainer.callbacks if isinstance(cb, DescendingConstraints)]  # type: ignore[attr-defined]
    assert len(found) == 1
    assert (
        found[0].eps == 0.05 and found[0].form == "distance" and found[0].dual_every_n_steps is None
    )
    assert cli.model.hparams["variant"] == "lista_cp" and cli.model.depth == 10
    assert found[0].noise == 0.0


@pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")
def test_yaml_config_sets_the_noise_injection(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from lightning_unfold.cli import UnfoldCLI

    monkeypatch.setattr("sys.argv", ["lightning-unfold"])
    text = (ROOT / "examples" / "configs" / "descending_constraints.yaml").read_text()
    assert "noise: 0.0" in text
    cfg = tmp_path / "noisy.yaml"
    cfg.write_text(text.replace("noise: 0.0", "noise: 0.1\n        seed: 7"))
    cli = UnfoldCLI(
        UnfoldedModule,
        SyntheticDataModule,
        args=["--config", str(cfg), "--trainer.logger=false"],
        run=False,
    )
    (found,) = [cb for cb in cli.trainer.callbacks if isinstance(cb, DescendingConstraints)]  # type: ignore[attr-defined]
    assert found.noise == 0.1 and found.seed == 7
