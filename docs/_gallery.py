"""Run before each gallery example (``sphinx_gallery_conf["reset_modules"]``).

The rendered output of an example is what a reader copies, so it must not show notices that
are about Lightning's own code or this build machine: Lightning's deprecation of ``LeafSpec``
(raised inside Lightning with recent torch) and its advice about ``IterableDataset.__len__``
with several loader workers (the examples use none) print the build machine's site-packages
path. The test suite ignores the same two in ``pyproject.toml``; everything else still shows.
"""

from __future__ import annotations

import warnings
from typing import Any

#: (message regex, why it is not the reader's business)
LIBRARY_NOTICES = (
    r".*LeafSpec.*is deprecated",  # Lightning's internals on torch >= 2.10
    r"Your `IterableDataset` has `__len__` defined",  # advice for num_workers > 1; none here
)


def quiet_library_warnings(gallery_conf: dict[str, Any], fname: str, when: str) -> None:
    """Ignore :data:`LIBRARY_NOTICES` for the example about to run."""
    for message in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=message)
