"""The command line: every example config, the demo, and a 2-process DDP run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.yaml"))


def _verb(config: Path) -> str:
    first = config.read_text().splitlines()[0]
    return "validate" if "validate" in first else "fit"


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_config_runs_with_fast_dev_run(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-unfold"])  # LightningCLI compares with args
    assert (
        main(
            [
                _verb(config),
                "--config",
                str(config),
                "--trainer.fast_dev_run=true",
                "--trainer.enable_progress_bar=false",
            ]
        )
        == 0
    )


def test_demo_small_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "demo",
            "--m",
            "16",
            "--n",
            "32",
            "--depth",
            "4",
            "--epochs",
            "2",
            "--out",
            str(tmp_path),
            "--no-check",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "FISTA" in out and "ALISTA" in out and "dB better" in out
    assert (tmp_path / "model.ckpt").is_file()


@pytest.mark.ddp
def test_ddp_spawn_fit_on_two_cpu_processes(tmp_path: Path) -> None:
    problem = SparseRecovery(m=12, n=24, seed=0)
    module = UnfoldedModule(problem, paradigm="objective", variant="lista_cp", depth=3)
    data = SyntheticDataModule(problem, batch_size=16, train_batches=4, val_size=64)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp_spawn",
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, data)
    # ddp_spawn copies the trained weights back to the main process
    changed = any(
        not (a == b.detach()).all() for a, b in zip(before, module.parameters(), strict=True)
    )
    assert trainer.state.finished and changed


@pytest.mark.ddp
def test_cli_fit_with_ddp_in_a_subprocess(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "lightning_unfold",
        "fit",
        "--config",
        str(ROOT / "examples" / "configs" / "lista_cp.yaml"),
        "--trainer.devices=2",
        "--trainer.strategy=ddp",
        "--trainer.max_steps=4",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--data.train_batches=4",
        "--data.val_size=128",
        "--model.depth=3",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    from ddp_isolation import SUBPROCESS_TIMEOUT_S

    proc = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_S, env=env
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max_steps=4" in proc.stderr + proc.stdout
    assert list(tmp_path.rglob("*.ckpt")), "the DDP run saved no checkpoint"


def test_ddp_tests_get_a_port_the_kernel_never_hands_out() -> None:
    """Runs after the DDP tests above: their MASTER_PORT must not have leaked into this one."""
    from ddp_isolation import (
        SESSION_MASTER_PORT,
        _ephemeral_range,
        _port_is_free,
        free_port_outside_ephemeral_range,
    )

    assert os.environ.get("MASTER_PORT") == SESSION_MASTER_PORT

    lo, hi = _ephemeral_range()
    port = free_port_outside_ephemeral_range()
    assert not lo <= port <= hi and _port_is_free(port)
