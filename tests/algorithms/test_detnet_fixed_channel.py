"""DetNet's fixed-channel case: the 0.55-Toeplitz channel, the fast soft-IC update and the study."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import norm

from lightning_unfold.algorithms.detection import (
    MIMODetection,
    SoftIC,
    _moments,
    _user_blocks,
    toeplitz_correlation,
    zero_forcing,
)
from lightning_unfold.core.algorithm import problem_from_config

ROOT = Path(__file__).resolve().parents[2]
F64 = torch.float64


def test_toeplitz_channel_gram_is_the_correlation_exactly() -> None:
    prob = MIMODetection(n_users=30, n_antennas=60, channel="toeplitz", correlation=0.55)
    H = prob.H_fixed.numpy()
    R = 0.55 ** np.abs(np.subtract.outer(np.arange(30), np.arange(30)))
    assert H.shape == (60, 30)
    np.testing.assert_allclose(H.T @ H, R, atol=1e-12)
    np.testing.assert_allclose(toeplitz_correlation(30, 0.55), R)
    # every sample carries that channel, and the correlation argument is honoured
    x, _ = prob.sample(3, seed=0, dtype=F64)
    np.testing.assert_array_equal(prob.split(x)[1].numpy(), np.broadcast_to(H, (3, 60, 30)))
    other = MIMODetection(n_users=4, n_antennas=6, channel="toeplitz", correlation=0.2).H_fixed
    np.testing.assert_allclose((other.T @ other).numpy(), toeplitz_correlation(4, 0.2), atol=1e-12)
    # complex constellations: the real-equivalent Gram is R ⊗ I_2 (user blocks interleaved)
    q = MIMODetection(n_users=3, n_antennas=5, constellation="qpsk", channel="toeplitz")
    Hq = q.H_fixed.numpy()
    np.testing.assert_allclose(
        Hq.T @ Hq, np.kron(toeplitz_correlation(3, 0.5), np.eye(2)), atol=1e-12
    )


def test_toeplitz_channel_survives_the_config_round_trip() -> None:
    prob = MIMODetection(
        n_users=30,
        n_antennas=60,
        channel="toeplitz",
        correlation=0.55,
        snr_db=None,
        snr_range=(7, 14),
    )
    again = problem_from_config(prob.to_config())
    assert isinstance(again, MIMODetection) and again.channel == "toeplitz"
    assert again.correlation == 0.55
    assert torch.equal(again.H_fixed, prob.H_fixed)


def test_toeplitz_needs_at_least_as_many_antennas_as_users() -> None:
    with pytest.raises(ValueError, match=r"n_users = 5 > n_antennas = 3"):
        MIMODetection(n_users=5, n_antennas=3, channel="toeplitz")
    with pytest.raises(ValueError, match=r"valid: \[.*'toeplitz'\]"):
        MIMODetection(channel="toeplitz55")


def test_zero_forcing_on_the_toeplitz_channel_matches_its_closed_form() -> None:
    """ZF on a fixed channel: user i's error rate is Q(1/(σ sqrt([R⁻¹]_ii))), SNR = 1/σ²."""
    snr_db, uses = 8.0, 4000
    prob = MIMODetection(
        n_users=30, n_antennas=60, channel="toeplitz", correlation=0.55, snr_db=snr_db
    )
    x, target = prob.sample(uses, seed=1, dtype=F64)
    wrong = prob.metrics()[0].fn(zero_forcing(x, prob), target, x)[0].double()
    ber = float(wrong.mean()) / 30
    se = float(wrong.std()) / math.sqrt(uses) / 30
    sigma = 10 ** (-snr_db / 20)
    diag = np.diag(np.linalg.inv(toeplitz_correlation(30, 0.55)))
    exact = float(np.mean(norm.sf(1.0 / (sigma * np.sqrt(diag)))))
    assert abs(ber - exact) < 4 * se, (ber, exact, se)


def _posteriors_per_user_solve(
    algo: SoftIC, s: torch.Tensor, x: torch.Tensor, nu: float
) -> torch.Tensor:
    """The soft-IC update written out: one covariance and one solve per user (the definition)."""
    prob = algo.problem
    y, H, var_r = prob.split(x)
    points = prob.const.points.to(x)
    Hb = _user_blocks(H, prob.users)
    m, C = _moments(s, points)
    own = torch.einsum("bund,bud->bun", Hb, m)
    z = y.unsqueeze(1) - own.sum(dim=1, keepdim=True) + own
    cov_u = torch.einsum("bund,bude,bume->bunm", Hb, C, Hb)
    eye = torch.eye(prob.n_obs, dtype=x.dtype)
    sigma = var_r[:, None, None, None] * eye + nu * (cov_u.sum(1, keepdim=True) - cov_u)
    r = z.unsqueeze(-1) - Hb @ points.T
    quad = (r * torch.linalg.solve(sigma, r)).sum(dim=2)
    return torch.softmax(-0.5 * quad, dim=-1)


@pytest.mark.parametrize(
    ("const", "channel", "users", "antennas"),
    [
        ("bpsk", "toeplitz", 3, 4),
        ("qpsk", "correlated", 3, 4),
        ("16qam", "gaussian", 3, 4),
        ("bpsk", "gaussian", 5, 3),  # more users than antennas: the Cholesky path
        ("qpsk", "deepsic", 4, 3),
    ],
)
def test_fast_soft_ic_update_equals_the_per_user_solve(
    const: str, channel: str, users: int, antennas: int
) -> None:
    prob = MIMODetection(
        n_users=users, n_antennas=antennas, constellation=const, channel=channel, snr_db=6.0
    )
    x, _ = prob.sample(16, seed=2, dtype=F64)
    algo = SoftIC()
    algo.classical_params(prob)
    g = torch.Generator().manual_seed(0)
    logits = 3.0 * torch.randn(16, users, prob.const.size, generator=g, dtype=F64)
    s = torch.softmax(logits, dim=-1)
    s[0, 0] = torch.nn.functional.one_hot(torch.tensor(1), prob.const.size).to(F64)  # certain
    points = prob.const.points.to(F64)
    for nu in (1.0, 0.4):
        fast = algo.posteriors(s, x, points, nu)
        torch.testing.assert_close(
            fast, _posteriors_per_user_solve(algo, s, x, nu), atol=1e-10, rtol=1e-9
        )


def test_detnet_study_tiny_preset(tmp_path: Path, load_example: Callable[[str], Any]) -> None:
    study = load_example("detnet_study")
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["complete"] and res["protocol"]["users"] == 30 and res["protocol"]["antennas"] == 60
    assert list(res["methods"]) == ["detnet", "soft_ic", "lmmse", "zf", "projected_gradient"]
    for r in res["methods"].values():
        assert r["snr_db"] == [8.0, 13.0]
        for ber, se, n, ok in zip(r["ber"], r["se"], r["channel_uses"], r["rse_ok"], strict=True):
            assert 0.0 <= ber <= 1.0 and 200 <= n <= 400 and n % 200 == 0
            assert ok == (ber > 0 and se <= 0.1 * ber)
            # more channel uses are drawn only while the standard error is above its target
            if n < 400:
                assert ber > 0 and se <= 0.1 * ber
    # the classical detectors' BER falls with the SNR
    for m in ("lmmse", "zf", "soft_ic"):
        assert res["methods"][m]["ber"][1] < res["methods"][m]["ber"][0]
    assert set(res["timing_ms_per_10k_symbols"]) == set(res["methods"])
    assert (tmp_path / "ber_vs_snr.png").stat().st_size > 0
