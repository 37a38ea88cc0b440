"""The snippets of docs/theory.md run (in order, sharing one namespace)."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "theory.md"


def test_docs_snippets_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 6
    ns: dict[str, object] = {"print": lambda *a, **k: None}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), ns)
    ns["test_certificate"]()  # the hypothesis example at the end
