"""One-shot classical detectors of the MIMO detection family: zero forcing, LMMSE and exact
maximum likelihood (the floor), each returning one-hot per-user estimates."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_unfold.algorithms.detection.problem import MIMODetection

_MAX_HYPOTHESES = 1 << 16  # exact ML enumerates M^U hypotheses


def one_hot_nearest(s_hat: Tensor, problem: MIMODetection) -> Tensor:
    """One-hot ``(B, U, M)`` of the constellation point nearest to each user's soft estimate
    (``s_hat`` ``(B, U_r)``, interleaved real coordinates)."""
    pts = problem.const.points.to(s_hat)
    est = s_hat.reshape(s_hat.shape[0], problem.users, problem.d)
    dist = (est.unsqueeze(2) - pts).pow(2).sum(-1)
    return torch.nn.functional.one_hot(dist.argmin(-1), problem.const.size).to(s_hat.dtype)


def zero_forcing(x: Tensor, problem: MIMODetection) -> Tensor:
    r"""Zero forcing :math:`\hat s = (\hat H^\top\hat H)^{-1}\hat H^\top y`, then the nearest point.
    Needs :math:`U \le N` (otherwise :math:`\hat H^\top\hat H` is singular)."""
    if problem.users > problem.antennas:
        raise ValueError(
            f"Zero forcing needs at least as many receive antennas as users (U <= N), got "
            f"U = {problem.users} > N = {problem.antennas}: H^T H is singular. Use lmmse or "
            "maximum_likelihood."
        )
    problem.validate_observation(x)
    y, H, _ = problem.split(x)
    s_hat = torch.linalg.solve(H.mT @ H, (H.mT @ y.unsqueeze(-1))).squeeze(-1)
    return one_hot_nearest(s_hat, problem)


def lmmse(x: Tensor, problem: MIMODetection) -> Tensor:
    r"""Linear MMSE :math:`\hat s = (\hat H^\top\hat H + d\,\sigma_r^2 I)^{-1}\hat H^\top y` (symbol
    coordinates of variance :math:`1/d`), then the nearest point."""
    problem.validate_observation(x)
    y, H, var_r = problem.split(x)
    eye = torch.eye(problem.n_sym, dtype=x.dtype, device=x.device)
    A = H.mT @ H + (problem.d * var_r)[:, None, None] * eye
    s_hat = torch.linalg.solve(A, H.mT @ y.unsqueeze(-1)).squeeze(-1)
    return one_hot_nearest(s_hat, problem)


def maximum_likelihood(x: Tensor, problem: MIMODetection, *, chunk: int = 8192) -> Tensor:
    r"""Exact joint ML :math:`\arg\min_{s\in\mathcal C^U}\|y - \hat Hs\|^2` by enumerating all
    :math:`M^U` hypotheses (at most :math:`2^{16}`), returned one-hot ``(B, U, M)``."""
    M, U = problem.const.size, problem.users
    if M**U > _MAX_HYPOTHESES:
        raise ValueError(
            f"Exact ML enumerates M^U = {M}^{U} hypotheses, more than {_MAX_HYPOTHESES}; use it "
            "for small systems only (e.g. 4 users BPSK = 16 hypotheses)."
        )
    problem.validate_observation(x)
    pts = problem.const.points.to(x)
    combos = torch.cartesian_prod(*[torch.arange(M)] * U) if U > 1 else torch.arange(M)[:, None]
    S = pts[combos].reshape(combos.shape[0], -1)  # (M^U, U_r)
    out = []
    for xb in x.split(chunk):
        y, H, _ = problem.split(xb)
        dist = (y.unsqueeze(1) - torch.einsum("bij,hj->bhi", H, S)).pow(2).sum(-1)
        best = combos[dist.argmin(dim=1)]
        out.append(torch.nn.functional.one_hot(best, M).to(x.dtype))
    return torch.cat(out)
