r"""Declaring a classical solver once: its iteration, objective and parameters.

An :class:`Algorithm` states

* ``init(x, p)``: the initial iterate :math:`s^{(0)}`;
* ``step(s, x, p, k)``: one classical iteration :math:`s^{(k)} = T(s^{(k-1)}; x, \theta_k)`, a pure
  function of the iterate, the observation and the named parameters ``p``;
* ``objective(s, x, c)``: the solver's objective :math:`\mathcal L_{\theta_o}(s; x)` per sample;
* ``param_specs(problem)``: which parameters are *objective* parameters :math:`\theta_o`, which are
  *hyperparameters* :math:`\theta_h`, which are fixed constants, with their constraints;
* ``classical_params(problem)``: the classical values, validated (step-size conditions).

A *paradigm* (see :mod:`lightning_unfold.core.unfolded`) turns that declaration into K trainable
layers. A :class:`ProblemSpec` generates seeded data ``(x, target)`` and holds the problem's
constants (dictionary, regulariser weight, ...).
"""

from __future__ import annotations

import copy
import enum
import functools
import importlib
import inspect
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from lightning_unfold.core.iterate import (
    as_real_rows,
    iterate_flatten,
    iterate_map,
    iterate_unflatten,
    require_finite,
)
from lightning_unfold.core.metrics import NMSE, ProblemMetric, labelled_rows

S = TypeVar("S")
P = TypeVar("P", bound="ProblemSpec")

__all__ = [
    "Algorithm",
    "Certificate",
    "Constraint",
    "ParamSpec",
    "ProblemSpec",
    "Role",
    "SolverTheory",
    "as_operator",
    "combine_seeds",
    "decode_config_value",
    "encode_config_value",
    "problem_from_config",
    "project_unit_modulus",
    "require_problem",
    "seeded_rng",
]


class Role(enum.Enum):
    """What a parameter is to the classical solver."""

    OBJECTIVE = "objective"  #: θo — a parameter of the objective (dictionary H, transform Ψ, ...)
    HYPER = "hyper"  #: θh — a solver hyperparameter (step size, threshold, penalty, ...)
    FIXED = "fixed"  #: a derived constant that no paradigm learns (ALISTA's analytic W)


class Constraint(enum.Enum):
    r"""Validity constraint of a parameter; :meth:`project` maps a raw value into the valid set.

    Projection is the identity on valid values, so classical initialisation is reproduced exactly.
    The set need not be convex: ``UNIT_MODULUS`` projects entrywise onto the complex unit circle
    :math:`\{z : |z| = 1\}` (an analog phase-shifter precoder), :math:`z \mapsto z/|z|`, with
    :math:`0 \mapsto 1`; on real values it is :math:`\operatorname{sign}`, again with
    :math:`0 \mapsto 1`. ``NONNEGATIVE`` and ``POSITIVE`` are orders and need real values.
    """

    NONE = "none"
    NONNEGATIVE = "nonnegative"
    POSITIVE = "positive"
    UNIT_MODULUS = "unit_modulus"

    def project(self, value: Tensor) -> Tensor:
        """The value mapped into the valid set (a clamp, or :math:`z/|z|` for unit modulus)."""
        if self is Constraint.NONE:
            return value
        if self is Constraint.UNIT_MODULUS:
            return project_unit_modulus(value)
        if value.is_complex():
            raise ValueError(
                f"Constraint {self.value!r} orders real numbers; a complex parameter cannot be "
                "nonnegative or positive — declare it Constraint.NONE or UNIT_MODULUS."
            )
        if self is Constraint.NONNEGATIVE:
            return value.clamp_min(0.0)
        return value.clamp_min(torch.finfo(value.dtype).tiny)


def project_unit_modulus(value: Tensor) -> Tensor:
    """Entrywise projection onto :math:`|z| = 1`: :math:`z/|z|`, and :math:`1` where :math:`z = 0`
    (any point of the circle is a nearest point; 1 is the deterministic choice)."""
    mag = value.abs()
    zero = mag == 0
    safe = torch.where(zero, torch.ones_like(mag), mag)
    unit = value / safe.to(value.dtype) if value.is_complex() else value / safe
    return torch.where(zero, torch.ones_like(unit), unit)


