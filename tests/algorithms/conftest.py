"""Shared set-up of the algorithm tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Small matrices: intra-op threads only contend on a loaded CI machine (measured 10×
    slower with two threads per process there), so every algorithm test module runs on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
