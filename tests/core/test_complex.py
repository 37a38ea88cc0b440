r"""Complex values through the core: iterates, parameters, non-convex (unit-modulus) constraints,
every paradigm, the black box, training, metrics, state dicts and checks.

The test solver is complex least squares :math:`\min_s \tfrac12\|x - Hs\|^2` over
:math:`s \in \mathbb C^n` with a unit-modulus "rotation" :math:`c` (classically 1):
:math:`s^{(k)} = c\,(s^{(k-1)} + \mu H^{\mathsf H}(x - Hs^{(k-1)}))`, convergent for
:math:`0 < \mu < 2/\|H\|_2^2` when :math:`c = 1`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import lightning as L
import numpy as np
import pytest
import torch
from torch import Tensor

from lightning_unfold import (
    Algorithm,
    ClassicalSolver,
    Constraint,
    ParamSpec,
    ProblemSpec,
    Role,
    SyntheticDataModule,
    UnfoldedModel,
    UnfoldedModule,
)
from lightning_unfold.core.algorithm import project_unit_modulus, seeded_rng
from lightning_unfold.core.iterate import (
    as_real_rows,
    cast_precision,
    iterate_flatten,
    iterate_unflatten,
    require_finite,
)
from lightning_unfold.core.unfolded import BlackBoxModel


class ComplexLeastSquares(ProblemSpec):
    """x = H s + w with complex Gaussian H (m, n), s and w (test problem)."""

    default_algorithm = ""

    def __init__(self, m: int = 12, n: int = 6, noise: float = 0.01, seed: int = 0) -> None:
        self.m, self.n, self.noise, self.seed = m, n, noise, seed
        rng = np.random.default_rng(seed)
        H = (rng.normal(size=(m, n)) + 1j * rng.normal(size=(m, n))) / math.sqrt(2 * m)
        self.H = torch.from_numpy(H)  # complex128

    def constants(self) -> dict[str, Tensor]:
        return {"H": self.H}

    def sample(
        self, n: int, *, seed: int | Sequence[int], dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        rng = seeded_rng(self.seed, seed)
        s = (rng.normal(size=(n, self.n)) + 1j * rng.normal(size=(n, self.n))) / math.sqrt(2)
        w = (rng.normal(size=(n, self.m)) + 1j * rng.normal(size=(n, self.m))) * self.noise
        x = s @ self.H.numpy().T + w
        cdt = torch.complex128 if dtype == torch.float64 else torch.complex64
        return torch.from_numpy(x).to(cdt), torch.from_numpy(s).to(cdt)

    def validate_observation(self, x: Tensor) -> None:
        if not x.is_complex():
            raise ValueError("ComplexLeastSquares needs complex observations x (B, m).")
        if x.ndim != 2 or x.shape[1] != self.m:
            raise ValueError(f"ComplexLeastSquares expects x of shape (B, {self.m}).")
        require_finite(x, "x")


class RotatedGradient(Algorithm[Tensor]):
    """s ← c (s + μ Dᴴ(x − D s)); D (objective), μ > 0 and unit-modulus c (hyperparameters)."""

    name: ClassVar[str] = "rotated_gradient_test"

    def param_specs(self, problem: ProblemSpec) -> tuple[ParamSpec, ...]:
        return (
            ParamSpec("D", Role.OBJECTIVE),
            ParamSpec("mu", Role.HYPER, Constraint.POSITIVE),
            ParamSpec("c", Role.HYPER, Constraint.UNIT_MODULUS),
        )

    def classical_params(self, problem: ProblemSpec) -> dict[str, Tensor]:
        assert isinstance(problem, ComplexLeastSquares)
        lip = float(torch.linalg.matrix_norm(problem.H, ord=2) ** 2)
        return {
            "D": problem.H.clone(),
            "mu": torch.tensor(1.0 / lip, dtype=torch.float64),
            "c": torch.ones(problem.n, dtype=torch.complex128),
        }

    def init(self, x: Tensor, p: Mapping[str, Tensor]) -> Tensor:
        return x.new_zeros(x.shape[0], p["D"].shape[1])

    def step(self, s: Tensor, x: Tensor, p: Mapping[str, Tensor], k: int) -> Tensor:
        D = p["D"]
        return p["c"] * (s + p["mu"] * (x - s @ D.T) @ D.conj())

    def objective(self, s: Tensor, x: Tensor, c: Mapping[str, Tensor]) -> Tensor:
        return 0.5 * (x - s @ c["H"].T).abs().pow(2).sum(dim=1)


PROBLEM = ComplexLeastSquares()


def test_flatten_gives_real_rows_and_unflatten_restores_complex_blocks() -> None:
    z = torch.randn(3, 2, 2, dtype=torch.complex128)
    flat = iterate_flatten(z)
    assert not flat.is_complex() and flat.shape == (3, 8)
    torch.testing.assert_close(flat.norm(dim=1), z.flatten(1).norm(dim=1))
    torch.testing.assert_close(iterate_unflatten(flat, z), z)
    # a real network output (float32) becomes a complex block of the template's precision
    back = iterate_unflatten(flat.float(), z.to(torch.complex64))
    assert back.dtype == torch.complex64
    assert as_real_rows(torch.ones(2, 3)).shape == (2, 3)
    assert cast_precision(z, torch.float32).dtype == torch.complex64
    assert cast_precision(torch.ones(2), torch.float64).dtype == torch.float64
    assert cast_precision(torch.ones(2, dtype=torch.long), torch.float32).dtype == torch.long


def test_unit_modulus_projection_is_nonconvex_and_exact_on_valid_values() -> None:
    z = torch.tensor([3 + 4j, -2j, 0j, 1 + 0j], dtype=torch.complex128)
    p = Constraint.UNIT_MODULUS.project(z)
    torch.testing.assert_close(p.abs(), torch.ones(4, dtype=torch.float64))
    expected = torch.tensor([0.6 + 0.8j, -1j, 1 + 0j, 1 + 0j], dtype=torch.complex128)
    torch.testing.assert_close(p, expected)
    on_circle = torch.exp(1j * torch.linspace(0, 6, 7, dtype=torch.float64))
    assert torch.equal(project_unit_modulus(on_circle), on_circle / on_circle.abs())
    assert project_unit_modulus(torch.tensor([-2.0, 0.0, 0.5])).tolist() == [-1.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="complex parameter cannot be nonnegative"):
        Constraint.POSITIVE.project(z)


@pytest.mark.parametrize(
    ("dtype", "cdtype"), [(torch.float32, torch.complex64), (torch.float64, torch.complex128)]
)
def test_complex_parameters_and_constants_keep_their_precision(
    dtype: torch.dtype, cdtype: torch.dtype
) -> None:
    model = UnfoldedModel(RotatedGradient(), PROBLEM, 3, "objective", dtype=dtype)
    assert model.layer_params(1)["D"].dtype == cdtype
    assert model.layer_params(1)["c"].dtype == cdtype
    assert model.layer_params(1)["mu"].dtype == dtype
    assert model.constants.H.dtype == cdtype
    x, _ = PROBLEM.sample(4, seed=1, dtype=dtype)
    assert model(x).final_estimate.dtype == cdtype


@pytest.mark.parametrize("paradigm", ["hyperparameters", "objective", "correction"])
def test_classical_init_reproduces_the_classical_solver_in_complex128(paradigm: str) -> None:
    x, _ = PROBLEM.sample(8, seed=2, dtype=torch.float64)
    ref = ClassicalSolver(RotatedGradient(), PROBLEM, 25, dtype=torch.float64)(x)
    model = UnfoldedModel(RotatedGradient(), PROBLEM, 25, paradigm, dtype=torch.float64)
    with torch.no_grad():
        traj = model(x)
    for a, b in zip(traj.estimates, ref.estimates, strict=True):
        assert float((a - b).abs().max()) <= 1e-8


def test_classical_solver_converges_to_the_least_squares_solution() -> None:
    x, _ = PROBLEM.sample(5, seed=3, dtype=torch.float64)
    sol = ClassicalSolver(RotatedGradient(), PROBLEM, 1, dtype=torch.float64).solve(
        x, tol=1e-13, max_iter=20_000
    )
    assert sol.converged
    lstsq = torch.linalg.lstsq(PROBLEM.H, x.T).solution.T
    assert float((sol.trajectory.final_estimate - lstsq).abs().max()) <= 1e-8


def test_inductive_bias_and_black_box_produce_complex_estimates() -> None:
    x, target = PROBLEM.sample(4, seed=4)
    ib = UnfoldedModel(RotatedGradient(), PROBLEM, 3, "inductive_bias")
    with torch.no_grad():
        out = ib(x).final_estimate
    assert out.is_complex() and out.shape == target.shape
    bb = BlackBoxModel(PROBLEM, 500)
    est = bb(x).final_estimate
    assert est.dtype == torch.complex64 and est.shape == target.shape
    est.abs().sum().backward()
    assert all(p.grad is not None for p in bb.parameters())


@pytest.mark.parametrize("paradigm", ["objective", "black_box"])
def test_complex_model_trains_keeps_unit_modulus_and_round_trips(
    paradigm: str, quiet_trainer: Any
) -> None:
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(
        PROBLEM, algorithm="rotated_gradient_test", paradigm=paradigm, depth=3, lr=1e-2
    )
    data = SyntheticDataModule(PROBLEM, batch_size=16, train_batches=8, val_size=64, test_size=64)
    trainer = quiet_trainer(max_epochs=3)
    trainer.validate(module, data, verbose=False)
    before = module.nmse_curves["val"][-1]
    trainer.fit(module, data)
    after = module.nmse_curves["val"][-1]
    assert math.isfinite(after) and after < before
    if paradigm == "objective":
        c = module.model.stacked("c")
        assert c.is_complex()
        torch.testing.assert_close(c.abs(), torch.ones_like(c.abs()), rtol=0, atol=1e-6)
        raw = torch.stack(list(module.model.learned["c"]))  # projected after every step
        torch.testing.assert_close(raw.abs(), torch.ones_like(raw.abs()), rtol=0, atol=1e-6)
        assert not torch.allclose(raw, torch.ones_like(raw))  # the rotation was learned
    fresh = UnfoldedModule(PROBLEM, algorithm="rotated_gradient_test", paradigm=paradigm, depth=3)
    fresh.load_state_dict(module.state_dict())
    x, _ = PROBLEM.sample(4, seed=9)
    torch.testing.assert_close(fresh(x).final_estimate, module(x).final_estimate)


def test_checks_accept_complex_models_and_real_only_checks_say_so() -> None:
    from lightning_unfold.checks import Status, linear_convergence, run_checks

    model = ClassicalSolver(RotatedGradient(), PROBLEM, 30, dtype=torch.float64)
    results = run_checks(model, PROBLEM, None, "default", n_samples=32)
    assert not [r.message for r in results if r.status is Status.ERROR]
    by_name = {r.name: r for r in results}
    # the safeguard (Heaton et al.) runs on complex iterates: continued classical steps reach
    # the classical solution; the sparse-coding checks are skipped, each with its reason; the
    # others measure the solver's own certificate, objective or classical reference, complex
    assert by_name.pop("safeguard").status is Status.PASSED
    for name in ("coupling", "alista_coherence"):
        r = by_name.pop(name)
        assert r.status is Status.SKIPPED and "sparse coding" in r.message, r.message
    assert all(r.status in (Status.PASSED, Status.FAILED, Status.SKIPPED) for r in by_name.values())
    # distance-based checks read complex estimates through norm-preserving real views: the
    # noiseless classical solver converges linearly to the true code
    problem = ComplexLeastSquares(noise=0.0)
    solver = ClassicalSolver(RotatedGradient(), problem, 30, dtype=torch.float64)
    lin = linear_convergence(
        solver, problem, problem.sample(32, seed=5, dtype=torch.float64), reference="truth"
    )
    assert lin.status is Status.PASSED, lin.message
    assert lin.value is not None and 0 < lin.value < 0.9


@pytest.fixture(autouse=True)
def _registered() -> Any:
    from lightning_unfold.algorithms import ALGORITHMS

    ALGORITHMS[RotatedGradient.name] = RotatedGradient
    yield
    ALGORITHMS.pop(RotatedGradient.name, None)
