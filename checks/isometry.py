r"""Does learning lower the restricted isometry constant of the effective operator? (Xin et al. 2016)

An IHT/ISTA-type layer :math:`s \mapsto \eta(s + W_k(x - Hs))` has the effective operator
:math:`A_k = W_kH`; in the noiseless case its error before thresholding is
:math:`(I - A_k)(s - s^\star)`. Xin, Wang, Gao & Wipf (2016) show that learned weights can lower the
restricted isometry constant :math:`\delta_s(A_k) = \max_{|\Gamma|=s}\|I - (A_k)_{\Gamma\Gamma}\|_2`
below that of the classical :math:`\mu H^\top H`, which is what makes learned IHT recover codes
IHT cannot. :func:`restricted_isometry` measures it, per layer, on the *same* supports for the
model and for the reference.

**What it certifies** (:mod:`lightning_unfold.theory.isometry`). Unless :math:`\binom ns` is small
enough to enumerate (then the figures are exact), each :math:`\hat\delta_s` is the maximum over
sampled supports: a *lower bound* on :math:`\delta_s`.

* Against a numeric ``threshold``: a FAIL is certified — the returned counterexample support has
  :math:`\|I - (A_k)_{\Gamma\Gamma}\|_2 \ge` threshold, so :math:`\delta_s(A_k) \ge` threshold. A
  PASS only says that no such support was found among those sampled (certified only when exact).
* Against the classical reference (default): a paired comparison of two lower bounds on the same
  supports. It is evidence about the true constants, not a proof of their order (exact when the
  supports are enumerated).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from lightning_unfold.theory import restricted_isometry_estimate

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.unfolded import UnfoldedModel

from .context import prepare
from .result import CheckResult, NotApplicableError
from .weights import _np, lista_weights

__all__ = ["effective_operators", "restricted_isometry"]


def effective_operators(model: Any, H: np.ndarray) -> tuple[np.ndarray, str]:
    r"""Per-layer effective operators :math:`A_k = W_1^kH` ``(K, n, n)`` of an IHT/ISTA-type model.

    IHT: :math:`W_1 = \mu_k D_k^\top`; LIHT / LIHT-CP: their ``W1``; the ISTA family through
    :func:`~lightning_unfold.checks.lista_weights`. For uncoupled weights (LIHT, LISTA) the layer
    is :math:`W_1x + W_2s`, and :math:`A_k` is its operator only where :math:`W_2 = I - W_1H`
    (the coupling check measures that).

    Raises:
        NotApplicableError: if the model has no such weights.
    """
    from lightning_unfold.algorithms.iht import IHT, LIHT

    if isinstance(model, UnfoldedModel) and isinstance(model.algorithm, IHT):
        if model.nets is not None:
            raise NotApplicableError(
                f"the {model.paradigm} paradigm adds a learned network to each layer, so the "
                "layer has no effective linear operator W·H."
            )
        layers = [
            {k: _np(v) for k, v in model.layer_params(k).items()} for k in range(1, model.depth + 1)
        ]
        if isinstance(model.algorithm, LIHT):
            W1 = np.stack([p["W1"] for p in layers])
            how = f"{type(model.algorithm).__name__}'s W1·H"
        else:
            W1 = np.stack([p["step"] * p["dictionary"].T for p in layers])
            how = "IHT's μ_k D_kᵀ H"
        return W1 @ H, how
    W1, _, how = lista_weights(model, H)
    return W1 @ H, how


def restricted_isometry(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    support_size: int | None = None,
    threshold: float | None = None,
    n_supports: int = 500,
    exhaustive_limit: int = 20_000,
    seed: int = 0,
) -> CheckResult:
    r"""Restricted isometry constant :math:`\hat\delta_s` of every layer's :math:`A_k = W_1^kH`.

    Passes iff the worst layer's :math:`\max_k\hat\delta_s(A_k)` is strictly below ``threshold``,
    by default the classical operator's :math:`\hat\delta_s(H^\top H/\|H\|_2^2)` (IHT's and ISTA's
    default step) on the same supports. See the module docstring for what that certifies.

    Args:
        support_size: :math:`s` (default: the problem's expected support size
            :math:`\lceil p\,n\rceil`).
        threshold: a numeric bound instead of the classical reference (e.g. 1: contraction on every
            :math:`s`-sparse error; :math:`1/\sqrt{32}` with :math:`s \to 3s`: Blumensath & Davies).
        n_supports: random supports sampled when enumeration is too large.
        exhaustive_limit: enumerate all :math:`\binom ns` supports up to this many.
    """
    name = "restricted_isometry"
    ctx = prepare(model, problem, data)
    H, _ = ctx.lasso_constants()
    A, how = effective_operators(ctx.inner, H)
    n = H.shape[1]
    if support_size is None:
        p = float(getattr(ctx.problem, "sparsity", 0.1))
        support_size = max(1, min(n, math.ceil(p * n)))
    s = int(support_size)
    first = restricted_isometry_estimate(
        A[0], s, n_supports=n_supports, seed=seed, exhaustive_limit=exhaustive_limit
    )
    supports, exact = first.supports, first.exact
    per_layer = [first] + [
        restricted_isometry_estimate(A[k], s, supports=supports) for k in range(1, A.shape[0])
    ]
    deltas = np.array([e.value for e in per_layer])
    worst_layer = int(np.argmax(deltas))
    value = float(deltas[worst_layer])
    reference = None
    if threshold is None:
        A_ref = H.T @ H / float(np.linalg.norm(H, 2) ** 2)
        reference = restricted_isometry_estimate(A_ref, s, supports=supports)
        thr, against = reference.value, "the classical operator HᵀH/‖H‖² on the same supports"
    else:
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold}.")
        thr, against = float(threshold), f"the bound {threshold:g}"
    passed = value < thr
    kind = (
        f"exact over all C({n}, {s}) = {len(supports)} supports"
        if exact
        else f"a lower bound from {len(supports)} random supports of size {s}"
    )
    message = (
        f"δ̂_{s} of {how}: worst layer {worst_layer + 1} has {value:.4g} ({kind}); "
        f"{'below' if passed else 'not below'} {against} ({thr:.4g})."
    )
    if not exact:
        message += (
            " Sampled figures are lower bounds on δ_s: a failure against a numeric threshold is "
            "certified by the counterexample support, a pass is not a proof."
        )
    counterexample = None
    if not passed:
        worst = per_layer[worst_layer]
        counterexample = {
            "layer": worst_layer + 1,
            "support": list(worst.worst_support),
            "norm_I_minus_A_on_support": worst.value,
        }
    details: dict[str, Any] = {
        "support_size": s,
        "exact": exact,
        "n_supports": len(supports),
        "per_layer": deltas.tolist(),
        "upper_bound_per_layer": [e.upper_bound for e in per_layer],
        "reference": None if reference is None else reference.value,
        "operator": how,
    }
    return CheckResult(name, passed, value, thr, message, details, counterexample)
