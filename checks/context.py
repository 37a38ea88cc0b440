r"""Normalising what a check receives: a trajectory producer, a problem and data.

A *trajectory producer* is anything that maps a batch of observations ``x`` to the iterates
:math:`s^{(0)}, \dots, s^{(K)}`:

* an :class:`~lightning_unfold.training.UnfoldedModule` (its ``.model`` is used),
* an :class:`~lightning_unfold.core.UnfoldedModel`, a
  :class:`~lightning_unfold.core.ClassicalSolver` or any ``nn.Module`` returning a
  :class:`~lightning_unfold.core.Trajectory`,
* any callable ``x -> [s0, ..., sK]`` (a plain PyTorch model, another library's network); the
  list is wrapped with :meth:`Trajectory.from_iterates`.

:func:`as_trajectory_fn` turns each into one function ``x -> Trajectory``; :class:`CheckContext`
bundles it with the problem and the data and caches what several checks share (the trajectory,
the LASSO reference solutions), so a suite runs the model once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unfold.core.algorithm import Algorithm, ProblemSpec, SolverTheory
from lightning_unfold.core.iterate import cast_precision, iterate_map, real_dtype
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import BlackBoxModel, ClassicalSolver, UnfoldedModel

from .result import NotApplicableError

__all__ = [
    "DATA_SEED_STREAM",
    "CheckContext",
    "as_check_data",
    "as_trajectory_fn",
    "describe_model",
    "prepare",
    "unwrap_model",
]

#: seed stream of the data drawn when a check is given a problem but no data; it is the
#: test split of ``SyntheticDataModule(problem, seed=0)`` (stream 3), never seen in training.
DATA_SEED_STREAM = 3


def unwrap_model(model: Any) -> Any:
    """The trajectory producer inside a Lightning wrapper (``module.model``), else ``model``."""
    inner = getattr(model, "model", None)
    if isinstance(model, nn.Module) and isinstance(inner, nn.Module) and hasattr(model, "hparams"):
        return inner
    return model


def _model_dtype(model: Any) -> torch.dtype | None:
    """The model's real precision (float32 for complex64 parameters), or ``None``."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.is_floating_point() or t.is_complex():
                return real_dtype(t.dtype)
    return None


def real64(t: Tensor, start_dim: int = 1) -> np.ndarray:
    """``t`` as float64 numpy, flattened from ``start_dim``; a complex tensor becomes its
    (real, imaginary) pairs, which keeps every Euclidean norm and distance the checks measure."""
    t = t.detach().to("cpu")
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj().to(torch.complex128))
    return t.to(torch.float64).flatten(start_dim).numpy()


def as_trajectory_fn(model: Any) -> Callable[[Tensor], Trajectory[Any]]:
    """One function ``x -> Trajectory`` for any trajectory producer (see the module docstring).

    The returned function runs without gradients, in eval mode (restored afterwards), with ``x``
    cast to the model's floating dtype when the model is an ``nn.Module``.

    Raises:
        TypeError: if ``model`` is not callable, or its output is neither a ``Trajectory`` nor a
            list/tuple of iterates.
    """
    inner = unwrap_model(model)
    if not callable(inner):
        raise TypeError(
            f"A check needs a trajectory producer: a model of lightning_unfold or any callable "
            f"x -> [s0, ..., sK]; got a {type(inner).__name__}."
        )
    dtype = _model_dtype(inner)

    def run(x: Tensor) -> Trajectory[Any]:
        xin = cast_precision(x, dtype) if dtype is not None else x
        was_training = inner.training if isinstance(inner, nn.Module) else None
        if isinstance(inner, nn.Module):
            inner.eval()
        try:
            with torch.no_grad():
                out = inner(xin)
        finally:
            if isinstance(inner, nn.Module) and was_training:
                inner.train()
        if isinstance(out, Trajectory):
            return out
        if isinstance(out, (list, tuple)) and len(out) > 0:
            return Trajectory.from_iterates(list(out))
        raise TypeError(
            f"{type(inner).__name__} returned a {type(out).__name__}; a trajectory producer must "
            "return a lightning_unfold Trajectory or a non-empty list [s0, s1, ..., sK] of iterates "
            "(all layers, not only the last)."
        )

    return run


