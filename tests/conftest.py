"""Shared pytest configuration: a reproducible hypothesis profile for CI, isolated DDP runs, a
quiet Lightning trainer, and the loader of the example scripts (studies, benchmarks) that their
tests run."""

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import lightning as L
import pytest
from ddp_isolation import free_port_outside_ephemeral_range
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _isolated_environment(request: pytest.FixtureRequest) -> Iterator[None]:
    """Give every test the environment it started with, and each DDP test its own port.

    Lightning writes ``MASTER_PORT`` into the *parent's* ``os.environ`` when it spawns workers
    and never removes it, so without this every later DDP test in the session (and the CLI
    subprocess, which inherits the environment) reused the first test's port, by then back in
    the kernel's ephemeral pool and free for any other socket to take.
    """
    saved = os.environ.copy()
    if request.node.get_closest_marker("ddp") is not None:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
        os.environ["MASTER_PORT"] = str(free_port_outside_ephemeral_range())
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def quiet_trainer() -> Callable[..., L.Trainer]:
    """``quiet_trainer(**kw)``: a one-device CPU ``Trainer`` without logger, checkpoints,
    progress bar or model summary, Lightning's defaults otherwise (validation included); ``kw``
    overrides any argument. (A fixed number of steps with validation off:
    ``lightning_unfold.training.study.study_trainer``.)"""

    def make(**kw: Any) -> L.Trainer:
        opts: dict[str, Any] = dict(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        opts.update(kw)
        return L.Trainer(**opts)

    return make


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture
def load_example(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], ModuleType]:
    """``load_example("nmf_study")`` imports ``examples/nmf_study.py`` as module ``nmf_study``.

    The module is registered in ``sys.modules`` for the test's duration only: a dataclass (a
    study's ``Preset``) looks its module up there when it is defined, and so does pickling.
    """

    def load(name: str) -> ModuleType:
        path = EXAMPLES / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise FileNotFoundError(f"no example script {path}")
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load
