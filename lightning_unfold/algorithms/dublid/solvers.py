"""The classical alternating blind deblurring :class:`HQSBlindDeblur` (whose ``objective``
paradigm is DUBLID), its iterate and its networks."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from lightning_unfold.algorithms.dublid.operators import (
    blur,
    centred_delta,
    filter_responses,
    image_step,
    kernel_step,
    soft,
    transfers,
)
from lightning_unfold.algorithms.dublid.problem import BlindDeblurring
from lightning_unfold.algorithms.imaging.operators import finite_difference_filters
from lightning_unfold.core.algorithm import (
    Algorithm,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SolverTheory,
    require_problem,
)
from lightning_unfold.core.networks import ConvDenoiserNet

#: floor of the kernel regulariser ε inside the step (a learned ε at the POSITIVE constraint's
#: floor, with every z thresholded to zero, would make the kernel step 0/0)
_REG_FLOOR = 1e-8


@dataclass(frozen=True)
class DeblurState:
    """The iterate: image ``x`` ``(B, n, n)`` and kernel ``k`` ``(B, m, m)`` (on the simplex)."""

    x: Tensor
    k: Tensor


class _ImageCorrection(nn.Module):
    r"""Correction Δ of the image (paradigm ``correction``): two 3×3 circular convolutions of
    :math:`[x^{(k-1)}, y]`, zero-initialised last layer (the model starts classical)."""

    def __init__(self, n: int, hidden: int) -> None:
        super().__init__()
        self.n = n
        last = nn.Conv2d(hidden, 1, 3, padding=1, padding_mode="circular")
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        first = nn.Conv2d(2, hidden, 3, padding=1, padding_mode="circular")
        self.conv = nn.Sequential(first, nn.ReLU(), last)

    def forward(self, features: Tensor) -> Tensor:
        maps = features[:, : 2 * self.n * self.n].reshape(-1, 2, self.n, self.n)
        return self.conv(maps).flatten(1)


class DeblurBlackBoxNet(nn.Module):
    r"""Black box for blind deblurring: the image by a residual CNN of the blurred image
    (:class:`~lightning_unfold.core.networks.ConvDenoiserNet`, about ``target_params`` − the
    kernel head's parameters), the kernel by a head of two 3×3 convolutions (the second of stride
    2), average pooling to 4 × 4 and a linear layer to :math:`m^2` logits, softmax (a kernel on
    the simplex). Output: the packed ``(B, n² + m²)`` estimate."""

    def __init__(self, n: int, m: int, target_params: int, *, width: int = 4) -> None:
        super().__init__()
        self.head = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, stride=2),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
            nn.Linear(16 * width, m * m),
        )
        head = sum(p.numel() for p in self.head.parameters())
        self.image = ConvDenoiserNet(max(target_params - head, 0))
        self.m = m

    def forward(self, y: Tensor) -> Tensor:
        k = torch.softmax(self.head(y.unsqueeze(1)), dim=1)
        return torch.cat([self.image(y).flatten(1), k], dim=1)


class HQSBlindDeblur(Algorithm[DeblurState]):
    r"""Alternating blind deblurring by half-quadratic splitting over filter responses; its
    ``objective`` paradigm (learned filters per layer) is DUBLID (Li et al. 2020).

    One iteration, from :math:`(x^{(l-1)}, k^{(l-1)})` (package docstring):

    .. math::
        z_i &= \mathcal S_{\theta_i}\big(f_i\circledast x^{(l-1)}\big),\\
        k^{(l)} &= \Pi_\Delta\Big(\mathrm{crop}_m F^{-1}\Big[\frac{\sum_i\overline{\hat z_i}\,
            \hat f_i\,\hat y}{\sum_i|\hat z_i|^2 + \varepsilon}\Big]\Big),\\
        x^{(l)} &= F^{-1}\Big[\frac{\overline{\hat k^{(l)}}\hat y + \sum_i\zeta_i
            \overline{\hat f_i}\hat z_i}{|\hat k^{(l)}|^2 + \sum_i\zeta_i|\hat f_i|^2}\Big],

    :math:`x^{(0)} = y`, :math:`k^{(0)} = \delta` (the centred identity).
    θo = {``filters`` :math:`f_i` (C, 3, 3), classically finite differences};
    θh = {``threshold`` :math:`\theta_i \ge 0` (C,), ``penalty`` :math:`\zeta_i > 0` (C,),
    ``kernel_reg`` :math:`\varepsilon > 0`}.

    *Conditions.* :math:`\zeta_i > 0` and a kernel on the simplex make the x-step well defined
    (:math:`\hat k(0) = 1`, and the finite differences' transfers vanish only at
    :math:`\omega = 0`); :math:`\varepsilon > 0` does the same for the k-step. Both steps are
    exact minimisers (the k-step before its crop and projection), but the two use different
    data terms (the image's, and the filtered :math:`\sum_i\|f_i\circledast y - k\circledast
    z_i\|^2`, which keeps the kernel away from the blur-free solution), so the alternation is
    not the descent of one objective: its convergence is *observed*, not proved — the study and
    the tests measure the fixed-point residual.

    Args:
        threshold: classical :math:`\theta \ge 0` for every filter.
        penalty: classical :math:`\zeta > 0` for every filter.
        kernel_reg: classical :math:`\varepsilon > 0`.
        filters: classical bank, ``"tv"`` (2 differences) or ``"tv4"`` (with the diagonals).
    """

    name: ClassVar[str] = "hqs_deblur"
    theory: ClassVar[SolverTheory] = SolverTheory(
        problem="blind deblurring: min over (x, k on the simplex) of ½‖y − k⊛x‖² + Σλ_i‖f_i⊛x‖₁ "
        "(half-quadratic splitting, filtered-domain kernel step)",
        fixed_point="a fixed point of the alternating image / kernel steps (no descent result: "
        "the two steps minimise different data terms)",
        convex=False,
    )

    def __init__(
        self,
        threshold: float = 0.1,
        penalty: float = 0.03,
        kernel_reg: float = 10.0,
        filters: str = "tv",
    ) -> None:
        if not (math.isfinite(threshold) and threshold >= 0):
            raise ValueError(f"The threshold theta must be finite and >= 0, got {threshold}.")
        if not (math.isfinite(penalty) and penalty > 0):
            raise ValueError(
                f"The splitting penalty zeta must be finite and > 0 (the x-step divides by "
                f"|k̂|² + zeta Σ|f̂_i|²), got {penalty}."
            )
        if not (math.isfinite(kernel_reg) and kernel_reg > 0):
            raise ValueError(
                f"The kernel regulariser epsilon must be finite and > 0 (the k-step divides by "
                f"Σ|ẑ_i|² + epsilon), got {kernel_reg}."
            )
        finite_difference_filters(filters)  # validates the name
        self.threshold, self.penalty, self.kernel_reg = (
            float(threshold),
            float(penalty),
            float(kernel_reg),
        )
        self.filters = filters
        self._kernel_size: int | None = None

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("filters", Role.OBJECTIVE, doc="3×3 analysis filters f_i (C, 3, 3)"),
            ParamSpec("threshold", Role.HYPER, Constraint.NONNEGATIVE, "thresholds θ_i (C,)"),
            ParamSpec("penalty", Role.HYPER, Constraint.POSITIVE, "splitting penalties ζ_i (C,)"),
            ParamSpec("kernel_reg", Role.HYPER, Constraint.POSITIVE, "kernel regulariser ε"),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        prob = require_problem(problem, BlindDeblurring, type(self).__name__)
        self._kernel_size = prob.kernel_size
        w = finite_difference_filters(self.filters)
        C, f64 = w.shape[0], torch.float64
        return {
            "filters": w,
            "threshold": torch.full((C,), self.threshold, dtype=f64),
            "penalty": torch.full((C,), self.penalty, dtype=f64),
            "kernel_reg": torch.tensor(self.kernel_reg, dtype=f64),
        }

    def _m(self) -> int:
        if self._kernel_size is None:
            raise ValueError(
                "HQSBlindDeblur is not bound to a problem; build a model (or call "
                "classical_params(problem)) first."
            )
        return self._kernel_size

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> DeblurState:
        return DeblurState(
            x=x.clone(), k=centred_delta(x.shape[0], self._m(), dtype=x.dtype, device=x.device)
        )

    def step(self, s: DeblurState, x: Tensor, p: Mapping[str, Tensor], k: int) -> DeblurState:
        D = transfers(p["filters"], x.shape[-1])
        z = soft(filter_responses(s.x, D), p["threshold"])
        kernel, _ = kernel_step(z, x, D, p["kernel_reg"].clamp_min(_REG_FLOOR), self._m())
        return DeblurState(x=image_step(kernel, z, x, D, p["penalty"]), k=kernel)

    def estimate(self, s: DeblurState) -> Tensor:
        """The packed ``(B, n² + m²)`` image and kernel (:meth:`BlindDeblurring.unpack`)."""
        return torch.cat([s.x.flatten(1), s.k.flatten(1)], dim=1)

    def objective(self, s: DeblurState, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        r"""Per image, with the classical θ, ζ, ε and filters:
        :math:`\tfrac12\|y - k\circledast x\|^2 + \sum_i\zeta\theta\|f_i\circledast x\|_1 +
        \tfrac\varepsilon2\|k\|^2` (the blind-deblurring objective that the splitting relaxes,
        :math:`\lambda_i = \zeta_i\theta_i`)."""
        w = finite_difference_filters(self.filters).to(s.x)
        fx = filter_responses(s.x, transfers(w, x.shape[-1]))
        data = 0.5 * (x - blur(s.x, s.k)).pow(2).flatten(1).sum(1)
        prior = self.penalty * self.threshold * fx.abs().flatten(1).sum(1)
        return data + prior + 0.5 * self.kernel_reg * s.k.pow(2).flatten(1).sum(1)

    # -- learned networks -------------------------------------------------------------------------
    def features(self, s: DeblurState, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        """``(B, 2n² + m²)``: the flattened image, blurred image and kernel."""
        return torch.cat([s.x.flatten(1), x.flatten(1), s.k.flatten(1)], dim=1)

    def corrected_step(
        self, s: DeblurState, x: Tensor, p: Mapping[str, Tensor], k: int, net: nn.Module
    ) -> DeblurState:
        r"""The classical step with a learned correction of the image only,
        :math:`x^{(l)} = x_{\mathrm{HQS}}^{(l)} + \Delta(x^{(l-1)}, y)` (the kernel stays on the
        simplex); Δ starts at 0."""
        nxt = self.step(s, x, p, k)
        delta = net(self.features(s, x, p)).reshape(nxt.x.shape)
        return DeblurState(x=nxt.x + delta, k=nxt.k)

    def make_correction_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        prob = require_problem(problem, BlindDeblurring, type(self).__name__)
        return _ImageCorrection(prob.size, hidden)

    def make_inductive_bias_net(
        self, problem: ProblemSpec, feature_dim: int, out_dim: int, hidden: int
    ) -> nn.Module:
        raise ValueError(
            "HQSBlindDeblur has no inductive-bias network: DUBLID (paradigm='objective') already "
            "learns each layer's filters, thresholds and penalties while keeping the closed-form "
            "steps; use paradigm='objective', 'hyperparameters' or 'correction'."
        )

    def make_black_box_net(self, problem: ProblemSpec, target_params: int) -> nn.Module:
        prob = require_problem(problem, BlindDeblurring, type(self).__name__)
        return DeblurBlackBoxNet(prob.size, prob.kernel_size, target_params)