@dataclass(frozen=True)
class ParamSpec:
    """Declaration of one named parameter of an iteration."""

    name: str
    role: Role
    constraint: Constraint = Constraint.NONE
    doc: str = ""


@dataclass(frozen=True)
class Certificate:
    r"""How far each sample's iterate is from a solution: ``values`` ``(B,)``, :math:`\ge 0`,
    exactly 0 at a solution (a fixed point of the classical iteration, or a stationary point).

    Attributes:
        name: what is measured, for messages ("LASSO KKT residual relative to ρ").
        values: float64 per-sample figure.
        stalled: per sample ``(B,)`` bool, or ``None`` when the algorithm cannot tell: ``True``
            where the iterate sits at a point the classical iteration cannot leave although the
            certificate rejects it (a fixed point of :math:`T` that is not a solution), so more
            iterations will not help. Checks say so instead of asking for more iterations.
        stall_reason: why such a point is a trap, in words, for messages.
    """

    name: str
    values: Tensor
    stalled: Tensor | None = None
    stall_reason: str = ""


@dataclass(frozen=True)
class SolverTheory:
    """What the theory says about an algorithm's classical iteration, in words for messages.

    The checks read it to state which result predicts what they measure for *this* algorithm;
    a field left ``None`` means no result is known here, and the check says so (an empirical
    property). Each string names the condition and the result, e.g. ``"ISTA with 0 < μ < 2/L
    is an averaged operator (Combettes & Wajs 2005)"``.

    Attributes:
        problem: the problem the iteration solves ("the LASSO ½‖x − Hs‖² + ρ‖s‖₁").
        fixed_point: what a fixed point of the iteration is ("its minimiser", "a stationary
            point of the weighted sum-rate").
        convex: whether the problem is convex (a unique or certified global reference exists).
        averaged: why the iteration is an averaged operator (safeguarded unfolding converges
            for any learned weights, Heaton et al. 2023), or ``None``.
        descent: the result that makes every classical iteration lower the objective, or None.
        linear_rate: the result predicting a linear rate of the iterates, or ``None``.
        certificate_tol: the value of :meth:`Algorithm.certificate` below which an iterate
            counts as a solution when a check is given no tolerance (the safeguard's default
            ``tol``). ``1e-6`` suits a residual relative to the iterate's scale; an algorithm
            whose certificate is measured in other units (a normalised KKT residual in
            :math:`[0, 1]`) declares its own, and says why in its docstring.
    """

    problem: str = "its own objective"
    fixed_point: str = "a fixed point of its iteration"
    convex: bool = False
    averaged: str | None = None
    descent: str | None = None
    linear_rate: str | None = None
    certificate_tol: float = 1e-6


