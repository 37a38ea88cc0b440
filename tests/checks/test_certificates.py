"""Stationarity certificates beyond the fixed-point residual: each vanishes at a solution
computed independently (SciPy, CVXPY or a long float64 run), is clearly positive at a perturbed
point, and drives a check that must pass and one that must fail on its own family."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from lightning_unfold.checks import Status
from scipy.optimize import minimize
from torch import Tensor, nn

from lightning_unfold import UnfoldedModel, checks
from lightning_unfold.algorithms import (
    ADMMTV,
    FISTARPCA,
    ISTARPCA,
    RPCA,
    WMMSE,
    CompressiveImaging,
    InterferenceChannel,
    RPCAProblem,
    UltrasoundClutter,
)
from lightning_unfold.algorithms.corona.solvers import LowRankSparseState
from lightning_unfold.algorithms.imaging.solvers import ImagingADMMState
from lightning_unfold.algorithms.power import PowerGains, sum_rate_kkt_residual
from lightning_unfold.algorithms.power.iteration import WMMSEState, _receiver
from lightning_unfold.algorithms.rpca import RPCAState
from lightning_unfold.algorithms.sparse import soft_threshold
from lightning_unfold.core.unfolded import ClassicalSolver

F64 = torch.float64


# -- power allocation: the KKT residual of the sum-rate over 0 <= p <= P_max -----------------


def _power_problem(noise: float = 10**-9.1, seed: int = 2) -> InterferenceChannel:
    return InterferenceChannel(M=4, channel="geometric", noise_power=noise, seed=seed)


def _lbfgs_powers(H: Tensor, noise: float) -> np.ndarray:
    """A KKT point of max_p R(p) over [0, 1]^M by L-BFGS-B in the powers (float64), the best
    of five starts: an optimiser that knows nothing of WMMSE."""
    g = PowerGains.of(H)

    def f(q: np.ndarray) -> tuple[float, np.ndarray]:
        p = torch.tensor(q, dtype=F64).unsqueeze(0).requires_grad_(True)
        r = -torch.log1p(g.direct * p / (noise + g.interference(p))).sum()
        r.backward()
        assert p.grad is not None
        return float(r.detach()), p.grad[0].numpy().copy()

    runs = [
        minimize(
            f,
            np.random.default_rng(start).uniform(0.1, 1.0, H.shape[-1]),
            jac=True,
            method="L-BFGS-B",
            bounds=[(0.0, 1.0)] * H.shape[-1],
            options={"ftol": 1e-15, "gtol": 1e-13, "maxiter": 20000},
        )
        for start in range(5)
    ]
    return min(runs, key=lambda r: r.fun).x


def test_the_normalised_gradient_has_the_sign_of_autograd_s() -> None:
    prob = _power_problem()
    H, _ = prob.sample(3, seed=1, dtype=F64)
    p = torch.rand(3, 4, dtype=F64, requires_grad=True)
    g = PowerGains.of(H)
    rate = torch.log1p(g.direct * p / (prob.noise_power + g.interference(p))).sum()
    rate.backward()
    # at an interior point with every normalised gradient in (-q, 1 - q) the residual is |ĝ|
    q = p.detach()
    r = sum_rate_kkt_residual(q.sqrt(), H, prob.noise_power, 1.0)
    assert p.grad is not None
    g_hat = torch.where(p.grad > 0, r, -r)
    inside = (g_hat > -q) & (g_hat < 1 - q)
    assert bool(inside.any())
    assert torch.equal(torch.sign(g_hat[inside]), torch.sign(p.grad[inside]))


def test_wmmse_certificate_vanishes_at_a_kkt_point_found_by_scipy() -> None:
    prob = _power_problem()
    H, _ = prob.sample(3, seed=1, dtype=F64)
    alg = WMMSE()
    par = {**prob.constants(), **alg.classical_params(prob)}
    for b in range(3):
        Hb = H[b : b + 1]
        v = torch.from_numpy(_lbfgs_powers(Hb, prob.noise_power)).clamp_min(0).sqrt()[None]
        s = WMMSEState(u=v, w=v, v=v)  # the certificate reads v alone
        at = float(alg.certificate(s, Hb, par).values)
        sign = torch.tensor([[1.0, -1.0, 1.0, -1.0]], dtype=F64)
        bumped = WMMSEState(u=v, w=v, v=(v * (1 + 0.1 * sign)).clamp(0, 1))
        off = float(alg.certificate(bumped, Hb, par).values)
        # measured: 5e-9, 3e-11, 8e-11 at the L-BFGS-B points; 0.094, 0.019, 0.065 off them
        assert at < 1e-6 and off > 1e-2, (b, at, off)


def test_wmmse_reaches_kkt_points_and_its_certificate_falls() -> None:
    # at this SNR WMMSE converges fast on this topology (worst of 8: 0.17 after 20
    # iterations, 0.037 after 100, 6e-10 after 1000); at σ² = 10^-9.1 it crawls (0.06 after
    # 20 000 iterations at M = 4), which is WMMSE's slowness, not a flaw of the certificate
    prob = _power_problem(noise=1e-2, seed=0)
    H, _ = prob.sample(8, seed=(3, 0), dtype=F64)
    alg = WMMSE()
    par = {**prob.constants(), **alg.classical_params(prob)}
    curve = []
    s = alg.init(H, par)
    for k in range(1, 1001):
        s = alg.step(s, H, par, k)
        if k in (20, 100, 1000):
            curve.append(float(alg.certificate(s, H, par).values.max()))
    assert curve[0] > 1e-1 and curve[2] < 1e-8 and curve[0] > curve[1] > curve[2], curve


def test_a_user_switched_off_for_good_is_a_stall_not_a_kkt_point() -> None:
    # one pair: the rate grows with the power, so p = 0 is not a KKT point, yet WMMSE keeps
    # v = 0 (its receiver u = 0 gives v = 0): the certificate flags it as stalled
    prob = InterferenceChannel(M=1, channel="rayleigh", noise_power=0.1, seed=0)
    H, _ = prob.sample(2, seed=1, dtype=F64)
    alg = WMMSE()
    par = {**prob.constants(), **alg.classical_params(prob)}
    zero = torch.zeros(2, 1, dtype=F64)
    s = WMMSEState(*_receiver(zero, H, par["noise"]), v=zero)
    assert torch.equal(alg.step(s, H, par, 1).v, zero)  # a fixed point of WMMSE
    cert = alg.certificate(s, H, par)
    assert torch.equal(cert.values, torch.ones(2, dtype=F64))
    assert cert.stalled is not None and bool(cert.stalled.all())
    full = WMMSEState(u=zero, w=zero, v=torch.ones(2, 1, dtype=F64))  # the optimum
    done = alg.certificate(full, H, par)
    assert float(done.values.max()) == 0.0
    assert done.stalled is not None and not bool(done.stalled.any())


class _SwitchOff(nn.Module):
    """A 'learned' WMMSE layer that hands the v-update zero receivers and unit weights, so every
    amplitude becomes 0: the layer outputs (u, w, v) = (0, 1, 0), a fixed point of WMMSE."""

    def coefficients(
        self, s: WMMSEState, H: Tensor, gains: PowerGains, noise: Tensor, p_max: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        one = torch.ones_like(s.v)
        return torch.zeros_like(one), one, one, torch.zeros_like(one)


def test_safeguard_on_wmmse_passes_fails_and_names_a_stall() -> None:
    prob = _power_problem(noise=1e-2, seed=0)
    data = prob.sample(4, seed=(3, 0), dtype=F64)
    model = UnfoldedModel(WMMSE(), prob, depth=3, paradigm="hyperparameters")  # = WMMSE-3
    # WMMSE's own tolerance (1e-3 on the normalised KKT residual) within 2000 iterations
    ok = checks.safeguard(model, prob, data, n_samples=4, check_every=50)
    assert ok.passed and ok.threshold == 1e-3, ok.message
    assert "KKT" in ok.details["certificate_name"] and "Shi et al. 2011" in ok.message
    short = checks.safeguard(model, prob, data, n_samples=4, max_iter=20)
    assert short.status is Status.FAILED and short.value is not None and short.value > 1e-2
    assert "raise max_iter" in short.message and "not the learned layers" in short.message
    # the yardstick: WMMSE alone from full power, same samples, same budget of K + 20 iterations
    assert short.details["classical_alone"]["iterations"] == 23
    assert not short.details["classical_alone"]["reached"]
    assert ok.details["classical_alone"]["reached"], ok.details["classical_alone"]
    # a model that switches every user off sits at a fixed point of WMMSE (Heaton et al.'s
    # safeguard accepts it: zero fixed-point residual) that is no KKT point
    off = UnfoldedModel(WMMSE(), prob, depth=2, paradigm="correction")
    assert off.nets is not None
    for k in range(len(off.nets)):
        off.nets[k] = _SwitchOff()
    stall = checks.safeguard(off, prob, data, n_samples=4, max_iter=500)
    assert stall.status is Status.FAILED and stall.value == 1.0, stall.message
    assert "stalled, not at a stationary point" in stall.message
    assert stall.details["iterations"] == 0  # no iterations wasted on a trap
    # WMMSE alone, from full power, reaches the tolerance on the same samples: the learned
    # layers, not the budget, put the iterate in the trap
    alone = stall.details["classical_alone"]
    assert alone["reached"] and alone["value"] <= 1e-3, alone
    assert "the learned layers led it into the stall" in stall.message
    assert "LASSO" not in stall.message


# -- robust PCA: stationarity of the factorised objective ------------------------------------


def _rpca_setup(
    n_samples: int = 2, **kw: Any
) -> tuple[RPCA, RPCAProblem, Tensor, dict[str, Tensor]]:
    prob = RPCAProblem(n1=32, n2=32, rank=3, seed=0, **kw)
    X, _ = prob.sample(n_samples, seed=1, dtype=F64)
    alg = RPCA()
    return alg, prob, X, {**prob.constants(), **alg.classical_params(prob)}


def _rpca_solution(alg: RPCA, X: Tensor, par: dict[str, Tensor], iters: int) -> RPCAState:
    s = alg.init(X, par)
    for k in range(1, iters + 1):
        s = alg.step(s, X, par, k)
    return s


def test_rpca_certificate_vanishes_at_a_point_each_block_minimises() -> None:
    alg, _prob, X, par = _rpca_setup()
    s = _rpca_solution(alg, X, par, 300)
    at = alg.certificate(s, X, par).values
    # independent of the iteration: LRᵀ is the best rank-r approximation of X − ΨY
    # (Eckart–Young) and Y the soft threshold of Ψᵀ(X − LRᵀ) at λ — each block a global minimiser
    U, S, Vh = torch.linalg.svd(X - par["Psi"] @ s.Y)
    best = (U[..., :3] * S[:, None, :3]) @ Vh[:, :3]
    low = s.L @ s.R.mT
    lam = par["lam"] * X.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
    y_best = soft_threshold(par["Psi"].T @ (X - low), lam)
    assert float((low - best).abs().max()) < 1e-10 and float((s.Y - y_best).abs().max()) < 1e-10
    assert float(at.max()) < 1e-12, at
    # the certificate does not depend on how LRᵀ is split between the factors
    A = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.5, 0.0], [0.0, 0.3, 3.0]], dtype=F64)
    split = RPCAState(L=s.L @ A, R=s.R @ torch.linalg.inv(A).T, Y=s.Y)
    assert float(alg.certificate(split, X, par).values.max()) < 1e-12
    g = torch.Generator().manual_seed(0)
    for bumped in (
        RPCAState(
            L=s.L * (1 + 0.01 * torch.randn(s.L.shape, generator=g, dtype=F64)), R=s.R, Y=s.Y
        ),
        RPCAState(L=s.L, R=s.R, Y=s.Y + 0.01 * torch.randn(s.Y.shape, generator=g, dtype=F64)),
    ):
        off = alg.certificate(bumped, X, par).values
        assert float(off.min()) > 1e-3, off  # measured: 1.0e-2 (L by 1 %), 0.16 (Y by 0.01)


def test_rpca_with_a_mismatched_transform_stops_short_of_stationarity() -> None:
    # with a non-orthogonal Ψ the Y-update soft-thresholds Ψ⁻¹(X − LRᵀ): its fixed points are
    # not stationary for the objective, and the certificate stays put (measured 6.7e-5 on
    # 32 × 32 at 300 and at 600 iterations) while the orthogonal case reaches 4e-17
    alg, _prob, X, par = _rpca_setup(psi_noise=0.05)
    s = _rpca_solution(alg, X, par, 300)
    again = _rpca_solution(alg, X, par, 600)
    r300 = float(alg.certificate(s, X, par).values.max())
    r600 = float(alg.certificate(again, X, par).values.max())
    assert r300 > 1e-6 and abs(r600 - r300) < 0.1 * r300, (r300, r600)


def test_safeguard_on_rpca_passes_and_fails_on_its_certificate() -> None:
    alg, prob, X, _ = _rpca_setup(n_samples=4)
    data = (X, prob.sample(4, seed=1, dtype=F64)[1])
    model = UnfoldedModel(alg, prob, depth=3, paradigm="hyperparameters")  # classical RPCA-3
    ok = checks.safeguard(model, prob, data, n_samples=4)
    assert ok.passed and ok.threshold == 1e-6, ok.message
    assert "factorised RPCA objective" in ok.message and "LASSO" not in ok.message
    bad = checks.safeguard(model, prob, data, n_samples=4, max_iter=2, check_every=1)
    assert bad.status is Status.FAILED and bad.value is not None and bad.value > 1e-4, bad.message


# -- low-rank plus sparse separation (ISTA-RPCA, FISTA-RPCA, CORONA): Fermat's rule ----------


@pytest.mark.parametrize("penalty", ["l12", "l1"])
def test_clutter_certificate_vanishes_at_the_minimiser(penalty: str) -> None:
    prob = UltrasoundClutter(n_x=6, n_z=6, n_frames=4, seed=0)
    D, _ = prob.sample(2, seed=1, dtype=F64)
    ista, fista = ISTARPCA(penalty=penalty), FISTARPCA(penalty=penalty)
    par = {**prob.constants(), **ista.classical_params(prob)}
    # the reference: FISTA-RPCA, 1000 float64 iterations (its minimiser agrees with CVXPY's
    # Clarabel solution to ~1e-6 in L on a 4 × 4 × 4 instance, the accuracy Clarabel reaches)
    s = fista.init(D, par)
    for k in range(1, 1001):
        s = fista.step(s, D, par, k)
    at = ista.certificate(s, D, par).values
    assert float(at.max()) < 1e-10, at  # measured ≤ 1.2e-14 (l12), ≤ 4.2e-14 (l1)
    ref = LowRankSparseState(L=s.L, S=s.S)
    # ... a point ISTA-RPCA itself leaves unchanged, and the fixed point of CORONA's operator
    assert float(ista.fixed_point_residual(ref, D, par).max()) < 1e-10
    u = torch.linalg.svd(s.L)[0][..., :1]
    for bumped in (
        LowRankSparseState(L=s.L + 0.01 * u @ u.mH @ s.L.roll(1, dims=1), S=s.S),
        LowRankSparseState(L=s.L, S=s.S * 1.05),
    ):
        off = ista.certificate(bumped, D, par).values
        assert float(off.min()) > 1e-3, off  # measured 0.084-0.11 (L), 0.008-0.028 (S)
    assert float(ista.certificate(ista.init(D, par), D, par).values.min()) > 0.1


def test_safeguard_on_corona_passes_and_fails_on_its_certificate() -> None:
    prob = UltrasoundClutter(n_x=6, n_z=6, n_frames=4, seed=0)
    data = prob.sample(4, seed=1, dtype=F64)
    corona = UnfoldedModel(ISTARPCA(), prob, depth=3, paradigm="objective", variant="corona")
    ok = checks.safeguard(corona, prob, data, n_samples=4, check_every=50)
    assert ok.passed and ok.threshold == 1e-6, ok.message
    assert "subdifferential distance" in ok.message and "Combettes & Wajs" in ok.message
    bad = checks.safeguard(corona, prob, data, n_samples=4, max_iter=10)
    assert bad.status is Status.FAILED and bad.value is not None and bad.value > 1e-3, bad.message
    assert "raise max_iter" in bad.message and "LASSO" not in bad.message


# -- TV imaging: the KKT triple (image, split, dual) that ADMM carries -------------------------


def _tv_setup(n_samples: int) -> tuple[ADMMTV, CompressiveImaging, Tensor, dict[str, Tensor]]:
    prob = CompressiveImaging(size=8, sampling_rate=0.3, tv_weight=0.01, seed=3)
    alg = ADMMTV(penalty=0.05)
    y, _ = prob.sample(n_samples, seed=1, dtype=F64)
    return alg, prob, y, {**prob.constants(), **alg.classical_params(prob)}


def test_tv_certificate_vanishes_at_the_cvxpy_minimiser_and_not_off_it() -> None:
    alg, prob, y, par = _tv_setup(2)
    s = alg.init(y, par)
    for k in range(1, 1001):
        s = alg.step(s, y, par, k)
    # the long run is the minimiser: CVXPY (Clarabel at its defaults) finds the same image,
    # to its own accuracy (measured relative distance 4.5e-6)
    ref = alg.convex_reference(y, prob)
    assert ref is not None
    assert float((s.x - ref).norm() / ref.norm()) < 1e-4
    at = alg.certificate(s, y, par).values
    assert float(at.max()) < 1e-8, at  # measured 2.8e-15 and 1.0e-15
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(s.x.shape, generator=g, dtype=F64)
    for bumped in (
        ImagingADMMState(x=s.x + 0.01 * noise * s.x.std(), z=s.z, u=s.u),  # the image
        ImagingADMMState(x=s.x, z=s.z, u=0.5 * s.u),  # a wrong dual
        ImagingADMMState(x=s.x, z=torch.zeros_like(s.z), u=s.u),  # the split dropped
    ):
        off = alg.certificate(bumped, y, par).values
        assert float(off.min()) > 1e-3, off  # measured ≥ 0.014, 0.40, 1.0


def test_safeguard_on_admm_tv_passes_and_fails_on_its_certificate() -> None:
    alg, prob, y, _ = _tv_setup(4)
    data = (y, prob.sample(4, seed=1, dtype=F64)[1])
    model = UnfoldedModel(alg, prob, depth=3, paradigm="hyperparameters")  # classical ADMM-3
    ok = checks.safeguard(model, prob, data, n_samples=4, check_every=50)
    assert ok.passed and ok.threshold == 1e-6, ok.message
    assert "KKT residual of TV reconstruction" in ok.message and "Eckstein" in ok.message
    bad = checks.safeguard(model, prob, data, n_samples=4, max_iter=10)
    assert bad.status is Status.FAILED and bad.value is not None and bad.value > 1e-3, bad.message


def test_reference_agreement_reports_a_stalled_wmmse_reference(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # two weakly coupled pairs; WMMSE started with pair 0 switched off can never switch it on,
    # although its normalised gradient is +0.98 there: the reference is a stall, and says so
    H = torch.tensor([[[1.0, 0.1], [0.1, 1.0]]], dtype=F64)
    prob = InterferenceChannel(M=2, noise_power=0.1, channel_set=H)
    data = prob.sample(2, seed=0, dtype=F64)
    plain_init = WMMSE.init

    def off_init(self: WMMSE, x: Tensor, p: Any) -> WMMSEState:
        s = plain_init(self, x, p)
        v = s.v.clone()
        v[:, 0] = 0.0
        return WMMSEState(*_receiver(v, x, p["noise"]), v=v)

    monkeypatch.setattr(WMMSE, "init", off_init)
    res = checks.reference_agreement(
        ClassicalSolver(WMMSE(), prob, 20, dtype=F64),
        prob,
        data,
        n_objective_reference=2,
        objective_max_iter=50,
    )
    assert res.details["reference_stalled"] == 2, res.message
    assert "2 of 2 samples stalled" in res.message
