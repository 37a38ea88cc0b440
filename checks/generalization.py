r"""Generalization across depth (opt-in: it trains models).

Schnoor, Behboodi, Rauhut (2023), "Generalization Error Bounds for Iterative Recovery Algorithms
Unfolded as Neural Networks", Information and Inference 12(3): a K-layer unfolded network with P
trainable parameters trained on :math:`|D|` samples has a generalization gap of order

.. math::

    \mathcal L_{test} - \mathcal L_{train} \lesssim b(P, K, |D|) = \sqrt{\frac{P\log K}{|D|}} .

:func:`generalization_across_depth` trains the model family at several depths on the same :math:`|D|`
samples, measures the gap, and :func:`assess_generalization` compares the gap's growth with the
bound's shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from lightning_unfold.theory import count_parameters, generalization_bound_shape
from torch import Tensor, nn

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.iterate import cast_precision, real_dtype
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import ClassicalSolver, UnfoldedModel

from .context import CheckContext, unwrap_model
from .result import CheckResult, NotApplicableError

__all__ = ["assess_generalization", "family_of", "generalization_across_depth"]


def family_of(model: Any) -> Callable[[int], nn.Module]:
    """A factory ``depth -> fresh untrained model`` of the same kind as ``model``.

    Supports :class:`~lightning_unfold.training.UnfoldedModule` (rebuilt from its hparams) and
    :class:`~lightning_unfold.core.UnfoldedModel`.

    Raises:
        NotApplicableError: for the classical solver (nothing to train) or unknown models.
    """
    if isinstance(model, CheckContext):
        model = model.model
    hp = getattr(model, "hparams", None)
    inner = unwrap_model(model)
    if isinstance(inner, ClassicalSolver):
        raise NotApplicableError("the classical solver has nothing to train.")
    if hp is not None and inner is not model:
        from lightning_unfold.training.module import build_model

        keys = (
            "algorithm",
            "algorithm_options",
            "paradigm",
            "variant",
            "tied",
            "hidden",
            "shared_correction",
        )
        kwargs = {k: hp[k] for k in keys if k in hp}
        if kwargs.get("paradigm") in ("classical", "black_box"):
            raise NotApplicableError(f"the {kwargs['paradigm']} baseline is not an unfolded model.")
        problem = model.problem
        return lambda depth: build_model(problem, depth=depth, **kwargs)
    if isinstance(inner, UnfoldedModel):
        dtype = next(iter(inner.constants.buffers())).dtype
        return lambda depth: UnfoldedModel(
            inner.algorithm, inner.problem, depth, inner.paradigm, tied=inner.tied, dtype=dtype
        )
    raise NotApplicableError(
        f"cannot build models of other depths from a {type(inner).__name__}; pass "
        "factory=lambda depth: ... (a fresh trainable model)."
    )


def _final(out: Any) -> Tensor:
    if isinstance(out, Trajectory):
        return out.final_estimate
    if isinstance(out, (list, tuple)):
        return out[-1]
    raise TypeError(f"The model returned {type(out).__name__}, not a trajectory or a list.")


def _unlabelled(s: Tensor) -> bool:
    """No ground truth at all (power allocation, precoding): every target is NaN."""
    return (s.is_floating_point() or s.is_complex()) and bool(torch.isnan(s).all())


def _per_sample_loss(
    model: nn.Module, x: Tensor, s: Tensor, scale: Tensor, problem: ProblemSpec | None = None
) -> Tensor:
    if _unlabelled(s):  # the model's own objective, scaled by its magnitude at initialisation
        out = model(x)
        if not (isinstance(out, Trajectory) and hasattr(model, "objective")):
            raise NotApplicableError(
                "the data have no targets and the model has no objective to train on."
            )
        return model.objective(out.final, x) / scale  # type: ignore[operator]
    est = _final(model(x))
    own = None if problem is None else problem.per_sample_loss(est, s)
    if own is not None:  # the problem's own loss (e.g. cross-entropy for discrete targets)
        return own
    return (est - s).flatten(1).abs().pow(2).sum(1) / scale


def _scale(model: nn.Module, x: Tensor, s: Tensor) -> Tensor:
    """The loss scale: mean ‖s‖² (NMSE), |mean objective| at initialisation without targets, or
    1 for discrete targets (the problem's own loss, e.g. cross-entropy, is used as it is)."""
    one = torch.ones((), dtype=real_dtype(x.dtype))
    if _unlabelled(s):
        with torch.no_grad():
            init = _per_sample_loss(model, x, s, one)
        return init.mean().abs().clamp_min(1e-30)
    if not (s.is_floating_point() or s.is_complex()):
        return one
    return s.flatten(1).abs().pow(2).sum(1).mean().clamp_min(1e-30)


def assess_generalization(
    depths: Sequence[int],
    train_loss: Sequence[float],
    test_loss: Sequence[float],
    test_se: Sequence[float],
    params: Sequence[int],
    n_train: int,
    *,
    slack: float = 2.0,
    draw_se: Sequence[float] | None = None,
    n_draws: int = 1,
) -> CheckResult:
    r"""Compare measured gaps with the bound's shape (Schnoor et al., 2023).

    With :math:`g_K = \mathcal L_{test} - \mathcal L_{train}` and :math:`b_K = b(P_K, K, |D|)`,
    the bound's constant is calibrated at the shallowest depth :math:`K_0`,
    :math:`a = \max(g_{K_0}, 2\,\mathrm{se}_{K_0}) / b_{K_0}`, and every depth must satisfy

    .. math::

        g_K \le \text{slack}\cdot a\, b_K + 2\,\mathrm{se}_K ,

    i.e. the gap grows no faster than the bound's shape (``se`` is the standard error of the test
    loss, so sampling noise alone does not fail the check). ``value`` is
    :math:`\max_K g_K / (\text{slack}\cdot a b_K + 2\mathrm{se}_K)`, threshold 1.

    When the losses are means over :math:`R` = ``n_draws`` independent training sets,
    ``draw_se`` gives the standard error of the mean gap across them,
    :math:`\mathrm{se}^{D}_K = \mathrm{sd}_r(g_{K,r})/\sqrt R`, and the standard error used
    above (in the calibration and in the allowance) becomes
    :math:`\mathrm{se}_K = \sqrt{(\mathrm{se}^{test}_K)^2 + (\mathrm{se}^{D}_K)^2}`, so the
    training draw's sampling noise (about :math:`\sigma/\sqrt{|D|}` per draw) does not decide the
    verdict either. Without ``draw_se`` (one draw) the test standard error is used as it is.
    """
    name = "generalization"
    K = np.asarray(depths, dtype=int)
    tr, te = np.asarray(train_loss, float), np.asarray(test_loss, float)
    se, P = np.asarray(test_se, float), np.asarray(params, int)
    if not (len(K) == len(tr) == len(te) == len(se) == len(P)) or len(K) < 2:
        raise ValueError("Pass one train/test loss, standard error and P per depth (>= 2 depths).")
    if n_draws < 1:
        raise ValueError(f"n_draws must be >= 1, got {n_draws}.")
    test_se_arr = se
    if draw_se is not None:
        dse = np.asarray(draw_se, float)
        if len(dse) != len(K):
            raise ValueError("Pass one draw standard error per depth (draw_se).")
        se = np.hypot(se, dse)
    else:
        dse = np.zeros_like(se)
    order = np.argsort(K)
    K, tr, te, se, P = K[order], tr[order], te[order], se[order], P[order]
    test_se_arr, dse = test_se_arr[order], dse[order]
    gap = te - tr
    b = np.array(
        [generalization_bound_shape(int(p), int(k), n_train) for p, k in zip(P, K, strict=True)]
    )
    a = max(gap[0], 2.0 * se[0], 1e-12) / b[0]
    allowed = slack * a * b + 2.0 * se
    ratio = gap / allowed
    worst = int(np.argmax(ratio))
    passed = bool(ratio[worst] <= 1.0)
    message = (
        f"The generalization gap at depths {K.tolist()} ({', '.join(f'{g:.3g}' for g in gap)}) "
        f"{'stays within' if passed else 'outgrows'} {slack:g}× the bound shape √(P·log K/|D|) "
        f"calibrated at K = {K[0]}"
        + (
            ""
            if passed
            else f" (K = {K[worst]}: gap {gap[worst]:.3g} > allowed {allowed[worst]:.3g})"
        )
        + f"; |D| = {n_train}"
        + (f", mean over {n_draws} training draws." if n_draws > 1 else ".")
    )
    details = {
        "depths": K.tolist(),
        "train_loss": tr.tolist(),
        "test_loss": te.tolist(),
        "test_se": test_se_arr.tolist(),
        "gap": gap.tolist(),
        "params": P.tolist(),
        "bound_shape": b.tolist(),
        "allowed": allowed.tolist(),
        "scale": a,
        "slack": slack,
        "n_train": n_train,
        **({} if draw_se is None else {"draw_se": dse.tolist(), "se": se.tolist()}),
        "n_draws": n_draws,
    }
    counterexample = None if passed else {"depth": int(K[worst]), "gap": float(gap[worst])}
    return CheckResult(name, passed, float(ratio[worst]), 1.0, message, details, counterexample)


def generalization_across_depth(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    depths: Sequence[int] = (2, 4, 8),
    n_train: int = 64,
    n_test: int = 512,
    steps: int = 200,
    lr: float = 1e-3,
    slack: float = 2.0,
    seed: int = 0,
    factory: Callable[[int], nn.Module] | None = None,
    n_draws: int = 1,
) -> CheckResult:
    r"""Train the model family at each depth on the same :math:`|D|` samples and assess the gap.

    For every :math:`K` in ``depths``: a fresh model (``factory(K)``, default
    :func:`family_of` ``(model)``) is trained full-batch with Adam (``steps``, ``lr``) on
    :math:`|D|` = ``n_train`` samples with the end-to-end NMSE loss
    :math:`\sum_j\|s_j^{(K)} - s_j\|^2 / \sum_j\|s_j\|^2` (or the problem's own
    :meth:`~lightning_unfold.core.algorithm.ProblemSpec.per_sample_loss`, e.g. cross-entropy) —
    or, for problems without targets (NaN, e.g. power allocation, hybrid precoding), the model's
    own objective :math:`\mathcal L(s^{(K)}; x)` divided by its magnitude at initialisation —
    then its train loss and its loss on
    ``n_test`` fresh samples are measured; :func:`assess_generalization` judges the gaps. The
    problem's primary metric (NMSE, sum-rate, BER, SDR, ...) at the final layer is measured on
    both sets too and reported across depth (``details["primary_metric"]`` and the message).
    ``data`` is unused (training needs fresh draws from ``problem``).

    With ``n_draws`` :math:`= R > 1` every depth is trained on :math:`R` independent training
    sets :math:`D_1, \dots, D_R` of size :math:`|D|` (seeded: draw 0 is the single-draw training
    set, draw :math:`r` uses seed ``(7, seed, r)``) from the same initialisation, and evaluated on the
    same test set. Train and test loss (and the primary metric) are the means over draws,
    :math:`\bar g_K = \frac1R\sum_r g_{K,r}`, and the standard error of that mean over the
    training draw, :math:`\mathrm{sd}_r(g_{K,r})/\sqrt R`, is combined with the test standard
    error in :func:`assess_generalization` (``draw_se``). One draw's gap carries the training
    set's own sampling noise (order :math:`\sigma/\sqrt{|D|}`), which with one draw alone can
    decide the verdict through the calibration at the shallowest depth; averaging over draws
    shrinks it by :math:`\sqrt R` and accounts for what remains. ``n_draws = 1`` (the default)
    gives exactly the single-draw result. Cost: ``n_draws`` × ``len(depths)`` trainings.
    """
    prob = problem
    if prob is None:
        prob = getattr(model, "problem", None) or getattr(unwrap_model(model), "problem", None)
        if isinstance(model, CheckContext):
            prob = model.problem
    if not isinstance(prob, ProblemSpec):
        raise NotApplicableError("generalization needs a problem to draw training sets from.")
    make = factory if factory is not None else family_of(model)
    if n_train < 1 or n_test < 2 or steps < 1 or n_draws < 1:
        raise ValueError("n_train >= 1, n_test >= 2, steps >= 1 and n_draws >= 1 are required.")
    # draw 0 is the training set of a single-draw run (seed (7, seed)); draws r > 0 are independent
    draws = [
        prob.sample(n_train, seed=(7, seed) if r == 0 else (7, seed, r)) for r in range(n_draws)
    ]
    x_te, s_te = prob.sample(n_test, seed=(8, seed))
    s_tr = draws[0][1]
    train_l, test_l, test_se, draw_se, params = [], [], [], [], []
    primary = prob.metrics()[0]
    metric_tr: list[float] = []
    metric_te: list[float] = []
    for K in depths:
        per_draw: list[tuple[float, float, float, float, float]] = []
        for r, (x_tr, s_tr_r) in enumerate(draws):
            torch.manual_seed(seed)
            net = make(int(K))
            dtype = real_dtype(next((p.dtype for p in net.parameters()), torch.float32))
            xtr, str_, xte, ste = (cast_precision(t, dtype) for t in (x_tr, s_tr_r, x_te, s_te))
            scale_tr = _scale(net, xtr, str_)
            scale_te = _scale(net, xte, ste)
            trainable = [p for p in net.parameters() if p.requires_grad]
            if not trainable:
                raise NotApplicableError(f"the depth-{K} model has no trainable parameters.")
            opt = torch.optim.Adam(trainable, lr=lr)
            net.train()
            for _ in range(steps):
                opt.zero_grad()
                loss = _per_sample_loss(net, xtr, str_, scale_tr, prob).mean()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                ltr = _per_sample_loss(net, xtr, str_, scale_tr, prob)
                lte = _per_sample_loss(net, xte, ste, scale_te, prob)
            if not (torch.isfinite(ltr).all() and torch.isfinite(lte).all()):
                which = "" if n_draws == 1 else f" (training draw {r})"
                return CheckResult.error(
                    "generalization",
                    f"Training at depth {K}{which} diverged (NaN/Inf loss); lower lr (now {lr:g}).",
                )
            with torch.no_grad():
                m_tr = _primary(primary, net, xtr, str_)
                m_te = _primary(primary, net, xte, ste)
            per_draw.append(
                (
                    float(ltr.mean()),
                    float(lte.mean()),
                    float(lte.std() / np.sqrt(n_test)),
                    m_tr,
                    m_te,
                )
            )
        if n_draws == 1:  # exactly the single-draw numbers
            tr_k, te_k, se_k, m_tr_k, m_te_k = per_draw[0]
        else:
            tr_k, te_k, se_k, m_tr_k, m_te_k = (float(v) for v in np.mean(per_draw, axis=0))
            gaps = np.array([d[1] - d[0] for d in per_draw])
            draw_se.append(float(gaps.std(ddof=1) / np.sqrt(n_draws)))
        train_l.append(tr_k)
        test_l.append(te_k)
        test_se.append(se_k)
        metric_tr.append(m_tr_k)
        metric_te.append(m_te_k)
        params.append(count_parameters(net))
    result = assess_generalization(
        depths,
        train_l,
        test_l,
        test_se,
        params,
        n_train,
        slack=slack,
        draw_se=draw_se if n_draws > 1 else None,
        n_draws=n_draws,
    )
    gap = [te - tr for tr, te in zip(metric_tr, metric_te, strict=True)]
    unit = f" {primary.unit}" if primary.unit else ""
    message = (
        f"{result.message} Primary metric {primary.label} at the final layer, test − train per "
        f"depth: {', '.join(f'{g:+.3g}' for g in gap)}{unit}."
    )
    details = {
        **result.details,
        "steps": steps,
        "lr": lr,
        "n_test": n_test,
        "loss": "objective / |objective at init|" if _unlabelled(s_tr) else "loss",
        "primary_metric": {
            "name": primary.name,
            "label": primary.label,
            "higher_is_better": primary.higher_is_better,
            "train": metric_tr,
            "test": metric_te,
            "gap": gap,
        },
    }
    return replace(result, message=message, details=details)


def _primary(metric: Any, net: nn.Module, x: Tensor, s: Tensor) -> float:
    """The problem's primary metric of ``net``'s final estimate on ``(x, s)``."""
    from lightning_unfold.core.metrics import layer_curves

    est = _final(net(x))
    return float(layer_curves([est], s, x, [metric])[metric.name][0])
