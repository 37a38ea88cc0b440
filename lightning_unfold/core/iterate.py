r"""Iterates: a tensor, or a frozen dataclass of tensors (multi-block iterates).

Every solver state in the library is either a single ``Tensor`` of shape ``(B, ...)`` or a frozen
dataclass whose fields are such tensors (RPCA's ``(L, R, Y)``, ADMM's ``(s, z, u)``, FISTA's
``(s, y, t)``). The helpers below treat both uniformly, so that paradigms, losses and checks never
special-case the number of blocks.

Blocks may be complex (hybrid precoders, Fourier-domain images). :func:`iterate_flatten` is the
view that *networks* read, so it is always real: a complex block contributes its real and
imaginary parts, interleaved (:func:`as_real_rows`), and :func:`iterate_unflatten` turns such a
real vector back into the complex block. Norms are preserved:
:math:`\|z\|_2 = \|(\operatorname{Re} z, \operatorname{Im} z)\|_2`.

A dataclass iterate may also carry **auxiliary** fields (:func:`aux_field`): quantities that
depend on the observation alone and that every layer would otherwise recompute (WMMSE's power
gains :math:`h_{ij}^2`). They are not blocks: :func:`iterate_blocks`, :func:`iterate_flatten`,
distances and networks never see them, and :func:`iterate_map` / :func:`iterate_unflatten` pass
them through unchanged, so ``init`` computes them once and every layer hands them on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

S = TypeVar("S")

__all__ = [
    "as_real_rows",
    "aux_field",
    "cast_precision",
    "complex_dtype",
    "is_block_iterate",
    "iterate_blocks",
    "iterate_flatten",
    "iterate_map",
    "iterate_unflatten",
    "real_dtype",
    "require_finite",
]


def complex_dtype(dtype: torch.dtype) -> torch.dtype:
    """The complex dtype of the same precision (float32 → complex64, float64 → complex128)."""
    if dtype.is_complex:
        return dtype
    return {torch.float64: torch.complex128, torch.float16: torch.complex32}.get(
        dtype, torch.complex64
    )


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The real dtype of the same precision (complex64 → float32, complex128 → float64)."""
    if not dtype.is_complex:
        return dtype
    return {torch.complex128: torch.float64, torch.complex32: torch.float16}.get(
        dtype, torch.float32
    )


def cast_precision(t: Tensor, dtype: torch.dtype) -> Tensor:
    """``t`` in the precision of ``dtype``, keeping it complex or real as it is (integer and
    boolean tensors unchanged): a complex parameter stays complex in a float32 model."""
    if t.is_complex():
        return t.to(complex_dtype(dtype))
    if t.is_floating_point():
        return t.to(real_dtype(dtype))
    return t


def as_real_rows(t: Tensor) -> Tensor:
    """``(B, ...)`` → real ``(B, D)``: complex entries become (real, imaginary) pairs."""
    if t.is_complex():
        t = torch.view_as_real(t.resolve_conj())
    return t.reshape(t.shape[0], -1)


def is_block_iterate(s: Any) -> bool:
    """True when ``s`` is a dataclass instance (a multi-block iterate)."""
    return dataclasses.is_dataclass(s) and not isinstance(s, type)


def aux_field() -> Any:
    """A dataclass field for an auxiliary, observation-only quantity of an iterate (module
    docstring): default ``None``, left out of comparisons, ``repr`` and every block helper."""
    return dataclasses.field(default=None, compare=False, repr=False, metadata={"aux": True})


def _block_fields(s: Any) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(s) if not f.metadata.get("aux", False))


def iterate_blocks(s: Any) -> dict[str, Tensor]:
    """The named blocks of an iterate (``{"s": s}`` for a plain tensor); auxiliary fields
    (:func:`aux_field`) are not blocks."""
    if isinstance(s, Tensor):
        return {"s": s}
    if is_block_iterate(s):
        return {f.name: getattr(s, f.name) for f in _block_fields(s)}
    raise TypeError(
        f"An iterate must be a Tensor or a dataclass of Tensors, got {type(s).__name__}."
    )


def iterate_map(fn: Callable[..., Tensor], s: S, *others: S) -> S:
    """Apply ``fn`` block-wise to one or several iterates of the same structure (auxiliary
    fields are taken from ``s`` unchanged)."""
    if isinstance(s, Tensor):
        return fn(s, *others)  # type: ignore[return-value]
    if is_block_iterate(s):
        changes = {
            f.name: fn(getattr(s, f.name), *(getattr(o, f.name) for o in others))
            for f in _block_fields(s)
        }
        return dataclasses.replace(s, **changes)  # type: ignore[type-var]
    raise TypeError(
        f"An iterate must be a Tensor or a dataclass of Tensors, got {type(s).__name__}."
    )


def iterate_flatten(s: Any) -> Tensor:
    """Concatenate all blocks into one real ``(B, D)`` matrix (batch dimension first); a complex
    block contributes its (real, imaginary) pairs (:func:`as_real_rows`)."""
    return torch.cat([as_real_rows(b) for b in iterate_blocks(s).values()], dim=1)


def iterate_unflatten(vec: Tensor, like: S) -> S:
    """Inverse of :func:`iterate_flatten`, using ``like`` for the block shapes."""
    blocks = iterate_blocks(like)
    sizes = [b[0].numel() * (2 if b.is_complex() else 1) for b in blocks.values()]
    if vec.shape[1] != sum(sizes):
        raise ValueError(
            f"Cannot unflatten a vector of width {vec.shape[1]} into an iterate with "
            f"{sum(sizes)} entries per sample (blocks {list(blocks)})."
        )
    parts = torch.split(vec, sizes, dim=1)
    shaped = {
        name: _reshape_like(part, b) for (name, b), part in zip(blocks.items(), parts, strict=True)
    }
    if isinstance(like, Tensor):
        return shaped["s"]  # type: ignore[return-value]
    return dataclasses.replace(like, **shaped)  # type: ignore[type-var]


def _reshape_like(part: Tensor, b: Tensor) -> Tensor:
    if b.is_complex() and not part.is_complex():
        pairs = part.reshape(part.shape[0], *b.shape[1:], 2).to(real_dtype(b.dtype))
        return torch.view_as_complex(pairs.contiguous())
    return part.reshape(part.shape[0], *b.shape[1:])


def require_finite(t: Tensor, what: str) -> None:
    """Raise a ``ValueError`` naming ``what`` when ``t`` holds NaN or Inf.

    One reduction on the fast path: a sum is finite when every term is (a NaN or an Inf makes
    it NaN or Inf), so only a non-finite sum, which an overflow of finite terms can also give,
    pays for the element-wise test. Several times cheaper than ``isfinite(t).all()`` on a CPU.
    """
    if not (t.is_floating_point() or t.is_complex()):
        return  # integers and booleans are always finite
    if bool(torch.isfinite(t.sum())):
        return
    if not bool(torch.isfinite(t).all()):
        n_nan = int(torch.isnan(t).sum())
        n_inf = int(torch.isinf(t).sum())
        raise ValueError(
            f"{what} contains non-finite values ({n_nan} NaN, {n_inf} Inf); "
            "clean or mask the data before passing it to the model."
        )
