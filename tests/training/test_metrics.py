"""Per-problem metrics: definitions, pooling across batches (as across DDP ranks), module logging,
schedules' held-out curve and the checks' report all read the problem's own metrics."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import RPCAProblem, lasso_objective
from lightning_unfold.core.metrics import (
    NMSE,
    MeanOf,
    ProblemMetric,
    RateOf,
    RelativeError,
    labelled_rows,
    layer_curves,
    primary_metric,
)
from lightning_unfold.training import LayerwiseMetric, LayerwiseNMSE
from lightning_unfold.training.schedules import SequentialSchedule


def _neg_lasso(estimate: Tensor, target: Tensor, x: Tensor) -> Tensor:
    c = SMALL.constants()
    return -lasso_objective(estimate.double(), x.double(), c["H"], c["rho"])


SMALL = SparseRecovery(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)


class ScoredByObjective(SparseRecovery):
    """Sparse recovery scored first by a target-free, higher-is-better metric (−LASSO value)."""

    def metrics(self) -> tuple[ProblemMetric, ...]:
        return (
            MeanOf(
                "neg_lasso", _neg_lasso, label="−LASSO", higher_is_better=True, needs_target=False
            ),
            NMSE(),
        )


class ScoredWithoutNMSE(SparseRecovery):
    def metrics(self) -> tuple[ProblemMetric, ...]:
        return (RelativeError(),)


def test_nmse_and_relative_error_match_their_formulas() -> None:
    g = torch.Generator().manual_seed(0)
    est, tgt = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    stats = NMSE().statistics(est, tgt, tgt)
    e, t = est.double(), tgt.double()
    expected = 10 * math.log10(float(((e - t) ** 2).sum() / (t**2).sum()))
    assert float(NMSE().finalize(stats)) == pytest.approx(expected, rel=1e-12)
    rel = RelativeError()
    value = float(rel.finalize(rel.statistics(est, tgt, tgt)))
    assert value == pytest.approx(float(((est - tgt).norm(dim=1) / tgt.norm(dim=1)).mean()))
    # complex values use |.|^2
    z = torch.randn(4, 3, dtype=torch.complex128, generator=g)
    assert float(NMSE().finalize(NMSE().statistics(z * (1 + 0.1j), z, z))) == pytest.approx(
        10 * math.log10(0.01), rel=1e-10
    )


def test_statistics_pool_exactly_across_batches() -> None:
    """Pooled figures are sums: two halves (two ranks, two batches) give the whole set's value."""
    g = torch.Generator().manual_seed(1)
    est = torch.randn(4, 10, 6, generator=g)  # (K + 1, B, n)
    tgt = torch.randn(10, 6, generator=g)
    ber = RateOf(
        "sign_error",
        lambda e, t, x: (((e > 0) != (t > 0)).sum(dim=1), torch.full((e.shape[0],), e.shape[1])),
        label="sign error rate",
    )
    for spec in (NMSE(), RelativeError(), ber):
        whole = LayerwiseMetric(spec, depth=3)
        whole.update(est, tgt, tgt)
        halves = LayerwiseMetric(spec, depth=3)
        halves.update(est[:, :3], tgt[:3], tgt[:3])
        halves.update(est[:, 3:], tgt[3:], tgt[3:])
        torch.testing.assert_close(whole.compute(), halves.compute(), rtol=1e-12, atol=0)
    assert set(whole.compute().tolist()) <= {v / 60 for v in range(61)}


def test_unlabelled_rows_are_skipped_and_an_empty_metric_is_nan() -> None:
    tgt = torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [3.0, 4.0]])
    assert labelled_rows(tgt).tolist() == [True, False, True]
    assert labelled_rows(torch.tensor([[0, 1], [-1, 1]])).tolist() == [True, False]
    metric = LayerwiseNMSE(depth=1)
    metric.update(torch.stack([tgt.nan_to_num(), tgt.nan_to_num() * 2]), tgt)
    curve = metric.compute()
    assert float(curve[1]) == pytest.approx(0.0)  # (2t - t) / t over labelled rows only
    empty = LayerwiseNMSE(depth=1)
    empty.update(torch.zeros(2, 1, 2), torch.full((1, 2), float("nan")))  # no labelled row
    assert torch.isnan(empty.compute()).all()


def test_metric_declaration_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="at least one metric"):
        primary_metric(())
    bad = MeanOf("v", lambda e, t, x: e.sum())  # returns a scalar, not (B,)
    with pytest.raises(ValueError, match="must return shape"):
        bad.statistics(torch.ones(3, 2), torch.ones(3, 2), torch.ones(3, 2))


