"""theory/ must never import lightning: it is usable without the training stack."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
THEORY = ROOT / "theory"


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=1800
    )


def test_importing_lightning_unfold_theory_does_not_import_lightning() -> None:
    code = (
        "import lightning_unfold.theory, sys; "
        "bad = [m for m in sys.modules if m.startswith('lightning') "
        "and not m.startswith('lightning_unfold')]; "
        "assert not bad, bad[:5]"
    )
    proc = _run(code, ROOT)
    assert proc.returncode == 0, (
        "importing lightning_unfold.theory pulled in lightning (listed below). theory/ itself "
        "imports none (see the next test): make lightning_unfold/__init__.py import its "
        "training stack lazily (PEP 562 __getattr__).\n" + proc.stderr[-2000:]
    )


def test_theory_package_alone_imports_no_lightning_and_no_hypothesis() -> None:
    # Load theory/ as a stand-alone top-level package, bypassing lightning_unfold/__init__.py.
    code = (
        "import sys; sys.path.insert(0, '.'); import theory; "
        "assert theory.lasso_reference is not None; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('lightning', 'hypothesis', "
        "'pytorch_lightning', 'lightning_unfold')]; "
        "assert not bad, bad[:5]"
    )
    proc = _run(code, ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("path", sorted(THEORY.glob("*.py")), ids=lambda p: p.name)
def test_no_source_file_imports_lightning(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top not in ("lightning", "pytorch_lightning", "lightning_unfold"), (
                f"{path.name} imports {name}; theory/ may only import torch, numpy, scipy, "
                "cvxpy and the standard library (hypothesis in strategies.py)."
            )
            if path.name != "strategies.py":
                assert top != "hypothesis", f"{path.name} imports hypothesis"


def test_strategies_are_reachable_lazily() -> None:
    import lightning_unfold.theory as theory

    assert "strategies" not in theory.__all__
    assert hasattr(theory.strategies, "sparse_recovery_problems")
    with pytest.raises(AttributeError, match="no attribute"):
        _ = theory.does_not_exist
