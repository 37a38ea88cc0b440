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
        "scn.md",
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


#: an issue-tracker reference: "issue 16", "issues 13 and 16", "#16", "(#7)"
ISSUE_REFERENCE = re.compile(r"\bissues?\s+#?\d+|(?<![\w&/])#\d+\b", flags=re.I)


@pytest.mark.parametrize("page", [*sorted(p.name for p in DOCS.glob("*.md")), "../README.md"])
def test_user_docs_mention_no_issue_numbers(page: str) -> None:
    text = (DOCS / page).read_text(encoding="utf-8")
    # code blocks may hold anything (a shell comment, a colour); the prose speaks to users
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    found = [
        f"line {prose[: m.start()].count(chr(10)) + 1}: {m.group(0)!r}"
        for m in ISSUE_REFERENCE.finditer(prose)
    ]
    assert not found, f"{page} cites the issue tracker (say what changed instead): {found}"


def test_the_issue_reference_pattern_catches_what_it_should() -> None:
    for bad in ("see issue 16", "Issues 13 and 16", "(#7)", "fixed in #123.", "issue #4"):
        assert ISSUE_REFERENCE.search(bad), bad
    for fine in ("a tissue 20 dB", "the issue", "C# code", "`x#1`", "&#8211;", "colour #fff"):
        assert not ISSUE_REFERENCE.search(fine), fine


def test_the_suites_table_of_the_checks_page_lists_each_suites_checks() -> None:
    from lightning_unfold.checks import SUITES

    text = (DOCS / "checks.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| ([a-z_, ]+?)(?: \(.*\))? \|$", text, flags=re.M))
    assert set(SUITES) <= set(rows), rows
    for name, names in SUITES.items():
        assert [n.strip() for n in rows[name].split(",")] == list(names), name
