"""Sparse-coding super-resolution :class:`SparseCodingSR` (ISTA per patch) and its unfolded
form :class:`SCN` (LISTA on a learned dictionary, Wang et al. 2015)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as tF
from torch import Tensor, nn

from lightning_unfold.algorithms.scn.dictionary import soft
from lightning_unfold.algorithms.scn.networks import SRBlackBoxNet
from lightning_unfold.algorithms.scn.problem import SuperResolution
from lightning_unfold.core.algorithm import (
    Algorithm,
    Certificate,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    require_problem,
)


@dataclass(frozen=True)
class SRState:
    r"""The iterate: the sparse codes of every patch ``codes`` ``(B, n, H - p + 1, W - p + 1)``
    (channel :math:`j` at :math:`(r, c)` is atom :math:`j`'s coefficient for the patch whose top
    left corner is :math:`(r, c)`) and the image they reconstruct, ``image`` ``(B, 1, H, W)``."""

    codes: Tensor
    image: Tensor


def features(x: Tensor, extractor: Tensor) -> Tensor:
    r"""The patch features :math:`y = E * x` ``(B, m, H - p + 1, W - p + 1)`` (a valid
    convolution: channel :math:`i` at :math:`(r, c)` is filter :math:`i` on the patch there)."""
    return tF.conv2d(x, extractor)


def reconstruct(codes: Tensor, hr_dictionary: Tensor, patch: int) -> Tensor:
    r"""Overlap averaging of the patches :math:`D_h\alpha` ``(B, 1, H, W)``: every pixel is the
    mean of the reconstructed patches that cover it (a transposed convolution divided by the
    number of patches per pixel)."""
    n = codes.shape[1]
    kernel = hr_dictionary.T.reshape(n, 1, patch, patch)
    summed = tF.conv_transpose2d(codes, kernel)
    ones = codes.new_ones(1, 1, *codes.shape[2:])
    counts = tF.conv_transpose2d(ones, codes.new_ones(1, 1, patch, patch))
    return summed / counts


def _mix(matrix: Tensor, maps: Tensor) -> Tensor:
    """``matrix`` ``(a, b)`` applied to the channels of ``maps`` ``(B, b, h, w)`` (a 1×1 conv)."""
    return torch.einsum("ab,nbhw->nahw", matrix, maps)


class SparseCodingSR(Algorithm[SRState]):
    r"""Sparse-coding super-resolution (Yang et al. 2010; Zeyde et al. 2010), solved per patch by
    ISTA. Every :math:`p\times p` patch of the interpolated image :math:`x` (stride 1) has the
    feature :math:`y_i = E P_i x` (classical :math:`E`: remove the patch mean), coded by the
    LASSO

    .. math:: \alpha_i^\star = \arg\min_\alpha \tfrac12\|y_i - D_l\alpha\|_2^2
        + \lambda\|\alpha\|_1,

    the estimate adds the overlap-averaged high-resolution residual patches
    :math:`\hat X = x + \big(\sum_i P_i^\top D_h\alpha_i\big) \oslash \big(\sum_i P_i^\top
    \mathbf 1\big)`. One iteration, for every patch at once:

    .. math:: \alpha^{(k)} = \operatorname{soft}_{\beta_k}\big(\alpha^{(k-1)} + \mu_k
        D_l^\top(y - D_l\alpha^{(k-1)})\big),\qquad \alpha^{(0)} = 0,

    θo = {``extractor`` :math:`E` ``(m, 1, p, p)``, ``lr_dictionary`` :math:`D_l` ``(m, n)``,
    ``hr_dictionary`` :math:`D_h` ``(p², n)``} (classical: fitted on training patches,
    :meth:`SuperResolution.dictionary_pair`), θh = {``step`` :math:`\mu`, ``threshold``
    :math:`\beta = \mu\lambda`}. **Step-size condition**: :math:`0 < \mu < 2/\|D_l\|_2^2`
    (ISTA converges to a LASSO solution); the default :math:`\mu = 1/\|D_l\|_2^2` also decreases
    the LASSO objective monotonically. The objective is the LASSO summed over the patches of
    each image.

    Args:
        patch: patch side :math:`p`.
        atoms: dictionary size :math:`n`.
        lam: the LASSO weight :math:`\lambda > 0`.
        step: :math:`\mu` (``None``: :math:`1/\|D_l\|_2^2`).
        dictionary_iterations: MOD rounds of the dictionary fit.
        training_patches: training patches of the dictionary fit.
    """

    name: ClassVar[str] = "sc_sr"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="sparse-coding super-resolution: a LASSO ½‖y_i − D_l α_i‖² + λ‖α_i‖₁ per patch",
        fixed_point="the LASSO codes of every patch",
        convex=True,
        averaged="ISTA with 0 < μ < 2/‖D_l‖² is an averaged operator whose fixed points are the "
        "LASSO solutions (Combettes & Wajs 2005, Prop. 3.1), patch by patch",
        descent="ISTA with μ ≤ 1/‖D_l‖² never raises the LASSO objective (Beck & Teboulle "
        "2009, Lemma 2.3)",
        linear_rate="ISTA converges linearly once it has found the support, under strict "
        "complementarity (Hale, Yin & Zhang 2008, Thm. 4.10)",
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("lista", "direct")

    def __init__(
        self,
        patch: int = 5,
        atoms: int = 64,
        lam: float = 0.01,
        step: float | None = None,
        dictionary_iterations: int = 10,
        training_patches: int = 20000,
    ) -> None:
        if not (isinstance(patch, int) and 2 <= patch <= 12):
            raise ValueError(f"patch must be an integer in [2, 12], got {patch!r}.")
        if not (isinstance(atoms, int) and atoms >= 2):
            raise ValueError(f"atoms must be an integer >= 2, got {atoms!r}.")
        if not (math.isfinite(lam) and lam > 0):
            raise ValueError(f"lam (the LASSO weight) must be finite and > 0, got {lam}.")
        if not (isinstance(dictionary_iterations, int) and dictionary_iterations >= 0):
            raise ValueError(
                f"dictionary_iterations must be an integer >= 0, got {dictionary_iterations!r}."
            )
        if not (isinstance(training_patches, int) and training_patches >= atoms):
            raise ValueError(
                f"training_patches must be an integer >= atoms={atoms}, got {training_patches!r}."
            )
        self.patch, self.atoms, self.lam, self.step_size = patch, atoms, float(lam), step
        self.dictionary_iterations, self.training_patches = dictionary_iterations, training_patches
        self._classical: dict[str, Tensor] | None = None

    def _options(self) -> dict[str, Any]:
        return {
            "patch": self.patch,
            "atoms": self.atoms,
            "lam": self.lam,
            "step": self.step_size,
            "dictionary_iterations": self.dictionary_iterations,
            "training_patches": self.training_patches,
        }

    # -- declaration ----------------------------------------------------------------------------
    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("extractor", Role.OBJECTIVE, doc="feature filters E (m, 1, p, p)"),
            ParamSpec("lr_dictionary", Role.OBJECTIVE, doc="low-resolution dictionary D_l (m, n)"),
            ParamSpec(
                "hr_dictionary", Role.OBJECTIVE, doc="high-resolution dictionary D_h (p², n)"
            ),
            ParamSpec("step", Role.HYPER, Constraint.POSITIVE, "gradient step mu"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "threshold beta = mu lam"),
        )

    def _pair(self, problem: ProblemSpec) -> tuple[Tensor, Tensor, Tensor, float]:
        prob = require_problem(problem, SuperResolution, type(self).__name__)
        if prob.size < self.patch:
            raise ValueError(f"patch={self.patch} exceeds the crops' size={prob.size}.")
        E, Dl, Dh = prob.dictionary_pair(
            self.patch, self.atoms, self.lam, self.dictionary_iterations, self.training_patches
        )
        lipschitz = float(torch.linalg.matrix_norm(Dl, 2)) ** 2
        mu = 1.0 / lipschitz if self.step_size is None else float(self.step_size)
        if not (math.isfinite(mu) and 0.0 < mu < 2.0 / lipschitz):
            raise ValueError(
                f"{type(self).__name__} step size mu={mu:g} is outside (0, 2/||D_l||^2) = "
                f"(0, {2.0 / lipschitz:.6g}); ISTA diverges there. Use mu <= 1/||D_l||^2 = "
                f"{1.0 / lipschitz:.6g} for a monotone decrease (or leave step=None for that)."
            )
        return E, Dl, Dh, mu

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        E, Dl, Dh, mu = self._pair(problem)
        self._classical = {
            "extractor": E,
            "lr_dictionary": Dl,
            "hr_dictionary": Dh,
            "step": torch.tensor(mu, dtype=torch.float64),
            "threshold": torch.tensor(mu * self.lam, dtype=torch.float64),
        }
        return {k: v.clone() for k, v in self._classical.items()}

    def _param(self, name: str, c: Mapping[str, Tensor], like: Tensor) -> Tensor:
        if name in c:
            return c[name]
        if self._classical is None:
            raise ValueError(
                f"{type(self).__name__} is not bound to a problem; call classical_params first."
            )
        return self._classical[name].to(like)

    # -- the iteration --------------------------------------------------------------------------
    def _grid(self, x: Tensor) -> tuple[int, int]:
        H, W = x.shape[-2:]
        if H < self.patch or W < self.patch:
            raise ValueError(
                f"The image {H}×{W} is smaller than one {self.patch}×{self.patch} patch."
            )
        return H - self.patch + 1, W - self.patch + 1

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> SRState:
        h, w = self._grid(x)
        return SRState(codes=x.new_zeros(x.shape[0], self.atoms, h, w), image=x)

    def _state(self, codes: Tensor, x: Tensor, p: Mapping[str, Tensor]) -> SRState:
        return SRState(codes=codes, image=x + reconstruct(codes, p["hr_dictionary"], self.patch))

    def step(self, s: SRState, x: Tensor, p: Mapping[str, Tensor], k: int) -> SRState:
        D, y = p["lr_dictionary"], features(x, p["extractor"])
        grad = _mix(D.T, y - _mix(D, s.codes))
        return self._state(soft(s.codes + p["step"] * grad, p["threshold"]), x, p)

    def estimate(self, s: SRState) -> Tensor:
        return s.image

    def objective(self, s: SRState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        r"""Per image: :math:`\sum_i \tfrac12\|y_i - D_l\alpha_i\|^2 + \lambda\|\alpha_i\|_1`
        (θo from ``c``, or the classical values where the model learns them)."""
        E = self._param("extractor", c, s.codes)
        D = self._param("lr_dictionary", c, s.codes)
        r = features(x, E) - _mix(D, s.codes)
        return 0.5 * r.pow(2).flatten(1).sum(1) + self.lam * s.codes.abs().flatten(1).sum(1)

    def certificate(self, s: SRState, x: Tensor, p: Mapping[str, Tensor]) -> Certificate:
        r"""The LASSO KKT residual of the worst patch, relative to :math:`\lambda`:
        :math:`\max_i \tfrac1\lambda\max\big(\max_{\alpha_{ij}\ne0}|g_{ij} - \lambda
        \operatorname{sign}\alpha_{ij}|, \max_{\alpha_{ij}=0}(|g_{ij}| - \lambda)_+\big)`,
        :math:`g_i = D_l^\top(y_i - D_l\alpha_i)`; 0 exactly at the LASSO codes."""
        D, a = self._param("lr_dictionary", p, s.codes), s.codes
        g = _mix(D.T, features(x, self._param("extractor", p, a)) - _mix(D, a))
        lam = self.lam
        viol = torch.where(a != 0, (g - lam * torch.sign(a)).abs(), (g.abs() - lam).clamp_min(0))
        return Certificate(
            "worst patch's LASSO KKT residual relative to λ",
            (viol.flatten(1).amax(1) / lam).double(),
        )

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        if variant in (None, "lista"):
            return SCN(**self._options())
        if variant == "direct":
            return self
        raise ValueError(
            f"Unknown objective-paradigm variant {variant!r} for SparseCodingSR; valid: "
            f"{list(self.objective_variants)}."
        )

    # -- networks -------------------------------------------------------------------------------
    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        raise ValueError(
            f"{type(self).__name__} is unfolded by the 'hyperparameters' and 'objective' "
            "paradigms (the latter is SCN); it has no correction or inductive-bias network."
        )

    make_inductive_bias_net = make_correction_net  # type: ignore[assignment]

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        prob = require_problem(problem, SuperResolution, type(self).__name__)
        return SRBlackBoxNet(target_params, patch=max(self.patch, 3), scale=prob.scale)


class SCN(SparseCodingSR):
    r"""The sparse coding network of Wang et al. (2015): patch features (a convolution
    :math:`E`), a LISTA sub-network on a learned dictionary, patch reconstruction (:math:`D_h`)
    and overlap averaging, the whole trained end to end. Layer :math:`k`:

    .. math:: \alpha^{(k)} = \operatorname{soft}_{\theta_k}\big(W_k\,(E_k * x)
        + S_k\,\alpha^{(k-1)}\big),\qquad \hat X^{(k)} = x + \mathrm{avg}(D_{h,k}\alpha^{(k)}),

    θo = {``extractor`` :math:`E`, ``W`` ``(n, m)``, ``S`` ``(n, n)``, ``hr_dictionary``
    :math:`D_h`}, θh = {``threshold`` :math:`\theta \in \mathbb R^n_{\ge0}`, one per atom}.
    Classical init :math:`W = \mu D_l^\top`, :math:`S = I - \mu D_l^\top D_l`,
    :math:`\theta = \mu\lambda\mathbf 1` (then identical to :class:`SparseCodingSR`'s ISTA with
    step :math:`\mu`, valid for :math:`0 < \mu < 2/\|D_l\|_2^2`). ``tied=True`` is SCN's
    recurrent LISTA (one :math:`W, S, \theta` for every stage).
    """

    name: ClassVar[str] = "scn"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="sparse-coding super-resolution (a LASSO per patch for the classical iteration)",
        fixed_point="the LASSO codes of every patch",
        convex=True,
        averaged=None,
        descent=None,
        linear_rate=None,
    )
    objective_variants: ClassVar[tuple[str, ...]] = ("direct",)

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("extractor", Role.OBJECTIVE, doc="feature filters E (m, 1, p, p)"),
            ParamSpec("W", Role.OBJECTIVE, doc="input matrix (n, m), classical mu D_l^T"),
            ParamSpec(
                "S", Role.OBJECTIVE, doc="recurrent matrix (n, n), classical I - mu D_l^T D_l"
            ),
            ParamSpec(
                "hr_dictionary", Role.OBJECTIVE, doc="high-resolution dictionary D_h (p², n)"
            ),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "per-atom threshold (n,)"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        base = SparseCodingSR.classical_params(self, problem)
        Dl, mu = base["lr_dictionary"], float(base["step"])
        return {
            "extractor": base["extractor"],
            "W": mu * Dl.T.clone(),
            "S": torch.eye(self.atoms, dtype=torch.float64) - mu * Dl.T @ Dl,
            "hr_dictionary": base["hr_dictionary"],
            "threshold": torch.full((self.atoms,), mu * self.lam, dtype=torch.float64),
        }

    def classical_operator(self) -> Algorithm[Any]:
        """The fixed-point operator is ISTA per patch (:class:`SparseCodingSR` with the same
        dictionary settings): SCN's classical values make its layer exactly that step."""
        return SparseCodingSR(**self._options())

    def step(self, s: SRState, x: Tensor, p: Mapping[str, Tensor], k: int) -> SRState:
        y = features(x, p["extractor"])
        pre = _mix(p["W"], y) + _mix(p["S"], s.codes)
        return self._state(soft(pre, p["threshold"].view(-1, 1, 1)), x, p)

    def objective_form(self, variant: str | None) -> Algorithm[Any]:
        return Algorithm.objective_form(self, variant)
