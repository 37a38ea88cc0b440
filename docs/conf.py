"""Sphinx configuration of the lightning_unfold documentation.

Build (README): ``pip install -e ".[docs]" && sphinx-build -W docs docs/_build/html``.
Fast build without executing the gallery (what the test suite does):
``sphinx-build -W -D plot_gallery=0 docs docs/_build/html``.

Nothing here downloads at build time (no intersphinx), and nothing is downloaded when a page is
read: MathJax comes from the ``sphinx-mathjax-offline`` package (in the ``docs`` extra), is copied
into ``_static/mathjax`` and loaded from there, so the math renders offline.
The API reference is written from the ``__all__`` of the public modules on every build
(:func:`write_api_pages`), so a name added to ``__all__`` on any branch appears without editing
the docs.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# The gallery runs its examples in this process, with one torch thread (set before torch is
# imported): on a 2-core machine shared with other work, one thread per process is fastest.
os.environ.setdefault("OMP_NUM_THREADS", "1")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(DOCS))  # for _api.py

from _api import API_MODULES, describe_constant, write_api_pages  # noqa: E402

project = "lightning_unfold"
author = "the lightning_unfold authors"
copyright = "2026, the lightning_unfold authors"
release = version = importlib.import_module("lightning_unfold").__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx_copybutton",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "**.zip",
    "sg_execution_times.rst",  # left by older builds (write_computation_times is off below)
    "auto_examples/sg_execution_times.rst",
]
templates_path = ["_templates"]

# -- Markdown guides (myst): the existing docs/*.md pages, unchanged -------------------------
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# The guides mention files as `docs/x.md` code spans, not links; nothing to resolve.
suppress_warnings = ["myst.header"]

# -- API reference: napoleon reads the code's Google-style "Args:" docstrings ----------------
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_inherit_docstrings = False  # nn.Module / LightningModule docstrings are not ours
autoclass_content = "class"
# Type hints name third-party classes (torch, lightning) whose docs are not in this site.
nitpicky = False

write_api_pages(DOCS / "api", API_MODULES)

# -- Math: MathJax 3 bundled with the site ---------------------------------------------------
# The files come from a PyPI package (MathJax 3.2.2, Apache-2.0); ``html_static_path`` copies its
# ``mathjax/`` folder to ``_static/mathjax`` and ``mathjax_path`` (relative to ``_static``)
# points at it, so a reader without network access sees rendered math, not raw TeX.


def _mathjax_static() -> Path:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        dist = distribution("sphinx-mathjax-offline")
    except PackageNotFoundError as err:
        raise RuntimeError(
            "The docs bundle MathJax from the 'sphinx-mathjax-offline' package, which is not "
            "installed: pip install -e '.[docs]'."
        ) from err
    static = Path(str(dist.locate_file("sphinx-mathjax-offline/static")))
    if not (static / "mathjax" / MATHJAX_ENTRY).is_file():
        raise RuntimeError(
            f"{static / 'mathjax' / MATHJAX_ENTRY} is missing; reinstall the docs extra."
        )
    return static


#: MathJax's combined component for TeX and MathML input and HTML-CSS output (Sphinx's default)
MATHJAX_ENTRY = "tex-mml-chtml.js"
mathjax_path = f"mathjax/{MATHJAX_ENTRY}"

# -- Gallery ---------------------------------------------------------------------------------
# Every ``plot_*.py`` under examples/gallery/ is executed and rendered; a new file is picked up
# automatically. ``-D plot_gallery=0`` renders the pages without running them.
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples" / "gallery"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py|/_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "abort_on_example_error": True,
    # matplotlib's state, and Lightning's notices about its own code (docs/_gallery.py)
    "reset_modules": ("matplotlib", "_gallery.quiet_library_warnings"),
    "matplotlib_animations": False,
    "remove_config_comments": True,
    "show_memory": False,
    "min_reported_time": 0,
    # the timing page loads jQuery and DataTables from CDNs: not in an offline site (each
    # example's page still states its running time)
    "write_computation_times": False,
    "reference_url": {},
}

# -- HTML ------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = "lightning_unfold"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
}
html_static_path: list[str] = [str(_mathjax_static())]
html_show_sourcelink = False
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True


def setup(app: object) -> None:
    app.connect("autodoc-process-docstring", describe_constant)  # type: ignore[attr-defined]
