"""The problem zoo: every registered family (:data:`~lightning_unfold.algorithms.families.FAMILIES`)
crossed with every model it builds.

* classical-init equivalence: each setting that keeps the classical iteration reproduces the
  classical solver in float64 (complex128 for complex data) to 1e-8, in every case of the family,
  and a tied model does so at a depth it was not built for;
* a state-dict round trip of every model (perturbed away from its initial values first);
* metric pooling, torchmetrics' ``MetricTester`` style: the problem's metrics on the whole batch
  equal the statistics of two unequal parts accumulated, in one process and across two DDP ranks
  (one spawn for all families);
* a clear error on a NaN in the observation;
* float32 and float64 forward passes keep their precision.

Adding a family to the registry adds its rows here; no test is written per family.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from lightning_unfold.algorithms import ALGORITHMS
from lightning_unfold.algorithms.families import (
    BASELINE_SETTINGS,
    FAMILIES,
    FamilyCase,
    ParadigmSetting,
    ProblemFamily,
)
from lightning_unfold.core.iterate import iterate_blocks
from lightning_unfold.core.trajectory import Trajectory
from lightning_unfold.core.unfolded import ClassicalSolver
from lightning_unfold.training.metrics import LayerwiseMetric

F64 = torch.float64
TOL = 1e-8
#: the families registered when the zoo was collected (a guide's example may register more later)
REGISTERED = tuple(FAMILIES)
#: the algorithms the library registers (snapshot at collection, before any test registers one)
LIBRARY_ALGORITHMS = tuple(ALGORITHMS)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors: intra-op threads only contend on a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _equivalence_rows() -> list[Any]:
    return [
        pytest.param(fam, case, setting, id=f"{fam.name}[{case.name}]-{setting.id}")
        for fam in (FAMILIES[name] for name in REGISTERED)
        for case in fam.cases
        for setting in fam.keeps_classical
        if case.supports(setting)
    ]


def _setting_rows() -> list[Any]:
    return [
        pytest.param(fam, setting, id=f"{fam.name}-{setting.id}")
        for fam in (FAMILIES[name] for name in REGISTERED)
        for setting in fam.settings()
        if fam.cases[0].supports(setting)
    ]


def _family_rows() -> list[Any]:
    return [pytest.param(FAMILIES[name], id=name) for name in REGISTERED]


def trajectory_gap(a: Trajectory[Any], b: Trajectory[Any]) -> float:
    """Largest entrywise difference of two trajectories' iterates (every layer, every block of a
    tuple iterate), relative to :math:`\\max(|b|, 1)`: absolute for entries up to 1, relative
    for larger ones (WMMSE's weights reach :math:`10^9` at its noise level)."""
    gap = 0.0
    for sa, sb in zip(a.iterates, b.iterates, strict=True):
        blocks_a, blocks_b = iterate_blocks(sa), iterate_blocks(sb)
        assert list(blocks_a) == list(blocks_b), "the iterates have different blocks"
        for ta, tb in zip(blocks_a.values(), blocks_b.values(), strict=True):
            assert ta.dtype == tb.dtype, f"{ta.dtype} against {tb.dtype}"
            diff = (ta - tb).detach().abs() / tb.detach().abs().clamp_min(1.0)
            gap = max(gap, float(diff.max()))
    return gap


def _data(fam: ProblemFamily, case: FamilyCase | None, dtype: torch.dtype) -> tuple[Any, ...]:
    problem, algorithm = fam.instance(case)
    x, target = problem.sample(fam.batch, seed=7, dtype=dtype)
    return problem, algorithm, x, target


def _real(dtype: torch.dtype) -> torch.dtype:
    return dtype.to_real() if dtype.is_complex else dtype


# -- classical-init equivalence ----------------------------------------------------------------
@pytest.mark.parametrize(("fam", "case", "setting"), _equivalence_rows())
def test_classical_init_reproduces_the_classical_solver(
    fam: ProblemFamily, case: FamilyCase, setting: ParadigmSetting
) -> None:
    problem, algorithm, x, _ = _data(fam, case, F64)
    assert x.dtype == (torch.complex128 if fam.complex_data else F64)
    reference = ClassicalSolver(fam.reference_algorithm(case), problem, fam.depth, dtype=F64)
    model = fam.build(setting, problem, algorithm, dtype=F64)
    with torch.no_grad():
        ref, traj = reference(x), model(x)
    assert traj.depth == fam.depth
    assert _real(traj.estimates[-1].dtype) == F64
    assert trajectory_gap(traj, ref) <= TOL
    # the solver moved: a model returning s^(0) at every layer would not pass silently
    moved = (ref.estimates[-1] - ref.estimates[0]).abs().max()
    assert float(moved) > 1e-2


@pytest.mark.parametrize("fam", _family_rows())
def test_a_tied_model_reproduces_the_classical_solver_at_another_depth(fam: ProblemFamily) -> None:
    tied = [s for s in fam.keeps_classical if s.tied and fam.cases[0].supports(s)]
    if not tied:
        pytest.skip(f"{fam.name} registers no tied setting")
    problem, algorithm, x, _ = _data(fam, None, F64)
    model = fam.build(tied[0], problem, algorithm, depth=3, dtype=F64)
    reference = ClassicalSolver(fam.reference_algorithm(), problem, 7, dtype=F64)
    with torch.no_grad():
        longer = model(x, depth=7)
        assert longer.depth == 7
        assert trajectory_gap(longer, reference(x)) <= TOL


def test_every_registered_family_has_rows() -> None:
    """The zoo's parametrization covers every registered family (a regression guard for the
    row generators' filters)."""
    rows = {p.values[0].name for p in _equivalence_rows()}
    assert rows == set(REGISTERED)
    assert {p.values[0].name for p in _setting_rows()} == set(REGISTERED)


def test_every_registered_algorithm_is_in_a_family_row() -> None:
    """A solver added to the library without a registry row would escape the zoo: every
    registered algorithm is some family's algorithm, its reference, or an objective form one of
    its settings builds (LISTA, LISTA-CP, ... are forms of the ``ista`` row)."""
    covered = set()
    for fam in FAMILIES.values():
        for case in fam.cases:
            _, algorithm = fam.instance(case)
            covered |= {algorithm.name, fam.reference_algorithm(case).name}
            for setting in fam.settings():
                if setting.paradigm == "objective" and case.supports(setting):
                    covered.add(algorithm.objective_form(setting.variant).name)
    missing = sorted(set(LIBRARY_ALGORITHMS) - covered)
    assert not missing, f"registered algorithms without a zoo row: {missing}"


def test_registry_errors_are_clear() -> None:
    from lightning_unfold.algorithms import register_family

    fam = FAMILIES["ista"]
    with pytest.raises(ValueError, match="'ista' is already registered"):
        register_family(fam)
    with pytest.raises(ValueError, match=r"no case 'dense'; valid: \['noiseless', 'noisy-step'\]"):
        fam.case("dense")
    with pytest.raises(ValueError, match="unique, non-empty case names"):
        ProblemFamily("x", fam.problem, fam.algorithm, cases=(FamilyCase("a"), FamilyCase("a")))
    with pytest.raises(ValueError, match="no setting that keeps the classical iteration"):
        ProblemFamily("x", fam.problem, fam.algorithm, keeps_classical=())
    with pytest.raises(ValueError, match="Unknown paradigm 'lista'; valid"):
        ParadigmSetting("lista")
    assert ParadigmSetting("objective", "lista_cp", tied=True).id == "objective[lista_cp]-tied"


def test_the_registry_docstring_example_runs() -> None:
    import doctest

    from lightning_unfold.algorithms import families

    result = doctest.testmod(families, verbose=False)
    assert result.attempted > 0 and result.failed == 0


# -- state-dict round trip ---------------------------------------------------------------------
def _perturb(model: nn.Module) -> None:
    """Move every parameter off its initial value (seeded), so that a load is visible."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g, dtype=_real(p.dtype))
            if p.is_complex():
                noise = torch.complex(noise, torch.randn(p.shape, generator=g, dtype=noise.dtype))
            p.add_(0.01 * noise * (p.detach().abs().mean() + 0.1))


def _outputs(model: nn.Module, x: Tensor) -> list[Tensor]:
    with torch.no_grad():
        return list(model(x).estimates)


@pytest.mark.parametrize(("fam", "setting"), _setting_rows())
def test_state_dict_round_trip(fam: ProblemFamily, setting: ParadigmSetting) -> None:
    problem, _, x, _ = _data(fam, None, torch.float32)
    torch.manual_seed(0)
    model = fam.build(setting, problem, fam.algorithm(**fam.cases[0].algorithm), dtype=x.real.dtype)
    _perturb(model)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    torch.manual_seed(1)
    fresh = fam.build(setting, problem, fam.algorithm(**fam.cases[0].algorithm), dtype=x.real.dtype)
    expected = _outputs(model, x)
    for est in expected:
        assert bool(torch.isfinite(torch.view_as_real(est) if est.is_complex() else est).all())
    has_parameters = any(True for _ in model.parameters())
    if has_parameters:  # the fresh model differs until it is loaded
        assert any(not torch.equal(a, b) for a, b in zip(_outputs(fresh, x), expected, strict=True))
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    for a, b in zip(_outputs(fresh, x), expected, strict=True):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)


# -- metric pooling ----------------------------------------------------------------------------
def _pooling_data(fam: ProblemFamily) -> tuple[Any, Tensor, Tensor, Tensor]:
    """The classical solver's per-layer estimates ``(K + 1, B, ...)`` on a float64 batch."""
    problem, algorithm, x, target = _data(fam, None, F64)
    with torch.no_grad():
        est = ClassicalSolver(algorithm, problem, fam.depth, dtype=F64)(x).stacked_estimates()
    return problem, est, target, x


def _pooled(
    metric: Any, depth: int, parts: list[slice], est: Tensor, tgt: Tensor, x: Tensor
) -> Tensor:
    acc = LayerwiseMetric(metric, depth, sync_on_compute=False)
    for part in parts:
        acc.update(est[:, part], tgt[part], x[part])
    return acc.compute()


@pytest.mark.parametrize("fam", _family_rows())
def test_metrics_pool_exactly_over_two_parts(fam: ProblemFamily) -> None:
    problem, est, target, x = _pooling_data(fam)
    split = fam.batch // 3  # unequal parts: a mean of the parts' means would not pass
    assert 0 < split < fam.batch
    metrics = problem.metrics()
    assert metrics, f"{fam.name} declares no metric"
    for metric in metrics:
        whole = _pooled(metric, fam.depth, [slice(None)], est, target, x)
        parts = _pooled(metric, fam.depth, [slice(0, split), slice(split, None)], est, target, x)
        assert whole.shape == (fam.depth + 1,)
        assert bool(torch.isfinite(whole[-1])), f"{metric.name} is not finite at layer K"
        torch.testing.assert_close(parts, whole, rtol=1e-12, atol=0, equal_nan=True)
        # the parts alone give other figures: the pooling is not vacuous
        first = _pooled(metric, fam.depth, [slice(0, split)], est, target, x)
        assert not torch.allclose(first, whole, rtol=1e-9, atol=0, equal_nan=True)


def _ddp_pooling_worker(rank: int, world: int, out: str) -> None:
    """One rank of the DDP pooling test: every family's metrics on this rank's part, reduced
    across ranks by torchmetrics, against the whole batch in one process."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        checked = []
        for fam in (FAMILIES[name] for name in REGISTERED):
            problem, est, target, x = _pooling_data(fam)
            split = fam.batch // 3
            mine = slice(0, split) if rank == 0 else slice(split, None)
            for metric in problem.metrics():
                synced = LayerwiseMetric(metric, fam.depth)  # sync_on_compute (the default)
                synced.update(est[:, mine], target[mine], x[mine])
                whole = _pooled(metric, fam.depth, [slice(None)], est, target, x)
                torch.testing.assert_close(
                    synced.compute(), whole, rtol=1e-12, atol=0, equal_nan=True
                )
                checked.append(f"{fam.name}/{metric.name}")
        Path(out, f"rank{rank}.txt").write_text("\n".join(checked))
    finally:
        dist.destroy_process_group()


@pytest.mark.ddp
def test_metrics_pool_exactly_across_two_ddp_ranks(tmp_path: Path) -> None:
    """All families in one start of two gloo ranks. The ranks are forked, not spawned: a spawned
    rank re-imports torch and Lightning (most of a spawn's cost) and the test needs neither anew;
    each rank runs single-threaded, as DataLoader workers do after a fork."""
    import torch.multiprocessing as mp

    assert os.environ.get("MASTER_PORT"), "the ddp marker's fixture sets the port"
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("this platform cannot fork (the test forks its two ranks)")
    mp.start_processes(
        _ddp_pooling_worker, args=(2, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    expected = {
        f"{name}/{m.name}" for name in REGISTERED for m in FAMILIES[name].instance()[0].metrics()
    }
    for rank in (0, 1):
        assert set((tmp_path / f"rank{rank}.txt").read_text().splitlines()) == expected


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fam", _family_rows())
@pytest.mark.parametrize(
    ("value", "counts"), [(math.nan, "1 NaN, 0 Inf"), (math.inf, "0 NaN, 1 Inf")]
)
def test_a_non_finite_observation_is_a_clear_error(
    fam: ProblemFamily, value: float, counts: str
) -> None:
    """A NaN or an Inf anywhere in the observation: ``validate_observation`` says what and how
    many, and the classical solver, an unfolded model and the black box refuse the batch."""
    problem, _, x, _ = _data(fam, None, F64)
    bad = x.clone()
    bad.reshape(-1)[bad.numel() // 2] = value
    message = rf"contains non-finite values \({counts}\); clean or mask the data"
    with pytest.raises(ValueError, match=message):
        problem.validate_observation(bad)
    for setting in (fam.keeps_classical[0], *BASELINE_SETTINGS):
        model = fam.build(
            setting, problem, fam.algorithm(**fam.cases[0].algorithm), depth=2, dtype=F64
        )
        with pytest.raises(ValueError, match=message):
            model(bad)
    problem.validate_observation(x)  # and the clean batch passes


# -- float32 and float64 -----------------------------------------------------------------------
@pytest.mark.parametrize(("fam", "setting"), _setting_rows())
def test_float32_and_float64_forward_passes_keep_their_precision(
    fam: ProblemFamily, setting: ParadigmSetting
) -> None:
    kinds = set()
    for dtype in (torch.float32, F64):
        problem, algorithm, x, _ = _data(fam, None, dtype)
        assert _real(x.dtype) == dtype and x.is_complex() == fam.complex_data
        torch.manual_seed(0)
        model = fam.build(setting, problem, algorithm, dtype=dtype)
        for p in model.parameters():
            assert _real(p.dtype) == dtype, f"parameter of dtype {p.dtype} in a {dtype} model"
        with torch.no_grad():
            traj = model(x)
        for est in traj.estimates:
            assert _real(est.dtype) == dtype
            assert bool(torch.isfinite(torch.view_as_real(est) if est.is_complex() else est).all())
            kinds.add(est.is_complex())
    assert len(kinds) == 1, "float32 and float64 estimates differ in complex-ness"
