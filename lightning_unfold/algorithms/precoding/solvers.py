"""Hybrid precoding PGA: :class:`HybridPGA`, its state :class:`PrecoderState`, :func:`tune_step`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.precoding.networks import (
    HybridBlackBoxNet,
)
from lightning_unfold.algorithms.precoding.problem import (
    HybridPrecoding,
    _precoders,
    achievable_rate,
    pack_precoders,
    power_scale,
    rate_gradients,
)
from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    project_unit_modulus,
    require_problem,
)
from lightning_unfold.core.iterate import complex_dtype


@dataclass(frozen=True)
class PrecoderState:
    """PGA's iterate: the analog precoder ``Wa`` ``(n, M, L)`` and the digital precoders ``Wd``
    ``(n, B, L, U)``, both complex. The estimate is the packed feasible pair
    (:func:`pack_precoders`)."""

    Wa: Tensor
    Wd: Tensor


#: the valid ``digital_init`` values of :class:`HybridPGA`
DIGITAL_INITS: tuple[str, ...] = ("random", "matched_filter")
#: the valid ``step_shape`` values of :class:`HybridPGA` (the granularity of the learned steps)
STEP_SHAPES: tuple[str, ...] = ("scalar", "per_chain", "per_entry")


class HybridPGA(Algorithm[PrecoderState]):
    r"""Projected gradient ascent on the achievable rate (see
    :mod:`lightning_unfold.algorithms.precoding` (the package docstring)).

    Args:
        step: the classical constant step :math:`\mu_{a,k} = \mu_{d,b,k} = \mu > 0`.
        digital_init: ``"random"`` (a fixed Gaussian draw, the paper's reference code) or
            ``"matched_filter"`` (:math:`W_{d,b} = (H_bW_a)^H`).
        init_seed: seed of the fixed random digital initialisation.
        step_shape: the granularity of one iteration's steps (all initialised to ``step``, so
            every choice reproduces the same classical PGA before training):

            - ``"scalar"`` — :math:`\mu_{a,k}` one scalar, :math:`\mu_{d,b,k}` one per band
              ``(B,)``: the paper's unfolded PGA;
            - ``"per_chain"`` — one analog step per RF chain (column of :math:`W_a`) ``(L,)``
              and one digital step per band and RF chain (row of :math:`W_{d,b}`) ``(B, L)``;
            - ``"per_entry"`` — a step matrix of the size of the iterate: :math:`\mu_{a,k}
              \in \mathbb R_{\ge 0}^{M\times L}` and :math:`\mu_{d,b,k} \in
              \mathbb R_{\ge 0}^{L\times U}` per band ``(B, L, U)``; the gradient step becomes
              the entrywise (diagonally preconditioned) :math:`W + \mu\odot\nabla_W R`.

            The steps stay hyperparameters θh: they do not depend on the channel, only the
            number of values per iteration grows (:math:`1 + B`, :math:`L(1 + B)`,
            :math:`ML + BLU`).
        digital_updates: :math:`Q \ge 1` digital gradient steps (each followed by the power
            rescale) after each analog step, at the new analog precoder; with :math:`Q > 1` the
            digital steps of iteration :math:`k` get a leading axis ``(Q, ...)``, one learned set
            per inner update :math:`q`. A fixed structural choice of the classical algorithm
            (the classical solver with the same ``digital_updates`` is its reference); one
            iteration then costs :math:`1 + Q` gradient evaluations instead of 2.
    """

    name: ClassVar[str] = "hybrid_pga"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="the achievable-rate maximisation of wideband hybrid precoding (non-convex: "
        "unit-modulus analog precoder)",
        fixed_point="a stationary point of the rate on the constraint set",
        convex=False,
        averaged=None,
        descent=None,
        linear_rate=None,
    )

    def certificate(self, s: PrecoderState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The projected-gradient residual :math:`\|P(s + \mu\nabla R(s)) - s\| /
        \|P(s + \mu\nabla R(s))\|` at the classical steps: the fixed-point residual of
        projected gradient ascent, zero exactly at a stationary point of the rate on the
        constraint set."""
        return Certificate(
            "relative projected-gradient residual of PGA", self.fixed_point_residual(s, x, p)
        )

    def __init__(
        self,
        step: float = 0.5,
        digital_init: str = "random",
        init_seed: int = 0,
        *,
        step_shape: str = "scalar",
        digital_updates: int = 1,
    ) -> None:
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"The PGA step must be finite and > 0, got {step}.")
        if digital_init not in DIGITAL_INITS:
            raise ValueError(
                f"Unknown digital_init {digital_init!r}; valid: {list(DIGITAL_INITS)}."
            )
        if step_shape not in STEP_SHAPES:
            raise ValueError(f"Unknown step_shape {step_shape!r}; valid: {list(STEP_SHAPES)}.")
        if not (
            isinstance(digital_updates, int)
            and not isinstance(digital_updates, bool)
            and digital_updates >= 1
        ):
            raise ValueError(
                f"digital_updates (Q, digital steps per analog step) must be an integer >= 1, "
                f"got {digital_updates!r}."
            )
        self.step_size, self.digital_init, self.init_seed = float(step), digital_init, init_seed
        self.step_shape, self.digital_updates = step_shape, digital_updates

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        self._bind(problem)
        return (
            ParamSpec("gain", Role.OBJECTIVE, Constraint.POSITIVE, "γ inside the gradient"),
            ParamSpec(
                "mu_a",
                Role.HYPER,
                Constraint.NONNEGATIVE,
                f"analog step μ_a,k, shared by all bands: {self._shape_doc('a')}",
            ),
            ParamSpec(
                "mu_d",
                Role.HYPER,
                Constraint.NONNEGATIVE,
                f"digital steps μ_d,b,k: {self._shape_doc('d')}",
            ),
            ParamSpec(
                "wd_init",
                Role.FIXED,
                doc="fixed random digital start (B, L, U): CN(0, 1), real N(0, 1) for real channels",
            ),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = self._bind(problem)
        f64 = torch.float64
        gen = torch.Generator().manual_seed(self.init_seed)
        shape = (prob.n_bands, prob.n_rf, prob.n_users)
        if prob.channel == "real_gaussian":  # the reference code's real N(0, 1) start
            wd0 = torch.randn(*shape, generator=gen, dtype=f64)
        else:  # CN(0, 1)
            wd0 = torch.randn(*shape, generator=gen, dtype=torch.complex128)
        shape_a, shape_d = self.step_shapes(prob)
        return {
            "gain": torch.tensor(prob.gain, dtype=f64),
            "mu_a": torch.full(shape_a, self.step_size, dtype=f64),
            "mu_d": torch.full(shape_d, self.step_size, dtype=f64),
            "wd_init": wd0,
        }

    def step_shapes(self, problem: HybridPrecoding) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The shapes of one iteration's ``mu_a`` and ``mu_d`` (class docstring, ``step_shape``
        and ``digital_updates``)."""
        M, L, B, U = problem.n_antennas, problem.n_rf, problem.n_bands, problem.n_users
        shape_a, shape_d = {
            "scalar": ((), (B,)),
            "per_chain": ((L,), (B, L)),
            "per_entry": ((M, L), (B, L, U)),
        }[self.step_shape]
        if self.digital_updates > 1:
            shape_d = (self.digital_updates, *shape_d)
        return shape_a, shape_d

    def _shape_doc(self, block: str) -> str:
        a, d = {
            "scalar": ("scalar", "(B,), one per band"),
            "per_chain": ("(L,), one per RF chain", "(B, L), per band and RF chain"),
            "per_entry": ("(M, L), one per entry of W_a", "(B, L, U), one per entry of W_d,b"),
        }[self.step_shape]
        if block == "a":
            return a
        q = self.digital_updates
        return d if q == 1 else f"(Q={q}, ...) of {d}, one set per digital update q"

    def _digital_step(self, mu_d: Tensor) -> Tensor:
        """``mu_d`` of one digital update, shaped to broadcast against ``W_d`` ``(n, B, L, U)``."""
        if self.step_shape == "scalar":
            return mu_d[:, None, None]
        if self.step_shape == "per_chain":
            return mu_d[:, :, None]
        return mu_d

    # -- the feasible set ------------------------------------------------------------------
    def _bind(self, problem: ProblemSpec) -> HybridPrecoding:
        """Remember the problem's feasible set (unit modulus or not, the budget UB), which
        :meth:`feasible` and :meth:`estimate` need; one instance serves one setting."""
        prob = require_problem(problem, HybridPrecoding, type(self).__name__)
        setting = (prob.unit_modulus, prob.total_power)
        bound = getattr(self, "_setting", None)
        if bound is not None and bound != setting:
            raise ValueError(
                f"This HybridPGA instance is bound to (unit_modulus, power) = {bound}, not "
                f"{setting}; create one HybridPGA per problem setting."
            )
        self._setting = setting
        return prob

    def _feasible_set(self) -> tuple[bool, float]:
        setting = getattr(self, "_setting", None)
        if setting is None:
            raise RuntimeError(
                "HybridPGA does not know its feasible set yet: call param_specs(problem) or "
                "classical_params(problem) first (UnfoldedModel does so)."
            )
        return setting

    def feasible(self, s: PrecoderState) -> PrecoderState:
        """:math:`\\Pi`: unit-modulus projection of ``Wa`` (in that setting), then the power
        rescale of ``Wd``. The identity (to rounding) on feasible iterates."""
        um, total = self._feasible_set()
        wa = project_unit_modulus(s.Wa) if um else s.Wa
        scale = power_scale(wa, s.Wd, total)
        return PrecoderState(Wa=wa, Wd=s.Wd * scale.to(s.Wd.dtype)[:, None, None, None])

    @staticmethod
    def _channels(x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return x.to(complex_dtype(p["mu_a"].dtype))

    @torch.no_grad()
    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> PrecoderState:
        h = self._channels(x, p)
        n, B, U, _ = h.shape
        L = p["wd_init"].shape[1]
        um, _ = self._feasible_set()
        _, _, vh = torch.linalg.svd(h.mean(dim=1), full_matrices=True)
        wa = vh.mH[:, :, :L]
        if um:
            wa = project_unit_modulus(wa)
        rand = p["wd_init"].to(h.dtype).expand(n, B, L, U)
        if self.digital_init == "matched_filter":
            wd = (h @ wa.unsqueeze(1)).mH
            dead = _precoders(wa, wd).abs().pow(2).sum(dim=(1, 2, 3)) == 0
            wd = torch.where(dead[:, None, None, None], rand, wd)
        else:
            wd = rand
        return self.feasible(PrecoderState(Wa=wa.contiguous(), Wd=wd.contiguous()))

    def step(self, s: PrecoderState, x: Tensor, p: Mapping[str, Tensor], k: int) -> PrecoderState:
        h = self._channels(x, p)
        um, total = self._feasible_set()
        s = self.feasible(s)
        wa, wd = s.Wa, s.Wd
        grad_a, _ = rate_gradients(h, wa, wd, p["gain"])
        wa = wa + p["mu_a"] * grad_a
        if um:
            wa = project_unit_modulus(wa)
            wd = wd * power_scale(wa, wd, total).to(wd.dtype)[:, None, None, None]
        else:
            wa = wa * power_scale(wa, wd, total).to(wa.dtype)[:, None, None]
        mu_d = p["mu_d"] if self.digital_updates > 1 else p["mu_d"].unsqueeze(0)
        for q in range(self.digital_updates):
            _, grad_d = rate_gradients(h, wa, wd, p["gain"])
            wd = wd + self._digital_step(mu_d[q]) * grad_d
            wd = wd * power_scale(wa, wd, total).to(wd.dtype)[:, None, None, None]
        return PrecoderState(Wa=wa, Wd=wd)

    def objective(self, s: PrecoderState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample negative rate (nats) of the feasible projection, with the true SNR."""
        f = self.feasible(s)
        return -achievable_rate(x.to(f.Wa.dtype), f.Wa, f.Wd, c["snr_gain"])

    def estimate_objective(self, estimate: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        """Per-sample negative rate (nats) of packed precoders alone (:func:`pack_precoders`): the
        unsupervised loss of models without an iterate (the black box). The sizes are read from
        the channels ``x`` ``(n, B, U, M)`` and the estimate's width :math:`ML + BLU`."""
        _, B, U, M = x.shape
        L = estimate.shape[1] // (M + B * U)
        if estimate.ndim != 2 or estimate.shape[1] != L * (M + B * U) or L < 1:
            raise ValueError(
                f"A packed precoder for channels (n, B={B}, U={U}, M={M}) has width M·L + B·L·U "
                f"for some L >= 1; got an estimate of shape {tuple(estimate.shape)}."
            )
        n = estimate.shape[0]
        wa = estimate[:, : M * L].reshape(n, M, L)
        wd = estimate[:, M * L :].reshape(n, B, L, U)
        gain = c["snr_gain"].real if c["snr_gain"].is_complex() else c["snr_gain"]
        h = x.to(wa.dtype) if wa.is_complex() else x
        return -achievable_rate(h, wa.to(h.dtype), wd.to(h.dtype), gain)

    def estimate(self, s: PrecoderState) -> Tensor:
        """The packed feasible precoders :func:`pack_precoders` of :math:`\\Pi(s)`: feasible
        whatever produced ``s`` (a learned correction, a network layer)."""
        f = self.feasible(s)
        return pack_precoders(f.Wa, f.Wd)

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        return HybridBlackBoxNet(
            require_problem(problem, HybridPrecoding, type(self).__name__), target_params
        )


def tune_step(
    problem: HybridPrecoding,
    depth: int,
    x: Tensor,
    candidates: Sequence[float] = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0),
    *,
    digital_init: str = "random",
    dtype: torch.dtype = torch.float64,
) -> float:
    """The constant step among ``candidates`` with the highest mean rate after ``depth``
    classical iterations on the tuning channels ``x`` (a grid search; ties: the earlier
    candidate) — :func:`~lightning_unfold.training.tune_classical` over ``step``."""
    from lightning_unfold.training.evaluation import tune_classical

    unlabelled = torch.full((x.shape[0], 1), float("nan"))  # the rate needs no target
    found = tune_classical(
        problem,
        HybridPGA,
        {"step": [float(mu) for mu in candidates]},
        x,
        unlabelled,
        depth,
        options={"digital_init": digital_init},
        dtype=dtype,
    )
    return float(found.best["step"])
