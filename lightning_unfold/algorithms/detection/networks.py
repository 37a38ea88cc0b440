"""The learned layers of the MIMO detection family: DeepSIC's per-user classifiers, DetNet's
layer and the black-box MLP (plain torch modules; the solvers build them)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class DeepSICLayer(nn.Module):
    r"""One DeepSIC iteration (Shlezinger, Fu & Eldar 2021): per user :math:`u` a classifier

    .. math:: p_u^{(k)} = \operatorname{softmax}\big(f_{u,k}([y;\ p_{j}^{(k-1)}(c_{1..M-1}),\ j\ne u])\big),

    :math:`f_{u,k}` an MLP ``N_r + (U-1)(M-1) → hidden... → M`` with ReLU (4×4 BPSK with the
    paper's hidden sizes: 7 → 60 → 30 → 2). The last probability of each other user is dropped (it
    is one minus the others). Its output keeps the iterate's meaning: per-user posteriors.
    """

    def __init__(self, users: int, size: int, n_obs: int, hidden: Sequence[int] = (60, 30)) -> None:
        super().__init__()
        self.users, self.size, self.n_obs = users, size, n_obs
        in_dim = n_obs + (users - 1) * (size - 1)
        nets = []
        for _ in range(users):
            dims = [in_dim, *hidden]
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(dims):
                layers += [nn.Linear(a, b), nn.ReLU()]
            layers.append(nn.Linear(dims[-1], size))
            nets.append(nn.Sequential(*layers))
        self.nets = nn.ModuleList(nets)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        B = features.shape[0]
        y = features[:, : self.n_obs]
        p = flat_iterate.reshape(B, self.users, self.size)[:, :, : self.size - 1]
        outs = []
        for u, net in enumerate(self.nets):
            others = torch.cat([p[:, :u], p[:, u + 1 :]], dim=1).reshape(B, -1)
            outs.append(torch.softmax(net(torch.cat([y, others], dim=1)), dim=-1))
        return torch.stack(outs, dim=1).reshape(B, -1)


class DetectionBlackBoxNet(nn.Module):
    """The black box: an MLP from the whole observation row (y, the given H, σ²) to per-user
    softmax probabilities ``(B, U, M)``, two hidden layers sized to ``target_params``."""

    def __init__(self, in_dim: int, users: int, size: int, target_params: int) -> None:
        super().__init__()
        self.users, self.size = users, size
        out = users * size
        h = 1
        while (in_dim + 1) * (h + 1) + (h + 2) * (h + 1) + (h + 2) * out <= max(target_params, 1):
            h += 1
        self.net = nn.Sequential(
            nn.Linear(in_dim, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.softmax(self.net(x).reshape(x.shape[0], self.users, self.size), dim=-1)


class DetNetLayer(nn.Module):
    r"""One DetNet layer (Samuel, Diskin & Wiesel 2019), as in the issue:

    .. math::
        q_k &= \hat s_{k-1} - \delta_{1k}H^\top y + \delta_{2k}H^\top H\hat s_{k-1},\\
        z_k &= \operatorname{ReLU}(W_{1k}[q_k; v_{k-1}] + b_{1k}),\\
        \hat s_k &= \alpha\,\psi_{t_k}(W_{2k}z_k + b_{2k}) + (1-\alpha)\hat s_{k-1},\qquad
        v_k = \alpha(W_{3k}z_k + b_{3k}) + (1-\alpha) v_{k-1},

    :math:`\psi_t(u) = -1 + \operatorname{ReLU}(u + t)/|t| - \operatorname{ReLU}(u - t)/|t|` the
    piecewise-linear soft sign with learned :math:`t` (init 0.5) and the paper's residual weight
    :math:`\alpha = 0.9`; :math:`\delta_{1k}, \delta_{2k}` start at the classical :math:`-\mu`.
    """

    def __init__(self, users: int, v_dim: int, hidden: int, mu: float, alpha: float = 0.9) -> None:
        super().__init__()
        self.users, self.v_dim, self.alpha = users, v_dim, alpha
        self.delta1 = nn.Parameter(torch.tensor(-mu))
        self.delta2 = nn.Parameter(torch.tensor(-mu))
        self.t = nn.Parameter(torch.tensor(0.5))
        self.fc = nn.Linear(users + v_dim, hidden)
        self.out_s = nn.Linear(hidden, users)
        self.out_v = nn.Linear(hidden, v_dim)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        U = self.users
        Hty, HtHs = features[:, :U], features[:, U:]
        s, v = flat_iterate[:, :U], flat_iterate[:, U:]
        q = s - self.delta1 * Hty + self.delta2 * HtHs
        z = torch.relu(self.fc(torch.cat([q, v], dim=1)))
        t = self.t.abs().clamp_min(1e-3)
        u = self.out_s(z)
        soft = -1.0 + torch.relu(u + t) / t - torch.relu(u - t) / t
        a = self.alpha
        return torch.cat([a * soft + (1 - a) * s, a * self.out_v(z) + (1 - a) * v], dim=1)
