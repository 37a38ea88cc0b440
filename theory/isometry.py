r"""Restricted isometry constants of an effective operator, estimated on supports.

For a square operator :math:`A \in \mathbb R^{n\times n}` (the *effective operator* of an
IHT/ISTA-type layer :math:`s \mapsto s + W(x - Hs)`, :math:`A = WH`), define

.. math:: \delta_s(A) = \max_{|\Gamma| = s} \|I_s - A_{\Gamma\Gamma}\|_2 ,

the largest deviation from the identity of an :math:`s\times s` principal block. For
:math:`A = \mu H^\top H` it is exactly the (symmetric) restricted isometry constant of
:math:`\sqrt\mu H`: :math:`\max_\Gamma\max(|1 - \mu\sigma_{\min}^2(H_\Gamma)|,
|1 - \mu\sigma_{\max}^2(H_\Gamma)|)`. In the noiseless case the error of the layer before
thresholding is :math:`(I - A)(s - s^\star)`, so on errors supported in :math:`\Gamma` the layer
contracts iff :math:`\|I - A_{\Gamma\Gamma}\|_2 < 1` (Blumensath & Davies 2009 ask for
:math:`\delta_{3s} < 1/\sqrt{32}` for IHT's guarantee). Principal blocks of a block have a smaller
spectral norm, so the maximum over :math:`|\Gamma| \le s` is attained at :math:`|\Gamma| = s`.

Computing :math:`\delta_s` is NP-hard in general (Tillmann & Pfetsch 2014). What
:func:`restricted_isometry_estimate` returns, honestly:

* **exact** when :math:`\binom ns` is at most ``exhaustive_limit`` (every support evaluated);
* otherwise a **lower bound**: the maximum over ``n_supports`` uniformly random supports. Any
  support's value is a certified lower bound on :math:`\delta_s`, and the maximising support is a
  counterexample to every claim :math:`\delta_s < \text{value}`;
* always an **upper bound** (:func:`gershgorin_upper_bound`), usually loose for :math:`s \gg 1`:
  :math:`\|M\|_2 \le \sqrt{\|M\|_1\|M\|_\infty}` applied to the worst :math:`s\times s` block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch
from torch import Tensor

from ._arrays import to_numpy64

__all__ = ["IsometryEstimate", "gershgorin_upper_bound", "restricted_isometry_estimate"]


@dataclass(frozen=True)
class IsometryEstimate:
    """What :func:`restricted_isometry_estimate` measured.

    Attributes:
        value: :math:`\\max_\\Gamma\\|I - A_{\\Gamma\\Gamma}\\|_2` over the evaluated supports (exact
            :math:`\\delta_s` when ``exact``, else a lower bound).
        exact: every support of size ``s`` was evaluated.
        upper_bound: a certified upper bound on :math:`\\delta_s`.
        worst_support: the support attaining ``value`` (sorted column indices).
        per_support: the value on every evaluated support (same order as ``supports``).
        supports: the evaluated supports ``(N, s)``.
    """

    value: float
    exact: bool
    upper_bound: float
    worst_support: tuple[int, ...]
    per_support: np.ndarray
    supports: np.ndarray


def _blocks_norm(dev: Tensor, supports: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Spectral norms of the principal blocks ``dev[Γ, Γ]`` for every row Γ of ``supports``."""
    out = []
    idx_all = torch.from_numpy(supports)
    for start in range(0, idx_all.shape[0], chunk):
        idx = idx_all[start : start + chunk]
        blocks = dev[idx[:, :, None], idx[:, None, :]]
        out.append(torch.linalg.matrix_norm(blocks, ord=2).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def gershgorin_upper_bound(A: np.ndarray | Tensor, s: int) -> float:
    r"""A certified upper bound on :math:`\delta_s(A)`.

    With :math:`M = I - A`, every :math:`s\times s` principal block satisfies
    :math:`\|M_{\Gamma\Gamma}\|_\infty \le \max_i(|M_{ii}| + \text{sum of the } s-1 \text{ largest }
    |M_{ij}|, j \ne i)` and likewise for columns, and :math:`\|B\|_2 \le \sqrt{\|B\|_1\|B\|_\infty}`.
    """
    A64 = to_numpy64(A, "The effective operator")
    M = np.eye(A64.shape[0]) - A64
    n = M.shape[0]
    off = np.abs(M - np.diag(np.diag(M)))

    def worst(rows: np.ndarray) -> float:
        if s <= 1:
            return float(np.abs(np.diag(M)).max())
        top = -np.sort(-rows, axis=1)[:, : s - 1].sum(axis=1)
        return float((np.abs(np.diag(M)) + top).max())

    if not 1 <= s <= n:
        raise ValueError(f"support size s must lie in [1, n] = [1, {n}], got {s}.")
    return math.sqrt(worst(off) * worst(off.T))


def restricted_isometry_estimate(
    A: np.ndarray | Tensor,
    s: int,
    *,
    n_supports: int = 500,
    seed: int = 0,
    exhaustive_limit: int = 20_000,
    supports: np.ndarray | None = None,
) -> IsometryEstimate:
    r""":math:`\delta_s(A) = \max_{|\Gamma|=s}\|I - A_{\Gamma\Gamma}\|_2`: exact by enumeration when
    :math:`\binom ns \le` ``exhaustive_limit``, else a lower bound from ``n_supports`` seeded
    uniformly random supports (see the module docstring). ``supports`` ``(N, s)`` evaluates given
    supports instead (for paired comparisons of several operators on the same supports).

    Raises:
        ValueError: for a non-square or non-finite ``A``, or ``s`` outside ``[1, n]``.
    """
    A64 = to_numpy64(A, "The effective operator")
    if A64.ndim != 2 or A64.shape[0] != A64.shape[1]:
        raise ValueError(f"The effective operator must be square (n, n), got shape {A64.shape}.")
    n = A64.shape[0]
    if not (isinstance(s, int) and 1 <= s <= n):
        raise ValueError(f"support size s must be an integer in [1, n] = [1, {n}], got {s!r}.")
    if n_supports < 1:
        raise ValueError(f"n_supports must be >= 1, got {n_supports}.")
    exact = False
    if supports is None:
        if math.comb(n, s) <= exhaustive_limit:
            supports = np.array(list(combinations(range(n), s)), dtype=np.int64)
            exact = True
        else:
            rng = np.random.default_rng(seed)
            supports = np.sort(
                np.argsort(rng.random((n_supports, n)), axis=1)[:, :s], axis=1
            ).astype(np.int64)
    else:
        supports = np.asarray(supports, dtype=np.int64)
        if supports.ndim != 2 or supports.shape[1] != s:
            raise ValueError(f"supports must have shape (N, {s}), got {supports.shape}.")
        exact = (
            supports.shape[0] == math.comb(n, s)
            and len({tuple(r) for r in supports}) == (supports.shape[0])
        )
    dev = torch.eye(n, dtype=torch.float64) - torch.from_numpy(A64)
    values = _blocks_norm(dev, supports)
    worst = int(np.argmax(values))
    return IsometryEstimate(
        value=float(values[worst]),
        exact=exact,
        upper_bound=gershgorin_upper_bound(A64, s),
        worst_support=tuple(int(i) for i in supports[worst]),
        per_support=values,
        supports=supports,
    )
