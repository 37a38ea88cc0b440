"""Power allocation: the interference channel, WMMSE, its four paradigms, errors, generalisation."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pytest
import torch
from lightning_unfold.checks import Status

from lightning_unfold import ALGORITHMS, ClassicalSolver, UnfoldedModel, checks
from lightning_unfold.algorithms.power import (
    WEIGHT_FLOOR,
    WMMSE,
    InterferenceChannel,
    PowerBlackBoxNet,
    PowerGains,
    UWMMSECorrection,
    WMMSECorrectionHook,
    WMMSEState,
    full_power,
    geometric_topology,
    sum_rate,
    user_rates,
)
from lightning_unfold.core.iterate import iterate_blocks
from lightning_unfold.core.metrics import layer_curves
from lightning_unfold.training import SyntheticDataModule, UnfoldedModule
from lightning_unfold.training.module import build_model

F64 = torch.float64
NOISE = 10**-9.1
ROOT = Path(__file__).resolve().parents[2]


# -- the problem ---------------------------------------------------------------------------
def test_sample_shapes_geometry_and_reproducibility() -> None:
    prob = InterferenceChannel(M=8, seed=3)
    x, target = prob.sample(5, seed=1, dtype=F64)
    assert x.shape == (5, 8, 8) and target.shape == (5, 8)
    assert torch.isnan(target).all()  # no ground truth
    assert (x >= 0).all()
    assert torch.equal(x, prob.sample(5, seed=1, dtype=F64)[0])
    assert not torch.equal(x, prob.sample(5, seed=2, dtype=F64)[0])
    # the geometry: receiver i within M/4 (per axis) of its transmitter, d^-2.2 amplitude law
    assert prob.distances is not None
    assert (np.diag(prob.distances) <= math.sqrt(2) * 8 / 4).all()
    fading = x / torch.from_numpy(prob.path_gain)
    r2 = float(fading.pow(2).mean())
    assert 1.5 < r2 < 2.5  # Rayleigh(1): E r² = 2
    iid = InterferenceChannel(M=8, channel="rayleigh").sample(4, seed=0)[0]
    assert iid.shape == (4, 8, 8)
    # the same seed gives the same topology at another size's call
    assert np.array_equal(InterferenceChannel(M=8, seed=3).path_gain, prob.path_gain)
    assert prob.with_size(5).M == 5


def test_random_topology_draws_a_fresh_geometry_per_channel() -> None:
    """topology="random": every channel has its own topology of the protocol's geometry,
    reproducibly, at any size; the fixed mode still draws the protocol's seed-0 topology."""
    M = 6
    prob = InterferenceChannel(M=M, topology="random", seed=4)
    assert prob.distances is None and prob.path_gain is None
    x, target = prob.sample(400, seed=1, dtype=F64)
    assert x.shape == (400, M, M) and torch.isnan(target).all() and (x >= 0).all()
    assert torch.equal(x, prob.sample(400, seed=1, dtype=F64)[0])
    assert not torch.equal(
        x, InterferenceChannel(M=M, topology="random", seed=5).sample(400, seed=1, dtype=F64)[0]
    )
    direct = x.diagonal(dim1=1, dim2=2)
    # the geometry differs per channel: the mean direct gain varies far more across channels
    # than a fixed topology's (whose links only fade)
    fixed = InterferenceChannel(M=M, seed=4).sample(400, seed=1, dtype=F64)[0]
    spread = lambda h: float(h.pow(2).mean(1).log().std())  # noqa: E731
    assert spread(direct) > 1.5 * spread(fixed.diagonal(dim1=1, dim2=2))
    # the distances come from geometric_topology, one topology per channel
    dist, pos = geometric_topology(np.random.default_rng(0), M, 3)
    assert dist.shape == (3, M, M) and pos.shape == (3, M, 2, 2)
    one, _ = geometric_topology(np.random.default_rng(0), M)
    assert one.shape == (M, M)
    assert prob.with_size(3).topology == "random"
    with pytest.raises(ValueError, match="valid: \\['fixed', 'random'\\]"):
        InterferenceChannel(M=4, topology="pool")
    with pytest.raises(ValueError, match="channel='geometric' or 'mixed'"):
        InterferenceChannel(M=4, channel="rayleigh", topology="random")
    with pytest.raises(ValueError, match="no channel_set"):
        InterferenceChannel(M=2, topology="random", channel_set=np.ones((3, 2, 2)))


