r"""
Weight coupling: a trained LISTA learns W2 = I − W1·H in its deep layers
=========================================================================

LISTA (Gregor & LeCun, 2010) unfolds ISTA into layers
:math:`s^{(k)} = \eta_{\theta_k}\big(W_1^{(k)}x + W_2^{(k)}s^{(k-1)}\big)` with free matrices
:math:`W_1^{(k)} \in \mathbb R^{n\times m}`, :math:`W_2^{(k)} \in \mathbb R^{n\times n}` and
thresholds :math:`\theta_k`. **Theorem** (Chen, Liu, Wang, Yin, NeurIPS 2018, Thm. 1): if a
LISTA network recovers every sufficiently sparse code :math:`s^\star` from noiseless
:math:`x = Hs^\star`, then its weights are asymptotically *coupled* and its thresholds vanish,

.. math::

    W_2^{(k)} - \big(I - W_1^{(k)} H\big) \to 0, \qquad \theta_k \to 0
    \qquad (k \to \infty).

We train an untied LISTA end to end (multi-iteration loss) on noiseless sparse recovery and
measure the relative coupling residual
:math:`c_k = \|W_2^{(k)} - (I - W_1^{(k)}H)\|_F / \|W_2^{(k)}\|_F` layer by layer with
:func:`lightning_unfold.theory.coupling_residual` (through the check
:func:`lightning_unfold.checks.coupling`). Nothing forces the coupling: LISTA starts at ISTA's
values (where :math:`c_k = 0`), training moves every layer off it, and the deep layers come back.
"""

# %%
# Setup
# -----
# ``LU_GALLERY_FAST=1`` runs every gallery example at its smallest size (the test suite does).
import logging
import os

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning_unfold.theory import coupling_residual

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule, checks

FAST = os.environ.get("LU_GALLERY_FAST") == "1"
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no "GPU available" banners
torch.manual_seed(0)

m, n, K = (16, 32, 6) if FAST else (32, 64, 12)
epochs, batches = (2, 10) if FAST else (10, 40)
problem = SparseRecovery(m=m, n=n, sparsity=0.08, snr_db=None, rho=0.05, seed=0)

# %%
# Train LISTA
# -----------
# ``paradigm="objective", variant="lista"`` learns :math:`W_1^{(k)}, W_2^{(k)}, \theta_k` per
# layer; the multi-iteration loss :math:`\sum_k \log(1+k)\,\ell_k` asks every layer to recover
# the code, which is what the theorem assumes.
module = UnfoldedModule(
    problem,
    paradigm="objective",
    variant="lista",
    depth=K,
    formulation="multi_iteration",
    lr=5e-4,
)
trainer = L.Trainer(
    max_epochs=epochs,
    accelerator="cpu",
    logger=False,
    enable_checkpointing=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    num_sanity_val_steps=0,
)
trainer.fit(
    module, SyntheticDataModule(problem, batch_size=128, train_batches=batches, val_size=256)
)
print("validation NMSE per layer (dB):", np.round(module.nmse_curves["val"], 1))

# %%
# Measure the coupling
# --------------------
# The check reads the per-layer weights from the model and returns the residuals in its
# ``details``; we recompute them with the theory function to show they are the same quantity.
result = checks.coupling(module, problem)
print(result.status.name, "-", result.message)

W1 = module.model.stacked("W1").detach().double().numpy()
W2 = module.model.stacked("W2").detach().double().numpy()
H = problem.H.double().numpy()
c = coupling_residual(W1, W2, H)
assert np.allclose(c, result.details["residual"])
theta = module.model.stacked("threshold").detach().numpy()
mu_rho = problem.rho / problem.lipschitz  # ISTA's threshold, where every layer started

# %%
# Plot: the theorem's two quantities against depth
# ------------------------------------------------
layers = np.arange(1, K + 1)
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9.5, 3.8), constrained_layout=True)
ax1.plot(layers, c, "o-", label="trained LISTA")
ax1.axhline(0, color="0.4", lw=1, ls="--", label="coupled: LISTA-CP, ALISTA, ISTA")
ax1.set_xlabel("layer k")
ax1.set_ylabel(r"$\|W_2^{(k)} - (I - W_1^{(k)}H)\|_F \,/\, \|W_2^{(k)}\|_F$  (ratio)")
ax1.set_title("coupling residual → 0 with depth")
ax1.legend()
ax2.plot(layers, theta, "s-", color="C3", label=r"trained $\theta_k$")
ax2.axhline(mu_rho, color="0.4", lw=1, ls="--", label=r"ISTA's $\mu\rho$ (initial value)")
ax2.set_xlabel("layer k")
ax2.set_ylabel(r"threshold $\theta_k$  (units of $s$)")
ax2.set_title(r"thresholds $\theta_k$ → 0 with depth")
ax2.legend()
fig.suptitle(f"LISTA, m={m}, n={n}, K={K}, noiseless (Chen et al. 2018, Thm. 1)")
plt.show()

# %%
# What to see: the residual rises in the first layers (they do the most work and leave the
# coupled set) and decays towards 0 in the deep ones, and the thresholds decay too. LISTA-CP
# imposes :math:`W_2^{(k)} = I - W_1^{(k)}H` from the start, which is why it trains with
# :math:`n\times m` instead of :math:`n\times m + n^2` parameters per layer and loses nothing.
