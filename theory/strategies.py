r"""Hypothesis strategies for property-based tests of unfolded solvers and their theory.

Requires ``hypothesis`` (a test extra): this module is not imported by
``import lightning_unfold.theory``; access it as ``lightning_unfold.theory.strategies``.

Design: hypothesis draws only *integers and a few bounded floats* (sizes, sparsity, SNR, a
seed); arrays are then built with ``np.random.default_rng(seed)``. Shrinking therefore acts on
sizes and seeds, examples are reproducible from the printed seed, and no subnormal or
pathological floats reach the solvers: Gaussian draws from ``default_rng`` are never subnormal
in practice, and the drawn floats are requested with ``allow_subnormal=False``. Use the ``ci``
profile (:func:`register_ci_profile`, ``derandomize=True``) for reproducible CI runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st

__all__ = [
    "RPCAInstance",
    "SparseRecoveryProblem",
    "register_ci_profile",
    "rpca_instances",
    "sparse_codes",
    "sparse_recovery_problems",
    "well_conditioned_dictionaries",
]

_SEEDS = st.integers(min_value=0, max_value=2**32 - 1)


def register_ci_profile(max_examples: int = 25) -> None:
    """Register (and do not load) the ``ci`` hypothesis profile: derandomized, no deadline.

    Load it with ``settings.load_profile("ci")`` or ``HYPOTHESIS_PROFILE=ci``.
    """
    settings.register_profile(
        "ci",
        derandomize=True,
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


@dataclass(frozen=True, eq=False)
class SparseRecoveryProblem:
    r"""One batch of noisy sparse-recovery data :math:`x = Hs + \sigma e`.

    Attributes:
        H: (m, n) dictionary with unit-norm Gaussian columns.
        s_true: (B, n) sparse codes.
        x: (B, m) observations.
        rho: LASSO weight, a fraction of :math:`\min_b\|H^\top x_b\|_\infty` (so no LASSO
            solution of the batch is trivially zero).
        sigma: noise standard deviation per entry.
        snr_db: the signal-to-noise ratio that fixed ``sigma``.
        seed: the seed the arrays were built from.
    """

    H: np.ndarray
    s_true: np.ndarray
    x: np.ndarray
    rho: float
    sigma: float
    snr_db: float
    seed: int = field(default=0)

    @property
    def sparsity(self) -> int:
        """Largest number of non-zeros of a code in the batch."""
        return int(np.max(np.count_nonzero(self.s_true, axis=1)))


@dataclass(frozen=True, eq=False)
class RPCAInstance:
    r"""A robust-PCA instance :math:`X = L_0 + S_0` (low rank plus sparse)."""

    X: np.ndarray
    L: np.ndarray
    S: np.ndarray
    rank: int
    sparse_fraction: float
    seed: int


def _gaussian_dictionary(rng: np.random.Generator, m: int, n: int) -> np.ndarray:
    H = rng.standard_normal((m, n))
    return H / np.linalg.norm(H, axis=0)


def _codes(
    rng: np.random.Generator, batch: int, n: int, k: int, low: float, high: float
) -> np.ndarray:
    S = np.zeros((batch, n))
    for b in range(batch):
        idx = rng.choice(n, size=k, replace=False)
        S[b, idx] = rng.choice([-1.0, 1.0], size=k) * rng.uniform(low, high, size=k)
    return S


@st.composite
def well_conditioned_dictionaries(
    draw: st.DrawFn,
    m: tuple[int, int] = (4, 16),
    n: tuple[int, int] = (8, 40),
    *,
    min_ratio: float = 2.0,
    max_condition: float = 10.0,
) -> np.ndarray:
    r"""Gaussian dictionaries with unit-norm columns and :math:`\kappa(H) \le` ``max_condition``.

    ``n >= min_ratio * m`` keeps Gaussian matrices well conditioned
    (:math:`\kappa \approx (1+\sqrt{m/n})/(1-\sqrt{m/n})`); the rare worse draw is rejected.
    """
    mm = draw(st.integers(*m))
    n_lo = max(n[0], int(np.ceil(min_ratio * mm)))
    assume(n_lo <= n[1])
    nn = draw(st.integers(n_lo, n[1]))
    seed = draw(_SEEDS)
    H = _gaussian_dictionary(np.random.default_rng(seed), mm, nn)
    assume(np.linalg.cond(H) <= max_condition)
    return H


@st.composite
def sparse_codes(
    draw: st.DrawFn,
    n: tuple[int, int] = (5, 40),
    sparsity: tuple[int, int] = (1, 5),
    batch: tuple[int, int] = (1, 4),
    amplitude: tuple[float, float] = (0.5, 1.5),
) -> np.ndarray:
    """Sparse codes (B, n): random supports, random signs, magnitudes in ``amplitude``."""
    nn = draw(st.integers(*n))
    k = draw(st.integers(min(sparsity[0], nn), min(sparsity[1], nn)))
    B = draw(st.integers(*batch))
    seed = draw(_SEEDS)
    return _codes(np.random.default_rng(seed), B, nn, k, *amplitude)


@st.composite
def sparse_recovery_problems(
    draw: st.DrawFn,
    m: tuple[int, int] = (5, 20),
    n: tuple[int, int] = (10, 40),
    sparsity: tuple[int, int] = (1, 4),
    snr_db: tuple[float, float] = (10.0, 40.0),
    batch: tuple[int, int] = (1, 3),
    rho_fraction: tuple[float, float] = (0.05, 0.5),
) -> SparseRecoveryProblem:
    r"""Noisy sparse recovery :math:`x = H s + \sigma e` with :math:`e \sim \mathcal N(0, I)`.

    Sizes, sparsity (at most ``m // 2``), SNR (dB), batch size, the LASSO weight's fraction and
    the seed are drawn; :math:`n \ge m`. :math:`\sigma` is set from the SNR,
    :math:`\sigma = \mathrm{rms}(Hs)\,10^{-\mathrm{SNR}/20}`.
    """
    mm = draw(st.integers(*m))
    nn = draw(st.integers(max(n[0], mm), max(n[1], mm)))
    k = draw(st.integers(max(1, min(sparsity[0], mm // 2)), max(1, min(sparsity[1], mm // 2))))
    snr = draw(st.floats(*snr_db, allow_nan=False, allow_infinity=False, allow_subnormal=False))
    B = draw(st.integers(*batch))
    frac = draw(
        st.floats(*rho_fraction, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    )
    seed = draw(_SEEDS)
    rng = np.random.default_rng(seed)
    H = _gaussian_dictionary(rng, mm, nn)
    S = _codes(rng, B, nn, k, 0.5, 1.5)
    clean = S @ H.T
    sigma = float(np.sqrt(np.mean(clean**2)) * 10 ** (-snr / 20))
    x = clean + sigma * rng.standard_normal(clean.shape)
    rho = float(frac * np.min(np.max(np.abs(x @ H), axis=1)))
    return SparseRecoveryProblem(H=H, s_true=S, x=x, rho=rho, sigma=sigma, snr_db=snr, seed=seed)


@st.composite
def rpca_instances(
    draw: st.DrawFn,
    n1: tuple[int, int] = (6, 12),
    n2: tuple[int, int] = (6, 12),
    rank: tuple[int, int] = (1, 2),
    sparse_fraction: tuple[float, float] = (0.0, 0.1),
) -> RPCAInstance:
    r"""Small RPCA instances :math:`X = L_0 + S_0` (Candès et al., 2011, Sec. 4's model).

    :math:`L_0 = AB^\top` with :math:`A, B` Gaussian of variance :math:`1/n_1`, :math:`1/n_2`;
    :math:`S_0` has a uniformly random support of the drawn fraction with :math:`\pm1` entries.
    """
    a = draw(st.integers(*n1))
    b = draw(st.integers(*n2))
    r = draw(st.integers(rank[0], min(rank[1], a, b)))
    p = draw(
        st.floats(*sparse_fraction, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    )
    seed = draw(_SEEDS)
    rng = np.random.default_rng(seed)
    L = rng.normal(scale=1 / np.sqrt(a), size=(a, r)) @ rng.normal(
        scale=1 / np.sqrt(b), size=(r, b)
    )
    mask = rng.random((a, b)) < p
    S = np.where(mask, rng.choice([-1.0, 1.0], size=(a, b)), 0.0)
    return RPCAInstance(X=L + S, L=L, S=S, rank=r, sparse_fraction=p, seed=seed)
