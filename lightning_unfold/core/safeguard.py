r"""Safeguarded unfolding: learned steps kept only while they make fixed-point progress.

Heaton, Chen, Wang & Yin, "Safeguarded learned convex optimization", AAAI 2023. Let :math:`T` be
an averaged operator whose fixed points solve the problem (ISTA with :math:`0 < \mu < 2/L`, ADMM,
...), and let a learned model propose at layer :math:`k` the candidate
:math:`y^{(k)} = \mathcal N_k(s^{(k-1)}; x)`. The safeguard takes

.. math::

    s^{(k)} = \begin{cases}
        y^{(k)} & \text{if } \|y^{(k)} - T(y^{(k)})\| \le (1-\delta)\,\mu_k
            \quad\text{(accept the learned step)},\\
        T(s^{(k-1)}) & \text{otherwise (fall back to the classical step)},
    \end{cases}

with :math:`\mu_1 = \|s^{(0)} - T(s^{(0)})\|` and, only when a candidate is accepted,

* ``"ema"``: :math:`\mu_{k+1} = \theta\,\|y^{(k)} - T(y^{(k)})\| + (1-\theta)\,\mu_k`;
* ``"geometric"``: :math:`\mu_{k+1} = (1-\delta)\,\mu_k`;
* ``"recent"``: :math:`\mu_{k+1} = \|y^{(k)} - T(y^{(k)})\|` (the most recent accepted residual);

on a fallback :math:`\mu_{k+1} = \mu_k`. Every decision is taken per sample. Accepted steps
shrink the fixed-point residual geometrically (:math:`\le (1-\delta)\mu_k`), fallbacks are steps
of a convergent method, so *for any learned weights* the safeguarded sequence converges to a
fixed point of :math:`T` (Heaton et al. 2023, Thm. 3.1) — provided the iteration continues:
``continued=True`` (or :meth:`SafeguardedModel.solve`) runs classical iterations after layer
:math:`K` until :math:`\|s - T(s)\| \le` ``tol``.

:math:`T` is the classical iteration of ``model.algorithm.classical_operator()`` (ISTA for the
whole LISTA family) with its classical parameters, on the problem passed here (by default the
model's own; pass the problem the data really come from to safeguard a model used out of
distribution). ``blocks`` restricts the residual to some blocks of a multi-block iterate (e.g.
FISTA's ``("s", "y")``: its momentum scalar :math:`t` is not a fixed-point variable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import Algorithm, ProblemSpec
from lightning_unfold.core.iterate import cast_precision, iterate_blocks, iterate_map, real_dtype
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import _Constants

__all__ = [
    "MU_UPDATES",
    "SafeguardResult",
    "SafeguardedModel",
    "classical_operator_of",
]

#: the three update rules of :math:`\mu` (Heaton et al. 2023, Table 1)
MU_UPDATES: tuple[str, ...] = ("ema", "geometric", "recent")


def classical_operator_of(model: Any) -> Algorithm[Any]:
    """The classical operator :math:`T` of ``model``'s algorithm, or a ``TypeError`` saying why not.

    Every :class:`~lightning_unfold.core.unfolded.UnfoldedModel` (all four paradigms and the
    classical solver) has one: its algorithm's :meth:`~Algorithm.classical_operator`. A black-box
    network maps ``x`` to :math:`\\hat s` in one shot and has neither iterates nor an operator.
    """
    from lightning_unfold.core.unfolded import BlackBoxModel, UnfoldedModel

    if isinstance(model, BlackBoxModel):
        raise TypeError(
            "BlackBoxModel has no classical operator to fall back on: it maps x to the estimate "
            "in one shot, without iterates s^(k) or an algorithm T, so the safeguard's test "
            "||y - T(y)|| and its fallback T(s^(k-1)) are undefined. Safeguard an UnfoldedModel "
            "(any paradigm) instead."
        )
    if not isinstance(model, UnfoldedModel):
        raise TypeError(
            f"{type(model).__name__} has no classical operator: the safeguard needs an "
            "UnfoldedModel (its .algorithm declares the classical iteration T and its .layer(s, "
            "x, k) the learned step); got a model without them."
        )
    return model.algorithm.classical_operator()


@dataclass(frozen=True)
class SafeguardResult:
    """What :meth:`SafeguardedModel.solve` found.

    Attributes:
        trajectory: the K safeguarded layers followed by the classical continuation.
        fallback: ``(K, B)`` booleans, True where layer k fell back to :math:`T(s^{(k-1)})`.
        iterations: classical iterations run after layer K (the slowest sample's).
        residual: ``(B,)`` final fixed-point residual :math:`\\|s - T(s)\\|`.
        converged: ``(B,)`` booleans, residual ``<= tol``.
    """

    trajectory: Trajectory[Any]
    fallback: Tensor
    iterations: int
    residual: Tensor
    converged: Tensor

    @property
    def fallback_fraction(self) -> list[float]:
        """Fraction of samples that fell back, per layer ``1..K``."""
        return [float(v) for v in self.fallback.double().mean(dim=1)]


def _where(mask: Tensor, a: Any, b: Any) -> Any:
    """Per-sample select between two iterates of the same structure (``mask`` of shape (B,))."""

    def pick(u: Tensor, v: Tensor) -> Tensor:
        m = mask.reshape(mask.shape[0], *([1] * (u.ndim - 1)))
        return torch.where(m, u, v)

    return iterate_map(pick, a, b)


class SafeguardedModel(nn.Module):
    r"""An unfolded model whose layers are safeguarded by the classical operator (module docstring).

    Args:
        model: any :class:`~lightning_unfold.core.unfolded.UnfoldedModel` (tied or untied, any
            paradigm, tensor or multi-block iterate).
        delta: :math:`\delta \in [0, 1)`, the required fraction of residual decrease.
        mu_update: ``"ema" | "geometric" | "recent"`` (:data:`MU_UPDATES`).
        theta: the EMA weight :math:`\theta \in (0, 1]` (``mu_update="ema"`` only).
        problem: the problem whose classical operator safeguards (default ``model.problem``).
        operator: the algorithm :math:`T` (default ``model.algorithm.classical_operator()``).
        blocks: iterate blocks the residual measures (default all).
        continued: ``forward`` appends classical iterations after layer K until the residual
            of every sample is ``<= tol`` or ``max_iter`` iterations.
        tol, max_iter: the continuation's stopping rule.

    The fallback decisions of the last forward pass are in :attr:`last_fallback` ``(K, B)``;
    :meth:`fallback_fraction` accumulates them over calls until :meth:`reset_stats`.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        delta: float = 0.01,
        mu_update: str = "ema",
        theta: float = 0.5,
        problem: ProblemSpec | None = None,
        operator: Algorithm[Any] | None = None,
        blocks: Sequence[str] | None = None,
        continued: bool = False,
        tol: float = 1e-8,
        max_iter: int = 2000,
    ) -> None:
        super().__init__()
        default_operator = classical_operator_of(model)
        if not (isinstance(delta, int | float) and 0.0 <= delta < 1.0):
            raise ValueError(
                f"delta must lie in [0, 1) (a candidate is accepted when its residual is at most "
                f"(1 - delta) mu_k), got {delta!r}."
            )
        if mu_update not in MU_UPDATES:
            raise ValueError(f"Unknown mu_update {mu_update!r}; valid: {list(MU_UPDATES)}.")
        if not 0.0 < theta <= 1.0:
            raise ValueError(f"theta (the EMA weight) must lie in (0, 1], got {theta!r}.")
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}.")
        if not isinstance(max_iter, int) or max_iter < 0:
            raise ValueError(f"max_iter must be an integer >= 0, got {max_iter!r}.")
        self.model = model
        self.problem: ProblemSpec = problem if problem is not None else model.problem  # type: ignore[assignment]
        self.operator = operator if operator is not None else default_operator
        self.delta, self.mu_update, self.theta = float(delta), mu_update, float(theta)
        self.blocks = None if blocks is None else tuple(blocks)
        self.continued, self.tol, self.max_iter = continued, float(tol), max_iter
        self.depth: int = model.depth  # type: ignore[assignment]
        dtype = real_dtype(next(iter(model.buffers()), torch.zeros(())).dtype)
        params = self.operator.classical_params(self.problem)
        self.classical = _Constants({**self.problem.constants(), **params}, dtype)
        self.last_fallback: Tensor | None = None
        self._fallback_sum: Tensor | None = None
        self._fallback_count = 0

    # -- the classical operator ------------------------------------------------------------
    def T(self, s: Any, x: Tensor, k: int) -> Any:
        """One classical iteration :math:`T(s)` (at iteration index ``k``)."""
        prec = real_dtype(x.dtype)
        p = {name: cast_precision(v, prec) for name, v in self.classical.as_dict().items()}
        return self.operator.step(s, x, p, k)

    def residual(self, s: Any, t_s: Any) -> Tensor:
        """Per-sample :math:`\\|s - T(s)\\|_2` over the measured blocks, shape ``(B,)``."""
        a, b = iterate_blocks(s), iterate_blocks(t_s)
        names = self.blocks if self.blocks is not None else tuple(a)
        unknown = set(names) - set(a)
        if unknown:
            raise ValueError(f"blocks {sorted(unknown)} are not blocks of the iterate {list(a)}.")
        if set(a) != set(b):
            raise ValueError(
                f"The model's iterate has blocks {list(a)} but the classical operator's has "
                f"{list(b)}; pass operator= an algorithm with the model's iterate."
            )
        sq = sum((a[n] - b[n]).reshape(a[n].shape[0], -1).abs().pow(2).sum(dim=1) for n in names)
        return torch.as_tensor(sq).sqrt()

    # -- forward ---------------------------------------------------------------------------
    def run_layers(self, x: Tensor, depth: int | None) -> tuple[list[Any], Tensor, Any, Tensor]:
        """The ``depth`` safeguarded layers: ``(iterates, fallback (depth, B), T(s^(depth)), mu)``."""
        model = self.model
        depth = model.check_depth(depth)  # type: ignore[operator]
        self.problem.validate_observation(x)
        s = model.algorithm.init(x, model.layer_params(1))  # type: ignore[operator,union-attr]
        t_s = self.T(s, x, 1)
        mu = self.residual(s, t_s)
        iterates = [s]
        fallback = torch.zeros(depth, x.shape[0], dtype=torch.bool, device=x.device)
        for k in range(1, depth + 1):
            y = model.layer(s, x, k)  # type: ignore[operator]
            t_y = self.T(y, x, k + 1)  # the residual uses the operator of the next iteration
            r_y = self.residual(y, t_y)
            accept = r_y <= (1.0 - self.delta) * mu
            fallback[k - 1] = ~accept
            s = _where(accept, y, t_s)
            if self.mu_update == "ema":
                new_mu = self.theta * r_y + (1.0 - self.theta) * mu
            elif self.mu_update == "geometric":
                new_mu = (1.0 - self.delta) * mu
            else:
                new_mu = r_y
            mu = torch.where(accept, new_mu, mu)
            iterates.append(s)
            # T(s^(k)) for the next layer: reuse T(y) where accepted, compute it where not
            t_s = t_y if bool(accept.all()) else _where(accept, t_y, self.T(s, x, k + 1))
        return iterates, fallback, t_s, mu

    @torch.no_grad()
    def _continue(
        self, x: Tensor, s: Any, t_s: Any, k0: int, tol: float, max_iter: int
    ) -> tuple[list[Any], Tensor, int]:
        """Classical iterations from ``s`` (``t_s = T(s)``) until the residual is ``<= tol``;
        not differentiated (a continuation of thousands of steps keeps no autograd graph)."""
        its: list[Any] = []
        res = self.residual(s, t_s)
        n = 0
        while n < max_iter and bool((res > tol).any()):
            n += 1
            s = t_s
            its.append(s)
            t_s = self.T(s, x, k0 + n + 1)
            res = self.residual(s, t_s)
        return its, res, n

    def _record(self, fallback: Tensor) -> None:
        self.last_fallback = fallback.detach()
        counts = fallback.detach().double().sum(dim=1)
        if self._fallback_sum is None or self._fallback_sum.shape != counts.shape:
            self._fallback_sum, self._fallback_count = counts, 0
        else:
            self._fallback_sum = self._fallback_sum + counts
        self._fallback_count += fallback.shape[1]

    def forward(self, x: Tensor, depth: int | None = None) -> Trajectory[Any]:
        """The safeguarded trajectory (plus the classical continuation when ``continued``)."""
        iterates, fallback, t_s, _ = self.run_layers(x, depth)  # type: ignore[arg-type]
        self._record(fallback)
        if self.continued:
            more, _, _ = self._continue(
                x, iterates[-1], t_s, len(iterates) - 1, self.tol, self.max_iter
            )
            iterates += more
        est = self.model.algorithm.estimate  # type: ignore[union-attr]
        return Trajectory(tuple(iterates), tuple(est(s) for s in iterates))

    @torch.no_grad()
    def solve(
        self, x: Tensor, *, tol: float | None = None, max_iter: int | None = None
    ) -> SafeguardResult:
        """K safeguarded layers, then classical iterations until :math:`\\|s - T(s)\\| \\le` ``tol``."""
        tol = self.tol if tol is None else float(tol)
        max_iter = self.max_iter if max_iter is None else int(max_iter)
        iterates, fallback, t_s, _ = self.run_layers(x, None)  # type: ignore[arg-type]
        self._record(fallback)
        more, res, n = self._continue(x, iterates[-1], t_s, len(iterates) - 1, tol, max_iter)
        iterates += more
        est = self.model.algorithm.estimate  # type: ignore[union-attr]
        traj = Trajectory(tuple(iterates), tuple(est(s) for s in iterates))
        return SafeguardResult(traj, fallback, n, res, res <= tol)

    # -- statistics ------------------------------------------------------------------------
    def fallback_fraction(self) -> list[float]:
        """Fraction of samples that fell back per layer ``1..K``, over all calls since reset."""
        if self._fallback_sum is None or self._fallback_count == 0:
            raise ValueError("No forward pass has run since the last reset_stats().")
        return [float(v) / self._fallback_count for v in self._fallback_sum]

    def reset_stats(self) -> None:
        """Forget the accumulated fallback counts."""
        self._fallback_sum, self._fallback_count = None, 0

    def objective(self, s: Any, x: Tensor) -> Tensor:
        """The wrapped model's objective (per sample)."""
        return self.model.objective(s, x)  # type: ignore[operator]

    def extra_repr(self) -> str:
        return (
            f"operator={type(self.operator).__name__}, delta={self.delta:g}, "
            f"mu_update={self.mu_update}, continued={self.continued}"
        )
