"""Every gallery example runs at its smallest size and ends with a labelled plot.

``examples/gallery/plot_*.py`` (all of them, including ones added later) run in this process
with ``LU_GALLERY_FAST=1`` — so no example rots between full documentation builds — under the
suite's warnings-as-errors. The full-size runs are the documentation build's
(``sphinx-build -W docs docs/_build/html``).
"""

from __future__ import annotations

import logging
import runpy
from collections.abc import Iterator
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from lightning_unfold import ALGORITHMS

GALLERY = Path(__file__).resolve().parents[1] / "examples" / "gallery"
EXAMPLES = sorted(GALLERY.glob("plot_*.py"))


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[plt.Figure]]:
    """Fast mode, a scratch working directory, ``plt.show`` recording the figures; the
    algorithm registry and Lightning's log level are restored afterwards."""
    monkeypatch.setenv("LU_GALLERY_FAST", "1")
    monkeypatch.chdir(tmp_path)
    shown: list[plt.Figure] = []
    monkeypatch.setattr(
        plt, "show", lambda *a, **k: shown.extend(map(plt.figure, plt.get_fignums()))
    )
    registry = dict(ALGORITHMS)
    level = logging.getLogger("lightning.pytorch").level
    yield shown
    ALGORITHMS.clear()
    ALGORITHMS.update(registry)
    logging.getLogger("lightning.pytorch").setLevel(level)
    plt.close("all")


def test_the_gallery_has_one_example_per_guarantee() -> None:
    names = {p.stem for p in EXAMPLES}
    expected = {
        "plot_coupling",
        "plot_linear_rates",
        "plot_alista_weight",
        "plot_generalization",
        "plot_rpca_paradigms",
        "plot_own_solver",
        "plot_schedules",
    }
    assert expected <= names, expected - names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs_and_plots(path: Path, isolated: list[plt.Figure]) -> None:
    source = path.read_text(encoding="utf-8")
    doc = source.split('"""', 2)[1].strip().splitlines()
    assert len(doc) > 2 and set(doc[1]) == {"="}, f"{path.name}: a title underlined by === first"
    assert "LU_GALLERY_FAST" in source, f"{path.name}: read LU_GALLERY_FAST for a smallest size"
    runpy.run_path(str(path), run_name="__main__")
    assert isolated, f"{path.name} shows no figure"
    axes = [ax for fig in isolated for ax in fig.axes if ax.has_data()]
    assert axes, f"{path.name}: its figure has no plotted data"
    for ax in axes:  # a y label may sit on a sibling sharing the y axis
        assert ax.get_xlabel(), f"{path.name}: a plot without an x label"
        siblings = ax.get_shared_y_axes().get_siblings(ax)
        assert any(a.get_ylabel() for a in siblings), f"{path.name}: a plot without a y label"