def test_mixed_channels_draw_geometric_and_rayleigh_channels_reproducibly() -> None:
    """channel="mixed": each channel is i.i.d. Rayleigh with probability rayleigh_fraction, else
    geometric (fixed or random topology); seeded; invalid combinations refused."""
    M, n = 20, 1000
    median = lambda h: h.flatten(1).median(dim=1).values  # noqa: E731
    for topology in ("random", "fixed"):
        prob = InterferenceChannel(M=M, channel="mixed", topology=topology, seed=3)
        assert prob.rayleigh_fraction == 0.5
        x, _ = prob.sample(n, seed=1, dtype=F64)
        assert torch.equal(x, prob.sample(n, seed=1, dtype=F64)[0])
        assert not torch.equal(x, prob.sample(n, seed=2, dtype=F64)[0])
        # a Rayleigh channel's gains are O(1) (median r = 1.18); most of a geometric one's are
        # d^-2.2 r with d ~ M, far smaller: the channel's median gain tells the two apart
        rayleigh = median(x) > 0.5
        assert 0.45 < float(rayleigh.double().mean()) < 0.55
        pure_r = InterferenceChannel(M=M, channel="rayleigh").sample(n, seed=1, dtype=F64)[0]
        assert float(median(pure_r).min()) > 0.5  # the classifier is right on both
        pure_g = InterferenceChannel(M=M, topology=topology, seed=3).sample(n, seed=1)[0]
        assert float(median(pure_g).max()) < 0.5
        if topology == "fixed":  # the geometric channels share the seed's topology
            geo = x[~rayleigh]
            ratio = geo / torch.from_numpy(prob.path_gain)
            assert float((ratio.mean(0) - math.sqrt(math.pi / 2)).abs().max()) < 0.15
    few = InterferenceChannel(M=M, channel="mixed", topology="random", rayleigh_fraction=0.1)
    share = float((median(few.sample(n, seed=0, dtype=F64)[0]) > 0.5).double().mean())
    assert 0.07 < share < 0.13
    assert few.with_size(3).rayleigh_fraction == 0.1
    assert InterferenceChannel(M=M).rayleigh_fraction is None
    with pytest.raises(ValueError, match="only applies to channel='mixed'"):
        InterferenceChannel(M=4, rayleigh_fraction=0.5)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="must lie in \\(0, 1\\)"):
            InterferenceChannel(M=4, channel="mixed", rayleigh_fraction=bad)
    with pytest.raises(ValueError, match="a channel_set replaces"):
        InterferenceChannel(M=2, channel="mixed", channel_set=np.ones((3, 2, 2)))
    with pytest.raises(ValueError, match="'mixed'\\]"):
        InterferenceChannel(M=4, channel="pool")


