"""Iterates: a tensor, or a frozen dataclass of tensors (multi-block iterates).

Every solver state in the library is either a single ``Tensor`` of shape ``(B, ...)`` or a frozen
dataclass whose fields are such tensors (RPCA's ``(L, R, Y)``, ADMM's ``(s, z, u)``, FISTA's
``(s, y, t)``). The helpers below treat both uniformly, so that paradigms, losses and checks never
special-case the number of blocks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

S = TypeVar("S")

__all__ = [
    "is_block_iterate",
    "iterate_blocks",
    "iterate_flatten",
    "iterate_map",
    "iterate_unflatten",
    "require_finite",
]


def is_block_iterate(s: Any) -> bool:
    """True when ``s`` is a dataclass instance (a multi-block iterate)."""
    return dataclasses.is_dataclass(s) and not isinstance(s, type)


def iterate_blocks(s: Any) -> dict[str, Tensor]:
    """The named blocks of an iterate (``{"s": s}`` for a plain tensor)."""
    if isinstance(s, Tensor):
        return {"s": s}
    if is_block_iterate(s):
        return {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
    raise TypeError(
        f"An iterate must be a Tensor or a dataclass of Tensors, got {type(s).__name__}."
    )


def iterate_map(fn: Callable[..., Tensor], s: S, *others: S) -> S:
    """Apply ``fn`` block-wise to one or several iterates of the same structure."""
    if isinstance(s, Tensor):
        return fn(s, *others)  # type: ignore[return-value]
    if is_block_iterate(s):
        changes = {
            f.name: fn(getattr(s, f.name), *(getattr(o, f.name) for o in others))
            for f in dataclasses.fields(s)  # type: ignore[arg-type]
        }
        return dataclasses.replace(s, **changes)  # type: ignore[type-var]
    raise TypeError(
        f"An iterate must be a Tensor or a dataclass of Tensors, got {type(s).__name__}."
    )


def iterate_flatten(s: Any) -> Tensor:
    """Concatenate all blocks into one ``(B, D)`` matrix (batch dimension first)."""
    blocks = list(iterate_blocks(s).values())
    batch = blocks[0].shape[0]
    return torch.cat([b.reshape(batch, -1) for b in blocks], dim=1)


def iterate_unflatten(vec: Tensor, like: S) -> S:
    """Inverse of :func:`iterate_flatten`, using ``like`` for the block shapes."""
    blocks = iterate_blocks(like)
    batch = vec.shape[0]
    sizes = [b[0].numel() for b in blocks.values()]
    if vec.shape[1] != sum(sizes):
        raise ValueError(
            f"Cannot unflatten a vector of width {vec.shape[1]} into an iterate with "
            f"{sum(sizes)} entries per sample (blocks {list(blocks)})."
        )
    parts = torch.split(vec, sizes, dim=1)
    shaped = {
        name: part.reshape(batch, *b.shape[1:])
        for (name, b), part in zip(blocks.items(), parts, strict=True)
    }
    if isinstance(like, Tensor):
        return shaped["s"]  # type: ignore[return-value]
    return dataclasses.replace(like, **shaped)  # type: ignore[type-var]


def require_finite(t: Tensor, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` when ``t`` holds NaN or Inf."""
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(
            f"{what} contains non-finite values ({n_nan} NaN, {n_inf} Inf); "
            "clean or mask the data before passing it to the model."
        )
