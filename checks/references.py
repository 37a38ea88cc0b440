r"""Which solution a trajectory is measured against, and how it is computed.

Chen, Liu, Wang, Yin (2018), Thm. 2, bound :math:`\|s^{(k)} - s^\star\|_2 \le sB\,e^{-ck} + C\sigma`
with :math:`s^\star` the *true sparse code* that generated :math:`x = Hs^\star + w`: LISTA-CP /
ALISTA thresholds :math:`\theta_k \to 0`, so their fixed point is the true code (exactly so in
the noiseless case), not the LASSO solution of a fixed :math:`\rho`. Hence:

``"truth"``
    the targets of the data: right for models trained *supervised* on true codes;
``"lasso"``
    the LASSO solution :math:`\arg\min_s \tfrac12\|x-Hs\|^2 + \rho\|s\|_1`, by float64 FISTA run to
    a KKT certificate (:func:`~lightning_unfold.theory.lasso_fista_reference`, residual
    :math:`\le 10^{-8}` relative to :math:`\rho`): right for the classical solver and for models
    trained with the objective as loss (unsupervised), whose fixed point is the LASSO solution;
``"auto"``
    ``"lasso"`` for the classical solver, unsupervised models and data without targets, else
    ``"truth"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from lightning_unfold.theory import lasso_fista_reference

from .context import CheckContext
from .result import NotApplicableError

__all__ = ["REFERENCES", "Reference", "resolve_reference"]

REFERENCES: tuple[str, ...] = ("auto", "truth", "lasso")

#: KKT residual (relative to rho) to which the FISTA reference is certified
FISTA_TOL = 1e-8


@dataclass(frozen=True)
class Reference:
    """The reference solutions of a subset of the context's samples.

    Attributes:
        kind: ``"truth"`` or ``"lasso"``.
        index: indices of the samples used (into the context's batch).
        solution: float64 ``(len(index), D)``.
        sigma: per-sample noise level (the ``σ`` of :math:`C\\sigma`), or None if unknown/0.
        label: a phrase for messages ("the true code", "the LASSO solution s*").
    """

    kind: str
    index: np.ndarray
    solution: np.ndarray
    sigma: np.ndarray | None
    label: str

    def errors(self, ctx: CheckContext) -> np.ndarray:
        r"""Per-sample, per-layer :math:`\|\hat s^{(k)} - s^\star\|_2`, shape ``(N, K+1)``."""
        est = ctx.estimates64()[:, self.index]  # (K+1, N, D)
        if est.shape[2] != self.solution.shape[1]:
            raise ValueError(
                f"The model's estimates have {est.shape[2]} entries but the reference has "
                f"{self.solution.shape[1]}; the model does not estimate the problem's code."
            )
        return np.linalg.norm(est - self.solution[None], axis=2).T


def resolve_reference(ctx: CheckContext, reference: str, n_reference: int) -> Reference:
    """Choose and compute the reference (see the module docstring for the choice).

    ``n_reference`` caps the number of samples used for the LASSO reference (its solve costs
    far more than the model's forward pass).

    Raises:
        ValueError: for an unknown ``reference``.
        NotApplicableError: for ``"truth"`` without targets or ``"lasso"`` without (H, rho).
        ReferenceSolverError: if FISTA does not reach its certificate.
    """
    if reference not in REFERENCES:
        raise ValueError(f"Unknown reference {reference!r}; valid: {list(REFERENCES)}.")
    labelled = ctx.labelled()
    kind = reference
    if kind == "auto":
        wants_solution = ctx.trained_on_objective() or not labelled.any()
        kind = "lasso" if wants_solution and (ctx.is_lasso() or not labelled.any()) else "truth"
    if kind == "truth":
        if not labelled.any():
            raise NotApplicableError(
                "reference='truth' needs data with true codes (targets); pass (x, target) "
                "or use reference='lasso'."
            )
        idx = np.flatnonzero(labelled)
        sol = ctx.target64()[idx]
        sigma = None
        noise = getattr(ctx.problem, "noise_sigma", None)
        if callable(noise):
            sig = noise(torch.from_numpy(sol)).detach().to("cpu", torch.float64).numpy()
            sigma = sig if np.any(sig > 0) else None
        return Reference("truth", idx, sol, sigma, "the ground truth")
    H, rho = ctx.lasso_constants()
    if not ctx.is_lasso():
        alg = ctx.algorithm()
        raise NotApplicableError(
            f"{type(alg).__name__} solves {ctx.theory().problem}, not the LASSO, and the data "
            "have no ground truth to measure the error against."
        )
    n = min(n_reference, ctx.x.shape[0])
    if n < 1:
        raise ValueError(f"n_reference must be >= 1; got {n_reference}.")
    x = ctx.x64()[:n]
    sol = ctx.cached(("fista", n), lambda: lasso_fista_reference(H, x, rho, tol=FISTA_TOL))
    return Reference("lasso", np.arange(n), np.asarray(sol), None, "the LASSO solution s*")
