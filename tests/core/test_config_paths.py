"""Configs and checkpoints name a problem by its public path, not the submodule it lives in."""

from __future__ import annotations

import pytest

from lightning_unfold.algorithms import FAMILIES
from lightning_unfold.core.algorithm import problem_from_config, public_class_path


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_every_family_problem_is_named_by_its_public_path(family: str) -> None:
    problem = FAMILIES[family].problem()
    path = problem.to_config()["class_path"]
    module, _, name = path.rpartition(".")
    assert name == type(problem).__qualname__
    # the outermost package that exposes the class: no implementation submodule in the path
    assert not any(part in module.split(".") for part in ("problem", "solvers", "networks"))
    rebuilt = problem_from_config(problem.to_config())
    assert type(rebuilt) is type(problem)


def test_a_class_no_package_reexports_keeps_its_module_path() -> None:
    class Local:
        pass

    assert public_class_path(Local) == f"{__name__}.{Local.__qualname__}"
