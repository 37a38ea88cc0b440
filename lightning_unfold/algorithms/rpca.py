r"""Robust PCA by alternating soft-thresholding and scaled gradient steps on a factorised low-rank part.

Problem (Shlezinger et al. 2025, §V-B; Cai, Liu & Yin 2021): observe

.. math:: X = L^\star R^{\star\top} + \Psi Y^\star \in \mathbb R^{n_1\times n_2},

with :math:`L^\star \in \mathbb R^{n_1\times r}`, :math:`R^\star \in \mathbb R^{n_2\times r}`, a sparse
outlier matrix :math:`Y^\star` and a known invertible transform :math:`\Psi \in \mathbb R^{n_1\times n_1}`
acting on the columns. The solver minimises, per sample,

.. math:: \mathcal L(L, R, Y; X) = \tfrac12\|LR^\top + \Psi Y - X\|_F^2 + \lambda\|Y\|_1,
    \qquad \lambda = \texttt{lam}\cdot \operatorname{rms}(X),

(:math:`\operatorname{rms}(X) = \|X\|_F/\sqrt{n_1 n_2}`: every threshold is relative to the size of the
observation, so the solver is scale-equivariant and learned thresholds transfer across :math:`n`).

Iteration :math:`k` of :class:`RPCA` (the issue's order: :math:`Y` first, then :math:`L`, then :math:`R`
with the new :math:`L`):

.. math::
    \tau_k &= \operatorname{rms}(X)\,\max(\zeta_k\, q^{k-1}, \texttt{lam}),\\
    Y^{(k)} &= \operatorname{soft}_{\tau_k}\big(\Psi^{-1}(X - L R^\top)\big),\\
    L^{(k)} &= L - \eta_{L,k}\,(LR^\top + \Psi Y^{(k)} - X)\,R\,(R^\top R)^{-1},\\
    R^{(k)} &= R - \eta_{R,k}\,(L^{(k)}R^\top + \Psi Y^{(k)} - X)^\top L^{(k)}\,(L^{(k)\top}L^{(k)})^{-1}.

The :math:`L, R` updates are scaled gradient steps (ScaledGD, Tong, Ma & Chi 2021): the gradient
:math:`\nabla_L = (LR^\top + \Psi Y - X)R` preconditioned by :math:`(R^\top R)^{-1}`; :math:`\eta = 1`
is the exact alternating least-squares step. For an orthogonal :math:`\Psi` the :math:`Y` update is the
exact minimiser of :math:`\mathcal L` in :math:`Y` at threshold :math:`\lambda`, so with the threshold at
its floor the iteration is block-coordinate descent on :math:`\mathcal L` (equivalently on the Huber
loss of :math:`X - LR^\top`). The geometric decay :math:`q^{k-1}` of the threshold is the schedule of
AccAltProj / LRPCA (Cai et al. 2019, 2021): large thresholds while :math:`LR^\top` is poor, then smaller.

Initialisation: :math:`Y^{(0)} = \operatorname{soft}_{\tau_0}(\Psi^{-1}X)` with
:math:`\tau_0 = \zeta_0\operatorname{rms}(X)`, then the rank-:math:`r` truncated SVD
:math:`U\Sigma V^\top` of :math:`X - \Psi Y^{(0)}` split as :math:`L = U\Sigma^{1/2}`,
:math:`R = V\Sigma^{1/2}`. The initialisation is not differentiated (the truncated SVD's backward is
ill-conditioned when discarded singular values cluster); learning acts from layer 1 on.

Parameters: θo = {``transform`` Ψ} (learned per layer by paradigm ``"objective"``), θh = {``eta_L``,
``eta_R``, ``zeta``} (paradigm ``"hyperparameters"`` = learned RPCA), fixed: ``zeta_init``.
Paradigm ``"correction"`` adds a two-layer convolutional network of (L, R, Y, X) that corrects the
L and R updates (:class:`RPCACorrectionNet`); paradigm ``"inductive_bias"`` runs the same iteration
with Ψ replaced by a two-layer convolutional network (:class:`RPCAConvIteration`). See
``docs/rpca.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.sparse import soft_threshold
from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    as_operator,
    require_problem,
    seeded_rng,
)
from lightning_unfold.core.iterate import require_finite
from lightning_unfold.core.metrics import NMSE, ProblemMetric, RelativeError, labelled_rows
from lightning_unfold.core.networks import ConvDenoiserNet
from lightning_unfold.core.unfolded import promote_hyperparameters

__all__ = [
    "RPCA",
    "RPCA_TRANSFORMS",
    "RPCABlackBoxNet",
    "RPCAConvIteration",
    "RPCACorrectionNet",
    "RPCAProblem",
    "RPCAState",
    "dct_matrix",
    "init_layer_thresholds",
    "promote_hyperparameters",
    "relative_frobenius_error",
    "rpca_objective",
]

#: the built-in transforms Ψ of :class:`RPCAProblem`
RPCA_TRANSFORMS: tuple[str, ...] = ("identity", "orthogonal", "dct")

_MAX_CONDITION = 1e8  # a transform worse conditioned than this is treated as non-invertible


def dct_matrix(n: int) -> np.ndarray:
    r"""The orthonormal DCT-II matrix :math:`C_{jk} = c_j\cos(\pi(2k+1)j/(2n))`, shape ``(n, n)``."""
    j = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    C = np.cos(np.pi * (2 * k + 1) * j / (2 * n)) * math.sqrt(2.0 / n)
    C[0] /= math.sqrt(2.0)
    return C


def _rms(x: Tensor) -> Tensor:
    r"""Per-sample root mean square :math:`\|X\|_F/\sqrt{n_1 n_2}`, shape ``(B, 1, 1)``."""
    return x.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()


def _apply(psi: Tensor, y: Tensor) -> Tensor:
    """:math:`\\Psi Y` for a batch ``y`` of shape ``(B, n1, n2)``."""
    return torch.matmul(psi, y)


def _solve(psi: Tensor, z: Tensor) -> Tensor:
    """:math:`\\Psi^{-1} Z` for a batch ``z`` (one factorisation of Ψ for the whole batch)."""
    b, n1, n2 = z.shape
    flat = z.transpose(0, 1).reshape(n1, b * n2)
    return torch.linalg.solve(psi, flat).reshape(n1, b, n2).transpose(0, 1)


def _fro(t: Tensor) -> Tensor:
    """Per-sample Frobenius norm of a batch ``(B, ...)``, shape ``(B,)``."""
    return torch.linalg.vector_norm(t.flatten(1), dim=1)


def _scaled(g: Tensor, f: Tensor) -> Tensor:
    r""":math:`G (F^\top F)^{-1}` for batches ``g (B, n, r)``, ``f (B, m, r)``, with a tiny ridge
    :math:`\epsilon\,\mathrm{tr}(F^\top F)/r` that keeps the solve defined for rank-deficient factors."""
    gram = f.mT @ f
    r = gram.shape[-1]
    ridge = torch.finfo(f.dtype).eps * gram.diagonal(dim1=-2, dim2=-1).sum(-1) / r
    eye = torch.eye(r, dtype=f.dtype, device=f.device)
    gram = gram + ridge[:, None, None] * eye
    return torch.linalg.solve(gram, g.mT).mT


def rpca_objective(s: RPCAState, x: Tensor, psi: Tensor, lam: Tensor | float) -> Tensor:
    r"""Per-sample :math:`\tfrac12\|LR^\top + \Psi Y - X\|_F^2 + \texttt{lam}\operatorname{rms}(X)\|Y\|_1`."""
    r = s.L @ s.R.mT + _apply(psi, s.Y) - x
    weight = lam * _rms(x).flatten()
    return 0.5 * r.pow(2).sum(dim=(1, 2)) + weight * s.Y.abs().sum(dim=(1, 2))


def relative_frobenius_error(estimate: Tensor, target: Tensor) -> Tensor:
    r"""Per-sample :math:`\|\hat M - M^\star\|_F / \|M^\star\|_F` for batches ``(B, n1, n2)``."""
    num = torch.linalg.vector_norm((estimate - target).flatten(1), dim=1)
    return num / torch.linalg.vector_norm(target.flatten(1), dim=1).clamp_min(1e-30)


@dataclass(frozen=True)
class RPCAState:
    """RPCA's iterate: factors ``L`` ``(B, n1, r)``, ``R`` ``(B, n2, r)`` and outliers ``Y`` ``(B, n1, n2)``.

    The estimate compared with the target is :math:`LR^\\top` ``(B, n1, n2)``.
    """

    L: Tensor
    R: Tensor
    Y: Tensor


class RPCAProblem(ProblemSpec):
    r"""Seeded robust-PCA instances :math:`X = L^\star R^{\star\top} + \Psi Y^\star` (target :math:`L^\star R^{\star\top}`).

    Per sample: :math:`L^\star` has i.i.d. :math:`\mathcal N(0, 1/n_1)` entries, :math:`R^\star`
    :math:`\mathcal N(0, 1/n_2)`; :math:`Y^\star` has exactly :math:`\lfloor\alpha n_1 n_2\rfloor`
    non-zeros at uniformly random positions, uniform in :math:`[-m, m]` with
    :math:`m = \operatorname{mean}|L^\star R^{\star\top}|` (the LRPCA protocol, Cai et al. 2021).

    Args:
        n1, n2: matrix size (non-square is fine).
        rank: :math:`r \le \min(n_1, n_2)`.
        outlier_fraction: :math:`\alpha \in [0, 1)`.
        transform: Ψ — ``"identity"``; ``"orthogonal"`` (a fixed random orthogonal matrix drawn from
            ``seed``, Haar via QR); ``"dct"`` (orthonormal DCT-II along the columns).
        psi_noise: :math:`\sigma \ge 0`; the models are given :math:`\tilde\Psi = \Psi + \sigma N`
            with :math:`N_{ij} \sim \mathcal N(0, 1/n_1)` (so :math:`\|\sigma N\|_2 \approx 2\sigma`),
            while the data are generated with the true Ψ — the *mismatched* setting.
        lam: relative :math:`\ell_1` weight of the objective, :math:`\lambda = \texttt{lam}\cdot
            \operatorname{rms}(X)`; it is also the floor of the solvers' thresholds.
        seed: seeds Ψ (orthogonal), the noise N and, combined with ``sample``'s seed, the data.
        transform_matrix: a custom Ψ ``(n1, n1)`` (overrides ``transform``); must be invertible.

    ``sample`` returns ``x = X`` and ``target = L★R★ᵀ``, both ``(B, n1, n2)``.
    """

    default_algorithm = "rpca"

    def __init__(
        self,
        n1: int = 200,
        n2: int = 200,
        rank: int = 5,
        outlier_fraction: float = 0.1,
        transform: str = "identity",
        psi_noise: float = 0.0,
        lam: float = 1e-3,
        seed: int = 0,
        transform_matrix: Tensor | np.ndarray | list[list[float]] | None = None,
    ) -> None:
        if n1 < 1 or n2 < 1:
            raise ValueError(f"Matrix sizes must be positive, got n1={n1}, n2={n2}.")
        if not (isinstance(rank, int) and 1 <= rank <= min(n1, n2)):
            raise ValueError(
                f"rank must be an integer in [1, min(n1, n2)] = [1, {min(n1, n2)}], got {rank!r}: "
                "a rank-r factorisation LRᵀ of an n1×n2 matrix needs r ≤ min(n1, n2)."
            )
        if not 0.0 <= outlier_fraction < 1.0:
            raise ValueError(f"outlier_fraction is a fraction in [0, 1), got {outlier_fraction}.")
        if not (psi_noise >= 0 and math.isfinite(psi_noise)):
            raise ValueError(f"psi_noise must be finite and >= 0, got {psi_noise}.")
        if not (lam >= 0 and math.isfinite(lam)):
            raise ValueError(f"lam must be finite and >= 0, got {lam}.")
        self.n1, self.n2, self.rank = n1, n2, rank
        self.outlier_fraction, self.psi_noise, self.lam, self.seed = (
            float(outlier_fraction),
            float(psi_noise),
            float(lam),
            seed,
        )
        rng = seeded_rng(seed, 7)
        if transform_matrix is not None:
            psi = as_operator(transform_matrix, "transform_matrix Ψ", ndim=2).numpy()
            if psi.shape != (n1, n1):
                raise ValueError(
                    f"transform_matrix must have shape (n1, n1) = ({n1}, {n1}), got {psi.shape}."
                )
            self.transform = "custom"
        elif transform == "identity":
            psi = np.eye(n1)
        elif transform == "orthogonal":
            q, r = np.linalg.qr(rng.normal(size=(n1, n1)))
            psi = q * np.sign(np.diag(r))
        elif transform == "dct":
            psi = dct_matrix(n1)
        else:
            raise ValueError(
                f"Unknown transform {transform!r}; valid: {list(RPCA_TRANSFORMS)} or pass "
                "transform_matrix=..."
            )
        if transform_matrix is None:
            self.transform = transform
        self.psi_true = self._check_invertible(torch.from_numpy(psi), "The transform Ψ")
        noise = rng.normal(scale=1.0 / math.sqrt(n1), size=(n1, n1))
        given = psi + self.psi_noise * noise if self.psi_noise > 0 else psi
        self.psi_given = self._check_invertible(
            torch.from_numpy(given), f"The noisy transform Ψ + σN (σ = {self.psi_noise})"
        )

    @staticmethod
    def _check_invertible(psi: Tensor, what: str) -> Tensor:
        require_finite(psi, what)
        sv = torch.linalg.svdvals(psi)
        cond = float(sv[0] / sv[-1]) if float(sv[-1]) > 0 else math.inf
        if not cond <= _MAX_CONDITION:
            raise ValueError(
                f"{what} is not invertible (condition number {cond:.3g} > {_MAX_CONDITION:.0e}); "
                "the outlier update applies Ψ⁻¹, so Ψ must be a well-conditioned square matrix."
            )
        return psi

    def constants(self) -> dict[str, Tensor]:
        """``Psi``: the transform the models are given (noisy when ``psi_noise > 0``); ``lam``;
        ``rank`` (as a float tensor, read by the initialisation)."""
        return {
            "Psi": self.psi_given.clone(),
            "lam": torch.tensor(self.lam, dtype=torch.float64),
            "rank": torch.tensor(float(self.rank), dtype=torch.float64),
        }

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        n1, n2, r = self.n1, self.n2, self.rank
        L = rng.normal(scale=1.0 / math.sqrt(n1), size=(n, n1, r))
        R = rng.normal(scale=1.0 / math.sqrt(n2), size=(n, n2, r))
        M = L @ R.transpose(0, 2, 1)
        count = math.floor(self.outlier_fraction * n1 * n2)
        Y = np.zeros((n, n1 * n2))
        if count > 0:
            pos = np.argsort(rng.random((n, n1 * n2)), axis=1)[:, :count]
            scale = np.abs(M).mean(axis=(1, 2))[:, None]
            vals = scale * rng.uniform(-1.0, 1.0, size=(n, count))
            np.put_along_axis(Y, pos, vals, axis=1)
        X = M + self.psi_true.numpy() @ Y.reshape(n, n1, n2)
        return torch.from_numpy(X).to(dtype), torch.from_numpy(M).to(dtype)

    def metrics(self) -> tuple[ProblemMetric, ...]:
        r"""Mean relative error :math:`\|\hat L - L^\star\|_F / \|L^\star\|_F` (primary, the
        LRPCA literature's figure), then pooled NMSE in dB."""
        return (RelativeError(), NMSE())

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        r"""The mean relative error over labelled rows,
        :math:`\frac1{|\mathcal B_\ell|}\sum_i\|\hat M_i - M^\star_i\|_F/\|M^\star_i\|_F` —
        scale-free, the LRPCA literature's training loss (Cai et al. 2021); ``None`` when no row
        is labelled."""
        labelled = labelled_rows(target)
        if not bool(labelled.any()):
            return None
        return relative_frobenius_error(estimate[labelled], target[labelled]).mean()

    def validate_observation(self, x: Tensor) -> None:
        shape = (self.n1, self.n2)
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (B, {self.n1}, {self.n2}).")
        if x.ndim != 3 or tuple(x.shape[1:]) != shape:
            raise ValueError(
                f"x has shape {tuple(x.shape)} but this RPCAProblem has n1×n2 = {shape[0]}×"
                f"{shape[1]}: observations must be a batch of shape (B, {shape[0]}, {shape[1]}) "
                "(use x.unsqueeze(0) for a single matrix)."
            )
        require_finite(x, "The observation X")


def _rank(p: Mapping[str, Tensor]) -> int:
    return round(float(p["rank"]))


def _svd_init(m: Tensor, rank: int) -> tuple[Tensor, Tensor]:
    U, S, Vh = torch.linalg.svd(m, full_matrices=False)
    root = S[:, :rank].sqrt().unsqueeze(1)
    return U[:, :, :rank] * root, Vh[:, :rank].mT * root


class RPCA(Algorithm[RPCAState]):
    r"""Alternating soft-thresholding / scaled gradient RPCA (see the module docstring).

    Args:
        step: classical :math:`\eta_L = \eta_R` (ScaledGD: :math:`0 < \eta \le 1`; must be in (0, 2)).
        zeta: classical relative threshold :math:`\zeta` of layer 1 (decayed by ``decay`` per layer).
        zeta_init: relative threshold :math:`\zeta_0` of the initialisation.
        decay: geometric threshold decay :math:`q \in (0, 1]`.

    The defaults were hand-tuned by a grid search on a validation set (``docs/rpca.md``;
    ``examples/rpca_study.py`` repeats the search per preset).
    """

    name: ClassVar[str] = "rpca"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="robust PCA ½‖LRᵀ + ΨY − X‖² + λ‖Y‖₁ with a factorised low-rank part (non-convex)",
        fixed_point="a stationary point of the factorised objective",
        convex=False,
        averaged=None,
        descent=None,
        linear_rate="scaled gradient descent with decaying thresholds converges linearly near "
        "the truth under incoherence (Cai, Liu & Yin 2021, Thm. 1)",
    )

    def certificate(self, s: RPCAState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The stationarity residual of the factorised objective, relative to :math:`\|X\|_F`.

        With :math:`E = LR^\top + \Psi Y - X` and :math:`\lambda = \texttt{lam}\cdot
        \operatorname{rms}(X)`, a point is stationary iff :math:`\nabla_L = ER = 0`,
        :math:`\nabla_R = E^\top L = 0` and :math:`0 \in \Psi^\top E + \lambda\,\partial\|Y\|_1`.
        The first two are measured through the projections onto the factors' column spaces,
        :math:`ER = 0 \Leftrightarrow EP_R = 0` with :math:`P_R = R(R^\top R)^{-1}R^\top` (the change of
        :math:`LR^\top` that one ScaledGD step makes), which does not depend on how the product is
        split between the factors (:math:`L \to LA`, :math:`R \to RA^{-\top}`); the third as the
        distance of :math:`-\Psi^\top E` to :math:`\lambda\,\partial\|Y\|_1` (the LASSO rule,
        entrywise):

        .. math:: r = \frac{\max\big(\|EP_R\|_F,\ \|P_LE\|_F,\ \|d_Y\|_F\big)}{\|X\|_F},\quad
            (d_Y)_{ij} = \begin{cases} (\Psi^\top E)_{ij} + \lambda\operatorname{sign}Y_{ij}
            & Y_{ij} \ne 0\\ (|(\Psi^\top E)_{ij}| - \lambda)_+ & Y_{ij} = 0,\end{cases}

        0 exactly at a stationary point of :math:`\mathcal L`, unchanged when :math:`X` is scaled.
        The classical iteration's fixed points (with the threshold at its floor
        :math:`\texttt{lam}`) are such points for an orthogonal Ψ, where its Y-update is the exact
        minimiser; for a non-orthogonal Ψ (``psi_noise > 0``) the Y-update soft-thresholds
        :math:`\Psi^{-1}(X - LR^\top)`, whose fixed points are not stationary for
        :math:`\mathcal L`, and this residual says so."""
        psi = p["Psi"]
        lam = p["lam"] * _rms(x)
        E = s.L @ s.R.mT + _apply(psi, s.Y) - x
        along_R = _scaled(E @ s.R, s.R) @ s.R.mT  # E P_R
        along_L = s.L @ _scaled(E.mT @ s.L, s.L).mT  # P_L E
        g = torch.matmul(psi.mT, E)
        d_y = torch.where(s.Y != 0, g + lam * torch.sign(s.Y), (g.abs() - lam).clamp_min(0.0))
        parts = torch.stack([_fro(along_R), _fro(along_L), _fro(d_y)], dim=1)
        return Certificate(
            "stationarity residual of the factorised RPCA objective relative to ‖X‖",
            parts.amax(dim=1) / _fro(x).clamp_min(1e-300),
        )

    def __init__(
        self, step: float = 1.0, zeta: float = 1.0, zeta_init: float = 2.0, decay: float = 0.5
    ) -> None:
        if not (0.0 < step < 2.0):
            raise ValueError(
                f"The scaled-gradient step eta must lie in (0, 2) (eta = 1 is exact alternating "
                f"least squares; eta >= 2 diverges), got {step}."
            )
        for name, v in (("zeta", zeta), ("zeta_init", zeta_init)):
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be finite and >= 0, got {v}.")
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay q must lie in (0, 1], got {decay}.")
        self.step_size, self.zeta, self.zeta_init, self.decay = (
            float(step),
            float(zeta),
            float(zeta_init),
            float(decay),
        )

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("transform", Role.OBJECTIVE, doc="transform Ψ (n1, n1); classical: given Ψ"),
            ParamSpec("eta_L", Role.HYPER, Constraint.POSITIVE, "scaled-gradient step for L"),
            ParamSpec("eta_R", Role.HYPER, Constraint.POSITIVE, "scaled-gradient step for R"),
            ParamSpec("zeta", Role.HYPER, Constraint.NONNEGATIVE, "relative threshold ζ_k"),
            ParamSpec("zeta_init", Role.FIXED, Constraint.NONNEGATIVE, "initial threshold ζ_0"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, RPCAProblem, type(self).__name__)
        f64 = torch.float64
        return {
            "transform": prob.psi_given.clone(),
            "eta_L": torch.tensor(self.step_size, dtype=f64),
            "eta_R": torch.tensor(self.step_size, dtype=f64),
            "zeta": torch.tensor(self.zeta, dtype=f64),
            "zeta_init": torch.tensor(self.zeta_init, dtype=f64),
        }

    def threshold(self, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        r""":math:`\tau_k = \operatorname{rms}(X)\max(\zeta_k q^{k-1}, \texttt{lam})`, shape ``(B, 1, 1)``."""
        rel = torch.maximum(p["zeta"] * self.decay ** (k - 1), p["lam"])
        return _rms(x) * rel

    @torch.no_grad()
    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> RPCAState:
        psi = p["transform"].detach()
        y = soft_threshold(_solve(psi, x), _rms(x) * p["zeta_init"].detach())
        L, R = _svd_init(x - _apply(psi, y), _rank(p))
        return RPCAState(L=L, R=R, Y=y)

    def step(self, s: RPCAState, x: Tensor, p: Mapping[str, Tensor], k: int) -> RPCAState:
        psi = p["transform"]
        y = soft_threshold(_solve(psi, x - s.L @ s.R.mT), self.threshold(x, p, k))
        sparse = _apply(psi, y) - x
        L = s.L - p["eta_L"] * _scaled((s.L @ s.R.mT + sparse) @ s.R, s.R)
        R = s.R - p["eta_R"] * _scaled((L @ s.R.mT + sparse).mT @ L, L)
        return RPCAState(L=L, R=R, Y=y)

    def objective(self, s: RPCAState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return rpca_objective(s, x, c["Psi"], c["lam"])

    def estimate(self, s: RPCAState) -> Tensor:
        return s.L @ s.R.mT

    def features(self, s: RPCAState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        r"""``(B, F)``: flattened :math:`[L, R, Y, X, \Psi Y]` (unpacked by :func:`_unpack`)."""
        b = x.shape[0]
        parts = (s.L, s.R, s.Y, x, _apply(p["transform"], s.Y))
        return torch.cat([t.reshape(b, -1) for t in parts], dim=1)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, RPCAProblem, type(self).__name__)
        return RPCACorrectionNet(prob.n1, prob.n2, prob.rank, channels=hidden)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        require_problem(problem, RPCAProblem, type(self).__name__)
        return RPCABlackBoxNet(target_params)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, RPCAProblem, type(self).__name__)
        return RPCAConvIteration(
            prob.n1,
            prob.n2,
            prob.rank,
            channels=hidden,
            step=self.step_size,
            zeta=self.zeta,
            lam=prob.lam,
        )


def _unpack(features: Tensor, n1: int, n2: int, r: int) -> tuple[Tensor, ...]:
    """Inverse of :meth:`RPCA.features`: ``(L, R, Y, X, ΨY)``."""
    b = features.shape[0]
    sizes = [n1 * r, n2 * r, n1 * n2, n1 * n2, n1 * n2]
    if features.shape[1] != sum(sizes):
        raise ValueError(
            f"RPCA features have width {features.shape[1]}, expected {sum(sizes)} for "
            f"n1={n1}, n2={n2}, r={r}."
        )
    L, R, Y, X, PY = torch.split(features, sizes, dim=1)
    return (
        L.reshape(b, n1, r),
        R.reshape(b, n2, r),
        Y.reshape(b, n1, n2),
        X.reshape(b, n1, n2),
        PY.reshape(b, n1, n2),
    )


class _TwoLayerConv(nn.Sequential):
    """``Conv3×3(c_in → c) → ReLU → Conv3×3(c → c_out)``; with ``zero_last`` the output is 0 at init."""

    def __init__(self, c_in: int, channels: int, c_out: int, *, zero_last: bool) -> None:
        last = nn.Conv2d(channels, c_out, 3, padding=1)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        super().__init__(nn.Conv2d(c_in, channels, 3, padding=1), nn.ReLU(), last)


def _normalised(maps: Sequence[Tensor], scale: Tensor) -> Tensor:
    """Stack ``(B, n1, n2)`` maps as channels, divided by the per-sample ``scale`` (scale-equivariance)."""
    return torch.stack([m / scale for m in maps], dim=1)


class RPCABlackBoxNet(ConvDenoiserNet):
    r"""The black-box baseline for RPCA: the core's residual convolutional denoiser
    :math:`X \mapsto \hat M = X - \rho\,\Phi(X/\rho)`
    (:class:`~lightning_unfold.core.networks.ConvDenoiserNet`), Φ estimating the outlier part. It knows nothing of Ψ, the rank or the
    iteration; it starts at :math:`\hat M = X` (relative error ‖ΨY★‖/‖L★R★ᵀ‖, about 0.15 at
    α = 0.1). An MLP on the flattened X with as few parameters would need a bottleneck narrower
    than the image and outputs (nearly) a fixed low-dimensional subspace, which cannot hold a
    random rank-r matrix.
    """


class RPCACorrectionNet(nn.Module):
    r"""Variant 3's learned correction Δ: a two-layer convolutional network of (L, R, Y, X).

    Input channels (each divided by :math:`\operatorname{rms}(X)`): :math:`X`, :math:`LR^\top`,
    :math:`\Psi Y`, and the residual :math:`X - LR^\top - \Psi Y`. The network outputs one map
    :math:`D \in \mathbb R^{n_1\times n_2}` (rescaled by :math:`\operatorname{rms}(X)`), turned into
    factor corrections the way a residual is turned into a scaled gradient step:

    .. math:: \Delta L = D\,R(R^\top R)^{-1},\qquad \Delta R = D^\top L(L^\top L)^{-1},\qquad \Delta Y = 0.

    The last convolution is zero-initialised, so Δ = 0 and the model starts as the classical solver.
    Its forward takes :meth:`RPCA.features` and returns the flat ``(L, R, Y)`` increment.
    """

    def __init__(self, n1: int, n2: int, rank: int, *, channels: int = 8) -> None:
        super().__init__()
        self.n1, self.n2, self.rank = n1, n2, rank
        self.conv = _TwoLayerConv(4, channels, 1, zero_last=True)

    def forward(self, features: Tensor) -> Tensor:
        L, R, Y, X, PY = _unpack(features, self.n1, self.n2, self.rank)
        scale = _rms(X).clamp_min(1e-30)
        low = L @ R.mT
        D = self.conv(_normalised((X, low, PY, X - low - PY), scale)).squeeze(1) * scale
        dL, dR = _scaled(D @ R, R), _scaled(D.mT @ L, L)
        b = X.shape[0]
        return torch.cat([dL.reshape(b, -1), dR.reshape(b, -1), torch.zeros_like(Y).flatten(1)], 1)


class RPCAConvIteration(nn.Module):
    r"""Variant 4 (DNN inductive bias): one RPCA iteration with Ψ implemented by a two-layer conv net.

    The core's inductive-bias interface maps ``(features, flat iterate)`` to the next flat iterate,
    so this module performs the whole iteration itself, keeping the iterate's meaning
    (:math:`L, R` factors, :math:`Y` outliers) and with its own learned :math:`\eta_L, \eta_R, \zeta`:

    .. math::
        Z &= X - LR^\top,\qquad V = Z + \rho\,\Phi\big((X, LR^\top, Y, Z)/\rho\big),\\
        Y^+ &= \operatorname{soft}_{\tau}(V),\qquad \tau = \rho\max(\zeta, \texttt{lam}),\\
        L^+ &= L - \eta_L\,(LR^\top + Y^+ - X)R(R^\top R)^{-1},\\
        R^+ &= R - \eta_R\,(L^+R^\top + Y^+ - X)^\top L^+(L^{+\top}L^+)^{-1},

    with :math:`\rho = \operatorname{rms}(X)` and Φ a two-layer 3×3 convolutional network whose input
    channels are :math:`(X, LR^\top, Y, Z)/\rho`. The map :math:`Z \mapsto V` stands for
    :math:`\Psi^{-1}` and the back map is the identity — the network never sees the given Ψ. Φ's last
    layer is zero-initialised, so at initialisation this is the classical iteration for
    :math:`\Psi = I` (with a constant threshold ζ; :func:`init_layer_thresholds` sets the
    per-layer classical schedule :math:`\zeta q^{k-1}`).
    """

    def __init__(
        self,
        n1: int,
        n2: int,
        rank: int,
        *,
        channels: int = 8,
        step: float = 1.0,
        zeta: float = 1.0,
        lam: float = 1e-3,
    ) -> None:
        super().__init__()
        self.n1, self.n2, self.rank, self.lam = n1, n2, rank, float(lam)
        self.conv = _TwoLayerConv(4, channels, 1, zero_last=True)
        self.eta_L = nn.Parameter(torch.tensor(float(step)))
        self.eta_R = nn.Parameter(torch.tensor(float(step)))
        self.zeta = nn.Parameter(torch.tensor(float(zeta)))

    @torch.no_grad()
    def warm_start_(self, params: Mapping[str, Tensor], k: int, algorithm: RPCA) -> None:
        r"""Take layer ``k``'s classical hyperparameters :math:`\eta_L, \eta_R, \zeta` of an
        RPCA model (for :func:`~lightning_unfold.training.warm_start`); this layer's ζ is the
        absolute relative threshold :math:`\zeta_k q^{k-1}` of the algorithm's schedule."""
        self.eta_L.copy_(params["eta_L"])
        self.eta_R.copy_(params["eta_R"])
        self.zeta.copy_(params["zeta"] * algorithm.decay ** (k - 1))

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        L, R, Y, X, _ = _unpack(features, self.n1, self.n2, self.rank)
        scale = _rms(X).clamp_min(1e-30)
        low = L @ R.mT
        Z = X - low
        V = Z + self.conv(_normalised((X, low, Y, Z), scale)).squeeze(1) * scale
        tau = _rms(X) * self.zeta.clamp_min(self.lam)
        y = soft_threshold(V, tau)
        eta_L, eta_R = self.eta_L.clamp_min(0.0), self.eta_R.clamp_min(0.0)
        L = L - eta_L * _scaled((low + y - X) @ R, R)
        R = R - eta_R * _scaled((L @ R.mT + y - X).mT @ L, L)
        b = X.shape[0]
        return torch.cat([L.reshape(b, -1), R.reshape(b, -1), y.reshape(b, -1)], dim=1)


def init_layer_thresholds(model: nn.Module, algorithm: RPCA) -> None:
    r"""Set each inductive-bias layer's ζ to the classical schedule :math:`\zeta q^{k-1}`.

    The core builds the K layer networks without telling them their index, so they all start at ζ;
    call this once after building an ``inductive_bias`` :class:`~lightning_unfold.core.UnfoldedModel`
    (untied). Raises for models without :class:`RPCAConvIteration` layers.
    """
    nets = getattr(model, "nets", None)
    if nets is None or not all(isinstance(n, RPCAConvIteration) for n in nets):
        raise TypeError("init_layer_thresholds needs an RPCA inductive_bias UnfoldedModel.")
    with torch.no_grad():
        for k, net in enumerate(nets, start=1):
            net.zeta.fill_(algorithm.zeta * algorithm.decay ** (k - 1))