def test_sum_rate_matches_a_direct_formula() -> None:
    prob = InterferenceChannel(M=5, seed=0)
    x, _ = prob.sample(3, seed=0, dtype=F64)
    v = torch.rand(3, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(3, dtype=F64)
    for b in range(3):
        for i in range(5):
            sig = x[b, i, i] ** 2 * v[b, i] ** 2
            intf = sum(x[b, i, j] ** 2 * v[b, j] ** 2 for j in range(5) if j != i)
            expected[b] += math.log2(1 + sig / (NOISE + intf))
    torch.testing.assert_close(sum_rate(v, x, NOISE), expected, rtol=1e-12, atol=0)
    assert user_rates(v, x, NOISE).shape == (3, 5)


def test_reference_figures_on_one_topology() -> None:
    """The protocol's figures, topology 0 (the five-topology means are in the docs / study)."""
    prob = InterferenceChannel(seed=0)
    x, _ = prob.sample(400, seed=1, dtype=F64)
    fp = float(sum_rate(full_power(x), x, NOISE).mean())
    w4 = float(
        sum_rate(ClassicalSolver(WMMSE(), prob, 4, dtype=F64)(x).final_estimate, x, NOISE).mean()
    )
    w100 = ClassicalSolver(WMMSE(), prob, 100, dtype=F64)(x).final_estimate
    r100 = float(sum_rate(w100, x, NOISE).mean())
    # measured on 6400 channels: 57.4, 77.7, 82.2 (the five-topology means 49.5, 69.2, 73.7)
    assert 55.0 < fp < 60.0 and 75.5 < w4 < 80.0 and 80.0 < r100 < 84.5
    assert fp < w4 < r100


# -- the classical solver ------------------------------------------------------------------
def test_wmmse_is_registered_and_monotone_and_feasible() -> None:
    assert ALGORITHMS["wmmse"] is WMMSE
    prob = InterferenceChannel(M=10, seed=1, p_max=2.0)
    x, _ = prob.sample(64, seed=0, dtype=F64)
    traj = ClassicalSolver(WMMSE(), prob, 30, dtype=F64)(x)
    rates = torch.stack([sum_rate(v, x, NOISE) for v in traj.estimates])  # (K+1, B)
    # Shi et al. 2011: the sum-rate is non-decreasing per sample with γ = 1
    assert (rates[1:] - rates[:-1] >= -1e-9 * rates[:-1].abs()).all()
    assert float(rates[-1].mean()) > float(rates[0].mean()) + 1.0
    for s in traj.iterates:
        assert isinstance(s, WMMSEState)
        assert (s.v >= 0).all() and (s.v <= math.sqrt(2.0) + 1e-15).all()
        assert (s.w >= 1.0 - 1e-12).all()


def test_wmmse_to_convergence_is_a_fixed_point_above_every_truncation() -> None:
    """Reference: float64 WMMSE run to convergence (relative change <= 1e-4; its tail is
    sublinear — one instance here still moves by 1e-5 per iteration after 20 000 iterations — so
    a tighter tolerance costs minutes) is a fixed point of the map, and its sum-rate bounds every
    truncated run from above, per sample (monotonicity). WMMSE is a local method: for two
    strongly interfering pairs the grid optimum is often binary (one pair off) while WMMSE from
    full power settles at another stationary point, so no global optimum is asserted."""
    prob = InterferenceChannel(M=6, seed=0)
    x, _ = prob.sample(4, seed=3, dtype=F64)
    res = ClassicalSolver(WMMSE(), prob, 1, dtype=F64).solve(x, tol=1e-4, max_iter=3_000)
    assert res.converged
    v = res.trajectory.final_estimate
    again = ClassicalSolver(WMMSE(), prob, 1, dtype=F64)
    s = res.trajectory.final
    step = again.algorithm.step(s, x, again.layer_params(1), 1).v
    assert float(((step - v).norm(dim=1) / v.norm(dim=1)).max()) <= 1e-4
    r_conv = sum_rate(v, x, NOISE)
    for k in (1, 4, 100):
        rk = sum_rate(ClassicalSolver(WMMSE(), prob, k, dtype=F64)(x).final_estimate, x, NOISE)
        assert (r_conv >= rk - 1e-9 * rk).all()


def test_the_gains_are_computed_once_per_forward_and_never_reused_for_another_channel() -> None:
    prob = InterferenceChannel(M=7, seed=2)
    x, _ = prob.sample(5, seed=0, dtype=F64)
    traj = ClassicalSolver(WMMSE(), prob, 6, dtype=F64)(x)
    g = traj.iterates[0].gains
    assert isinstance(g, PowerGains) and g.source is x
    assert all(s.gains is g for s in traj.iterates)  # one object handed on by every layer
    fresh = PowerGains.of(x)
    torch.testing.assert_close(g.cross, fresh.cross, rtol=0, atol=0)
    torch.testing.assert_close(g.cross_t, x.pow(2).mT * (1 - torch.eye(7, dtype=F64)))
    assert g.cross_t.is_contiguous()
    # the carried gains are not a block, so flattening, distances and networks never see them
    assert list(iterate_blocks(traj.iterates[2])) == ["u", "w", "v"]
    # a state stepped on another channel recomputes that channel's gains (identity check)
    y, _ = prob.sample(5, seed=1, dtype=F64)
    solver = ClassicalSolver(WMMSE(), prob, 1, dtype=F64)
    p = solver.layer_params(1)
    s = traj.iterates[2]
    plain = WMMSEState(u=s.u, w=s.w, v=s.v)  # no gains: computed from y
    stepped = solver.algorithm.step(s, y, p, 3)
    assert stepped.gains is not g and stepped.gains is not None and stepped.gains.source is y
    torch.testing.assert_close(stepped.v, solver.algorithm.step(plain, y, p, 3).v, rtol=0, atol=0)
    # and the objective reads the carried gains: the same value as from the channel alone
    c = {k: v.to(F64) for k, v in prob.constants().items()}
    torch.testing.assert_close(
        solver.algorithm.objective(s, x, c), -sum_rate(s.v, x, NOISE), rtol=1e-12, atol=0
    )


# -- the paradigms -------------------------------------------------------------------------
# (classical-init equivalence of every paradigm that keeps WMMSE: tests/zoo)


def test_uwmmse_correction_is_affine_in_w_and_trains_its_graph_nets() -> None:
    prob = InterferenceChannel(M=6, seed=0)
    model = UnfoldedModel(WMMSE(), prob, 3, "correction", hidden=8, dtype=F64)
    assert all(isinstance(n, UWMMSECorrection) for n in model.nets or [])
    x, _ = prob.sample(4, seed=0, dtype=F64)
    loss = model.objective(model(x).final, x).mean()
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert any(g is not None and float(g.abs().max()) > 0 for g in grads)
    # the heads' biases: a = e^{ln 2} = 2, b = 0.5 give w = 2 w_class + 0.5 before the v-update
    net = model.nets[0]  # type: ignore[index]
    with torch.no_grad():
        net.heads.bias[0] = math.log(2.0)
        net.heads.bias[1] = 0.5
    s0 = model.algorithm.init(x, model.layer_params(1))
    p = model.layer_params(1)
    s1 = model.algorithm.corrected_step(s0, x, p, 1, net)
    classical = model.algorithm.step(s0, x, p, 1)
    torch.testing.assert_close(s1.u, classical.u)
    torch.testing.assert_close(s1.w, 2.0 * classical.w + 0.5)
    # a stays positive however negative its pre-activation: the sign of w is b's alone
    with torch.no_grad():
        net.heads.bias[0] = -1e3
        net.heads.bias[1] = 0.0
    s1 = model.algorithm.corrected_step(s0, x, p, 1, net)
    assert (s1.w > 0).all()
    with pytest.raises(TypeError, match="corrected_step"):
        net(model.algorithm.features(s0, x, p))
    with pytest.raises(ValueError, match="hidden >= 1"):
        UWMMSECorrection(hidden=0)


def test_a_correction_cannot_switch_every_user_off_and_keeps_a_gradient() -> None:
    """The collapse UWMMSE met on Rayleigh channels: b -> -inf at every layer. Unbounded
    (max(a w + b, 0)) that sets every w to 0, every power to 0 and every gradient to 0; the
    bound w >= ε a w_class leaves every amplitude positive, and with a = 1 all users on the floor
    give exactly WMMSE's v-update (v̂ is invariant to a common scale of w)."""
    prob = InterferenceChannel(M=6, channel="rayleigh", seed=0)
    x, _ = prob.sample(8, seed=0, dtype=F64)
    model = UnfoldedModel(WMMSE(), prob, 4, "correction", hidden=4, dtype=F64)
    classical = ClassicalSolver(WMMSE(), prob, 4, dtype=F64)(x).estimates
    with torch.no_grad():
        for net in model.nets:  # type: ignore[union-attr]
            net.heads.bias[1] = -1e6  # b: every a·w_class + b far below zero
    traj = model(x)
    for k in range(1, 5):
        assert (traj.estimates[k] > 0).all()
        torch.testing.assert_close(traj.estimates[k], classical[k], rtol=1e-10, atol=0)
    rate = sum_rate(traj.final_estimate, x, NOISE)
    assert (rate > 0).all()
    # the gradient reaches the network (through a = e^φ_a, which the floor keeps in w)
    (-rate.mean()).backward()
    heads = [net.heads.weight.grad for net in model.nets]  # type: ignore[union-attr]
    assert all(g is not None and float(g[0].abs().max()) > 0 for g in heads)
    # the unbounded form of the same coefficients switches everyone off with zero gradient
    p = model.layer_params(1)
    s0 = model.algorithm.init(x, p)
    with torch.no_grad():
        u, w, a, b = model.nets[0].coefficients(  # type: ignore[index]
            s0, x, PowerGains.of(x), p["noise"], p["p_max"]
        )
    unbounded = (a * w + b).clamp_min(0.0)
    assert float(unbounded.abs().max()) == 0.0
    v = model.algorithm._v_step(u, unbounded, s0, x, p, PowerGains.of(x)).v
    assert float(v.abs().max()) == 0.0  # what the bound prevents
    # correction zero is WMMSE exactly (the bound is inactive: w_class >= 1 > ε w_class)
    fresh = UnfoldedModel(WMMSE(), prob, 4, "correction", hidden=4, dtype=F64)
    for got, want in zip(fresh(x).estimates, classical, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # the floor is a parameter of the step, validated
    loose = UnfoldedModel(WMMSE(weight_floor=0.5), prob, 1, "correction", hidden=4, dtype=F64)
    with torch.no_grad():
        loose.nets[0].heads.bias[1] = -1e6  # type: ignore[index]
    with torch.no_grad():
        floored = loose.algorithm.corrected_step(s0, x, p, 1, loose.nets[0])  # type: ignore[index]
    torch.testing.assert_close(floored.w, 0.5 * model.algorithm.step(s0, x, p, 1).w)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="weight_floor"):
            WMMSE(weight_floor=bad)
    assert WMMSE().objective_form("per_user").weight_floor == WEIGHT_FLOOR


class _ScaledWeights(torch.nn.Module):
    """A correction with the in-step hook that is not a UWMMSECorrection: a = 2, b = 0.5."""

    def coefficients(
        self, s: WMMSEState, H: torch.Tensor, gains: PowerGains, noise: torch.Tensor, p_max: Any
    ) -> tuple[torch.Tensor, ...]:
        classical = WMMSE().step(s, H, {"noise": noise, "p_max": p_max, **_CLASSICAL}, 1)
        ones = torch.ones_like(classical.w)
        return classical.u, classical.w, 2.0 * ones, 0.5 * ones

    def forward(self, features: torch.Tensor) -> Any:
        raise AssertionError("a network with the hook is never called on features")


class _FeatureCorrection(torch.nn.Module):
    """A correction without the hook: (a, b) from the features, here constants of shape (B, M)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = (math.isqrt(16 + 4 * features.shape[1]) - 4) // 2  # width 4M + M²
        ones = features.new_ones(features.shape[0], m)
        return self.a * ones, self.b * ones


_CLASSICAL = {"weights": torch.ones(1, dtype=F64), "relax": torch.tensor(1.0, dtype=F64)}


def test_corrected_step_uses_the_in_step_hook_by_its_protocol_not_its_class() -> None:
    """WMMSE.corrected_step takes the in-step path for any module with the hook of
    WMMSECorrectionHook (checked structurally), and the features path for any other module."""
    assert isinstance(UWMMSECorrection(hidden=3), WMMSECorrectionHook)
    assert isinstance(_ScaledWeights(), WMMSECorrectionHook)
    assert not isinstance(_FeatureCorrection(1.0, 0.0), WMMSECorrectionHook)
    assert not isinstance(torch.nn.Linear(2, 2), WMMSECorrectionHook)
    prob, alg = InterferenceChannel(M=5, seed=1), WMMSE()
    x, _ = prob.sample(3, seed=0, dtype=F64)
    p = {**prob.constants(), **alg.classical_params(prob)}
    s0 = alg.init(x, p)
    classical = alg.step(s0, x, p, 1)
    # the hook: w = 2 w_class + 0.5, u the classical receiver, v from that w
    hooked = alg.corrected_step(s0, x, p, 1, _ScaledWeights())
    torch.testing.assert_close(hooked.u, classical.u)
    torch.testing.assert_close(hooked.w, 2.0 * classical.w + 0.5)
    # no hook: net(features) gives (a, b); (1, 0) is the classical step exactly
    plain = alg.corrected_step(s0, x, p, 1, _FeatureCorrection(1.0, 0.0))
    for got, want in ((plain.u, classical.u), (plain.w, classical.w), (plain.v, classical.v)):
        torch.testing.assert_close(got, want, rtol=0.0, atol=0.0)
    scaled = alg.corrected_step(s0, x, p, 1, _FeatureCorrection(2.0, 0.5))
    for got, want in ((scaled.u, hooked.u), (scaled.w, hooked.w), (scaled.v, hooked.v)):
        torch.testing.assert_close(got, want)
    assert not torch.allclose(scaled.v, classical.v)  # the correction reaches the v-update


def test_uwmmse_messages_follow_the_received_power_graph() -> None:
    """A user's (a, b) depend on another user only through the received-power graph
    T_ij = h_ij² v_j²: with every cross gain zero, the network is the same per-user map for all
    M (size generalisation), and switching one interferer on changes its victim's coefficients."""
    torch.manual_seed(0)
    net = UWMMSECorrection(hidden=8).double().requires_grad_(False)
    for param in net.parameters():
        param.add_(0.5 * torch.randn_like(param))
    alg, prob = WMMSE(), InterferenceChannel(M=5, seed=0)
    c = prob.constants()
    diag = torch.diag_embed(torch.rand(2, 5, dtype=F64) + 0.1)
    s = alg.init(diag, c)
    _, _, a5, b5 = net.coefficients(s, diag, PowerGains.of(diag), c["noise"], c["p_max"])
    s3 = alg.init(diag[:, :3, :3], c)
    _, _, a3, b3 = net.coefficients(
        s3, diag[:, :3, :3], PowerGains.of(diag[:, :3, :3]), c["noise"], c["p_max"]
    )
    torch.testing.assert_close(a5[:, :3], a3)
    torch.testing.assert_close(b5[:, :3], b3)
    coupled = diag.clone()
    coupled[:, 0, 4] = 0.1  # transmitter 4 now reaches receiver 0
    s = alg.init(coupled, c)
    _, _, a_c, _ = net.coefficients(s, coupled, PowerGains.of(coupled), c["noise"], c["p_max"])
    assert float((a_c[:, 0] - a5[:, 0]).abs().min()) > 1e-6  # the victim hears it
    assert float((a_c[:, 4] - a5[:, 4]).abs().min()) > 1e-6  # and the interferer learns of it
    torch.testing.assert_close(a_c[:, 1:4], a5[:, 1:4])  # the others are unaffected


def test_uwmmse_coefficients_are_the_documented_network() -> None:
    """The folded, channel-first computation is the docstring's network written out plainly:
    node features X, incoming messages D_I⁻¹ T Y, trunk, heads, outgoing message of φ_a."""
    torch.manual_seed(1)
    net = UWMMSECorrection(hidden=5).double().requires_grad_(False)
    for param in net.parameters():
        param.add_(0.3 * torch.randn_like(param))
    prob = InterferenceChannel(M=6, seed=2, p_max=0.7)
    c = prob.constants()
    x, _ = prob.sample(3, seed=0, dtype=F64)
    s = WMMSE().init(x, c)
    s = WMMSEState(u=s.u, w=s.w, v=s.v * torch.rand_like(s.v))  # amplitudes off the box corner
    u, w, a, b = net.coefficients(s, x, PowerGains.of(x), c["noise"], c["p_max"])
    noise, P = float(c["noise"]), float(c["p_max"])

    def db(r: torch.Tensor) -> torch.Tensor:
        return torch.log10(1.0 + r) / 10.0

    gain = x.pow(2)
    T = gain * s.v.pow(2).unsqueeze(1) * (1 - torch.eye(6, dtype=F64))  # T_ij, j ≠ i
    h2 = gain.diagonal(dim1=1, dim2=2)
    received = noise + h2 * s.v.pow(2) + T.sum(2)
    torch.testing.assert_close(u, x.diagonal(dim1=1, dim2=2) * s.v / received)
    torch.testing.assert_close(w, received / (received - h2 * s.v.pow(2)))
    X = torch.stack(
        [s.v / math.sqrt(P), torch.log(w) / 10, db(h2 * P / noise), db(received / noise - 1)], 2
    )
    Y = torch.stack([s.v / math.sqrt(P), db(h2 * P / noise)], 2)
    share = T / received.unsqueeze(2)  # D_I⁻¹ T
    Z = torch.relu(net.trunk(torch.cat([X, share @ Y], 2)))
    heads = net.heads(Z)
    phi_a = heads[..., 0] + (share.transpose(1, 2) @ heads[..., 2:3]).squeeze(2)
    torch.testing.assert_close(a, torch.exp(phi_a))
    torch.testing.assert_close(b, heads[..., 1])


@pytest.mark.parametrize(
    "paradigm", ["hyperparameters", "objective", "correction", "inductive_bias", "black_box"]
)
def test_every_paradigm_keeps_v_in_the_box_even_with_wild_parameters(paradigm: str) -> None:
    prob = InterferenceChannel(M=7, seed=1, p_max=0.5)
    model = build_model(prob, paradigm=paradigm, depth=3, hidden=8)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 5.0)
    if hasattr(model, "project_parameters_"):
        model.project_parameters_()
    x, _ = prob.sample(32, seed=0)
    traj = model(x)
    for v in traj.estimates[1:]:
        assert torch.isfinite(v).all()
        assert (v >= 0).all() and (v <= math.sqrt(0.5) * (1 + 1e-6)).all()


