"""Iterate helpers: auxiliary fields (observation-only data an iterate carries) are not blocks."""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from lightning_unfold.core.iterate import (
    aux_field,
    iterate_blocks,
    iterate_flatten,
    iterate_map,
    iterate_unflatten,
)


@dataclasses.dataclass(frozen=True)
class _WithAux:
    a: Tensor
    b: Tensor
    cache: object = aux_field()


def test_aux_fields_are_not_blocks_and_pass_through_every_helper() -> None:
    cache = object()
    s = _WithAux(a=torch.ones(3, 2), b=torch.zeros(3, 4), cache=cache)
    assert list(iterate_blocks(s)) == ["a", "b"]
    flat = iterate_flatten(s)
    assert flat.shape == (3, 6)
    back = iterate_unflatten(flat * 2.0, s)
    assert back.cache is cache
    torch.testing.assert_close(back.a, 2.0 * s.a)
    mapped = iterate_map(torch.add, s, back)
    assert mapped.cache is cache
    torch.testing.assert_close(mapped.a, 3.0 * s.a)
    # equality and repr ignore the auxiliary field
    assert _WithAux(a=s.a, b=s.b) == s
    assert "cache" not in repr(s)
