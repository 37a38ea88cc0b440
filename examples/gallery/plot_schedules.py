r"""
Training schedules on one budget: sequential, end-to-end, multi-iteration
=========================================================================

An unfolded network can be trained on three losses (Shlezinger et al., *Deep unfolding:
recent developments, theory, and design guidelines*, 2025, §IV; the sequential one is the
layer-wise training of Chen et al., NeurIPS 2018, and Liu et al., ICLR 2019). With
:math:`\ell_k` the loss of the output of layer :math:`k`,

.. math::

    \mathcal L_{\text{end-to-end}} = \ell_K, \qquad
    \mathcal L_{\text{multi-iteration}} = \sum_{k=1}^K \log(1+k)\,\ell_k, \qquad
    \mathcal L_{\text{sequential}}:\ \text{round } k \text{ trains } \theta_k
    \text{ on } \ell_k,\ \theta_{<k} \text{ frozen}.

The guideline: the end-to-end loss optimises only the last layer's output, so intermediate
iterates need not mean anything; the multi-iteration and sequential losses make *every* layer an
estimate — which is what the convergence guarantees talk about, and what lets a network be
stopped early. We train the same LISTA-CP three ways with the **same number of optimizer
steps** and compare the held-out NMSE after every layer (the library's
:class:`~lightning_unfold.training.LayerwiseNMSE`).
"""

# %%
import logging
import os

import lightning as L
import matplotlib.pyplot as plt
import numpy as np
import torch

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.training import LayerwiseNMSE, SequentialSchedule

FAST = os.environ.get("LU_GALLERY_FAST") == "1"
logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
m, n, K = (16, 32, 4) if FAST else (32, 64, 8)
steps_per_layer = 3 if FAST else 25
budget = K * steps_per_layer  # optimizer steps, the same for the three
problem = SparseRecovery(m=m, n=n, sparsity=0.1, snr_db=None, seed=0)


def train(formulation: str, schedule: SequentialSchedule | None = None) -> UnfoldedModule:
    torch.manual_seed(0)
    module = UnfoldedModule(
        problem, paradigm="objective", variant="lista_cp", depth=K, formulation=formulation, lr=2e-3
    )
    trainer = L.Trainer(
        max_steps=-1 if schedule else budget,
        max_epochs=-1,
        accelerator="cpu",
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[schedule] if schedule else [],
    )
    trainer.fit(module, SyntheticDataModule(problem, batch_size=64, val_size=128))
    assert trainer.global_step == budget, (formulation, trainer.global_step)
    return module.eval()


modules = {
    "end-to-end": train("end_to_end"),
    "multi-iteration": train("multi_iteration"),
    "sequential": train(
        "end_to_end",
        SequentialSchedule(steps_per_layer=steps_per_layer, eval_batches=1, log_curves=False),
    ),
}

# %%
# Held-out NMSE after every layer
# -------------------------------
x, s = problem.sample(512, seed=99)
curves = {}
for name, module in modules.items():
    metric = LayerwiseNMSE(K)
    with torch.no_grad():
        metric.update(module(x).stacked_estimates(), s)
    curves[name] = metric.compute().numpy()
    print(f"{name:16s} NMSE at layer K = {curves[name][-1]:6.1f} dB")
init = UnfoldedModule(problem, paradigm="objective", variant="lista_cp", depth=K)
metric = LayerwiseNMSE(K)
with torch.no_grad():
    metric.update(init(x).stacked_estimates(), s)
curves["untrained (= ISTA)"] = metric.compute().numpy()

# %%
# Plot
# ----
fig, ax = plt.subplots(figsize=(7, 4.3), constrained_layout=True)
styles = {"untrained (= ISTA)": ("--", "k")}
for i, (name, c) in enumerate(curves.items()):
    style, color = styles.get(name, ("o-", f"C{i}"))
    ax.plot(np.arange(K + 1), c, style, ms=4, color=color, label=name)
ax.set_xlabel("layer k")
ax.set_ylabel(r"held-out NMSE after layer $k$  (dB)")
ax.set_title(f"LISTA-CP, K={K}, the same {budget} Adam steps for each loss")
ax.legend()
ax.grid(alpha=0.3)
plt.show()

# %%
# What to see: on the same budget the multi-iteration loss gives the best estimate at every
# layer, because every layer is trained to be one; the end-to-end loss catches up only at the
# last layer (its intermediate outputs are what happens to lie on the way there), so stopping it
# early costs accuracy. The sequential schedule spends its budget ``steps_per_layer`` steps at a
# time with earlier layers frozen and no fine-tuning, and with so few steps it lags — layer-wise
# schedules pay off with larger budgets and a fine-tuning stage
# (:class:`~lightning_unfold.training.TwoStageSchedule`, :doc:`/schedules`). NMSE is
# :math:`10\log_{10}(\sum_i\|\hat s_i^{(k)} - s_i\|^2 / \sum_i\|s_i\|^2)` over 512 test samples.
