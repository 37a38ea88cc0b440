"""Safeguarded unfolding: the guarantee (hypothesis), per-sample decisions, μ rules, every paradigm."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning_unfold.theory import lasso_fista_reference, lasso_kkt_residual

from lightning_unfold import FISTA, ISTA, BlackBoxModel, SparseRecovery, UnfoldedModel
from lightning_unfold.algorithms import ALISTA, RPCA, ADMMLasso, RPCAProblem
from lightning_unfold.core.safeguard import MU_UPDATES, SafeguardedModel

F64 = torch.float64


def _kkt(problem: SparseRecovery, x: torch.Tensor, s: torch.Tensor) -> np.ndarray:
    H, xs, ss = problem.H.numpy(), x.detach().numpy(), s.detach().numpy()
    return np.asarray(lasso_kkt_residual(H, xs, problem.rho, ss))


@torch.no_grad()
def _garble(model: torch.nn.Module, seed: int, scale: float, poison: bool) -> None:
    """Overwrite every learned tensor with noise of size ``scale`` (and some Inf/NaN entries)."""
    g = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
        if poison and p.numel() > 1:
            p[(0,) * p.ndim] = float("nan")
            p[(-1,) * p.ndim] = float("inf")


# the guarantee itself: ISTA with a valid step is averaged, so the safeguarded model converges to
# the LASSO solution whatever the learned weights are
@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**31 - 1),
    form=st.sampled_from(
        [
            ("hyperparameters", None),
            ("objective", "lista"),
            ("objective", "lista_cp"),
            ("objective", "direct"),
            ("correction", None),
            ("inductive_bias", None),
        ]
    ),
    tied=st.booleans(),
    depth=st.integers(1, 6),
    scale=st.sampled_from([0.0, 1e-3, 1.0, 30.0, 1e6]),
    poison=st.booleans(),
    step=st.floats(0.5, 1.5, allow_nan=False, allow_subnormal=False),
    mu_update=st.sampled_from(MU_UPDATES),
    delta=st.sampled_from([0.0, 0.01, 0.5, 0.99]),
)
def test_safeguarded_model_with_arbitrary_weights_converges_to_the_lasso_solution(
    seed: int,
    form: tuple[str, str | None],
    tied: bool,
    depth: int,
    scale: float,
    poison: bool,
    step: float,
    mu_update: str,
    delta: float,
) -> None:
    rng = np.random.default_rng(seed)
    m, n = int(rng.integers(6, 10)), int(rng.integers(10, 18))
    problem = SparseRecovery(m=m, n=n, sparsity=0.2, rho=0.2, seed=seed)
    paradigm, variant = form
    model = UnfoldedModel(
        ISTA(step=step / problem.lipschitz),
        problem,
        depth,
        paradigm,
        variant=variant,
        tied=tied,
        hidden=8,
        dtype=F64,
    )
    _garble(model, seed, scale, poison)
    sg = SafeguardedModel(model, delta=delta, mu_update=mu_update)
    x, _ = problem.sample(6, seed=seed + 1, dtype=F64)
    # fixed-point residual ~1e-10 <=> KKT violation ~ 1e-10 L / (step rho) << 1e-6
    result = sg.solve(x, tol=1e-10, max_iter=20_000)
    assert bool((result.residual < 1e-8).all()), result.residual
    assert _kkt(problem, x, result.trajectory.final_estimate).max() <= 1e-6


def _lista(problem: SparseRecovery, depth: int = 6, **kw: object) -> UnfoldedModel:
    return UnfoldedModel(ISTA(), problem, depth, "objective", variant="lista", dtype=F64, **kw)  # type: ignore[arg-type]


PROBLEM = SparseRecovery(m=20, n=40, seed=0)
X, S = PROBLEM.sample(16, seed=1, dtype=F64)


def test_classical_initialisation_never_falls_back_and_reproduces_ista() -> None:
    model = _lista(PROBLEM)
    sg = SafeguardedModel(model, delta=0.0, mu_update="recent")
    traj = sg(X)
    assert sg.fallback_fraction() == [0.0] * 6
    assert torch.allclose(traj.final_estimate, model(X).final_estimate, atol=1e-12)


def test_decisions_are_per_sample_and_fallbacks_are_classical_steps() -> None:
    model = _lista(PROBLEM, depth=3)
    with torch.no_grad():
        model.learned["W1"][0].mul_(40.0)  # layer 1 overshoots badly on every sample
    x = X.clone()
    x[0] = 0.0  # ... except on x = 0, where its output is still the fixed point 0
    sg = SafeguardedModel(model, delta=0.1)
    iterates, fallback, _, _ = sg.run_layers(x, None)
    assert not bool(fallback[0, 0]) and bool(fallback[0, 1:].all())
    s0 = iterates[0]
    classical = sg.T(s0, x, 1)
    assert torch.allclose(iterates[1][1:], classical[1:])  # fallen back: T(s^(0))
    assert torch.equal(iterates[1][0], torch.zeros_like(iterates[1][0]))


@pytest.mark.parametrize("mu_update", MU_UPDATES)
def test_mu_rules(mu_update: str) -> None:
    model = _lista(PROBLEM, depth=1)
    sg = SafeguardedModel(model, delta=0.2, mu_update=mu_update, theta=0.25)
    s0 = model.algorithm.init(X, model.layer_params(1))
    mu0 = sg.residual(s0, sg.T(s0, X, 1))
    _, fallback, _, mu = sg.run_layers(X, None)
    y = model.layer(s0, X, 1)
    r = sg.residual(y, sg.T(y, X, 2))
    accepted = ~fallback[0]
    assert bool(accepted.all())
    expected = {"ema": 0.25 * r + 0.75 * mu0, "geometric": 0.8 * mu0, "recent": r}[mu_update]
    assert torch.allclose(mu, expected)


def test_continued_mode_and_fallback_statistics() -> None:
    model = _lista(PROBLEM)
    _garble(model, 0, 5.0, poison=False)
    sg = SafeguardedModel(model, continued=True, tol=1e-10, max_iter=20_000)
    traj = sg(X)
    assert traj.depth > 6
    assert _kkt(PROBLEM, X, traj.final_estimate).max() <= 1e-6
    ref = lasso_fista_reference(PROBLEM.H.numpy(), X.numpy(), PROBLEM.rho)
    assert np.abs(traj.final_estimate.detach().numpy() - ref).max() < 1e-6
    first = sg.fallback_fraction()
    assert max(first) > 0
    sg(X[:4])
    assert len(sg.fallback_fraction()) == 6
    sg.reset_stats()
    with pytest.raises(ValueError, match="No forward pass"):
        sg.fallback_fraction()


def test_tuple_iterates_admm_and_rpca() -> None:
    admm = UnfoldedModel(ADMMLasso(), PROBLEM, 4, "correction", hidden=8, dtype=F64)
    _garble(admm, 1, 3.0, poison=False)
    res = SafeguardedModel(admm).solve(X[:4], tol=1e-10, max_iter=20_000)
    assert bool(res.converged.all())
    assert _kkt(PROBLEM, X[:4], res.trajectory.final_estimate).max() <= 1e-6
    rp = RPCAProblem(n1=16, n2=16, rank=2)
    rpca = UnfoldedModel(RPCA(), rp, 3, "hyperparameters", dtype=F64)
    xr, _ = rp.sample(2, seed=0, dtype=F64)
    out = SafeguardedModel(rpca).solve(xr, tol=1e-8, max_iter=3000)
    assert out.fallback.shape == (3, 2) and bool(out.converged.all())


def test_fista_blocks_and_tied_depth() -> None:
    fista = UnfoldedModel(FISTA(), PROBLEM, 3, "hyperparameters", dtype=F64)
    sg = SafeguardedModel(fista, blocks=("s", "y"))
    assert sg(X).depth == 3
    with pytest.raises(ValueError, match="not blocks"):
        SafeguardedModel(fista, blocks=("q",))(X)
    tied = _lista(PROBLEM, depth=3, tied=True)
    assert SafeguardedModel(tied)(X, depth=9).depth == 9
    with pytest.raises(ValueError, match="untied"):
        SafeguardedModel(_lista(PROBLEM, depth=3))(X, depth=9)


def test_alista_and_lista_cpss_fall_back_on_ista() -> None:
    model = UnfoldedModel(ISTA(), PROBLEM, 3, "objective", variant="alista", dtype=F64)
    assert type(model.algorithm) is ALISTA
    assert type(SafeguardedModel(model).operator) is ISTA


def test_safeguard_with_another_problem_uses_its_dictionary() -> None:
    other = SparseRecovery(m=20, n=40, seed=5)
    sg = SafeguardedModel(_lista(PROBLEM), problem=other)
    x, _ = other.sample(4, seed=2, dtype=F64)
    res = sg.solve(x, tol=1e-12, max_iter=20_000)
    assert _kkt(other, x, res.trajectory.final_estimate).max() <= 1e-6


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"delta": -0.1}, r"delta must lie in \[0, 1\)"),
        ({"delta": 1.0}, r"delta must lie in \[0, 1\)"),
        ({"mu_update": "median"}, "valid"),
        ({"theta": 0.0}, "theta"),
        ({"tol": 0.0}, "tol"),
        ({"max_iter": -1}, "max_iter"),
    ],
)
def test_bad_settings(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SafeguardedModel(_lista(PROBLEM), **kwargs)  # type: ignore[arg-type]


def test_models_without_a_classical_operator_are_rejected() -> None:
    with pytest.raises(TypeError, match="no classical operator to fall back on"):
        SafeguardedModel(BlackBoxModel(PROBLEM, 100))
    with pytest.raises(TypeError, match="no classical operator"):
        SafeguardedModel(torch.nn.Linear(20, 40))


def test_perturb_hook_feeds_the_next_layer_and_records_outputs() -> None:
    model = _lista(PROBLEM, depth=4)
    plain = model(X)
    same = model(X, perturb=lambda k, s: s)
    assert all(torch.equal(a, b) for a, b in zip(plain.iterates, same.iterates, strict=True))
    seen: list[int] = []

    def zero(k: int, s: torch.Tensor) -> torch.Tensor:
        seen.append(k)
        return torch.zeros_like(s)

    out = model(X, perturb=zero)
    assert seen == [1, 2, 3]  # intermediate iterates only
    assert torch.equal(out.iterates[1], plain.iterates[1])  # outputs are recorded unperturbed
    assert torch.allclose(out.iterates[2], plain.iterates[1])  # layer 2 restarted from 0
