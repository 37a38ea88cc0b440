"""The Sphinx site builds with warnings as errors, and it documents every public name.

One fast build per test session (the gallery's pages are rendered but its examples are not run:
``-D plot_gallery=0``; ``tests/test_gallery.py`` runs them). Sphinx and its extensions are in
the ``test`` extra, so this never skips in CI: a broken docstring, reference or page fails it.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC = (
    "lightning_unfold",
    "lightning_unfold.theory",
    "lightning_unfold.checks",
    "lightning_unfold.training.study",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the site once (fresh, ``-E``, ``-W``) into a temporary folder; return its root."""
    out = tmp_path_factory.mktemp("site")
    cmd = [
        sys.executable, "-m", "sphinx", "-W", "--keep-going", "-E", "-q",
        "-D", "plot_gallery=0", "-d", str(out / "doctrees"), str(DOCS), str(out / "html"),
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, (
        f"sphinx-build -W failed after {seconds:.0f} s (fix the docstring or page it names; "
        f"`pip install -e '.[test]'` installs Sphinx):\n{proc.stderr[-6000:]}"
    )
    return out / "html"


def _inventory(site: Path) -> set[str]:
    from sphinx.util.inventory import InventoryFile

    with open(site / "objects.inv", "rb") as f:
        inv = InventoryFile.load(f, "", lambda base, uri: uri)
    return {name for kind, entries in inv.items() if kind.startswith("py:") for name in entries}


@pytest.mark.parametrize("module", PUBLIC)
def test_every_public_name_is_in_the_api_reference(site: Path, module: str) -> None:
    names = importlib.import_module(module).__all__
    documented = _inventory(site)
    missing = sorted(n for n in names if f"{module}.{n}" not in documented)
    assert not missing, f"{module}.__all__ names missing from the API reference: {missing}"
    pages = {p.stem for p in (site / "api" / "generated").glob("*.html")}
    assert {f"{module}.{n}" for n in names} <= pages
    # and the module page lists exactly its __all__ (nothing stale from another build)
    listed = (DOCS / "api" / f"{module}.rst").read_text(encoding="utf-8")
    entries = {line.strip() for line in listed.split(":nosignatures:", 1)[1].splitlines()}
    assert set(names) == entries - {""}


def test_every_guide_is_a_page(site: Path) -> None:
    guides = sorted(p.stem for p in DOCS.glob("*.md"))
    assert {"unfolding", "theory", "checks", "schedules", "rpca", "adding_a_solver"} <= set(guides)
    for stem in guides:
        title = (DOCS / f"{stem}.md").read_text(encoding="utf-8").splitlines()[0].lstrip("# ")
        html = (site / f"{stem}.html").read_text(encoding="utf-8")
        assert title.split("`")[0].strip() in html, f"{stem}.md is not rendered"
    assert 'class="math' in (site / "theory.html").read_text(encoding="utf-8")  # $…$ rendered


SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc=\"([^\"]+)\"", flags=re.I)
STYLESHEET = re.compile(r"<link[^>]*\bhref=\"([^\"]+)\"", flags=re.I)


def test_math_renders_offline(site: Path) -> None:
    """The site bundles its math renderer: no page loads a script or stylesheet from the network
    (an offline reader would otherwise see raw TeX), and the pages with math load the MathJax
    copied into ``_static``."""
    remote = {}
    for page in site.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        links = SCRIPT_SRC.findall(html) + [
            h for h in STYLESHEET.findall(html) if h.endswith(".css") or "css" in h
        ]
        bad = [u for u in links if u.startswith(("http://", "https://", "//"))]
        if bad:
            remote[str(page.relative_to(site))] = bad
    assert not remote, f"pages load scripts or styles from the network: {remote}"
    theory = (site / "theory.html").read_text(encoding="utf-8")
    sources = SCRIPT_SRC.findall(theory)
    mathjax = [u.split("?")[0] for u in sources if "mathjax" in u.lower() or "katex" in u.lower()]
    assert mathjax == ["_static/mathjax/tex-mml-chtml.js"], sources
    assert (site / mathjax[0]).is_file()
    fonts = site / "_static" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2"
    assert len(list(fonts.glob("*.woff"))) > 10  # MathJax fetches its fonts next to itself
    generated = (site / "api" / "generated").glob("*.html")
    with_math = [p for p in generated if 'class="math' in p.read_text(encoding="utf-8")]
    assert with_math, "no API page has math: the docstrings' .. math:: is not rendered"
    assert all(
        'src="../../_static/mathjax/tex-mml-chtml.js' in p.read_text("utf-8") for p in with_math
    )


def test_every_gallery_example_is_a_page(site: Path) -> None:
    examples = sorted((ROOT / "examples" / "gallery").glob("plot_*.py"))
    assert len(examples) >= 7
    for ex in examples:
        page = site / "auto_examples" / f"{ex.stem}.html"
        assert page.exists(), f"{ex.name} is not rendered in the gallery"
    index = (site / "auto_examples" / "index.html").read_text(encoding="utf-8")
    assert all(ex.stem in index for ex in examples)


def test_gallery_output_shows_no_library_notice_or_machine_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a gallery page shows under an example is its printed output and its warnings. Run
    one example (fast mode) as the documentation build does, after the build's per-example
    reset (``docs/_gallery.py``), with every warning recorded: none may remain, and the output
    may name no path of this machine."""
    import logging
    import runpy
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sys.path.insert(0, str(DOCS))
    try:
        from _gallery import quiet_library_warnings
    finally:
        sys.path.remove(str(DOCS))
    from lightning_unfold import ALGORITHMS

    monkeypatch.setenv("LU_GALLERY_FAST", "1")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    registry, level = dict(ALGORITHMS), logging.getLogger("lightning.pytorch").level
    example = ROOT / "examples" / "gallery" / "plot_coupling.py"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            quiet_library_warnings({}, str(example), "before")
            runpy.run_path(str(example), run_name="__main__")
    finally:
        ALGORITHMS.clear()
        ALGORITHMS.update(registry)
        logging.getLogger("lightning.pytorch").setLevel(level)
        plt.close("all")
    shown = [f"{w.category.__name__}: {w.message}" for w in caught]
    assert not shown, f"the gallery page would show warnings: {shown}"
    out = capsys.readouterr()
    printed = out.out + out.err
    assert printed.strip(), "the example printed nothing: nothing was checked"
    for path in {str(ROOT), str(Path(sys.prefix)), str(Path.home()), str(tmp_path)}:
        assert path not in printed, f"the output names {path}"
    assert "site-packages" not in printed
