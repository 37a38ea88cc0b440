"""The Python snippets in the core docs run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.mark.parametrize(
    "page", ["unfolding.md", "adding_a_solver.md", "descent_and_safeguards.md", "vocabulary.md"]
)
def test_doc_snippets_run(page: str) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.S)
    assert blocks, f"{page} has no python snippet"
    for code in blocks:
        exec(compile(code, f"{page}", "exec"), {"__name__": f"docs_{page}"})
