"""The wheel maps theory/ and checks/ into lightning_unfold and ships py.typed and the CLI."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contents(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard; see tests/conftest.py SUBPROCESS_TIMEOUT_S
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("lightning_unfold-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("theory", "checks"):
        source = {p.name for p in (ROOT / module).glob("*.py")}
        packaged = {
            n.rsplit("/", 1)[1]
            for n in names
            if n.startswith(f"lightning_unfold/{module}/") and n.endswith(".py")
        }
        assert source == packaged, (module, source ^ packaged)
    assert "lightning_unfold/py.typed" in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert (
        "lightning-unfold = lightning_unfold.cli:main"
        in zipfile.ZipFile(wheel).read(entry).decode()
    )


def test_editable_install_maps_the_subpackages() -> None:
    import lightning_unfold.checks
    import lightning_unfold.theory

    assert Path(lightning_unfold.theory.__file__).parent == ROOT / "theory"
    assert Path(lightning_unfold.checks.__file__).parent == ROOT / "checks"