def as_check_data(
    data: Any, problem: ProblemSpec | None, *, n_samples: int = 256, seed: int = 0
) -> tuple[Tensor, Tensor | None]:
    """Normalise ``data`` to ``(x, target)`` tensors (``target`` may be ``None``).

    Accepts a ``(x, target)`` pair, a tensor ``x`` alone, a LightningDataModule-like object (its
    test split, else its validation split; at most ``n_samples`` samples), an iterable of
    ``(x, target)`` batches, or ``None`` (then ``n_samples`` samples are drawn from ``problem``
    on :data:`DATA_SEED_STREAM` with ``seed``). Unlabelled rows (NaN targets) are dropped from
    the targets' use by the checks that need labels.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1; got {n_samples}.")
    if data is None:
        if problem is None:
            raise ValueError(
                "No data and no problem: pass data=(x, target), a datamodule, or a problem to "
                "draw samples from."
            )
        return problem.sample(n_samples, seed=(DATA_SEED_STREAM, seed), dtype=torch.float64)
    if isinstance(data, Tensor):
        return data[:n_samples], None
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        x, t = data
        if t is not None and not isinstance(t, Tensor):
            raise TypeError(f"target must be a tensor or None; got {type(t).__name__}.")
        if t is not None and t.shape[0] != x.shape[0]:
            raise ValueError(
                f"x has {x.shape[0]} samples but target has {t.shape[0]}; pass one target per x."
            )
        return x[:n_samples], None if t is None else t[:n_samples]
    loaders: list[Callable[[], Iterable[Any]]] = []
    for name in ("test_dataloader", "val_dataloader"):
        if hasattr(data, name):
            loaders.append(getattr(data, name))
    if loaders:
        if hasattr(data, "setup"):
            data.setup("test")
        batches: Iterable[Any] = loaders[0]()
    elif isinstance(data, Iterable):
        batches = data
    else:
        raise TypeError(
            f"Cannot read data from a {type(data).__name__}: pass (x, target), x, a datamodule "
            "or an iterable of (x, target) batches."
        )
    xs: list[Tensor] = []
    ts: list[Tensor] = []
    count = 0
    for batch in batches:
        if isinstance(batch, Tensor):
            xb, tb = batch, None
        else:
            xb, tb = batch[0], batch[1]
        xs.append(xb)
        if tb is not None:
            ts.append(tb)
        count += xb.shape[0]
        if count >= n_samples:
            break
    if not xs:
        raise ValueError("The data yielded no batches.")
    x = torch.cat(xs)[:n_samples]
    target = torch.cat(ts)[:n_samples] if len(ts) == len(xs) else None
    return x, target


def describe_model(model: Any) -> dict[str, Any]:
    """JSON-friendly description of a model for reports (class, paradigm, depth, parameters)."""
    info: dict[str, Any] = {"class": type(model).__name__}
    hp = getattr(model, "hparams", None)
    if isinstance(hp, Mapping):
        for key in (
            "algorithm",
            "paradigm",
            "variant",
            "depth",
            "tied",
            "supervision",
            "formulation",
        ):
            if key in hp:
                info[key] = hp[key]
        prob = hp.get("problem")
        if isinstance(prob, Mapping):
            args = {k: v for k, v in dict(prob.get("init_args", {})).items() if k != "dictionary"}
            info["problem"] = {"class_path": prob.get("class_path"), "init_args": args}
    inner = unwrap_model(model)
    if inner is not model:
        info["model_class"] = type(inner).__name__
    if isinstance(inner, UnfoldedModel):
        info.setdefault("paradigm", "classical" if isinstance(inner, ClassicalSolver) else None)
        if info["paradigm"] is None:
            info["paradigm"] = inner.paradigm
        info["algorithm_class"] = type(inner.algorithm).__name__
        info["depth"] = inner.depth
        info.setdefault("tied", inner.tied)
    if isinstance(inner, nn.Module):
        info["trainable_parameters"] = sum(p.numel() for p in inner.parameters() if p.requires_grad)
    return info


def _problem_of(model: Any) -> ProblemSpec | None:
    for obj in (model, unwrap_model(model)):
        prob = getattr(obj, "problem", None)
        if isinstance(prob, ProblemSpec):
            return prob
    return None


@dataclass
class CheckContext:
    """A model, its problem and a batch of data, with caches shared by the checks of a suite.

    Build it with :func:`prepare`. Every check function accepts a context in place of the model
    (then its ``problem`` and ``data`` arguments are ignored).
    """

    model: Any
    problem: ProblemSpec | None
    x: Tensor
    target: Tensor | None
    run: Callable[[Tensor], Trajectory[Any]]
    _trajectory: Trajectory[Any] | None = field(default=None, repr=False)
    _cache: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def inner(self) -> Any:
        """The trajectory producer itself (the ``.model`` of a Lightning module)."""
        return unwrap_model(self.model)

    @property
    def trajectory(self) -> Trajectory[Any]:
        """The model's trajectory on :attr:`x` (computed once)."""
        if self._trajectory is None:
            self._trajectory = self.run(self.x)
        return self._trajectory

    def estimates64(self) -> np.ndarray:
        """Estimates of every layer as float64 numpy, shape ``(K+1, B, D)`` (flattened)."""
        key = "estimates64"
        if key not in self._cache:
            arr = real64(self.trajectory.stacked_estimates(), 2)
            if not np.all(np.isfinite(arr)):
                k = int(np.argwhere(~np.isfinite(arr))[0][0])
                raise FloatingPointError(
                    f"The model's estimates contain NaN/Inf from layer {k} on; the model has "
                    "diverged (lower the learning rate or check the step sizes)."
                )
            self._cache[key] = arr
        return self._cache[key]

    def labelled(self) -> np.ndarray:
        """Boolean mask (B,) of samples with a finite target (all False without targets)."""
        if self.target is None:
            return np.zeros(self.x.shape[0], dtype=bool)
        return np.isfinite(real64(self.target)).all(axis=1)

    def target64(self) -> np.ndarray:
        """Targets as float64 numpy ``(B, D)`` (rows may be NaN when unlabelled)."""
        if self.target is None:
            raise NotApplicableError("The data have no targets (true codes).")
        return real64(self.target)

    def is_lasso(self) -> bool:
        """Whether the model's classical iteration solves the LASSO of the problem's ``(H, rho)``
        (ISTA, FISTA, ADMM and the LISTA family; not IHT on the same data)."""
        from lightning_unfold.algorithms import FISTA, ISTA, ADMMLasso

        try:
            self.lasso_constants()
        except NotApplicableError:
            return False
        alg = self.algorithm()
        return alg is None or isinstance(alg.classical_operator(), (ISTA, FISTA, ADMMLasso))

    def lasso_constants(self) -> tuple[np.ndarray, float]:
        r"""``(H, rho)`` of a LASSO problem :math:`\tfrac12\|x-Hs\|^2 + \rho\|s\|_1`.

        Raises:
            NotApplicableError: if the problem has no dictionary ``H`` and weight ``rho``.
        """
        if self.problem is None:
            raise NotApplicableError(
                "No problem was given, so the LASSO (H, rho) is unknown; pass problem=..."
            )
        c = self.problem.constants()
        if "H" not in c or "rho" not in c:
            raise NotApplicableError(
                "the check concerns sparse coding with a dictionary H and weight rho, and "
                f"{type(self.problem).__name__} poses {self.theory().problem}."
            )
        if c["H"].is_complex() or self.x.is_complex():
            raise NotApplicableError(
                "this check is real-only: it uses the real LASSO (H, rho), and "
                f"{type(self.problem).__name__} has complex data."
            )
        H = c["H"].detach().to("cpu", torch.float64).numpy()
        rho = float(c["rho"])
        if H.ndim != 2 or self.x.flatten(1).shape[1] != H.shape[0]:
            raise NotApplicableError(
                f"x has {self.x.flatten(1).shape[1]} entries per sample but H is {H.shape}."
            )
        return H, rho

    def objective_values(self) -> np.ndarray:
        r"""Per-sample objective :math:`\mathcal L(s^{(k)}; x)` of every layer, float64
        ``(B, K+1)``, from the model's own objective (an unfolded model or the classical solver).

        Raises:
            NotApplicableError: if the model has no objective (a black box, a plain callable).
        """
        key = "objective_values"
        if key not in self._cache:
            inner = self.inner
            if not isinstance(inner, UnfoldedModel):
                raise NotApplicableError(
                    f"a {type(inner).__name__} has no solver objective to evaluate per layer "
                    "(only unfolded models and the classical solver have one)."
                )
            xin = cast_precision(self.x, next(iter(inner.constants.buffers())).dtype)
            with torch.no_grad():
                vals = [inner.objective(s, xin) for s in self.trajectory.iterates]
            arr = torch.stack(vals, 1).detach().to("cpu", torch.float64).numpy()
            if not np.all(np.isfinite(arr)):
                raise FloatingPointError("The model's objective is NaN/Inf on some layer.")
            self._cache[key] = arr
        return self._cache[key]

    def unfolded(self) -> UnfoldedModel | None:
        """The unfolded model inside the wrappers (safeguard, Lightning module), or ``None``."""
        from lightning_unfold.core.safeguard import SafeguardedModel

        inner = self.inner
        if isinstance(inner, SafeguardedModel):
            inner = inner.model
        return inner if isinstance(inner, UnfoldedModel) else None

    def algorithm(self) -> Algorithm[Any] | None:
        """The model's algorithm (the one its layers unfold), or ``None`` for other models."""
        inner = self.unfolded()
        if inner is not None:
            return inner.algorithm
        if self.problem is not None and self.problem.default_algorithm:
            from lightning_unfold.algorithms import make_algorithm

            return make_algorithm(self.problem.default_algorithm)
        return None

    def theory(self) -> SolverTheory:
        """What the theory says about the model's algorithm (a blank one for foreign models)."""
        alg = self.algorithm()
        return alg.theory if alg is not None else SolverTheory()

    def operator(self) -> tuple[Algorithm[Any], dict[str, Tensor]]:
        """The classical operator :math:`T` of the model's algorithm and its parameters (the
        problem's constants and the classical values), float64 / complex128.

        Raises:
            NotApplicableError: without an algorithm or a problem.
        """
        alg = self.algorithm()
        if alg is None or self.problem is None:
            raise NotApplicableError(
                "the model declares no classical iteration (an UnfoldedModel's algorithm, or a "
                "problem with a default algorithm), so there is no certificate to measure."
            )
        op = alg.classical_operator()
        values = {**self.problem.constants(), **op.classical_params(self.problem)}
        return op, {k: cast_precision(v.detach().cpu(), torch.float64) for k, v in values.items()}

    def classical(self) -> CheckContext | None:
        """The yardstick: a context for the classical solver of the model's algorithm (its
        :meth:`~lightning_unfold.core.algorithm.Algorithm.classical_operator` with the classical
        values) run for the same number of iterations on the same data, or ``None`` where the
        model has no classical iteration (a black box, a foreign model) or it cannot run."""
        key = "classical"
        if key not in self._cache:
            made: CheckContext | None = None
            alg = self.algorithm()
            if alg is not None and self.problem is not None and not self.is_black_box():
                try:
                    depth = len(self.trajectory.iterates) - 1
                    solver = ClassicalSolver(
                        alg.classical_operator(),
                        self.problem,
                        depth,
                        dtype=real_dtype(self.x.dtype),
                    )
                    made = CheckContext(
                        model=solver,
                        problem=self.problem,
                        x=self.x,
                        target=self.target,
                        run=as_trajectory_fn(solver),
                    )
                    with torch.no_grad():
                        made.trajectory  # noqa: B018 - run it once, here, to catch a failure
                except (NotApplicableError, ValueError, TypeError, RuntimeError):
                    made = None
            self._cache[key] = made
        return self._cache[key]

    def certificates(self) -> tuple[str, np.ndarray]:
        r"""The classical operator's optimality certificate of every layer's iterate (its
        :meth:`~lightning_unfold.core.algorithm.Algorithm.certificate`), ``(B, K+1)`` float64,
        and its name.

        Raises:
            NotApplicableError: for models without an operator, or iterates it cannot read.
        """
        key = "certificates"
        if key not in self._cache:
            op, p = self.operator()
            x = cast_precision(self.x, torch.float64)
            cols, name = [], ""
            with torch.no_grad():
                for s in self.trajectory.iterates:
                    s64 = iterate_map(lambda t: cast_precision(t, torch.float64), s)
                    try:
                        cert = op.certificate(s64, x, p)
                    except (RuntimeError, TypeError, AttributeError, KeyError) as exc:
                        raise NotApplicableError(
                            f"the iterates of the model are not iterates of {type(op).__name__} "
                            f"({type(exc).__name__}: {exc}), so its certificate cannot be read."
                        ) from exc
                    name = cert.name
                    cols.append(cert.values.detach().to("cpu", torch.float64))
            arr = torch.stack(cols, 1).numpy()
            if not np.all(np.isfinite(arr)):
                raise FloatingPointError(f"The {name} is NaN/Inf on some layer.")
            self._cache[key] = (name, arr)
        return self._cache[key]

    def discrete_targets(self) -> bool:
        """Whether the targets are labels (symbol indices), not points of the estimates' space."""
        t = self.target
        return t is not None and not (t.is_floating_point() or t.is_complex())

    def layer_losses(self) -> tuple[np.ndarray, np.ndarray]:
        """The problem's supervised loss per labelled sample at every layer
        (:meth:`~lightning_unfold.core.algorithm.ProblemSpec.per_sample_loss`, e.g. the
        cross-entropy of a detector's posteriors): ``(index, (N, K+1))`` float64.

        Raises:
            NotApplicableError: without targets or a per-sample loss of the problem.
        """
        key = "layer_losses"
        if key not in self._cache:
            if self.problem is None or self.target is None:
                raise NotApplicableError("the per-layer loss needs labelled data and the problem.")
            from lightning_unfold.core.metrics import labelled_rows

            rows = labelled_rows(self.target)
            if not bool(rows.any()):
                raise NotApplicableError("the data have no labelled rows.")
            target = self.target[rows]
            cols = []
            with torch.no_grad():
                for est in self.trajectory.estimates:
                    loss = self.problem.per_sample_loss(est[rows], target)
                    if loss is None:
                        raise NotApplicableError(
                            f"{type(self.problem).__name__} declares no per-sample loss."
                        )
                    cols.append(loss.detach().to("cpu", torch.float64))
            arr = torch.stack(cols, 1).numpy()
            if not np.all(np.isfinite(arr)):
                raise FloatingPointError("The per-layer loss is NaN/Inf on some layer.")
            self._cache[key] = (np.flatnonzero(rows.cpu().numpy()), arr)
        return self._cache[key]

    def x64(self) -> np.ndarray:
        """Observations as float64 numpy ``(B, m)``."""
        return real64(self.x)

    def cached(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` (used for reference solutions)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def trained_on_objective(self) -> bool:
        """Whether the model targets the solver's solution rather than the ground truth.

        True for the classical solver and for models trained with ``supervision="unsupervised"``
        (objective as loss); these are judged against the solver's reference :math:`s^\\star`.
        """
        inner = self.inner
        if isinstance(inner, ClassicalSolver):
            return True
        hp = getattr(self.model, "hparams", None)
        if isinstance(hp, Mapping):
            return hp.get("supervision") == "unsupervised" or hp.get("paradigm") == "classical"
        return False

    def is_black_box(self) -> bool:
        return isinstance(self.inner, BlackBoxModel)


def prepare(
    model: Any,
    problem: ProblemSpec | None = None,
    data: Any = None,
    *,
    n_samples: int = 256,
    seed: int = 0,
) -> CheckContext:
    """Build a :class:`CheckContext` (``model`` may already be one: it is returned as is).

    ``problem`` defaults to ``model.problem`` (or ``model.model.problem``).
    """
    if isinstance(model, CheckContext):
        return model
    prob = problem if problem is not None else _problem_of(model)
    x, target = as_check_data(data, prob, n_samples=n_samples, seed=seed)
    if not isinstance(x, Tensor) or x.ndim < 2:
        raise ValueError("x must be a tensor batch of shape (B, ...).")
    return CheckContext(model=model, problem=prob, x=x, target=target, run=as_trajectory_fn(model))


def as_sequence(v: Sequence[Any] | Any) -> list[Any]:
    return list(v) if isinstance(v, (list, tuple)) else [v]
