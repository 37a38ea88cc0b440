r"""Unfolded models: one algorithm declaration, four paradigms, plus two baselines.

Given an :class:`~lightning_unfold.core.algorithm.Algorithm` and a problem, an
:class:`UnfoldedModel` of depth :math:`K` computes the trajectory
:math:`s^{(0)} \to s^{(1)} \to \dots \to s^{(K)}` with one of the four paradigms of the survey
(Shlezinger et al. 2025):

``"hyperparameters"``
    :math:`s^{(k)} = T(s^{(k-1)}; \theta_o, \theta_h^k)` — only hyperparameters learned per layer.
``"objective"``
    :math:`s^{(k)} = T(s^{(k-1)}; \theta_o^k, \theta_h^k)` — objective parameters learned as well,
    possibly in a classical reparameterisation (``variant``: LISTA, LISTA-CP, ALISTA, ...).
``"correction"``
    :math:`s^{(k)} = T(s^{(k-1)}; \theta) + \Delta(s^{(k-1)}, x; \phi_k)` — classical step plus a
    learned correction network, zero at initialisation (shared or per layer).
``"inductive_bias"``
    :math:`s^{(k)} = N_k(s^{(k-1)}, x)` — each iteration replaced by a compact network that keeps the
    iterate's meaning (DeepSIC-style), supervised through the same estimate.

Initialised from classical values, the first three reproduce the classical solver exactly.
With ``tied=True`` a single parameter set serves every layer and the model runs at any depth.
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import Algorithm, Constraint, ParamSpec, ProblemSpec, Role
from lightning_unfold.core.iterate import (
    as_real_rows,
    cast_precision,
    iterate_flatten,
    iterate_unflatten,
)
from lightning_unfold.core.trajectory import Trajectory

__all__ = [
    "PARADIGMS",
    "BlackBoxModel",
    "ClassicalSolver",
    "ConvergenceWarning",
    "SolveResult",
    "SolveStatus",
    "UnfoldedModel",
    "check_paradigm",
    "promote_hyperparameters",
]

PARADIGMS: tuple[str, ...] = ("hyperparameters", "objective", "correction", "inductive_bias")
_TRAINABLE: dict[str, frozenset[Role]] = {
    "hyperparameters": frozenset({Role.HYPER}),
    "objective": frozenset({Role.HYPER, Role.OBJECTIVE}),
    "correction": frozenset(),
    "inductive_bias": frozenset(),
}


def check_paradigm(paradigm: str) -> str:
    if paradigm not in PARADIGMS:
        raise ValueError(f"Unknown paradigm {paradigm!r}; valid paradigms: {list(PARADIGMS)}.")
    return paradigm


def _check_depth(depth: int) -> int:
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
        raise ValueError(
            f"depth (number of unfolded iterations K) must be an integer >= 1, got {depth!r}."
        )
    return depth


class _Constants(nn.Module):
    """Buffers holding the problem constants and fixed parameters (move with ``.to()``); complex
    constants stay complex in the model's precision (float32 → complex64)."""

    def __init__(self, values: Mapping[str, Tensor], dtype: torch.dtype) -> None:
        super().__init__()
        self.names = tuple(values)
        for name, v in values.items():
            self.register_buffer(name, cast_precision(v.detach(), dtype).clone())

    def as_dict(self) -> dict[str, Tensor]:
        return {name: getattr(self, name) for name in self.names}


class _MLP(nn.Sequential):
    """Two-layer perceptron; with ``zero_last`` its output is exactly 0 at initialisation."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, *, zero_last: bool) -> None:
        last = nn.Linear(hidden, out_dim)
        if zero_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        super().__init__(nn.Linear(in_dim, hidden), nn.ReLU(), last)


class _ResidualLayer(nn.Module):
    """Default inductive-bias layer: :math:`s^{(k)} = s^{(k-1)} + \\mathrm{MLP}_k([s^{(k-1)}, x])`."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.mlp = _MLP(in_dim, hidden, out_dim, zero_last=False)

    def forward(self, features: Tensor, flat_iterate: Tensor) -> Tensor:
        return flat_iterate + self.mlp(features)


