"""Conversion and validation helpers shared by the theory modules.

Everything here turns user input (numpy arrays, torch tensors, nested sequences, scalars) into
float64 numpy arrays and checks shapes and finiteness, raising errors that say what was expected
and what to do.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numpy as np
import torch

ArrayLike: TypeAlias = np.ndarray | torch.Tensor | Sequence[float] | Sequence[Sequence[float]]
ScalarOrArray: TypeAlias = float | int | np.ndarray | torch.Tensor | Sequence[float]


def to_numpy64(a: object, name: str) -> np.ndarray:
    """Return ``a`` as a float64 numpy array (torch tensors are detached and moved to the CPU).

    Raises ``TypeError`` for inputs that are not numeric and ``ValueError`` for NaN/Inf entries.
    """
    if isinstance(a, torch.Tensor):
        if a.is_complex():
            raise TypeError(f"{name} is a complex tensor; the theory toolkit works with real data.")
        arr = a.detach().to(device="cpu", dtype=torch.float64).numpy()
    else:
        try:
            arr = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"{name} must be a numpy array, a torch tensor or a sequence of numbers; "
                f"got {type(a).__name__}."
            ) from exc
    check_finite(arr, name)
    return arr


def check_finite(arr: np.ndarray, name: str) -> None:
    """Raise ``ValueError`` naming the first non-finite entry of ``arr``."""
    if arr.size and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(
            f"{name} contains NaN or Inf (first at index {where}, value {arr[where]!r}); "
            "clean the input (or lower the learning rate if it came from a diverged model)."
        )


def as_dictionary(H: object, name: str = "H") -> np.ndarray:
    """Return the dictionary ``H`` as a float64 (m, n) matrix."""
    Hn = to_numpy64(H, name)
    if Hn.ndim != 2 or Hn.shape[0] == 0 or Hn.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D matrix of shape (m, n); got {Hn.shape}.")
    return Hn


def as_batch(v: object, dim: int, name: str, dim_name: str) -> tuple[np.ndarray, bool]:
    """Return ``v`` as a float64 (B, dim) batch and whether a single (dim,) vector was given."""
    arr = to_numpy64(v, name)
    if arr.ndim == 1:
        arr2, single = arr[None, :], True
    elif arr.ndim == 2:
        arr2, single = arr, False
    else:
        raise ValueError(
            f"{name} must have shape ({dim_name},) or (B, {dim_name}) with {dim_name} = {dim}; "
            f"got {arr.ndim} dimensions {arr.shape}."
        )
    if arr2.shape[1] != dim:
        raise ValueError(
            f"{name} has shape {arr.shape} but its last dimension must be {dim_name} = {dim} "
            f"(from H); pass observations as (B, m) and codes as (B, n)."
        )
    return arr2, single


def as_per_sample(value: object, batch: int, name: str, *, positive: bool) -> np.ndarray:
    """Broadcast a scalar or a (B,) array to shape (B,), checking its sign."""
    arr = to_numpy64(value, name)
    if arr.ndim == 0:
        arr = np.full(batch, float(arr))
    elif arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(
            f"{name} must be a scalar or have shape (B,) = ({batch},); got shape {arr.shape}."
        )
    if positive and np.any(arr <= 0):
        raise ValueError(f"{name} must be > 0; got min {arr.min()!r}.")
    if not positive and np.any(arr < 0):
        raise ValueError(f"{name} must be >= 0; got min {arr.min()!r}.")
    return arr


def match_batches(a: np.ndarray, b: np.ndarray, a_name: str, b_name: str) -> None:
    """Raise if two (B, ·) batches disagree on B."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} has batch size {a.shape[0]} but {b_name} has batch size {b.shape[0]}; "
            "pass one code per observation."
        )


def as_trajectory_table(values: object, name: str, *, min_layers: int = 2) -> np.ndarray:
    """Return per-instance, per-layer values as a float64 (N, K+1) array.

    A 1-D input is read as a single instance.
    """
    arr = to_numpy64(values, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must have shape (N, K+1): one row per instance, one column per layer "
            f"k = 0..K; got shape {arr.shape}."
        )
    if arr.shape[0] == 0 or arr.shape[1] < min_layers:
        raise ValueError(
            f"{name} needs at least one instance and {min_layers} layers; got shape {arr.shape}."
        )
    return arr
