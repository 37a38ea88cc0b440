"""Benchmark entries of the problem families: sparse recovery (LISTA-CP) and RPCA.

A new family adds one :class:`~benchmarks.Family` here (or in its own module, imported by
:mod:`benchmarks.__main__`): its sizes per preset, its problem, the module it trains, one layer
with that layer's matrix products as the floor, its classical solvers and a per-instance reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor

from benchmarks import Family, LayerCase, ReferenceSolver, register
from lightning_unfold import ISTA, SparseRecovery, UnfoldedModel
from lightning_unfold.algorithms import RPCA, RPCAProblem, RPCAState, soft_threshold


def pooled_nmse_db(estimate: Tensor, target: Tensor) -> float:
    r""":math:`10\log_{10}\sum_i\|\hat s_i - s_i\|^2 / \sum_i\|s_i\|^2` (lower is better)."""
    err = (estimate.double() - target.double()).pow(2).sum()
    return float(10.0 * torch.log10(err / target.double().pow(2).sum().clamp_min(1e-300)))


def _leaf(t: Tensor) -> Tensor:
    return t.detach().clone().requires_grad_(True)


# -- sparse recovery: LISTA-CP on the standard benchmark -----------------------------------------
def _sparse_problem(sz: Mapping[str, Any]) -> SparseRecovery:
    return SparseRecovery(m=sz["m"], n=sz["n"], seed=0)


def _sparse_layer(problem: SparseRecovery, sz: Mapping[str, Any]) -> LayerCase:
    """LISTA-CP layer k = 2: :math:`s^+ = \\mathrm{soft}_\\beta(s + W(x - Hs))`, products
    :math:`sH^\\top` (B×n·n×m) and :math:`rW^\\top` (B×m·m×n): 4·B·m·n flops forward."""
    model = UnfoldedModel(ISTA(), problem, sz["depth"], "objective", variant="lista_cp")
    b, m, n = sz["batch"], problem.m, problem.n
    x, _ = problem.sample(b, seed=11)
    g = torch.Generator().manual_seed(0)
    s = _leaf(soft_threshold(torch.randn(b, n, generator=g) * 0.3, 0.2))  # a mid-network iterate
    H = model.constants.H
    W = model.learned["W1"][1]

    def layer() -> list[Tensor]:
        return [model.algorithm.step(s, x, model.layer_params(2), 2)]

    s_f, r_f, W_f = _leaf(s), _leaf(x - s.detach() @ H.T), _leaf(W)

    def floor() -> list[Tensor]:
        return [torch.matmul(s_f, H.T), torch.matmul(r_f, W_f.T)]

    return LayerCase(
        layer=layer,
        floor=floor,
        flops=4.0 * b * m * n,
        layer_leaves=[s, W],
        floor_leaves=[s_f, r_f, W_f],
        shapes=f"B={b}: ({b}×{n})·({n}×{m}), ({b}×{m})·({m}×{n})",
    )


def _lasso_reference(xs: np.ndarray, problem: SparseRecovery) -> np.ndarray:
    from lightning_unfold.theory import lasso_reference

    return lasso_reference(problem.H.numpy(), xs, problem.rho)


SPARSE = register(
    Family(
        name="sparse",
        sizes={
            "tiny": {"m": 20, "n": 40, "batch": 32, "depth": 4, "train_steps": 20, "max_it": 300},
            "cpu": {
                "m": 250,
                "n": 500,
                "batch": 256,
                "ddp_batch": 1024,  # per rank: 16 layers' 250×500 gradients (8 MB) per all-reduce
                "depth": 16,
                "train_steps": 100,
                "max_it": 1000,
            },
        },
        make_problem=_sparse_problem,
        module_kwargs=lambda sz: {
            "paradigm": "objective",
            "variant": "lista_cp",
            "depth": sz["depth"],
            "lr": 5e-4,
        },
        layer_case=_sparse_layer,
        classical=("ista", "fista"),
        metric=pooled_nmse_db,
        reference=ReferenceSolver("CVXPY LASSO (Clarabel)", _lasso_reference, instances=4),
    )
)


# -- RPCA: learned hyperparameters of the alternating solver -------------------------------------
def _rpca_problem(sz: Mapping[str, Any]) -> RPCAProblem:
    return RPCAProblem(n1=sz["n1"], n2=sz["n2"], rank=sz["rank"], outlier_fraction=0.1, seed=0)


def _rpca_layer(problem: RPCAProblem, sz: Mapping[str, Any]) -> LayerCase:
    """One RPCA layer (hyperparameters paradigm): the products :math:`LR^\\top` (×3),
    :math:`\\Psi^{-1}Z` (a solve, floored by a matmul of its shape), :math:`\\Psi Y`,
    :math:`(\\cdot)R`, :math:`(\\cdot)^\\top L` and the two r×r Gram matrices."""
    model = UnfoldedModel(RPCA(), problem, sz["depth"], "hyperparameters")
    b, n1, n2, r = sz["batch"], problem.n1, problem.n2, problem.rank
    x, _ = problem.sample(b, seed=11)
    with torch.no_grad():
        s0 = model.algorithm.init(x, model.layer_params(1))
    L, R = _leaf(s0.L), _leaf(s0.R)
    state = RPCAState(L=L, R=R, Y=s0.Y)
    psi = model.constants.as_dict()["transform"]

    def layer() -> list[Tensor]:
        out = model.algorithm.step(state, x, model.layer_params(2), 2)
        return [out.L, out.R, out.Y]

    g = torch.Generator().manual_seed(0)
    Lf, Rf = _leaf(L), _leaf(R)
    Z = _leaf(torch.randn(n1, b * n2, generator=g))
    Y = _leaf(torch.randn(b, n1, n2, generator=g))
    M = _leaf(torch.randn(b, n1, n2, generator=g))

    def floor() -> list[Tensor]:
        lr = [torch.matmul(Lf, Rf.mT) for _ in range(3)]
        return [
            *lr,
            torch.matmul(psi, Z),
            torch.matmul(psi, Y),
            torch.matmul(M, Rf),
            torch.matmul(M.mT, Lf),
            torch.matmul(Rf.mT, Rf),
            torch.matmul(Lf.mT, Lf),
        ]

    flops = 2.0 * b * (3 * n1 * n2 * r + 2 * n1 * n1 * n2 + 2 * n1 * n2 * r + (n1 + n2) * r * r)
    return LayerCase(
        layer=layer,
        floor=floor,
        flops=flops,
        layer_leaves=[L, R],
        floor_leaves=[Lf, Rf, Z, Y, M],
        shapes=f"B={b}, {n1}×{n2}, rank {r}",
    )


def _pcp_reference(xs: np.ndarray, problem: RPCAProblem) -> np.ndarray:
    r"""Principal component pursuit per instance (Candès et al. 2011), with the transform:
    :math:`\min_M \|M\|_* + \lambda\|\Psi^{-1}(X - M)\|_1`, :math:`\lambda = 1/\sqrt{\max(n_1,n_2)}`."""
    import cvxpy as cp

    psi_inv = np.linalg.inv(problem.psi_given.numpy())
    lam = 1.0 / math.sqrt(max(problem.n1, problem.n2))
    out = []
    for X in xs:
        M = cp.Variable(X.shape)
        cp.Problem(cp.Minimize(cp.normNuc(M) + lam * cp.sum(cp.abs(psi_inv @ (X - M))))).solve()
        if M.value is None:
            raise RuntimeError("CVXPY found no PCP solution; try another solver (SCS).")
        out.append(M.value)
    return np.stack(out)


RPCA_FAMILY = register(
    Family(
        name="rpca",
        sizes={
            "tiny": {
                "n1": 12,
                "n2": 10,
                "rank": 2,
                "batch": 8,
                "depth": 4,
                "train_steps": 10,
                "max_it": 50,
            },
            "cpu": {
                "n1": 64,
                "n2": 64,
                "rank": 5,
                "batch": 32,
                "depth": 10,
                "train_steps": 50,
                "max_it": 300,
            },
        },
        make_problem=_rpca_problem,
        module_kwargs=lambda sz: {"paradigm": "hyperparameters", "depth": sz["depth"], "lr": 1e-2},
        layer_case=_rpca_layer,
        classical=("rpca",),
        metric=pooled_nmse_db,
        metric_name="relative error² (dB)",
        reference=ReferenceSolver("CVXPY PCP (nuclear + l1)", _pcp_reference, instances=1),
    )
)
