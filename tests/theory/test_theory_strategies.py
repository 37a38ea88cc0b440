"""The public hypothesis strategies build valid, reproducible problems."""

import numpy as np
from hypothesis import given, settings
from lightning_unfold.theory.strategies import (
    RPCAInstance,
    SparseRecoveryProblem,
    register_ci_profile,
    rpca_instances,
    sparse_codes,
    sparse_recovery_problems,
    well_conditioned_dictionaries,
)


def _no_subnormals(*arrays: np.ndarray) -> bool:
    tiny = np.finfo(np.float64).tiny
    return all(not np.any((a != 0) & (np.abs(a) < tiny)) for a in arrays)


@given(p=sparse_recovery_problems(m=(5, 12), n=(10, 24), sparsity=(1, 3), batch=(1, 3)))
def test_sparse_recovery_problems_are_valid(p: SparseRecoveryProblem) -> None:
    B, n = p.s_true.shape
    m = p.H.shape[0]
    assert 5 <= m <= 12 and m <= n <= 24 and 1 <= B <= 3 and p.x.shape == (B, m)
    np.testing.assert_allclose(np.linalg.norm(p.H, axis=0), 1.0)
    assert 1 <= p.sparsity <= max(1, min(3, m // 2))
    assert 0 < p.rho < np.min(np.max(np.abs(p.x @ p.H), axis=1))  # no trivial solution
    noise = p.x - p.s_true @ p.H.T
    assert p.sigma > 0 and np.std(noise) < 5 * p.sigma
    assert _no_subnormals(p.H, p.s_true, p.x)


@given(H=well_conditioned_dictionaries(m=(4, 10), n=(8, 30), max_condition=8.0))
def test_well_conditioned_dictionaries(H: np.ndarray) -> None:
    m, n = H.shape
    assert n >= 2 * m
    assert np.linalg.cond(H) <= 8.0
    np.testing.assert_allclose(np.linalg.norm(H, axis=0), 1.0)


@given(S=sparse_codes(n=(5, 20), sparsity=(1, 4), batch=(1, 3)))
def test_sparse_codes(S: np.ndarray) -> None:
    nnz = np.count_nonzero(S, axis=1)
    assert S.ndim == 2 and np.all(nnz == nnz[0]) and 1 <= nnz[0] <= 4
    assert np.all((np.abs(S) == 0) | ((np.abs(S) >= 0.5) & (np.abs(S) <= 1.5)))


@settings(max_examples=10)
@given(inst=rpca_instances())
def test_rpca_instances(inst: RPCAInstance) -> None:
    np.testing.assert_allclose(inst.X, inst.L + inst.S)
    assert np.linalg.matrix_rank(inst.L) == inst.rank
    assert np.mean(inst.S != 0) <= 0.3
    assert set(np.unique(inst.S)) <= {-1.0, 0.0, 1.0}


def test_same_seed_same_problem() -> None:
    seen: list[SparseRecoveryProblem] = []

    @settings(max_examples=3, derandomize=True, database=None)
    @given(p=sparse_recovery_problems())
    def collect(p: SparseRecoveryProblem) -> None:
        seen.append(p)

    collect()
    first = list(seen)
    seen.clear()
    collect()
    assert len(first) == len(seen) == 3
    for a, b in zip(first, seen, strict=True):
        assert a.seed == b.seed
        np.testing.assert_array_equal(a.x, b.x)


def test_register_ci_profile() -> None:
    register_ci_profile(max_examples=7)
    assert settings.get_profile("ci").derandomize
    assert settings.get_profile("ci").max_examples == 7
    register_ci_profile()  # restore the default used by conftest
