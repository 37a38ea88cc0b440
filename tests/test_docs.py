"""The Python snippets in the core docs run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(
    "page",
    [
        "unfolding.md",
        "adding_a_solver.md",
        "adding_a_problem.md",
        "descent_and_safeguards.md",
        "vocabulary.md",
    ],
)
def test_doc_snippets_run(page: str) -> None:
    """Each page's snippets run in order in one namespace, as a reader runs them in one session
    (a later snippet may use what an earlier one defined)."""
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks, f"{page} has no python snippet"
    namespace = {"__name__": f"docs_{page}"}
    for code in blocks:
        exec(compile(code, f"{page}", "exec"), namespace)