def test_parameter_counts_and_black_box_of_comparable_size() -> None:
    prob = InterferenceChannel(M=20)
    K = 4

    def count(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters() if p.requires_grad)

    assert count(build_model(prob, paradigm="hyperparameters", depth=K)) == K
    assert count(build_model(prob, paradigm="objective", depth=K)) == K * (20 + 1)
    corr = count(build_model(prob, paradigm="correction", depth=K, hidden=16))
    # one trunk [4 node + 2 aggregated features] → 16, heads 16 → (a, b) self, a's messages
    assert corr == K * ((6 * 16 + 16) + (16 * 3 + 3))
    box = build_model(prob, paradigm="black_box", depth=K, black_box_params=corr)
    assert isinstance(box.net, PowerBlackBoxNet)
    assert 0.8 * corr <= count(box) <= 1.2 * corr


# -- size generalisation and bad input -----------------------------------------------------
@pytest.mark.parametrize(
    "paradigm", ["hyperparameters", "correction", "inductive_bias", "black_box"]
)
def test_a_model_built_at_m20_runs_at_m10_and_m30(paradigm: str) -> None:
    prob = InterferenceChannel(M=20)
    model = build_model(prob, paradigm=paradigm, depth=3, hidden=8)
    for m in (10, 30):
        x, _ = prob.with_size(m).sample(4, seed=0)
        v = model(x).final_estimate
        assert v.shape == (4, m) and torch.isfinite(v).all()