class ProblemSpec(ABC):
    """A seeded problem family: generates ``(x, target)`` and holds the objective's constants.

    Subclasses are plain classes with typed ``__init__`` arguments so that LightningCLI can build
    them from YAML (``class_path`` + ``init_args``); :meth:`to_config` returns that form, which is
    what checkpoints store (no pickled objects).

    The constructor arguments are recorded once, here, when a subclass is instantiated (every
    argument, defaults included, user-given arrays too), so :meth:`init_args` needs no code in a
    family and :meth:`to_config` → :func:`problem_from_config` rebuilds the same problem — the
    same constants, the same samples for the same seed. A family that lets an argument change
    after construction (a property setter, e.g. ``MIMODetection.H_fixed``) records the new value
    with :meth:`_record_init_arg`.
    """

    #: name of the algorithm used when none is given
    default_algorithm: ClassVar[str] = ""
    #: deprecated constructor argument names and their new names, ``{old: new}``: the old name
    #: is still accepted (with a ``DeprecationWarning``) for one release, from Python and from
    #: saved configs and checkpoints
    renamed_arguments: ClassVar[Mapping[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_records_init_args", False):
            cls.__init__ = _recording_init(cls, init)  # type: ignore[method-assign]

    def _record_init_arg(self, name: str, value: Any) -> None:
        """Record that constructor argument ``name`` now has ``value`` (for setters)."""
        self.__dict__.setdefault("_init_args", {})[name] = _snapshot(value)

    @abstractmethod
    def constants(self) -> dict[str, Tensor]:
        """The objective's constants (float64 master copies), e.g. ``{"H": H, "rho": rho}``."""

    @abstractmethod
    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """Draw ``n`` seeded pairs ``(x, target)``; the same seed always gives the same data.

        ``seed`` may be a sequence of integers (e.g. ``(stream, epoch, rank)``); it is combined
        with the problem's own seed through :class:`numpy.random.SeedSequence`.
        """

    @abstractmethod
    def validate_observation(self, x: Tensor) -> None:
        """Raise a ``ValueError`` that names the problem when ``x`` is not a valid batch."""

    def init_args(self) -> dict[str, Any]:
        """The constructor arguments that rebuild this problem exactly: ``type(self)(**args)``.

        Every argument of the subclass's ``__init__`` as it was given (defaults filled in), arrays
        and tensors as given; :meth:`to_config` turns arrays into YAML/JSON-safe entries.
        """
        return _snapshot(dict(self.__dict__.get("_init_args", {})))

    def metrics(self) -> tuple[ProblemMetric, ...]:
        """The per-layer metrics this problem is scored by; the first is the *primary* one.

        Default: pooled NMSE in dB (:class:`~lightning_unfold.core.metrics.NMSE`), the figure of
        estimation problems. Communications problems list theirs (sum-rate, BER, rate).
        """
        return (NMSE(),)

    def supervised_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        r"""The supervised per-layer loss: by default the mean over labelled rows of the squared
        error summed over entries, :math:`\frac1{|\mathcal B_\ell|}\sum_i\|\hat s_i - s_i\|^2`
        (:math:`|\cdot|^2` for complex values); ``None`` when no row is labelled. Problems with
        discrete targets override it (cross-entropy for symbol detection)."""
        labelled = labelled_rows(target)
        if not bool(labelled.any()):
            return None
        diff = (estimate[labelled] - target[labelled]).flatten(1)
        return diff.abs().pow(2).sum(dim=1).mean()

    def per_sample_loss(self, estimate: Tensor, target: Tensor) -> Tensor | None:
        """The supervised loss of each sample ``(B,)``, for checks that need its spread (the
        generalization gap). ``None`` (the default): the checks use their normalised squared
        error. Problems whose loss is not a squared error (cross-entropy) return theirs."""
        return None

    def to_config(self) -> dict[str, Any]:
        """``{"class_path": ..., "init_args": ...}`` with only YAML/JSON-safe values: tensors and
        arrays become tagged entries (:func:`encode_config_value`) that :func:`problem_from_config`
        restores bit for bit, with their dtype."""
        return {
            "class_path": public_class_path(type(self)),
            "init_args": encode_config_value(self.init_args()),
        }


def _recording_init(owner: type[ProblemSpec], init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a problem's ``__init__`` so that the outermost call records its bound arguments
    (after mapping the deprecated names of ``owner.renamed_arguments`` to the new ones)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def recording(self: ProblemSpec, *args: Any, **kwargs: Any) -> None:
        for old, new in owner.renamed_arguments.items():
            if old in kwargs:
                if new in kwargs:
                    raise TypeError(
                        f"{owner.__name__} got both {old}= (deprecated) and {new}=; give {new}= only."
                    )
                warnings.warn(
                    f"{owner.__name__}({old}=...) is deprecated and will be removed in the next "
                    f"release; use {new}=... (configs and checkpoints too).",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
        if "_init_args" not in self.__dict__:  # the outermost constructor (not a super() call)
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            recorded: dict[str, Any] = {}
            for name, param in list(signature.parameters.items())[1:]:
                value = bound.arguments.get(name)
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    if value:
                        raise TypeError(
                            f"{type(self).__name__} got extra positional arguments {value!r}; a "
                            "problem is rebuilt from keyword arguments, so give them by name."
                        )
                elif param.kind is inspect.Parameter.VAR_KEYWORD:
                    recorded.update(value or {})
                else:
                    recorded[name] = value
            self.__dict__["_init_args"] = _snapshot(recorded)
        init(self, *args, **kwargs)

    recording._records_init_args = True  # type: ignore[attr-defined]
    return recording


def _snapshot(value: Any) -> Any:
    """A copy of a constructor argument that later changes to the caller's objects cannot
    reach: tensors detached and cloned (so tensors that require grad are fine), arrays copied,
    containers copied entry by entry."""
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, np.ndarray):
        return value.copy()
    if isinstance(value, dict):
        return {k: _snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    if type(value) is tuple:
        return tuple(_snapshot(v) for v in value)
    return copy.deepcopy(value)


#: the key that marks an encoded tensor in a configuration
TENSOR_TAG = "__tensor__"


def encode_config_value(value: Any) -> Any:
    """A YAML/JSON-safe copy of ``value``: tensors and NumPy arrays become
    ``{"__tensor__": {"dtype": "float64", "shape": [...], "data": nested lists}}`` (complex
    entries as ``[real, imaginary]`` pairs), tuples become lists, NumPy scalars Python numbers;
    mappings and lists are encoded entry by entry. :func:`decode_config_value` inverts it."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, Tensor):
        t = value.detach().cpu()
        data = torch.view_as_real(t.resolve_conj()) if t.is_complex() else t
        return {
            TENSOR_TAG: {
                "dtype": str(t.dtype).removeprefix("torch."),
                "shape": list(t.shape),
                "data": data.tolist(),
            }
        }
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): encode_config_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode_config_value(v) for v in value]
    return value


def decode_config_value(value: Any) -> Any:
    """Inverse of :func:`encode_config_value`: tagged entries become tensors of their dtype."""
    if isinstance(value, Mapping):
        if set(value) == {TENSOR_TAG}:
            entry = value[TENSOR_TAG]
            dtype = getattr(torch, str(entry["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise ValueError(f"Unknown tensor dtype {entry['dtype']!r} in a configuration.")
            shape = [int(v) for v in entry["shape"]]
            if dtype.is_complex:
                real = torch.tensor(entry["data"], dtype=dtype.to_real()).reshape(*shape, 2)
                return torch.view_as_complex(real.contiguous())
            return torch.tensor(entry["data"], dtype=dtype).reshape(shape)
        return {k: decode_config_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_config_value(v) for v in value]
    return value


def as_operator(
    value: Tensor | np.ndarray | Sequence[Any],
    what: str,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    complex_ok: bool = False,
) -> Tensor:
    """A user-given operator (matrix, mask, channel set) as a finite float64 / complex128 tensor.

    ``shape`` may hold ``None`` for a free dimension. A mismatch is a ``ValueError`` naming
    ``what``, the shape given and the shape expected.
    """
    if isinstance(value, Tensor):
        t = value.detach().cpu()
    else:
        arr = np.asarray(value)
        if arr.dtype == object:
            raise ValueError(f"{what} must be a rectangular array of numbers (ragged lists given).")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        if not complex_ok:
            raise ValueError(f"{what} must be real, got a complex array of dtype {t.dtype}.")
        t = t.to(torch.complex128)
    else:
        t = t.to(torch.float64)
    want = tuple(shape) if shape is not None else None
    if ndim is None and want is not None:
        ndim = len(want)
    if ndim is not None and t.ndim != ndim:
        expected = f"shape {_shape_text(want)}" if want is not None else f"{ndim} dimensions"
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected {expected}.")
    if want is not None and any(
        w is not None and w != g for w, g in zip(want, t.shape, strict=True)
    ):
        raise ValueError(f"{what} has shape {tuple(t.shape)}; expected {_shape_text(want)}.")
    require_finite(torch.view_as_real(t) if t.is_complex() else t, what)
    return t.clone()


def _shape_text(shape: Sequence[int | None] | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join("any" if d is None else str(d) for d in shape) + ")"


def combine_seeds(*parts: int | Sequence[int]) -> list[int]:
    """The flat entropy list of integers and integer sequences, e.g. ``(seed, 7, (stream, epoch))``
    → ``[seed, 7, stream, epoch]`` (what every problem hands to :func:`seeded_rng`)."""
    out: list[int] = []
    for part in parts:
        if isinstance(part, int | np.integer):
            out.append(int(part))
        else:
            out.extend(int(v) for v in part)
    return out


def seeded_rng(*parts: int | Sequence[int]) -> np.random.Generator:
    """``np.random.default_rng(combine_seeds(*parts))``: a problem's seed combined with
    ``sample``'s seed (an integer or a sequence such as ``(stream, epoch, rank)``) through
    :class:`numpy.random.SeedSequence`. The seeding contract of :meth:`ProblemSpec.sample`."""
    return np.random.default_rng(combine_seeds(*parts))


def require_problem(problem: ProblemSpec, cls: type[P], who: str) -> P:
    """``problem`` if it is a ``cls``, else a ``TypeError`` saying that ``who`` solves ``cls``."""
    if not isinstance(problem, cls):
        raise TypeError(
            f"{who} solves {cls.__name__} problems, got {type(problem).__name__}; build the "
            f"model with a {cls.__name__} (or the algorithm meant for your problem)."
        )
    return problem


def public_class_path(cls: type) -> str:
    """The shortest dotted path that names ``cls``: its module's outermost ancestor package that
    still exposes the very same class under its name (``lightning_unfold.MIMODetection``, not the
    submodule ``lightning_unfold.algorithms.detection.problem`` it is defined in), so configs and
    checkpoints name the public path, which survives a reorganisation of the modules."""
    name = cls.__qualname__
    parts = cls.__module__.split(".")
    best = cls.__module__
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        try:
            module = importlib.import_module(prefix)
        except ImportError:
            break
        if getattr(module, name, None) is not cls:
            break
        best = prefix
    return f"{best}.{name}"


def problem_from_config(config: ProblemSpec | Mapping[str, Any]) -> ProblemSpec:
    """Rebuild a problem from :meth:`ProblemSpec.to_config` output (or pass one through).

    Only subclasses of :class:`ProblemSpec` are instantiated, so a checkpoint's hyperparameters
    cannot name arbitrary callables.
    """
    if isinstance(config, ProblemSpec):
        return config
    if not isinstance(config, Mapping) or "class_path" not in config:
        raise TypeError(
            "A problem must be a ProblemSpec instance or a mapping with 'class_path' and "
            f"'init_args', got {type(config).__name__}."
        )
    module_name, _, cls_name = str(config["class_path"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"Unknown problem class {config['class_path']!r}.") from err
    if not (isinstance(cls, type) and issubclass(cls, ProblemSpec)):
        raise ValueError(f"{config['class_path']!r} is not a ProblemSpec subclass.")
    return cls(**decode_config_value(dict(config.get("init_args") or {})))


class Algorithm(ABC, Generic[S]):
    """A classical iterative solver, declared once (see the module docstring)."""

    #: registry name, e.g. ``"ista"``
    name: ClassVar[str] = ""

    #: what the theory says about the classical iteration (read by the checks' messages)
    theory: ClassVar[SolverTheory] = SolverTheory()

    @abstractmethod
    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        """The named parameters of one iteration, with roles and constraints."""

    @abstractmethod
    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        """Classical (float64) values for every spec, validated against the step-size condition."""

    @abstractmethod
    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> S:
        """Initial iterate :math:`s^{(0)}` for the batch ``x``."""

    @abstractmethod
    def step(self, s: S, x: Tensor, p: Mapping[str, Tensor], k: int) -> S:
        """One iteration :math:`s^{(k)} = T(s^{(k-1)}; x, \\theta_k)` (``k`` counts from 1)."""

    @abstractmethod
    def objective(self, s: S, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample objective value :math:`\\mathcal L(s; x)` with the problem constants ``c``."""

    def estimate_objective(self, estimate: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample objective of an *estimate* alone, for models without an iterate (the black
        box) trained with ``supervision="unsupervised"``. Algorithms whose objective depends on
        the estimate only (WMMSE's negative sum-rate) define it; by default it raises."""
        raise NotImplementedError(
            f"{type(self).__name__}'s objective needs its whole iterate, so a black box (which "
            "outputs only the estimate) cannot be trained on it; train it supervised."
        )

    def estimate(self, s: S) -> Tensor:
        """The quantity compared with the target (default: the iterate itself)."""
        if not isinstance(s, Tensor):
            raise NotImplementedError(
                f"{type(self).__name__} has a multi-block iterate and must define estimate()."
            )
        return s

    def features(self, s: S, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """Input of learned correction / inductive-bias networks, ``(B, F)``.

        The default is the flattened iterate concatenated with the flattened observation, both
        real (complex entries as (real, imaginary) pairs), so networks with real weights read them.
        """
        return torch.cat([iterate_flatten(s), as_real_rows(x)], dim=1)

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        """The algorithm whose layers the *learn objective parameters* paradigm trains.

        By default the algorithm itself (its θo and θh learned per layer). Algorithms with a
        classical reparameterisation (ISTA → LISTA, LISTA-CP, ALISTA) override this and list
        their variants in :attr:`objective_variants`.
        """
        if variant not in (None, "direct"):
            raise ValueError(
                f"{type(self).__name__} has no objective-paradigm variant {variant!r}; "
                f"valid: {list(self.objective_variants)}."
            )
        return self

    def classical_operator(self) -> Algorithm[Any]:
        r"""The algorithm whose classical iteration is the fixed-point operator :math:`T` of this one.

        Safeguarded unfolding (Heaton et al. 2023) falls back to :math:`T` and tests candidates
        with the fixed-point residual :math:`\|y - T(y)\|`, so :math:`T` must be an averaged
        operator whose fixed points solve the problem. By default the algorithm itself with its
        classical parameters; reparameterisations whose classical iteration is not that operator
        (LISTA-CPSS and ALISTA's support selection) return the base solver (ISTA).
        """
        return self

    def fixed_point_residual(self, s: S, x: Tensor, p: Mapping[str, Tensor], k: int = 1) -> Tensor:
        r"""Per-sample relative fixed-point residual of the classical iteration ``(B,)``:

        .. math:: r(s) = \frac{\|T(s) - s\|}{\max(\|T(s)\|, 10^{-30})},

        over every block of the iterate (complex entries by modulus). ``p`` holds the problem's
        constants and the classical parameters (as :class:`~lightning_unfold.core.safeguard.
        SafeguardedModel` passes them). 0 exactly at a fixed point of :math:`T`.
        """
        t_s = self.step(s, x, p, k)
        a, b = iterate_flatten(s), iterate_flatten(t_s)
        num = torch.linalg.vector_norm(b - a, dim=1)
        return num / torch.linalg.vector_norm(b, dim=1).clamp_min(1e-30)

    def certificate(self, s: S, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        """How far the iterate ``s`` is from a solution, per sample (see :class:`Certificate`).

        Default: :meth:`fixed_point_residual` of the classical iteration. Algorithms whose
        theory gives a stationarity certificate (LASSO KKT, projected-gradient norm, ADMM's
        primal and dual residuals, KKT of nonnegative problems) override it.
        """
        return Certificate(
            f"relative fixed-point residual ‖T(s) − s‖/‖T(s)‖ of {type(self).__name__}",
            self.fixed_point_residual(s, x, p),
        )

    def convex_reference(self, x: Tensor, problem: ProblemSpec) -> Tensor | None:
        """The estimates of the problem's solution for the batch ``x`` computed by CVXPY, for
        convex problems that have a formulation here; ``None`` (the default) where none exists
        (then the checks compare with the classical solver run to convergence)."""
        return None

    #: the valid ``variant`` names for :meth:`objective_form`
    objective_variants: ClassVar[tuple[str, ...]] = ("direct",)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module | None:
        """A custom correction network Δ (``None``: the default MLP is used)."""
        return None

    def corrected_step(self, s: S, x: Tensor, p: Mapping[str, Tensor], k: int, net: nn.Module) -> S:
        r"""One layer of the *learned correction* paradigm with the correction network ``net``.

        Default: the additive correction of the survey,
        :math:`s^{(k)} = T(s^{(k-1)}) + \Delta(\phi(s^{(k-1)}, x))` with :math:`\phi` =
        :meth:`features` and ``net``'s flat output unflattened like the iterate. An algorithm
        whose correction acts *inside* the iteration (UWMMSE's affine correction of the weights,
        :math:`w = a\odot w_{\text{class}} + b`, before the v-update) overrides this; it must
        reduce to :meth:`step` when ``net`` is at its initialisation.
        """
        s_next = self.step(s, x, p, k)
        delta = iterate_unflatten(net(self.features(s, x, p)), s_next)
        return iterate_map(torch.add, s_next, delta)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module | None:
        """A custom per-layer network replacing the iteration (``None``: default MLP)."""
        return None

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module | None:
        """A custom black-box baseline mapping a batch ``x`` to a batch of estimates.

        It should have about ``target_params`` trainable parameters. ``None`` (the default):
        :class:`~lightning_unfold.core.unfolded.BlackBoxModel`'s MLP on the flattened ``x``.
        A structured observation (an image, a matrix) deserves a network that respects its
        structure, or the baseline is a straw man.
        """
        return None
