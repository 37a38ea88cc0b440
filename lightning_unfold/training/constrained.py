r"""Descending constraints: primal–dual training that makes every layer a descent step.

Hadou, NaderiAlizadeh & Ribeiro, "Robust stochastically-descending unrolled networks", IEEE Trans.
Signal Process. 72 (2024). With :math:`q(s)` a measure of distance to the solution, layer
:math:`l` of a :math:`K`-layer model is constrained to shrink its expectation by :math:`1-\epsilon`:

.. math::

    c_l(\theta) = \frac{\mathbb E\, q(s^{(l)})}{\mathbb E\, q(s^{(l-1)})} - (1-\epsilon) \le 0,
    \qquad l = 1..K,

and the constrained problem :math:`\min_\theta \mathbb E\,\ell(\theta)` s.t. :math:`c_l \le 0`
is solved through its Lagrangian :math:`\mathcal L(\theta, \nu) = \ell(\theta) +
\sum_l \nu_l c_l(\theta)`: a primal optimizer step on :math:`\theta` every batch, and every
``dual_every_n_steps`` steps (or once per epoch, as in the paper) the projected dual ascent

.. math:: \nu_l \leftarrow \big[\nu_l + \eta_\nu\, \bar c_l\big]_+ ,

with :math:`\bar c_l` the constraint on all samples seen since the last dual step (the ratio of
the pooled sums, reduced across DDP ranks, so every rank holds the same duals).

The measure :math:`q` (``form``):

``"distance"``
    :math:`q(s) = \|\hat s - s^\star\|_2`, :math:`s^\star` the batch's target (``reference=
    "target"``) or the classical solver run to convergence on the batch (``"solution"``,
    :class:`~lightning_unfold.core.unfolded.ClassicalSolver` of the algorithm's classical operator;
    costly: one solve per batch).
``"gradient"``
    :math:`q(s) = \|\nabla_s \mathcal L(s; x)\|_2`, the gradient of the problem's objective by
    autograd over every iterate block (for an :math:`\ell_1` term the subgradient with
    :math:`\operatorname{sign}(0) = 0`), the form of the paper's reference code; no target needed.
``"objective"``
    for problems without :math:`s^\star`: a relative decrease of the objective
    :math:`c_l = (\mathbb E\,\mathcal L(s^{(l)}) - \mathbb E\,\mathcal L(s^{(l-1)}))/
    |\mathbb E\,\mathcal L(s^{(l-1)})| + \epsilon \le 0`. The objective does not vanish at the
    solution, so :math:`\epsilon` is a per-layer relative decrease here; keep it small.

``noise > 0`` injects the paper's perturbation during training: every intermediate iterate gets
noise of relative size ``noise`` (:func:`~lightning_unfold.core.perturb.relative_perturbation`:
:math:`\tilde s^{(l)} = s^{(l)} + \sigma\|s^{(l)}\| z/\|z\|`) before the next layer reads it,
seeded by ``(seed, global step, rank)`` so a resumed run draws the same noise. The constraint then
asks each layer to descend *from the perturbed iterate it received*,

.. math::

    c_l = \frac{\mathbb E\, q(s^{(l)})}{\mathbb E\, q(\tilde s^{(l-1)})} - (1-\epsilon),
    \qquad s^{(l)} = \Phi_l(\tilde s^{(l-1)}),\ \tilde s^{(0)} = s^{(0)},

the property the perturbation test of
:func:`~lightning_unfold.checks.descending_constraints` measures: a layer must map a perturbed
input closer to the solution, not merely keep the clean trajectory descending. With
``noise = 0`` the two coincide (:math:`\tilde s = s`).

The callback is Lightning state: the duals, the running sums of the current dual window and the
history of dual steps are in its ``state_dict`` (checkpoints, exact resume). Each dual step logs
``descent/nu/LL``, ``descent/constraint/LL`` and ``descent/satisfied/LL`` per layer and
``descent/satisfied_fraction``. It drives an
:class:`~lightning_unfold.training.UnfoldedModule` through two attributes of the module,
``loss_terms`` (extra terms of the training loss) and ``train_perturbation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from lightning_unfold.core.iterate import iterate_blocks
from lightning_unfold.core.perturb import relative_perturbation
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import ClassicalSolver, UnfoldedModel

__all__ = ["CONSTRAINT_FORMS", "DescendingConstraints", "layer_measure"]

CONSTRAINT_FORMS: tuple[str, ...] = ("distance", "gradient", "objective")
_REFERENCES: tuple[str, ...] = ("target", "solution")


def _gradient_norms(model: UnfoldedModel, s: Any, x: Tensor) -> Tensor:
    r"""Per-sample :math:`\|\nabla_s \mathcal L(s; x)\|` over all floating blocks, differentiable."""
    blocks = iterate_blocks(s)
    leaves = {}
    for name, b in blocks.items():
        if b.is_floating_point() and b.ndim >= 2:
            leaves[name] = b if b.requires_grad else b.detach().requires_grad_(True)
    if not leaves:
        raise ValueError("The iterate has no floating blocks to differentiate the objective by.")
    rebuilt = {**blocks, **leaves}
    s_in = rebuilt["s"] if isinstance(s, Tensor) else type(s)(**rebuilt)
    with torch.enable_grad():
        f = model.objective(s_in, x).sum()
        grads = torch.autograd.grad(f, list(leaves.values()), create_graph=True)
    sq = sum(g.reshape(g.shape[0], -1).pow(2).sum(dim=1) for g in grads)
    return torch.as_tensor(sq).clamp_min(0.0).sqrt()


def layer_measure(
    model: UnfoldedModel,
    traj: Trajectory[Any],
    x: Tensor,
    form: str,
    reference: Tensor | None,
) -> Tensor:
    r"""The per-sample measure :math:`q(s^{(l)})` at every layer, shape ``(B, depth + 1)``.

    ``"distance"`` needs ``reference`` (the :math:`s^\star` of each sample, the estimates'
    shape); ``"gradient"`` and ``"objective"`` read the model's objective.
    """
    if form == "distance":
        if reference is None:
            raise ValueError("form='distance' needs a reference s* (targets or solutions).")
        return traj.distances(reference).T
    if form == "gradient":
        return torch.stack([_gradient_norms(model, s, x) for s in traj.iterates], dim=1)
    if form == "objective":
        return torch.stack([model.objective(s, x) for s in traj.iterates], dim=1)
    raise ValueError(f"Unknown constraint form {form!r}; valid: {list(CONSTRAINT_FORMS)}.")


def _constraints(means: Tensor, form: str, eps: float) -> Tensor:
    """:math:`c_l` for ``l = 1..len(means) - 1`` from the per-layer means of the measure."""
    return _layer_constraints(means[1:], means[:-1], form, eps)


def _layer_constraints(cur: Tensor, prev: Tensor, form: str, eps: float) -> Tensor:
    """:math:`c_l` from the mean measure of each layer's output (``cur``) and of its input
    (``prev``: :math:`s^{(l-1)}`, or the perturbed :math:`\tilde s^{(l-1)}` under noise)."""
    if form == "objective":
        return (cur - prev) / prev.abs().clamp_min(1e-30) + eps
    return cur / prev.clamp_min(1e-30) - (1.0 - eps)


class DescendingConstraints(Callback):
    r"""Train an unfolded model under descending constraints (see the module docstring).

    Args:
        eps: :math:`\epsilon \in (0, 1)`: every layer must shrink the expected measure to at most
            :math:`1-\epsilon` of its input's.
        dual_lr: the dual step :math:`\eta_\nu > 0`.
        form: ``"distance" | "gradient" | "objective"`` (:data:`CONSTRAINT_FORMS`).
        reference: for ``form="distance"``, ``"target"`` (the batch's labels) or ``"solution"``
            (the classical solver run to ``solution_tol``).
        dual_every_n_steps: a dual step every this many optimizer steps; ``None``: once per
            training epoch (the paper's schedule).
        init_dual: the initial :math:`\nu_l \ge 0`.
        noise: relative size :math:`\sigma \ge 0` of the noise injected into intermediate
            iterates during training (0: none); each layer's constraint is then measured from
            the perturbed input it received (see the module docstring).
        seed: seed of that noise.
        solution_tol, solution_max_iter: stopping rule of the ``"solution"`` reference.
    """

    def __init__(
        self,
        eps: float = 0.05,
        dual_lr: float = 0.1,
        *,
        form: str = "distance",
        reference: str = "target",
        dual_every_n_steps: int | None = None,
        init_dual: float = 0.0,
        noise: float = 0.0,
        seed: int = 0,
        solution_tol: float = 1e-6,
        solution_max_iter: int = 5000,
    ) -> None:
        super().__init__()
        if not (isinstance(eps, int | float) and 0.0 < eps < 1.0):
            raise ValueError(
                f"eps must lie in (0, 1): the constraint asks each layer to shrink the expected "
                f"measure to (1 - eps) of its input's; got {eps!r}."
            )
        if not (isinstance(dual_lr, int | float) and math.isfinite(dual_lr) and dual_lr > 0):
            raise ValueError(
                f"dual_lr (the dual ascent step eta_nu) must be finite and > 0, got {dual_lr!r}."
            )
        if form not in CONSTRAINT_FORMS:
            raise ValueError(f"Unknown constraint form {form!r}; valid: {list(CONSTRAINT_FORMS)}.")
        if reference not in _REFERENCES:
            raise ValueError(f"Unknown reference {reference!r}; valid: {list(_REFERENCES)}.")
        if dual_every_n_steps is not None and (
            not isinstance(dual_every_n_steps, int)
            or isinstance(dual_every_n_steps, bool)
            or dual_every_n_steps < 1
        ):
            raise ValueError(
                f"dual_every_n_steps must be an integer >= 1 or None (once per epoch), got "
                f"{dual_every_n_steps!r}."
            )
        if not (math.isfinite(init_dual) and init_dual >= 0):
            raise ValueError(f"init_dual must be finite and >= 0, got {init_dual!r}.")
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be finite and >= 0, got {noise!r}.")
        self.eps, self.dual_lr, self.form, self.reference = (
            float(eps),
            float(dual_lr),
            form,
            reference,
        )
        self.dual_every_n_steps, self.init_dual = dual_every_n_steps, float(init_dual)
        self.noise, self.seed = float(noise), int(seed)
        self.solution_tol, self.solution_max_iter = float(solution_tol), int(solution_max_iter)
        self.depth = 0
        # -- restorable state --------------------------------------------------------------
        #: the duals :math:`\nu_1..\nu_K`
        self.nu: list[float] = []
        self._sums: list[float] = []  # per layer 0..K: sum of q over the window's samples
        self._counts: list[float] = []
        self._in_sums: list[float] = []  # per layer 1..K: sum of q of its (perturbed) input
        self._perturbed: dict[int, Any] = {}  # this batch's perturbed iterates, by layer
        self.steps_since_update = 0
        #: one record per dual step: global step, duals after it, window constraints
        self.history: list[dict[str, Any]] = []
        self._solver: ClassicalSolver | None = None
        self._module: Any = None
        self._last_batch: list[float] = []

    # -- set-up ----------------------------------------------------------------------------
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        model = getattr(pl_module, "model", None)
        if not hasattr(pl_module, "loss_terms") or not hasattr(pl_module, "train_perturbation"):
            raise TypeError(
                "DescendingConstraints drives an UnfoldedModule (a LightningModule with "
                f"`loss_terms` and `train_perturbation`); got {type(pl_module).__name__}."
            )
        if not isinstance(model, UnfoldedModel) or isinstance(model, ClassicalSolver):
            raise TypeError(
                "Descending constraints act on the layers of an unfolded model; "
                f"{type(model).__name__} has no trainable layers with intermediate iterates "
                "(the black box maps x to the estimate in one shot, the classical solver has "
                "nothing to train). Use an UnfoldedModel paradigm."
            )
        if self.form == "distance" and self.reference == "solution":
            op = model.algorithm.classical_operator()
            self._solver = ClassicalSolver(op, model.problem, 1, dtype=torch.float64)
        self.depth = model.depth
        if not self.nu:
            self.nu = [self.init_dual] * self.depth
            self._reset_window()
        self._module = pl_module
        pl_module.loss_terms.append(self.lagrangian_term)  # type: ignore[union-attr,operator]

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after a checkpoint's state was loaded
        if len(self.nu) != self.depth or len(self._sums) != self.depth + 1:
            raise ValueError(
                f"The duals were saved for {len(self.nu)} layers but the model has "
                f"{self.depth}; resume with the same model depth."
            )

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and hasattr(pl_module, "loss_terms"):
            terms = pl_module.loss_terms  # type: ignore[union-attr]
            pl_module.loss_terms = [t for t in terms if t != self.lagrangian_term]  # type: ignore[union-attr,operator]
            pl_module.train_perturbation = None  # type: ignore[assignment]
        self._module = None

    def _reset_window(self) -> None:
        self._sums = [0.0] * (self.depth + 1)
        self._counts = [0.0] * (self.depth + 1)
        self._in_sums = [0.0] * self.depth

    # -- the primal term -------------------------------------------------------------------
    def _reference(self, x: Tensor, target: Tensor, model: UnfoldedModel) -> Tensor:
        if self.reference == "target":
            if bool(torch.isnan(target).any()):
                raise ValueError(
                    "form='distance' with reference='target' needs labelled batches; use "
                    "reference='solution' or form='gradient' for unlabelled data."
                )
            return target
        assert self._solver is not None
        self._solver.to(x.device)
        res = self._solver.solve(x.double(), tol=self.solution_tol, max_iter=self.solution_max_iter)
        return res.trajectory.final_estimate.to(x.dtype)

    def lagrangian_term(
        self, module: Any, traj: Trajectory[Any], x: Tensor, target: Tensor
    ) -> Tensor:
        r""":math:`\sum_l \nu_l c_l` on this batch (added to the training loss); it also adds the
        batch's measures to the running sums of the dual window."""
        model = module.model
        ref = self._reference(x, target, model) if self.form == "distance" else None
        q = layer_measure(model, traj, x, self.form, ref)  # (B, depth + 1)
        q_in = q[:, :-1]  # the measure of each layer's input: s^(l-1), or its perturbed copy
        perturbed = self._perturbed
        self._perturbed = {}
        if perturbed and module.train_perturbation is not None:
            depth = q.shape[1] - 1
            missing = [k for k in range(1, depth) if k not in perturbed]
            if missing:
                raise RuntimeError(
                    f"The noise injection recorded no perturbed input for layers {missing}; "
                    "the training forward pass must run UnfoldedModel(x, perturb=...)."
                )
            alg = model.algorithm
            inputs = [traj.iterates[0], *(perturbed[k] for k in range(1, depth))]
            seen = Trajectory(tuple(inputs), tuple(alg.estimate(s) for s in inputs))
            q_in = layer_measure(model, seen, x, self.form, ref)  # (B, depth)
        means_out, means_in = q[:, 1:].mean(dim=0), q_in.mean(dim=0)
        c = _layer_constraints(means_out, means_in, self.form, self.eps)
        nu = torch.tensor(self.nu[: c.shape[0]], dtype=c.dtype, device=c.device)
        with torch.no_grad():
            sums = q.detach().double().sum(dim=0)
            in_sums = q_in.detach().double().sum(dim=0)
            for l in range(q.shape[1]):
                self._sums[l] += float(sums[l])
                self._counts[l] += float(q.shape[0])
            for l in range(q_in.shape[1]):
                self._in_sums[l] += float(in_sums[l])
        self._last_batch = [float(v) for v in c.detach()]
        return (nu * c).sum()

    def _perturbation(self, step: int, rank: int) -> Callable[[int, Any], Any]:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + step * 7919 + rank) % 2**63)
        beta = self.noise
        self._perturbed = {}
        record = self._perturbed

        def perturb(k: int, s: Any) -> Any:
            out = relative_perturbation(s, beta, gen)
            record[k] = out  # the input layer k + 1 reads (lagrangian_term measures it)
            return out

        return perturb

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.noise > 0:
            pl_module.train_perturbation = self._perturbation(  # type: ignore[assignment]
                trainer.global_step, trainer.global_rank
            )

    # -- the dual step ---------------------------------------------------------------------
    def window_constraints(self, trainer: L.Trainer | None = None) -> list[float]:
        r""":math:`\bar c_l` of the current window (sums reduced across ranks when a trainer is
        given); layers without samples in the window get ``nan``."""
        sums = torch.tensor(self._sums, dtype=torch.float64)
        counts = torch.tensor(self._counts, dtype=torch.float64)
        in_sums = torch.tensor(self._in_sums, dtype=torch.float64)
        if trainer is not None and trainer.world_size > 1:
            device = trainer.strategy.root_device
            sums = trainer.strategy.reduce(sums.to(device), reduce_op="sum").cpu()
            counts = trainer.strategy.reduce(counts.to(device), reduce_op="sum").cpu()
            in_sums = trainer.strategy.reduce(in_sums.to(device), reduce_op="sum").cpu()
        means = sums / counts.clamp_min(1.0)
        means_in = in_sums / counts[:-1].clamp_min(1.0)
        c = _layer_constraints(means[1:], means_in, self.form, self.eps)
        seen = (counts[1:] > 0) & (counts[:-1] > 0)
        return [float(v) if bool(ok) else math.nan for v, ok in zip(c, seen, strict=True)]

    def dual_step(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        r""":math:`\nu_l \leftarrow [\nu_l + \eta_\nu \bar c_l]_+` on the window, then a new window."""
        c = self.window_constraints(trainer)
        self.nu = [
            nu if math.isnan(cl) else max(0.0, nu + self.dual_lr * cl)
            for nu, cl in zip(self.nu, c, strict=True)
        ]
        self.history.append(
            {"step": int(trainer.global_step), "nu": list(self.nu), "constraint": list(c)}
        )
        self._reset_window()
        self.steps_since_update = 0
        logs: dict[str, float] = {}
        satisfied = 0
        measured = 0
        for l, (nu, cl) in enumerate(zip(self.nu, c, strict=True), start=1):
            logs[f"descent/nu/{l:02d}"] = nu
            if not math.isnan(cl):
                logs[f"descent/constraint/{l:02d}"] = cl
                logs[f"descent/satisfied/{l:02d}"] = float(cl <= 0)
                satisfied += int(cl <= 0)
                measured += 1
        if measured:
            logs["descent/satisfied_fraction"] = satisfied / measured
        for name, v in logs.items():
            # identical on every rank (reduced above); sync_dist only silences Lightning
            per_step = self.dual_every_n_steps is not None
            pl_module.log(name, v, on_step=per_step, on_epoch=not per_step, sync_dist=True)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self.steps_since_update += 1
        for l, v in enumerate(self._last_batch, start=1):
            pl_module.log(f"descent/batch_constraint/{l:02d}", v, on_step=True, on_epoch=False)
        self._last_batch = []
        if self.dual_every_n_steps is not None and (
            self.steps_since_update >= self.dual_every_n_steps
        ):
            self.dual_step(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.dual_every_n_steps is None and self.steps_since_update > 0:
            self.dual_step(trainer, pl_module)

    # -- checkpointed state ----------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "nu": list(self.nu),
            "sums": list(self._sums),
            "counts": list(self._counts),
            "in_sums": list(self._in_sums),
            "steps_since_update": self.steps_since_update,
            "history": [dict(h) for h in self.history],
            "eps": self.eps,
            "form": self.form,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("form", self.form) != self.form:
            raise ValueError(
                f"The checkpoint's constraints use form={state_dict['form']!r}, this callback "
                f"form={self.form!r}; resume with the same settings."
            )
        self.nu = [float(v) for v in state_dict["nu"]]
        self._sums = [float(v) for v in state_dict["sums"]]
        self._counts = [float(v) for v in state_dict["counts"]]
        # checkpoints written before the perturbed-input sums: without noise they are the
        # previous layer's output sums
        self._in_sums = [float(v) for v in state_dict.get("in_sums", self._sums[:-1])]
        self.steps_since_update = int(state_dict["steps_since_update"])
        self.history = [dict(h) for h in state_dict["history"]]