def test_uwmmse_is_permutation_equivariant() -> None:
    prob = InterferenceChannel(M=9, seed=2)
    model = UnfoldedModel(WMMSE(), prob, 3, "correction", hidden=8, dtype=F64)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x, _ = prob.sample(3, seed=5, dtype=F64)
    perm = torch.randperm(9)
    v = model(x).final_estimate
    v_perm = model(x[:, perm][:, :, perm]).final_estimate
    torch.testing.assert_close(v_perm, v[:, perm])


def test_the_per_user_objective_model_refuses_another_size_clearly() -> None:
    prob = InterferenceChannel(M=20)
    model = build_model(prob, paradigm="objective", depth=3)
    x, _ = prob.with_size(10).sample(2, seed=0)
    with pytest.raises(ValueError, match=r"per-user weights .* M = 20 .* M = 10.*correction"):
        model(x)
    with pytest.raises(ValueError, match="valid: \\['per_user'\\]"):
        build_model(prob, paradigm="objective", variant="direct", depth=2)


def test_bad_channel_matrices_and_configuration_are_rejected() -> None:
    prob = InterferenceChannel(M=4)
    model = build_model(prob, paradigm="correction", depth=2, hidden=4)
    x, _ = prob.sample(2, seed=0)
    with pytest.raises(ValueError, match="square channel matrices"):
        model(x[:, :3])
    with pytest.raises(ValueError, match="square channel matrices"):
        model(x[0, 0])
    bad = x.clone()
    bad[0, 1, 2] = -0.1
    with pytest.raises(ValueError, match="1 negative entries"):
        model(bad)
    for kw in ({"p_max": 0.0}, {"p_max": -1.0}, {"noise_power": 0.0}, {"p_max": float("inf")}):
        with pytest.raises(ValueError, match="must be finite and > 0"):
            InterferenceChannel(**kw)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"M .* must be an int >= 1"):
        InterferenceChannel(M=0)
    with pytest.raises(ValueError, match="Unknown channel"):
        InterferenceChannel(channel="awgn")
    with pytest.raises(ValueError, match="relax"):
        WMMSE(relax=0.0)
    with pytest.raises(ValueError, match="Supervised training got a batch without any label"):
        module = UnfoldedModule(prob, paradigm="hyperparameters", depth=2)
        module.loss(module(x), x, torch.full((2, 4), float("nan")))