def test_module_logs_every_problem_metric_per_layer_with_the_primary_first(
    quiet_trainer: Any,
) -> None:
    problem = ScoredByObjective(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)
    module = UnfoldedModule(
        problem, paradigm="hyperparameters", depth=4, supervision="unsupervised"
    )
    data = SyntheticDataModule(problem, batch_size=32, train_batches=4, val_size=64, test_size=64)
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, data)
    logged = trainer.callback_metrics
    for name in ("neg_lasso", "nmse_db"):
        assert f"val/{name}" in logged
        assert all(f"val/{name}_layer/{k:02d}" in logged for k in range(1, 5))
    assert module.primary_metric.name == "neg_lasso"
    curve = module.primary_curves["val"]
    assert len(curve) == 5 and curve == module.curves["val"]["neg_lasso"]
    # ISTA decreases the LASSO objective: −LASSO rises from layer 0 to layer K
    assert curve[-1] > curve[0]
    assert module.nmse_curves["val"] == module.curves["val"]["nmse_db"]
    # the logged curve equals an independent evaluation of the per-sample metric on the val set
    x, _target = next(iter(data.val_dataloader()))
    with torch.no_grad():
        direct = -lasso_objective(
            module(x).final_estimate.double(), x.double(), problem.H, torch.tensor(problem.rho)
        )
    assert curve[-1] == pytest.approx(float(direct.mean()), rel=1e-6)


def test_nmse_curves_says_what_to_read_for_a_problem_without_nmse(quiet_trainer: Any) -> None:
    problem = ScoredWithoutNMSE(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)
    module = UnfoldedModule(problem, paradigm="classical", depth=3)
    data = SyntheticDataModule(problem, batch_size=32, train_batches=1, val_size=32, test_size=32)
    quiet_trainer().test(module, data, verbose=False)
    assert len(module.primary_curves["test"]) == 4
    with pytest.raises(ValueError, match="not scored by NMSE"):
        _ = module.nmse_curves


def test_rpca_is_scored_by_relative_error_then_nmse(quiet_trainer: Any) -> None:
    problem = RPCAProblem(n1=12, n2=10, rank=2, outlier_fraction=0.05, seed=0)
    names = [m.name for m in problem.metrics()]
    assert names == ["rel_error", "nmse_db"]
    module = UnfoldedModule(problem, paradigm="classical", depth=3)
    data = SyntheticDataModule(problem, batch_size=8, train_batches=1, val_size=16, test_size=16)
    quiet_trainer().test(module, data, verbose=False)
    x, target = problem.sample(16, seed=(2, 0))
    with torch.no_grad():
        traj = module.model(x)
    rel = traj.distances(target, relative=True).mean(dim=1)
    # the logged curve is the mean relative error the RPCA literature reports
    curves = layer_curves(traj.stacked_estimates(), target, x, problem.metrics())
    torch.testing.assert_close(
        torch.tensor(curves["rel_error"], dtype=torch.float64), rel.double(), rtol=1e-5, atol=0
    )
    assert len(module.curves["test"]["rel_error"]) == 4


def test_schedule_held_out_curve_uses_the_primary_metric(quiet_trainer: Any) -> None:
    problem = ScoredByObjective(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)
    module = UnfoldedModule(
        problem, paradigm="hyperparameters", depth=2, supervision="unsupervised"
    )
    data = SyntheticDataModule(problem, batch_size=16, train_batches=2, val_size=32, test_size=32)
    schedule = SequentialSchedule(steps_per_layer=2)
    quiet_trainer(max_epochs=-1, callbacks=[schedule]).fit(module, data)
    assert sorted(schedule.curves) == [1, 2]
    x, target = next(iter(data.val_dataloader()))
    with torch.no_grad():
        expected = layer_curves(module(x).stacked_estimates(), target, x, problem.metrics())
    assert schedule.curves[2] == pytest.approx(expected["neg_lasso"], rel=1e-9)


def test_report_lists_the_problems_metrics_per_layer(tmp_path: Any) -> None:
    from lightning_unfold.checks import report_for_module

    problem = ScoredByObjective(m=16, n=32, sparsity=0.1, rho=0.05, seed=0)
    module = UnfoldedModule(problem, paradigm="classical", depth=3)
    report = report_for_module(module, None, tmp_path, suite=["descent"], n_samples=32)
    assert list(report.metrics) == ["neg_lasso", "nmse_db"]
    assert report.metrics["neg_lasso"]["primary"] and len(report.metrics["nmse_db"]["values"]) == 4
    assert "−LASSO (primary)" in report.table()
    assert "| layer | −LASSO | NMSE (dB) |" in (tmp_path / "report.md").read_text()
