"""Run before each gallery example (``sphinx_gallery_conf["reset_modules"]``).

The rendered output of an example is what a reader copies, so it must not show warnings about
Lightning's own code that print this build machine's site-packages path: the command line's
:data:`lightning_unfold.cli.LIBRARY_NOTICES` (the test suite ignores the same two in
``pyproject.toml``). Every other warning still shows.
"""

from __future__ import annotations

from typing import Any

from lightning_unfold.cli import quiet_library_notices


def quiet_library_warnings(gallery_conf: dict[str, Any], fname: str, when: str) -> None:
    """Ignore Lightning's notices about its own code for the example about to run."""
    quiet_library_notices()