def test_single_pair_has_no_interference_and_wmmse_uses_full_power() -> None:
    prob = InterferenceChannel(M=1, seed=0)
    x, _ = prob.sample(5, seed=0, dtype=F64)
    for paradigm in ("classical", "correction", "inductive_bias", "black_box"):
        v = build_model(prob, paradigm=paradigm, depth=3, hidden=4, dtype=F64)(x).final_estimate
        assert v.shape == (5, 1) and torch.isfinite(v).all()
    v = ClassicalSolver(WMMSE(), prob, 3, dtype=F64)(x).final_estimate
    torch.testing.assert_close(v, torch.ones_like(v))  # no interference: full power is optimal
    expected = torch.log2(1 + x[:, 0, 0] ** 2 / NOISE)
    torch.testing.assert_close(sum_rate(v, x, NOISE), expected)


# -- metrics and training ------------------------------------------------------------------
def test_sum_rate_is_the_primary_metric_and_unsupervised_training_raises_it() -> None:
    prob = InterferenceChannel(M=6, seed=0)
    metrics = prob.metrics()
    assert metrics[0].name == "sum_rate" and metrics[0].higher_is_better
    assert not metrics[0].needs_target and metrics[0].unit == "bit/s/Hz"
    L.seed_everything(0, workers=False)
    module = UnfoldedModule(
        prob, paradigm="correction", depth=2, hidden=8, supervision="unsupervised", lr=3e-3
    )
    data = SyntheticDataModule(prob, batch_size=32, train_batches=20, val_size=128)
    trainer = L.Trainer(
        max_epochs=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,
    )
    trainer.validate(module, datamodule=data, verbose=False)
    before = module.primary_curves["val"]
    trainer.fit(module, datamodule=data)
    after = module.primary_curves["val"]
    assert len(after) == 3 and after[-1] > before[-1]
    assert "min_rate" in module.curves["val"]
    x, _ = data._val.tensors  # type: ignore[union-attr]
    curves = layer_curves(module(x).stacked_estimates(), torch.zeros(len(x), 6), x, metrics)
    assert curves["sum_rate"][-1] == pytest.approx(after[-1], rel=1e-5)


