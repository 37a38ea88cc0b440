r"""Checks on the learned weights: LISTA's weight coupling and ALISTA's coherence.

**Coupling** (Chen, Liu, Wang, Yin, 2018, Thm. 1): if LISTA
:math:`s^{(k)} = \eta_{\theta_k}(W_1^{(k)}x + W_2^{(k)}s^{(k-1)})` recovers every sufficiently
sparse code, then :math:`W_2^{(k)} - (I - W_1^{(k)}H) \to 0` as :math:`k \to \infty`. LISTA-CP,
ALISTA and ISTA satisfy it by construction.

**ALISTA coherence** (Liu, Chen, Wang, Yin, 2019, Def. 1 and Thm. 1): the analytic weight
:math:`W` with :math:`\operatorname{diag}(W^\top H) = 1` should have a small generalised mutual
coherence :math:`\tilde\mu(W, H) = \max_{i\ne j}|w_i^\top h_j|`; linear convergence is
guaranteed for codes with :math:`\|s\|_0 < (1 + 1/\tilde\mu)/2`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from lightning_unfold.theory import coherence, coupling_residual, mutual_coherence
from torch import Tensor

from lightning_unfold.algorithms.sparse import ALISTA, ISTA, LISTA, LISTACP
from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.unfolded import UnfoldedModel

from .context import prepare
from .result import CheckResult, NotApplicableError

__all__ = ["alista_coherence", "analytic_weight", "coupling", "lista_weights"]


def _np(t: Any) -> np.ndarray:
    if isinstance(t, Tensor):
        if t.is_complex():
            raise NotApplicableError(
                "this check is real-only (LISTA weight coupling of a real dictionary); the "
                "model's weights are complex."
            )
        return t.detach().to("cpu", torch.float64).numpy()
    if isinstance(t, (list, tuple)) and t and isinstance(t[0], Tensor):
        return np.stack([_np(v) for v in t])
    return np.asarray(t, dtype=np.float64)


def lista_weights(model: Any, H: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    r"""Per-layer effective LISTA weights :math:`(W_1^{(k)}, W_2^{(k)})` of a model.

    Reads, in order: an :class:`~lightning_unfold.core.UnfoldedModel` of the ISTA family (ALISTA:
    :math:`W_1 = \gamma_k W^\top`, :math:`W_2 = I - \gamma_k W^\top H`; LISTA-CP:
    :math:`W_2 = I - W_1H`; LISTA: its own; ISTA: :math:`W_1 = \mu D^\top`,
    :math:`W_2 = I - \mu D^\top D`); an object with ``stacked("W1")`` / ``stacked("W2")``; an
    object with attributes ``W1`` and ``W2`` (tensors ``(K, ·, ·)`` or lists of matrices).

    Returns:
        ``(W1 (K, n, m), W2 (K, n, n), how)`` with ``how`` a phrase for messages.

    Raises:
        NotApplicableError: if no LISTA-type weights can be read.
    """
    n = H.shape[1]
    eye = np.eye(n)
    if isinstance(model, UnfoldedModel):
        if model.nets is not None:
            raise NotApplicableError(
                f"the {model.paradigm} paradigm adds a learned network to each layer, so the layer "
                "is not of the LISTA form W1 x + W2 s."
            )
        alg = model.algorithm
        layers = [
            {k: _np(v) for k, v in model.layer_params(k).items()} for k in range(1, model.depth + 1)
        ]
        if isinstance(alg, ALISTA):
            W1 = np.stack([p["gamma"] * p["W"].T for p in layers])
            return W1, eye[None] - W1 @ H, "ALISTA (coupled by construction)"
        if isinstance(alg, LISTACP):
            W1 = np.stack([p["W1"] for p in layers])
            return W1, eye[None] - W1 @ H, "LISTA-CP (coupled by construction)"
        if isinstance(alg, LISTA):
            return (
                np.stack([p["W1"] for p in layers]),
                np.stack([p["W2"] for p in layers]),
                "LISTA's learned W1, W2",
            )
        if isinstance(alg, ISTA):
            W1 = np.stack([p["step"] * p["dictionary"].T for p in layers])
            W2 = np.stack([eye - p["step"] * p["dictionary"].T @ p["dictionary"] for p in layers])
            return W1, W2, "ISTA's W1 = μD^T, W2 = I − μD^T D"
        raise NotApplicableError(
            f"{type(alg).__name__} is not an ISTA-type iteration, so it has no LISTA weights."
        )
    stacked = getattr(model, "stacked", None)
    if callable(stacked):
        try:
            return _np(stacked("W1")), _np(stacked("W2")), "the model's stacked W1, W2"
        except (KeyError, AttributeError, ValueError) as exc:
            raise NotApplicableError(f"model.stacked('W1'/'W2') failed: {exc}") from exc
    if hasattr(model, "W1") and hasattr(model, "W2"):
        W1, W2 = _np(list(model.W1)), _np(list(model.W2))
        return W1, W2, "the model's W1, W2"
    raise NotApplicableError(
        f"{type(model).__name__} exposes no LISTA weights: pass weights=(W1, W2), or give the "
        "model a stacked(name) method or W1/W2 attributes."
    )


def _H(ctx_problem: ProblemSpec | None, what: str) -> np.ndarray:
    if ctx_problem is None or "H" not in ctx_problem.constants():
        raise NotApplicableError(f"{what} needs a problem with a dictionary H; pass problem=...")
    return _np(ctx_problem.constants()["H"])


def coupling(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    weights: tuple[Any, Any] | None = None,
    tol: float = 1e-5,
    decay: float = 0.5,
) -> CheckResult:
    r"""Per-layer coupling residual :math:`c_k` of LISTA-type weights (Chen et al., 2018, Thm. 1).

    .. math::

        c_k = \frac{\|W_2^{(k)} - (I - W_1^{(k)}H)\|_F}{\|W_2^{(k)}\|_F}
        \quad(\text{:func:}`~lightning_unfold.theory.coupling_residual`).

    Passes iff the weights are coupled at every layer (:math:`\max_k c_k \le` ``tol``, e.g.
    LISTA-CP/ALISTA, ``tol`` covering float32 round-off), or the residual decays towards 0: the
    last layer's :math:`c_K \le` ``decay`` :math:`\cdot \max_k c_k` and the log-linear trend of
    :math:`c_k` over the layers is decreasing. ``value`` is :math:`c_K`.

    Args:
        weights: explicit ``(W1 (K, n, m), W2 (K, n, n))``; otherwise read by
            :func:`lista_weights`.
        tol: residual counted as exact coupling.
        decay: required shrinkage of the residual from its largest layer to the last.
    """
    name = "coupling"
    ctx = prepare(model, problem, data) if weights is None else None
    prob = ctx.problem if ctx is not None else problem
    H = _H(prob, "The coupling check")
    if weights is not None:
        W1, W2, how = _np(weights[0]), _np(weights[1]), "the given W1, W2"
    else:
        assert ctx is not None
        W1, W2, how = lista_weights(ctx.inner, H)
    c = coupling_residual(W1, W2, H)
    K = c.shape[0]
    c_max = float(c.max())
    threshold = max(tol, decay * c_max)
    slope = 0.0
    if K >= 2 and c_max > tol:
        slope = float(np.polyfit(np.arange(K), np.log(np.maximum(c, 1e-300)), 1)[0])
    if c_max <= tol:
        passed = True
        message = (
            f"The weights of {how} satisfy W2 = I − W1·H at every layer (largest residual "
            f"{c_max:.2g} ≤ {tol:g}), as LISTA-CP requires (Chen et al., 2018)."
        )
    else:
        passed = bool(c[-1] <= threshold and slope < 0)
        trend = "decays" if passed else "does not decay"
        message = (
            f"The coupling residual of {how} {trend} over depth: {c[0]:.3g} at layer 1, peak "
            f"{c_max:.3g}, {c[-1]:.3g} at layer {K} (needed ≤ {threshold:.3g} and a decreasing "
            "trend); Chen et al. (2018, Thm. 1) show that LISTA which recovers all sparse codes "
            "has W2 − (I − W1·H) → 0."
        )
    counterexample = None
    if not passed:
        k = int(np.argmax(c))
        counterexample = {"layer": k + 1, "residual": float(c[k])}
    details = {
        "residual": c.tolist(),
        "tol": tol,
        "decay": decay,
        "log_slope": slope,
        "weights": how,
    }
    return CheckResult(name, passed, float(c[-1]), threshold, message, details, counterexample)


def analytic_weight(model: Any) -> np.ndarray:
    """The analytic weight ``W`` (m, n) of an ALISTA model (or of any object with a ``W``)."""
    if isinstance(model, UnfoldedModel):
        if not isinstance(model.algorithm, ALISTA):
            raise NotApplicableError(
                f"{type(model.algorithm).__name__} does not use ALISTA's analytic weight."
            )
        return _np(model.layer_params(1)["W"])
    W = getattr(model, "W", None)
    if isinstance(W, (Tensor, np.ndarray)) and np.ndim(W) == 2:
        return _np(W)
    raise NotApplicableError(
        f"{type(model).__name__} exposes no analytic weight W; pass weight=W (m, n)."
    )


def alista_coherence(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    weight: Any = None,
    diag_tol: float = 1e-4,
) -> CheckResult:
    r"""Generalised mutual coherence of ALISTA's weight (Liu et al., 2019, Def. 1).

    .. math::

        \tilde\mu(W, H) = \max_{i \ne j} |w_i^\top h_j| \quad\text{with}\quad
        w_i^\top h_i = 1 .

    Passes iff :math:`\max_i|w_i^\top h_i - 1| \le` ``diag_tol`` (the constraint the analytic
    weight is defined by) and :math:`\tilde\mu(W, H) \le \mu(H)`, the coherence of the dictionary
    itself (:math:`W = H` with unit columns is always feasible, so a weight that does worse is not
    the coherence minimiser). ``details`` report Liu et al.'s sufficient sparsity
    :math:`(1 + 1/\tilde\mu)/2` next to the problem's expected support size.

    The counterexample is the pair :math:`(i, j)` attaining :math:`\tilde\mu`.
    """
    name = "alista_coherence"
    ctx = prepare(model, problem, data) if weight is None else None
    prob = ctx.problem if ctx is not None else problem
    H = _H(prob, "The ALISTA coherence check")
    W = _np(weight) if weight is not None else analytic_weight(ctx.inner)  # type: ignore[union-attr]
    if W.shape != H.shape:
        raise ValueError(f"W has shape {W.shape} but H has {H.shape}; they must match (m, n).")
    mu_H = coherence(H)
    diag = np.einsum("ij,ij->j", W, H)
    diag_err = float(np.max(np.abs(diag - 1.0)))
    details: dict[str, Any] = {"coherence_H": mu_H, "diag_error": diag_err, "diag_tol": diag_tol}
    if diag_err > diag_tol:
        i = int(np.argmax(np.abs(diag - 1.0)))
        return CheckResult(
            name,
            False,
            diag_err,
            diag_tol,
            f"W violates ALISTA's constraint diag(WᵀH) = 1 (w_{i}ᵀh_{i} = {diag[i]:.4g}, off by "
            f"{diag_err:.3g} > {diag_tol:g}); it is not the analytic weight of this dictionary.",
            details,
            {"atom": i, "w_i_h_i": float(diag[i])},
        )
    mu_W = mutual_coherence(W, H, rescale=True)
    M = (W.T @ H) / diag[:, None]
    np.fill_diagonal(M, 0.0)
    i, j = np.unravel_index(int(np.argmax(np.abs(M))), M.shape)
    s_bound = (1.0 + 1.0 / mu_W) / 2.0 if mu_W > 0 else float("inf")
    expected = None
    sparsity = getattr(prob, "sparsity", None)
    if isinstance(sparsity, float):
        expected = sparsity * H.shape[1]
    details.update(
        {"coherence_W": mu_W, "sparsity_bound": s_bound, "expected_support_size": expected}
    )
    passed = mu_W <= mu_H * (1 + 1e-9)
    cond = ""
    if expected is not None:
        holds = "meets" if expected < s_bound else "exceeds"
        cond = (
            f" The expected support size {expected:.3g} {holds} Liu et al.'s worst-case sufficient "
            f"bound (1 + 1/μ̃)/2 = {s_bound:.3g}."
        )
    message = (
        f"The generalised coherence μ̃(W, H) = {mu_W:.3g} is "
        f"{'at most' if passed else 'above'} the dictionary's own coherence μ(H) = {mu_H:.3g}"
        f"{'' if passed else ': W is not a coherence-minimising weight'}.{cond}"
    )
    counterexample = None if passed else {"atoms": [int(i), int(j)], "value": float(M[i, j])}
    return CheckResult(name, passed, mu_W, mu_H, message, details, counterexample)
