"""UnfoldedModule: losses, supervision modes, metrics, data, checkpoints."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.training import LayerwiseNMSE, layer_weights
from lightning_unfold.training.losses import supervised_layer_loss

PROBLEM = SparseRecovery(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)


def _data(**kw: Any) -> SyntheticDataModule:
    opts: dict[str, Any] = dict(batch_size=32, train_batches=10, val_size=200, test_size=200)
    opts.update(kw)
    return SyntheticDataModule(PROBLEM, **opts)


@pytest.mark.parametrize(
    ("paradigm", "variant", "supervision", "formulation", "lr"),
    [
        ("objective", "lista_cp", "supervised", "multi_iteration", 3e-3),
        ("hyperparameters", None, "unsupervised", "end_to_end", 3e-3),
        ("hyperparameters", None, "semi_supervised", "multi_iteration", 3e-3),
        ("correction", None, "supervised", "multi_iteration", 1e-2),
        ("inductive_bias", None, "supervised", "end_to_end", 3e-3),
        ("black_box", None, "supervised", "end_to_end", 3e-3),
    ],
)
def test_training_improves_validation_nmse(
    quiet_trainer: Any,
    paradigm: str,
    variant: str | None,
    supervision: str,
    formulation: str,
    lr: float,
) -> None:
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(
        PROBLEM,
        paradigm=paradigm,
        variant=variant,
        depth=5,
        lr=lr,
        supervision=supervision,
        formulation=formulation,
        hidden=64,
    )
    data = _data(labelled_fraction=0.5 if supervision == "semi_supervised" else 1.0)
    # a dense correction network starts at exactly zero and needs more steps than the others
    trainer = quiet_trainer(max_epochs=20 if paradigm == "correction" else 6)
    trainer.validate(module, data, verbose=False)
    before = module.nmse_curves["val"][-1]
    trainer.fit(module, data)
    after = module.nmse_curves["val"][-1]
    assert math.isfinite(after)
    assert after < before - 0.5, (before, after)


def test_unsupervised_loss_is_the_lasso_objective() -> None:
    module = UnfoldedModule(
        PROBLEM, paradigm="hyperparameters", depth=3, supervision="unsupervised"
    )
    x, s = PROBLEM.sample(8, seed=1)
    traj = module(x)
    H, rho = PROBLEM.H.float(), PROBLEM.rho
    s3 = traj.final_estimate
    expected = (0.5 * ((x - s3 @ H.T) ** 2).sum(1) + rho * s3.abs().sum(1)).mean()
    torch.testing.assert_close(module.loss(traj, x, s), expected)


def test_semi_supervised_ignores_missing_labels() -> None:
    module = UnfoldedModule(
        PROBLEM,
        paradigm="hyperparameters",
        depth=3,
        supervision="semi_supervised",
        unsupervised_weight=0.25,
    )
    x, s = PROBLEM.sample(8, seed=1)
    traj = module(x)
    masked = s.clone()
    masked[4:] = float("nan")
    sup = supervised_layer_loss(traj.final_estimate[:4], s[:4])
    unsup = module.model.objective(traj.final, x).mean()
    torch.testing.assert_close(module.loss(traj, x, masked), 0.75 * sup + 0.25 * unsup)
    masked[:] = float("nan")  # no label at all: only the objective term remains
    torch.testing.assert_close(module.loss(traj, x, masked), 0.25 * unsup)


def test_supervised_without_any_label_is_an_error() -> None:
    module = UnfoldedModule(PROBLEM, depth=2)
    x, s = PROBLEM.sample(4, seed=1)
    with pytest.raises(ValueError, match=r"semi_supervised"):
        module.loss(module(x), x, torch.full_like(s, float("nan")))


def test_multi_iteration_weights() -> None:
    assert layer_weights(3) == pytest.approx([math.log(2), math.log(3), math.log(4)])
    module = UnfoldedModule(
        PROBLEM,
        paradigm="hyperparameters",
        depth=3,
        formulation="multi_iteration",
        layer_weights=[0.0, 0.0, 1.0],
    )
    e2e = UnfoldedModule(PROBLEM, paradigm="hyperparameters", depth=3)
    x, s = PROBLEM.sample(8, seed=2)
    torch.testing.assert_close(module.loss(module(x), x, s), e2e.loss(e2e(x), x, s))
    with pytest.raises(ValueError, match=r"not all zero"):
        layer_weights(2, [0.0, 0.0])


def test_layerwise_nmse_is_pooled_not_averaged() -> None:
    metric = LayerwiseNMSE(depth=1)
    target = torch.tensor([[1.0, 0.0], [10.0, 0.0]])
    est = torch.stack([torch.zeros_like(target), target + torch.tensor([[1.0, 0.0], [0.0, 0.0]])])
    metric.update(est[:, :1], target[:1])
    metric.update(est[:, 1:], target[1:])
    curve = metric.compute()
    assert float(curve[0]) == pytest.approx(0.0)
    # pooled: 10 log10(1 / 101); a mean of per-sample ratios would give 10 log10(0.5)
    assert float(curve[1]) == pytest.approx(10 * math.log10(1 / 101))


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_train_depth_truncates_the_forward_pass() -> None:
    module = UnfoldedModule(PROBLEM, depth=4)
    module.train_depth = 2
    x, s = PROBLEM.sample(4, seed=0)
    loss = module.training_step((x, s), 0)
    loss.backward()
    grads = [p.grad for p in module.model.layer_parameters(4)]
    assert all(g is None for g in grads)  # layer 4 took no part
    assert any(g is not None for g in module.model.layer_parameters(2)[0:1])


def test_data_module_is_seeded_and_sets_differ() -> None:
    a, b = _data(), _data()
    a.setup("fit")
    b.setup("fit")
    xa, _ = next(iter(a.val_dataloader()))
    xb, _ = next(iter(b.val_dataloader()))
    torch.testing.assert_close(xa, xb)
    xt, _ = next(iter(a.test_dataloader()))
    xtr, _ = next(iter(a.train_dataloader()))
    assert not torch.allclose(xa[:32], xt[:32]) and not torch.allclose(xa[:32], xtr)
    c = _data(seed=1)
    xc, _ = next(iter(c.val_dataloader()))
    assert not torch.allclose(xa, xc)


def test_labelled_fraction_masks_targets() -> None:
    dm = _data(labelled_fraction=0.5, fresh_train=False, train_size=400)
    dm.setup("fit")
    targets = torch.cat([t for _, t in dm.train_dataloader()])
    frac = float((~torch.isnan(targets).any(1)).float().mean())
    assert 0.35 < frac < 0.65


def test_checkpoint_round_trip_is_weights_only(tmp_path: Path, quiet_trainer: Any) -> None:
    module = UnfoldedModule(PROBLEM, paradigm="objective", variant="alista", depth=3)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(module, _data())
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    loaded = UnfoldedModule.load_from_checkpoint(path, weights_only=True)
    x, _ = PROBLEM.sample(4, seed=5)
    torch.testing.assert_close(loaded(x).final_estimate, module(x).final_estimate)
    assert loaded.hparams["variant"] == "alista"


def test_constrained_parameters_are_projected_after_each_step(quiet_trainer: Any) -> None:
    """A threshold pushed below 0 is clamped back to the boundary, where its gradient lives.

    Without the projection a raw threshold < 0 gets a zero gradient through the clamp in the
    forward pass and is dead for the rest of training (what stalled ALISTA's last layers).
    """
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(PROBLEM, paradigm="objective", variant="alista", depth=3, lr=1e-2)
    thresholds = module.model.learned["threshold"]
    with torch.no_grad():
        thresholds[2].fill_(-0.5)  # the last layer's threshold, outside its valid set
    x, target = PROBLEM.sample(16, seed=1)
    loss = module.loss(module.model(x), x, target)
    loss.backward()
    assert thresholds[2].grad is not None
    assert float(thresholds[2].grad.abs().sum()) == 0.0  # dead while outside the set
    module.zero_grad()

    module.model.project_parameters_()
    assert float(thresholds[2].detach().min()) == 0.0  # on the boundary, not beyond
    loss = module.loss(module.model(x), x, target)
    loss.backward()
    assert float(thresholds[2].grad.abs().sum()) > 0.0  # alive again
    module.zero_grad()

    # and during fit every step ends inside the valid sets, even with a large learning rate
    with torch.no_grad():
        thresholds[2].fill_(-0.5)
    module.hparams["lr"] = 1.0
    quiet_trainer(max_steps=3).fit(module, _data(train_batches=3))
    for name, plist in module.model.learned.items():
        for p in plist:
            assert float(p.detach().min()) >= 0.0, name
