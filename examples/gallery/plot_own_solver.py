r"""
Your own solver in one file, and the checks on a plain-PyTorch model
=====================================================================

A new solver is one :class:`~lightning_unfold.Algorithm`: its step, its parameter declaration,
its objective. Here, proximal gradient for the **elastic net** (Zou & Hastie, *J. R. Stat. Soc.
B* 67, 2005),

.. math::

    \min_s \tfrac12\|x - Hs\|_2^2 + \rho\Big(\alpha\|s\|_1 + \tfrac{1-\alpha}{2}\|s\|_2^2\Big),
    \qquad
    s^{(k)} = \frac{\eta_{\mu\rho\alpha}\big(s^{(k-1)} + \mu H^\top(x - Hs^{(k-1)})\big)}
    {1 + \mu\rho(1-\alpha)} ,

which converges for :math:`0 < \mu < 2/\|H\|_2^2` (Combettes & Wajs, *Multiscale Model.
Simul.* 4, 2005; the objective decreases monotonically for :math:`\mu \le 1/\|H\|_2^2`). Once
declared, every paradigm, loss and callback of the library works for it: we learn a step size
and threshold per layer with the **objective as the loss** (no labels) and compare with the CVXPY
reference :func:`lightning_unfold.theory.elastic_net_reference`. Then the other direction: a
LISTA-CP written in **plain PyTorch** (no ``lightning_unfold`` inside), trained with a plain
loop, verified by the library's checks (:func:`lightning_unfold.checks.run_checks`) — any
callable ``x -> [s0, ..., sK]`` can be checked.
"""

# %%
# The solver, in one file
# -----------------------
import logging
import os
from collections.abc import Mapping
from typing import ClassVar

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning_unfold.theory import elastic_net_reference
from torch import Tensor, nn

from lightning_unfold import (
    Algorithm,
    ClassicalSolver,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SparseRecovery,
    SyntheticDataModule,
    UnfoldedModel,
    UnfoldedModule,
    checks,
    register_algorithm,
)

FAST = os.environ.get("LU_GALLERY_FAST") == "1"
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
torch.manual_seed(0)
ALPHA = 0.5