def test_black_box_trains_unsupervised_on_the_sum_rate() -> None:
    prob = InterferenceChannel(M=6, seed=0)
    module = UnfoldedModule(
        prob, paradigm="black_box", depth=2, black_box_params=200, supervision="unsupervised"
    )
    x, t = prob.sample(16, seed=0)
    loss = module.loss(module(x), x, t)
    loss.backward()
    assert float(loss.detach()) < 0  # −sum-rate
    assert any(p.grad is not None for p in module.parameters())


# -- the study -----------------------------------------------------------------------------
def test_study_rejects_a_timing_device_it_cannot_use_before_training(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("power_allocation_study")
    assert study.timing_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="not a torch device"):
        study.timing_device("gpu")
    with pytest.raises(ValueError, match="only 'cpu' and 'cuda'"):
        study.timing_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            study.main(["--preset", "tiny", "--timing-device", "cuda", "--out", str(tmp_path)])
        assert not list(tmp_path.iterdir())  # it failed before training or writing anything


def test_study_tiny_preset_writes_the_schema(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("power_allocation_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path), "--timing-device", "cpu"])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res) == {"methods", "size_generalisation"}
    names = {
        "full_power",
        "wmmse_4",
        "wmmse_100",
        "hyperparameters",
        "objective",
        "correction",
        "inductive_bias",
        "black_box",
    }
    assert set(res["methods"]) == names
    for entry in res["methods"].values():
        assert set(entry) == {"sum_rate", "params", "infer_ms", "train_s"}
        assert all(math.isfinite(v) for v in entry["sum_rate"])
    assert len(res["methods"]["correction"]["sum_rate"]) == 5  # K = 4: layers 0..4
    assert set(res["size_generalisation"]) == {"10", "30"}
    assert (tmp_path / "sum_rate_vs_layer.png").stat().st_size > 1000
    extras = json.loads((tmp_path / "extras.json").read_text())
    by_batch = extras["latency_by_batch"]
    assert set(by_batch) == {"16", "64"}  # the tiny preset's timing batches
    for row in by_batch.values():
        assert set(row["infer_ms"]) == {*names, "wmmse_100_bare"}
        assert all(v > 0 for v in row["infer_ms"].values())
        assert row["bare_max_abs_diff"] < 1e-3  # the plain-PyTorch loop is the same WMMSE
        assert row["speedup_wmmse_100_over_correction"] == pytest.approx(
            row["infer_ms"]["wmmse_100"] / row["infer_ms"]["correction"]
        )
    assert by_batch["64"]["infer_ms"] == extras["infer_ms"]  # timing_batch = 64
    for row in by_batch.values():
        lo, hi = row["paired_speedup_range"]
        assert lo <= row["paired_speedup"] <= hi
        assert isinstance(row["subnormals_flushed"], bool)
    assert extras["timing_device"] == "cpu"
    kept = extras["latency_subnormals_kept"]
    assert kept["batch"] == 64 and set(kept["infer_ms"]) == {"wmmse_100", "correction"}


@pytest.mark.slow
def test_generalisation_study_tiny_preset_writes_the_table(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("uwmmse_generalisation_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res) == {"recipes", "summary"}
    assert set(res["recipes"]) == set(study.RECIPES)
    assert set(study.RECIPES) >= {"one_topology", "topologies", "rayleigh", "mixed"}
    channel_models = {"topology_0", "topology_1", "path_loss_3", "rayleigh"}
    for recipe, entry in res["recipes"].items():
        assert set(entry["eval"]) == channel_models
        # the recipe's training channel model survives the JSON config
        init_args = entry["problem"]["init_args"]
        mixed = recipe.startswith("mixed")
        assert init_args["topology"] == (
            "random" if recipe.startswith("topologies") or mixed else "fixed"
        )
        assert init_args["channel"] == (
            "mixed" if mixed else recipe if recipe == "rayleigh" else "geometric"
        )
        for row in entry["eval"].values():
            assert len(row["uwmmse"]) == len(row["wmmse"]) == 5  # layers 0..4
            assert row["uwmmse"][0] == pytest.approx(row["wmmse"][0], rel=1e-5)  # full power
            assert row["wmmse_100"] >= row["wmmse"][4] > row["wmmse"][1]
            assert len(row["percent_of_wmmse_100"]) == 1  # one training seed
            margin = min(
                c[k] - row["wmmse"][k] for c in row["uwmmse_per_seed"] for k in range(1, 5)
            )
            assert row["at_least_wmmse_k"] == (margin >= 0)
            assert row["worst_layer_margin"] == pytest.approx(margin)
    for s in res["summary"].values():
        assert 0 < s["unseen_percent_min"] <= s["unseen_percent_mean"] < 150
    # the mixed recipe trains on both channel models, with the every-layer loss
    assert res["recipes"]["mixed"]["problem"]["init_args"]["rayleigh_fraction"] == 0.2
    assert res["recipes"]["mixed_long"]["problem"]["init_args"]["rayleigh_fraction"] == 0.1
    assert study.RECIPES["mixed_long"].length == 2 * study.RECIPES["mixed"].length
    assert study.RECIPES["mixed"].formulation == "multi_iteration"
    assert (tmp_path / "generalisation.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="valid: \\['one_topology'"):
        study.training_problem("pool", study.PRESETS["tiny"])
    # --recipes runs a subset; the wide recipe trains a twice as wide network
    only = tmp_path / "wide"
    study.main(["--preset", "tiny", "--out", str(only), "--recipes", "topologies_wide"])
    assert set(json.loads((only / "results.json").read_text())["recipes"]) == {"topologies_wide"}
    module, _ = study.train(
        study.training_problem("topologies_wide", study.PRESETS["tiny"]),
        study.PRESETS["tiny"],
        0,
        study.RECIPES["topologies_wide"],
    )
    assert module.model.nets[0].trunk.out_features == 2 * study.PRESETS["tiny"].hidden


# -- checks --------------------------------------------------------------------------------
def test_checks_that_apply_run_and_the_others_say_why() -> None:
    prob = InterferenceChannel(M=8, seed=0)
    data = prob.sample(64, seed=(3, 0), dtype=F64)
    module = UnfoldedModule(
        prob, paradigm="correction", depth=4, hidden=4, supervision="unsupervised"
    ).double()
    results = {
        r.name: r
        for r in checks.run_checks(
            module,
            data=data,
            options={
                "reference_agreement": {"n_objective_reference": 16, "objective_max_iter": 200}
            },
        )
    }
    # WMMSE's sum-rate never decreases: the descent check on the objective passes
    assert results["descent"].status is Status.PASSED, results["descent"].message
    assert results["descent"].details["quantity"] == "objective"
    # four iterations stop several per cent short of WMMSE run to convergence: agreement fails
    agree = results["reference_agreement"]
    assert agree.status is Status.FAILED and agree.value > 0.02, agree.message
    assert "run to convergence" in agree.message
    for name in ("coupling", "alista_coherence"):
        assert results[name].status is Status.SKIPPED
        assert "concerns sparse coding" in results[name].message
    # without a ground truth, the rate is fitted to WMMSE's certificate per layer: the KKT
    # residual of the sum-rate over the power box
    rate = results["linear_convergence"]
    assert rate.details["reference"] == "certificate" and "WMMSE" in rate.message
    assert "sum-rate KKT residual" in rate.details["what"]


def test_objective_agreement_passes_for_long_wmmse_and_descent_fails_for_a_bad_layer() -> None:
    prob = InterferenceChannel(M=8, seed=0)
    data = prob.sample(16, seed=(3, 0), dtype=F64)
    # WMMSE's tail is slow (here WMMSE-100 is 4 % short of 2000 iterations): 300 agree with 400
    long = ClassicalSolver(WMMSE(), prob, 300, dtype=F64)
    res = checks.reference_agreement(
        long, prob, data, n_objective_reference=16, objective_max_iter=400
    )
    assert res.status is Status.PASSED, res.message
    assert res.details["reference_iterations"] == 400
    short = checks.reference_agreement(
        ClassicalSolver(WMMSE(), prob, 20, dtype=F64),
        prob,
        data,
        n_objective_reference=16,
        objective_max_iter=400,
    )
    assert short.status is Status.FAILED and short.counterexample is not None
    # a correction layer that gives every user the same huge weight w ≈ b = 10⁶ throws away
    # the rates WMMSE weighs by (it cannot switch users off: the bound): the rate falls
    model = UnfoldedModel(WMMSE(), prob, 4, "correction", hidden=4, dtype=F64)
    with torch.no_grad():
        model.nets[2].heads.bias[1] = 1e6  # type: ignore[index]
    bad = checks.descent(model, prob, data, quantity="objective")
    assert bad.status is Status.FAILED and bad.details["violated_layers"] == [3], bad.message
    assert bad.counterexample is not None and bad.counterexample["layer"] == 3
    good = checks.descent(ClassicalSolver(WMMSE(), prob, 4, dtype=F64), prob, data)
    assert good.status is Status.PASSED, good.message


def test_generalization_check_trains_on_the_sum_rate_without_targets() -> None:
    prob = InterferenceChannel(M=6, seed=0)
    module = UnfoldedModule(prob, paradigm="hyperparameters", depth=2, supervision="unsupervised")
    res = checks.generalization_across_depth(
        module, depths=(1, 2), n_train=16, n_test=32, steps=3, lr=1e-2
    )
    assert res.status.name in ("PASSED", "FAILED"), res.message
    assert all(math.isfinite(v) for v in res.details["test_loss"])
    assert all(v < 0 for v in res.details["train_loss"])  # −sum-rate / |−sum-rate at init|
