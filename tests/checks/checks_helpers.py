"""Helpers of the checks tests: sizes and a LISTA written in plain PyTorch."""

from __future__ import annotations

import torch
from torch import Tensor, nn

M, N, DEPTH = 20, 40, 8


class PlainLISTA(nn.Module):
    r"""LISTA written in plain PyTorch (not the library's): :math:`s^{(k)} =
    \operatorname{soft}_{\theta_k}(W_1^{(k)} x + W_2^{(k)} s^{(k-1)})`, returning all iterates.

    Initialised as ISTA (:math:`W_1 = \mu H^\top`, :math:`W_2 = I - \mu H^\top H`,
    :math:`\theta = \mu\rho`); ``w2`` replaces every :math:`W_2^{(k)}`.
    """

    def __init__(self, H: Tensor, rho: float, depth: int, w2: list[Tensor] | None = None) -> None:
        super().__init__()
        H = H.float()
        mu = 1.0 / float(torch.linalg.matrix_norm(H, ord=2) ** 2)
        n = H.shape[1]
        self.W1 = nn.ParameterList([nn.Parameter(mu * H.T.clone()) for _ in range(depth)])
        W2 = w2 if w2 is not None else [torch.eye(n) - mu * H.T @ H for _ in range(depth)]
        self.W2 = nn.ParameterList([nn.Parameter(w.float().clone()) for w in W2])
        self.theta = nn.ParameterList([nn.Parameter(torch.tensor(mu * rho)) for _ in range(depth)])

    def forward(self, x: Tensor) -> list[Tensor]:
        s = x.new_zeros(x.shape[0], self.W1[0].shape[0])
        out = [s]
        for W1, W2, th in zip(self.W1, self.W2, self.theta, strict=True):
            v = x @ W1.T + s @ W2.T
            s = torch.sign(v) * torch.clamp(v.abs() - th, min=0.0)
            out.append(s)
        return out