@register_algorithm
class ElasticNetPG(Algorithm[Tensor]):
    """Proximal gradient for the elastic net; valid for 0 < step < 2/||H||²."""

    name: ClassVar[str] = "elastic_net_pg"

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "step size mu"),
            ParamSpec("l1", Role.HYPER, Constraint.NONNEGATIVE, "threshold mu*rho*alpha"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        if not isinstance(problem, SparseRecovery):
            raise TypeError(f"elastic_net_pg needs a SparseRecovery problem, got {problem!r}.")
        mu = 1.0 / problem.lipschitz  # inside (0, 2/||H||²): the step-size condition holds
        return {
            "step": torch.tensor(mu, dtype=torch.float64),
            "l1": torch.tensor(mu * problem.rho * ALPHA, dtype=torch.float64),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return x.new_zeros(x.shape[0], p["H"].shape[1])

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        H, mu = p["H"], p["step"]
        v = s + mu * (x - s @ H.T) @ H
        v = torch.sign(v) * torch.clamp(v.abs() - p["l1"], min=0.0)
        return v / (1.0 + mu * p["rho"] * (1.0 - ALPHA))

    def objective(self, s: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        r = x - s @ c["H"].T
        pen = ALPHA * s.abs().sum(1) + 0.5 * (1 - ALPHA) * s.pow(2).sum(1)
        return 0.5 * r.pow(2).sum(1) + c["rho"] * pen


# %%
# Classical initialisation reproduces the classical solver; then train
# ---------------------------------------------------------------------
m, n, K = (16, 32, 5) if FAST else (40, 80, 10)
problem = SparseRecovery(m=m, n=n, sparsity=0.1, snr_db=20.0, rho=0.1, seed=0)
x, _ = problem.sample(64 if FAST else 128, seed=5, dtype=torch.float64)
classical = ClassicalSolver(ElasticNetPG(), problem, K, dtype=torch.float64)
unfolded = UnfoldedModel(ElasticNetPG(), problem, K, "hyperparameters", dtype=torch.float64)
gap = (unfolded(x).final_estimate - classical(x).final_estimate).abs().max().item()
print(f"unfolded at classical values vs classical solver: max |difference| = {gap:.1e}")
assert gap < 1e-12

module = UnfoldedModule(
    problem,
    algorithm="elastic_net_pg",
    paradigm="hyperparameters",
    depth=K,
    supervision="unsupervised",
    lr=1e-2,
)
L.Trainer(
    max_steps=20 if FAST else 300,
    accelerator="cpu",
    logger=False,
    limit_val_batches=0,
    num_sanity_val_steps=0,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
).fit(module, SyntheticDataModule(problem, batch_size=64))

s_ref = torch.from_numpy(
    elastic_net_reference(problem.H.double().numpy(), x.numpy(), problem.rho, ALPHA)
)
with torch.no_grad():
    d_classical = classical(x).distances(s_ref, relative=True).mean(1).numpy()
    d_learned = module.model.double()(x).distances(s_ref, relative=True).mean(1).numpy()
print(
    "learned steps μ_k·||H||²:",
    np.round(module.model.stacked("step").detach().numpy() * problem.lipschitz, 2),
)

# %%
# A LISTA-CP in plain PyTorch, checked by the library
# ---------------------------------------------------
# It returns the list of all its iterates; that is all a check needs.


class PlainLISTACP(nn.Module):
    """s_k = soft_{θ_k}(s_{k-1} + W_k(x − H s_{k-1})), i.e. W2 = I − W1·H (coupled)."""

    def __init__(self, H: Tensor, depth: int) -> None:
        super().__init__()
        self.register_buffer("H", H)
        mu = 1.0 / torch.linalg.matrix_norm(H, ord=2).item() ** 2
        self.W = nn.Parameter(mu * H.T.repeat(depth, 1, 1))  # (K, n, m)
        self.theta = nn.Parameter(torch.full((depth,), 0.01))

    def forward(self, x: Tensor) -> list[Tensor]:
        s = x.new_zeros(x.shape[0], self.H.shape[1])
        out = [s]
        for W, th in zip(self.W, self.theta, strict=True):
            v = s + (x - s @ self.H.T) @ W.T
            s = torch.sign(v) * torch.relu(v.abs() - th)
            out.append(s)
        return out

    @property
    def W1(self) -> Tensor:  # the checks read LISTA weights from W1 / W2 attributes
        return self.W

    @property
    def W2(self) -> Tensor:
        return torch.eye(self.H.shape[1]) - self.W @ self.H


noiseless = SparseRecovery(m=m, n=n, sparsity=0.1, snr_db=None, seed=0)
plain = PlainLISTACP(noiseless.H.float(), K)
opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
for it in range(20 if FAST else 400):  # a plain training loop, the sum of layer losses
    xb, sb = noiseless.sample(64, seed=(11, it))
    loss = sum(((s - sb) ** 2).sum(1).mean() for s in plain(xb)[1:])
    opt.zero_grad()
    loss.backward()
    opt.step()
plain.eval()
data = noiseless.sample(256, seed=12)
with torch.no_grad():
    results = checks.run_checks(plain, noiseless, data, suite="cheap")
print(checks.format_table(results))
lin = next(r for r in results if r.name == "linear_convergence")

# %%
# Plot
# ----
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
k = np.arange(K + 1)
ax1.semilogy(k, d_classical, "k--o", ms=3, label=r"classical, $\mu = 1/\|H\|_2^2$")
ax1.semilogy(
    k,
    d_learned,
    "o-",
    ms=3,
    color="C1",
    label=r"learned $\mu_k$, threshold$_k$ (objective as loss)",
)
ax1.set_xlabel("layer / iteration k")
ax1.set_ylabel(r"$\|s^{(k)} - s^\star_{\mathrm{CVXPY}}\|_2 / \|s^\star\|_2$  (ratio)")
ax1.set_title("your solver: elastic-net proximal gradient")
ax1.legend(fontsize=8)
d, fit = lin.details, lin.details["fit"]
ax2.semilogy(k, d["mean_error"], "o-", ms=3, color="C2", label="plain-PyTorch LISTA-CP")
kf = np.arange(fit["start"], fit["stop"])
ax2.semilogy(
    kf,
    np.exp(fit["c"]) * fit["q"] ** kf,
    ":",
    color="k",
    label=f"check's fit: q = {fit['q']:.2f}/layer, R² = {fit['r2']:.2f} ({lin.status.name})",
)
ax2.set_xlabel("layer k")
ax2.set_ylabel(r"$\mathbb{E}\|s^{(k)} - s^\star\|_2$  (units of $s$)")
ax2.set_title("checks on a model the library did not build")
ax2.legend(fontsize=8)
plt.show()

# %%
# What to see: left, the unfolded elastic-net solver with learned per-layer steps reaches in
# :math:`K` layers a distance to the CVXPY solution that the classical step size needs many more
# iterations for — it was trained without labels, on the solver's own objective. Its learned
# steps :math:`\mu_k\|H\|_2^2` (printed above) exceed the classical condition's 2 in several
# layers: a fixed-depth network is not bound by the condition that makes the *infinite*
# iteration converge, which is exactly why its guarantees have to be checked. Right, the
# library's checks ran on a model it knows nothing about: the coupling check reads its ``W1`` /
# ``W2`` (coupled by construction, residual 0), the linear-convergence check fits its rate.