class UnfoldedModel(nn.Module):
    r"""An algorithm unfolded to ``depth`` layers under one of :data:`PARADIGMS`.

    Args:
        algorithm: the classical solver's declaration.
        problem: the problem whose constants (dictionary, weights) the iteration uses.
        depth: number of unfolded iterations K (>= 1).
        paradigm: one of :data:`PARADIGMS`.
        variant: for ``paradigm="objective"``, the reparameterisation (e.g. ``"lista_cp"``).
        tied: one parameter set (and one network) shared by all layers.
        hidden: width of correction / inductive-bias networks.
        shared_correction: one correction network Δ for all layers (even when untied).
        learn_hyperparameters: with ``paradigm="correction"``, also learn the solver's
            hyperparameters θh per layer (K copies, or one when tied), as the hyperparameters
            paradigm holds them: :math:`s^{(k)} = T(s^{(k-1)}; \theta_{h,k}) + \\Delta(s^{(k-1)},
            x; \varphi_k)`. Initialised at the classical values, so the model still reproduces
            the classical solver before training. Learned by default in the hyperparameters and
            objective paradigms; meaningless for the inductive-bias paradigm (refused).
        dtype: precision of parameters and constants: ``float32`` or ``float64``; complex values
            stay complex in that precision (``complex64`` / ``complex128``). Set the precision
            here rather than with ``model.to(dtype)``: PyTorch's ``Module.to(float dtype)``
            would discard the imaginary part of complex parameters.
    """

    def __init__(
        self,
        algorithm: Algorithm[Any],
        problem: ProblemSpec,
        depth: int,
        paradigm: str = "hyperparameters",
        *,
        variant: str | None = None,
        tied: bool = False,
        hidden: int = 64,
        shared_correction: bool = False,
        learn_hyperparameters: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.depth = _check_depth(depth)
        self.paradigm = check_paradigm(paradigm)
        if learn_hyperparameters and paradigm == "inductive_bias":
            raise ValueError(
                "learn_hyperparameters=True applies to paradigm='correction' (the hyperparameters "
                "and objective paradigms learn them anyway); the inductive_bias paradigm replaces "
                "the iteration and has no hyperparameters to learn."
            )
        if variant is not None and paradigm != "objective":
            raise ValueError(f"variant={variant!r} applies to paradigm='objective' only.")
        self.algorithm = algorithm.objective_form(variant) if paradigm == "objective" else algorithm
        self.problem = problem
        self.tied = tied
        self.specs: tuple[ParamSpec, ...] = self.algorithm.param_specs(problem)
        classical = self.algorithm.classical_params(problem)
        missing = {s.name for s in self.specs} - set(classical)
        if missing:
            raise ValueError(f"{type(self.algorithm).__name__}.classical_params lacks {missing}.")
        constants = problem.constants()
        clash = set(constants) & set(classical)
        if clash:
            raise ValueError(f"Parameter names {clash} clash with problem constants.")
        n_sets = 1 if tied else depth
        trainable = _TRAINABLE[paradigm] | (
            frozenset({Role.HYPER}) if learn_hyperparameters else frozenset()
        )
        self.learned = nn.ModuleDict()
        fixed: dict[str, Tensor] = dict(constants)
        for spec in self.specs:
            value = cast_precision(classical[spec.name], dtype)
            if spec.role in trainable:
                self.learned[spec.name] = nn.ParameterList(
                    [nn.Parameter(value.clone()) for _ in range(n_sets)]
                )
            else:
                fixed[spec.name] = value
        self.constants = _Constants(fixed, dtype)
        self._constraint = {s.name: s.constraint for s in self.specs}
        self.nets: nn.ModuleList | None = None
        if paradigm in ("correction", "inductive_bias"):
            self.nets = self._build_nets(
                problem,
                hidden,
                1 if (tied or (shared_correction and paradigm == "correction")) else depth,
                dtype,
            )

    # -- construction helpers --------------------------------------------------------------
    def _probe(self, dtype: torch.dtype) -> tuple[int, int]:
        x, _ = self.problem.sample(2, seed=0, dtype=dtype)
        p = self.layer_params(1)
        s0 = self.algorithm.init(x, p)
        s1 = self.algorithm.step(s0, x, p, 1)
        return self.algorithm.features(s1, x, p).shape[1], iterate_flatten(s1).shape[1]

    def _build_nets(
        self, problem: ProblemSpec, hidden: int, count: int, dtype: torch.dtype
    ) -> nn.ModuleList:
        f_dim, out_dim = self._probe(dtype)
        nets = []
        for _ in range(count):
            if self.paradigm == "correction":
                net = self.algorithm.make_correction_net(problem, f_dim, out_dim, hidden)
                net = net if net is not None else _MLP(f_dim, hidden, out_dim, zero_last=True)
            else:
                net = self.algorithm.make_inductive_bias_net(problem, f_dim, out_dim, hidden)
                net = net if net is not None else _ResidualLayer(f_dim, hidden, out_dim)
            nets.append(net.to(dtype))
        return nn.ModuleList(nets)

    # -- parameters per layer --------------------------------------------------------------
    def layer_params(self, k: int) -> dict[str, Tensor]:
        """All parameters and constants that layer ``k`` (1-based) uses, constraints applied."""
        idx = 0 if self.tied else k - 1
        p = self.constants.as_dict()
        for name, plist in self.learned.items():
            p[name] = self._constraint[name].project(plist[idx])  # type: ignore[index]
        return p

    @torch.no_grad()
    def project_parameters_(self) -> None:
        """Clamp the raw learned parameters into their valid sets, in place (projected gradient).

        The forward pass already applies each constraint, but a raw value that an optimizer
        step pushed outside the set (e.g. a threshold below 0) gets a zero gradient through
        the clamp and would stay there for good ("dead" thresholds). Projecting the raw value
        back after every step keeps it on the boundary, where the gradient passes again, so
        the iteration is still  theta <- P_C(theta - lr * grad).
        """
        for name, plist in self.learned.items():
            constraint = self._constraint[name]
            if constraint is not Constraint.NONE:
                for p in plist:  # type: ignore[union-attr]
                    p.copy_(constraint.project(p))

    def layer_parameters(self, k: int) -> list[nn.Parameter]:
        """The trainable tensors that belong to layer ``k`` only (empty when tied)."""
        if self.tied:
            return []
        out: list[nn.Parameter] = [plist[k - 1] for plist in self.learned.values()]  # type: ignore[index]
        if self.nets is not None and len(self.nets) == self.depth:
            out.extend(self.nets[k - 1].parameters())
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        """Trainable tensors used by every layer (tied parameters, a shared network)."""
        per_layer = {id(p) for k in range(1, self.depth + 1) for p in self.layer_parameters(k)}
        return [p for p in self.parameters() if id(p) not in per_layer]

    def stacked(self, name: str) -> Tensor:
        """Parameter ``name`` of every layer stacked ``(K, ...)`` (for checks and plots)."""
        return torch.stack([self.layer_params(k)[name] for k in range(1, self.depth + 1)])

    # -- forward ---------------------------------------------------------------------------
    def layer(self, s: Any, x: Tensor, k: int) -> Any:
        """Layer ``k`` (1-based) applied to the iterate ``s``: :math:`s^{(k)}` from :math:`s^{(k-1)}`.

        The one place a layer's mapping is written; :meth:`forward` and wrappers that step
        layer by layer (e.g. :class:`~lightning_unfold.core.safeguard.SafeguardedModel`) use it.
        """
        alg = self.algorithm
        p = self.layer_params(k)
        if self.paradigm == "inductive_bias":
            assert self.nets is not None
            net = self.nets[0 if len(self.nets) == 1 else k - 1]
            return iterate_unflatten(net(alg.features(s, x, p), iterate_flatten(s)), s)
        if self.nets is not None:
            net = self.nets[0 if len(self.nets) == 1 else k - 1]
            return alg.corrected_step(s, x, p, k, net)
        return alg.step(s, x, p, k)

    def check_depth(self, depth: int | None) -> int:
        """The depth a forward pass runs at (default K); an untied model cannot run deeper."""
        depth = self.depth if depth is None else _check_depth(depth)
        if depth > self.depth and not self.tied:
            raise ValueError(
                f"This untied model has {self.depth} layers and cannot run {depth}; "
                "train with tied=True to run at other depths."
            )
        return depth

    def forward(
        self,
        x: Tensor,
        depth: int | None = None,
        *,
        perturb: Callable[[int, Any], Any] | None = None,
    ) -> Trajectory[Any]:
        r"""Run ``depth`` layers (default K) on the batch ``x`` and return the whole trajectory.

        ``perturb(k, s)``, if given, perturbs each *intermediate* iterate :math:`s^{(k)}`,
        :math:`1 \le k < ` ``depth``, before the next layer consumes it (noise injection during
        training; Hadou et al. 2024): layer :math:`k+1` receives ``perturb(k, s^(k))``. The
        trajectory records each layer's own output :math:`s^{(k)}`, unperturbed.
        """
        depth = self.check_depth(depth)
        self.problem.validate_observation(x)
        alg = self.algorithm
        s = alg.init(x, self.layer_params(1))
        iterates = [s]
        for k in range(1, depth + 1):
            s = self.layer(s, x, k)
            iterates.append(s)
            if perturb is not None and k < depth:
                s = perturb(k, s)
        return Trajectory(tuple(iterates), tuple(alg.estimate(it) for it in iterates))

    def predict(self, x: Tensor, depth: int | None = None) -> Tensor:
        """The estimate after ``depth`` layers (default K), for inference: the same layers as
        :meth:`forward`, but only the current iterate is kept, so memory does not grow with the
        depth and nothing is stored that the caller does not read (for a 100-iteration
        classical solver, keeping the trajectory costs more than the iterations themselves).
        """
        depth = self.check_depth(depth)
        self.problem.validate_observation(x)
        s = self.algorithm.init(x, self.layer_params(1))
        for k in range(1, depth + 1):
            s = self.layer(s, x, k)
        return self.algorithm.estimate(s)

    def objective(self, s: Any, x: Tensor) -> Tensor:
        """The problem's own objective at iterate ``s`` (per sample)."""
        return self.algorithm.objective(s, x, self.constants.as_dict())

    def extra_repr(self) -> str:
        return (
            f"algorithm={type(self.algorithm).__name__}, paradigm={self.paradigm}, "
            f"depth={self.depth}, tied={self.tied}"
        )


class SolveStatus(enum.Enum):
    """Why :meth:`ClassicalSolver.solve` stopped; ``message`` says it in a sentence."""

    CONVERGED = "converged"
    MAX_ITER = "max_iter"

    @property
    def message(self) -> str:
        if self is SolveStatus.CONVERGED:
            return "The relative change of the estimate fell to the tolerance."
        return (
            "The maximum number of iterations was reached before the relative change fell to the "
            "tolerance; increase max_iter (or loosen tol) if the solution is needed to that "
            "accuracy."
        )


class ConvergenceWarning(UserWarning):
    """A classical solver stopped at its iteration limit without reaching its tolerance."""


@dataclass(frozen=True)
class SolveResult:
    r"""Outcome of :meth:`ClassicalSolver.solve`.

    Attributes:
        trajectory: the iterates (all of them with ``keep=True``, else the first and the last).
        iterations: iterations run.
        status: :attr:`SolveStatus.CONVERGED` or :attr:`SolveStatus.MAX_ITER`.
        final_change: the last relative change :math:`\max_b \|\hat s^{(k)}_b - \hat
            s^{(k-1)}_b\| / \|\hat s^{(k)}_b\|`.
        tol: the tolerance it was compared with.
    """

    trajectory: Trajectory[Any]
    iterations: int
    status: SolveStatus
    final_change: float
    tol: float

    @property
    def converged(self) -> bool:
        """Whether the solver stopped at its tolerance."""
        return self.status is SolveStatus.CONVERGED

    def __repr__(self) -> str:
        return (
            f"SolveResult(iterations={self.iterations}, status={self.status.value}, "
            f"final_change={self.final_change:.3e}, tol={self.tol:.1e})"
        )


class ClassicalSolver(UnfoldedModel):
    """The classical solver as a (parameter-free) model: K iterations, or to a tolerance."""

    def __init__(
        self,
        algorithm: Algorithm[Any],
        problem: ProblemSpec,
        depth: int,
        *,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__(algorithm, problem, depth, "hyperparameters", dtype=dtype)
        # classical values are constants, not trainable parameters
        for name in list(self.learned):
            plist = self.learned.pop(name)
            self.constants.register_buffer(name, plist[0].detach().clone())  # type: ignore[index]
            self.constants.names = (*self.constants.names, name)
        self.tied = True

    @torch.no_grad()
    def solve(
        self,
        x: Tensor,
        *,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        keep: bool = False,
        warn: bool = True,
    ) -> SolveResult:
        r"""Iterate until :math:`\max_b \|\hat s^{(k)}_b - \hat s^{(k-1)}_b\| / \max(\|\hat s^{(k)}_b\|,
        10^{-12}) \le` ``tol`` or ``max_iter`` iterations; ``keep`` stores every iterate.

        Stopping at ``max_iter`` unconverged gives ``status=SolveStatus.MAX_ITER`` and a
        :class:`ConvergenceWarning` (``warn=False``: the status only, for callers that stop early
        on purpose and read the status themselves)."""
        self.problem.validate_observation(x)
        alg, p = self.algorithm, self.layer_params(1)
        s = alg.init(x, p)
        est = alg.estimate(s)
        iterates, change = [s], float("inf")
        for k in range(1, max_iter + 1):
            s = alg.step(s, x, p, k)
            new_est = alg.estimate(s)
            num = torch.linalg.vector_norm((new_est - est).flatten(1), dim=1)
            den = torch.linalg.vector_norm(new_est.flatten(1), dim=1).clamp_min(1e-12)
            change = float((num / den).max())
            est = new_est
            if keep:
                iterates.append(s)
            if change != change:  # NaN
                raise FloatingPointError(
                    f"{type(alg).__name__} produced NaN at iteration {k}; check the step size."
                )
            if change <= tol:
                break
        if not keep:
            iterates.append(s)
        traj = Trajectory(tuple(iterates), tuple(alg.estimate(i) for i in iterates))
        status = SolveStatus.CONVERGED if change <= tol else SolveStatus.MAX_ITER
        if warn and status is SolveStatus.MAX_ITER:
            warnings.warn(
                f"{type(alg).__name__} stopped after max_iter={k} iterations with relative change "
                f"{change:.3e} > tol={tol:g}. {status.message}",
                ConvergenceWarning,
                stacklevel=2,
            )
        return SolveResult(traj, k, status, change, tol)


class BlackBoxModel(nn.Module):
    """A black-box baseline: a network from the observation to the estimate.

    By default an MLP on the flattened observation whose hidden width is chosen so that its
    parameter count is close to ``target_params`` (the unfolded model it is compared with);
    ``net`` replaces it (e.g. :meth:`Algorithm.make_black_box_net`, a convolutional network for
    matrix-valued observations) and must map ``(B, *x_shape)`` to ``B`` estimates of the shape the
    problem's metrics read (not necessarily the target's: a detector's estimate is a probability
    vector per symbol index; a graph network's follows the observation's size). Its trajectory is
    ``[0, estimate]``. ``objective(estimate, x)`` is the per-sample objective of an estimate
    (:meth:`Algorithm.estimate_objective`), used when the black box is trained unsupervised.
    """

    def __init__(
        self,
        problem: ProblemSpec,
        target_params: int,
        *,
        n_hidden_layers: int = 2,
        net: nn.Module | None = None,
        algorithm: Algorithm[Any] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.problem = problem
        self.algorithm = algorithm
        x, target = problem.sample(1, seed=0)
        self.in_dim, self.out_shape = as_real_rows(x).shape[1], tuple(target.shape[1:])
        #: complex estimates are produced as (real, imaginary) pairs by the default MLP
        self.complex_out = target.is_complex()
        self.flatten = net is None
        if net is None:
            out_dim = as_real_rows(target[:1]).shape[1]
            h = self._width(self.in_dim, out_dim, n_hidden_layers, max(target_params, 1))
            layers: list[nn.Module] = [nn.Linear(self.in_dim, h), nn.ReLU()]
            for _ in range(n_hidden_layers - 1):
                layers += [nn.Linear(h, h), nn.ReLU()]
            layers.append(nn.Linear(h, out_dim))
            net = nn.Sequential(*layers)
        self.net = net.to(dtype)
        self.depth = 1

    @staticmethod
    def _width(i: int, o: int, n: int, target: int) -> int:
        def count(h: int) -> int:
            return (i + 1) * h + (n - 1) * (h + 1) * h + (h + 1) * o

        lo, hi = 1, 1
        while count(hi) < target and hi < 1 << 20:
            hi *= 2
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (mid + 1, hi) if count(mid) < target else (lo, mid)
        return lo

    def forward(self, x: Tensor, depth: int | None = None) -> Trajectory[Tensor]:
        self.problem.validate_observation(x)
        if self.flatten:
            out = self.net(as_real_rows(x))
            if self.complex_out:
                out = out.reshape(x.shape[0], *self.out_shape, 2).contiguous()
                out = torch.view_as_complex(out)
            out = out.reshape(x.shape[0], *self.out_shape)
        else:  # a structured net returns estimates of its own shape (e.g. another network size)
            out = self.net(x)
        return Trajectory((torch.zeros_like(out), out), (torch.zeros_like(out), out))

    def predict(self, x: Tensor, depth: int | None = None) -> Tensor:
        """The estimate (inference; as :meth:`UnfoldedModel.predict`)."""
        return self.forward(x, depth).estimates[-1]

    def objective(self, estimate: Tensor, x: Tensor) -> Tensor:
        """Per-sample objective of an estimate (the algorithm's :meth:`~Algorithm.estimate_objective`)."""
        if self.algorithm is None:
            raise ValueError(
                "This black box was built without an algorithm, so it has no objective to train "
                "on; pass algorithm=... or train it supervised."
            )
        # not buffers: black-box checkpoints hold the network only
        c = {k: v.to(estimate.device, estimate.dtype) for k, v in self.problem.constants().items()}
        return self.algorithm.estimate_objective(estimate, x, c)

    def layer_parameters(self, k: int) -> Iterator[nn.Parameter]:
        return iter(())


def promote_hyperparameters(model: nn.Module) -> nn.Module:
    """Make a trained ``correction`` model learn its hyperparameters per layer too.

    Moves every :attr:`~lightning_unfold.core.algorithm.Role.HYPER` constant of ``model`` into
    ``model.learned`` as K (or 1, when tied) trainable copies, exactly as the hyperparameters
    paradigm holds them, so :meth:`~UnfoldedModel.layer_params`,
    :meth:`~UnfoldedModel.layer_parameters` and the schedules see them; the values are unchanged,
    so the model computes what it computed before. A model built with
    ``learn_hyperparameters=True`` starts this way; this function is for a model that already
    holds trained values (e.g. a correction added to a trained hyperparameters model).
    Returns ``model``.
    """
    if not isinstance(model, UnfoldedModel) or model.paradigm != "correction":
        raise TypeError(
            "promote_hyperparameters needs an UnfoldedModel with paradigm='correction'."
        )
    n_sets = 1 if model.tied else model.depth
    for spec in model.specs:
        if spec.role is Role.HYPER and spec.name not in model.learned:
            value = getattr(model.constants, spec.name)
            model.learned[spec.name] = nn.ParameterList(
                [nn.Parameter(value.detach().clone()) for _ in range(n_sets)]
            )
    return model
