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


def test_demo_small_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    lightning_log = logging.getLogger("lightning.pytorch")  # does not propagate to the root
    lightning_log.addHandler(caplog.handler)
    try:
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
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert code == 0
    logged = caplog.text
    assert "GPU available" in logged  # the handler saw Lightning's messages ...
    assert "weights_only" not in logged and "💡" not in logged  # ... but no notice or tip
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


# --- the command line fails in one line --------------------------------------------------------

TINY = """\
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 1
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
model:
  problem:
    class_path: lightning_unfold.SparseRecovery
    init_args: {m: 8, n: 16, sparsity: 0.2, snr_db: null, rho: 0.1, seed: 0}
  depth: 2
  paradigm: objective
  variant: lista
data:
  batch_size: 16
  train_batches: 2
  val_size: 32
  test_size: 32
"""


def _tiny(tmp_path: Path, edit: tuple[str, str] = ("", "")) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace(*edit) if edit[0] else TINY)
    return path


def _fails_in_one_line(
    argv: list[str], capsys: pytest.CaptureFixture[str], *expected: str, code: int = 2
) -> str:
    """Run ``main(argv)``; assert the exit code, a single stderr line and no traceback."""
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err and err.startswith("lightning-unfold")
    for text in expected:
        assert text in err, err
    return err


def _save_checkpoint(module: UnfoldedModule, path: Path) -> Path:
    """What Lightning's ``save_checkpoint(weights_only=True)`` writes, without a Trainer."""
    import torch

    torch.save(
        {
            "epoch": 0,
            "global_step": 0,
            "pytorch-lightning_version": L.__version__,
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
        },
        path,
    )
    return path


@pytest.mark.parametrize(
    ("extra", "edit", "expected"),
    [
        (["--model.depth=-3"], ("", ""), "depth (number of unfolded iterations K) must be"),
        ([], ("depth: 2", "depth: -3"), "got -3"),
        ([], ("paradigm: objective", "paradigm: objectve"), "Unknown paradigm 'objectve'"),
        (["--model.paradigm=objectve"], ("", ""), "valid: ['hyperparameters', 'objective'"),
        ([], ("n: 16,", "n: -128,"), "n=-128"),
        (["--model.problem.init_args.n=-128"], ("", ""), "n=-128"),
        (["--model.depth=abc"], ("", ""), 'key "model.depth"'),
    ],
    ids=["depth-cli", "depth-yaml", "paradigm-yaml", "paradigm-cli", "n-yaml", "n-cli", "type"],
)
def test_an_invalid_value_is_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    edit: tuple[str, str],
    expected: str,
) -> None:
    config = _tiny(tmp_path, edit)
    _fails_in_one_line(["fit", "--config", str(config), *extra], capsys, expected)


@pytest.mark.parametrize(
    ("extra", "edit", "expected"),
    [
        (["--model.dpeth=3"], ("", ""), "did you mean model.depth?"),
        ([], ("depth: 2", "dpeth: 2"), "did you mean model.depth?"),
        ([], ("sparsity: 0.2", "sparsty: 0.2"), "did you mean sparsity?"),
        (["--trainer.max_epohcs=1"], ("", ""), "did you mean trainer.max_epochs or"),
    ],
    ids=["cli", "yaml", "problem-argument", "trainer"],
)
def test_a_misspelt_key_names_the_close_ones(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    edit: tuple[str, str],
    expected: str,
) -> None:
    config = _tiny(tmp_path, edit)
    _fails_in_one_line(["fit", "--config", str(config), *extra], capsys, expected)


def test_a_misspelt_command_names_the_close_one(capsys: pytest.CaptureFixture[str]) -> None:
    _fails_in_one_line(["fitt"], capsys, "did you mean fit?")
    _fails_in_one_line([], capsys, "check, demo")


def test_the_traceback_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["fit", "--config", str(_tiny(tmp_path)), "--model.depth=-3"]
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        main([*argv, "--traceback"])
    monkeypatch.setenv("LIGHTNING_UNFOLD_TRACEBACK", "1")
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        main(argv)
    monkeypatch.setenv("LIGHTNING_UNFOLD_TRACEBACK", "0")
    _fails_in_one_line(argv, capsys, "got -3")


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "check CHECKPOINT", "demo"):
        assert f"lightning-unfold {command}" in out or command in out.split("{")[1], command
    assert "lightning-unfold check" in out and "lightning-unfold demo" in out


def test_a_file_that_is_no_checkpoint_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import numpy as np

    text = tmp_path / "notes.txt"
    text.write_text("these are my notes\nnot a model\n")
    noise = tmp_path / "noise.ckpt"
    noise.write_bytes(b"\x13" + np.random.default_rng(0).bytes(4095))  # neither zip nor pickle
    config = str(_tiny(tmp_path))
    for verb in ("validate", "test", "fit"):
        err = _fails_in_one_line(
            [verb, "--config", config, "--ckpt_path", str(text)], capsys, "not a checkpoint"
        )
        assert "text file" in err
    for argv in (
        ["validate", "--config", config, "--ckpt_path", str(noise)],
        ["check", str(noise)],
    ):
        err = _fails_in_one_line(argv, capsys, "not a checkpoint")
        assert "pickle" not in err.lower() and "weights_only" not in err
    _fails_in_one_line(["check", str(text)], capsys, "text file", "not a checkpoint")


def test_a_checkpoint_of_another_problem_or_model_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from lightning_unfold.algorithms import InterferenceChannel

    config = str(_tiny(tmp_path))
    power = UnfoldedModule(InterferenceChannel(M=4, seed=0), paradigm="correction", depth=2)
    ckpt = _save_checkpoint(power, tmp_path / "power.ckpt")
    _fails_in_one_line(
        ["validate", "--config", config, "--ckpt_path", str(ckpt)],
        capsys,
        "does not match the config",
        "problem InterferenceChannel (checkpoint) vs SparseRecovery (config)",
        "paradigm 'correction' vs 'objective'",
    )
    # same family, other sizes or depth: also refused
    problem = SparseRecovery(m=8, n=16, sparsity=0.2, snr_db=None, rho=0.1, seed=0)
    deeper = UnfoldedModule(problem, paradigm="objective", variant="lista", depth=3)
    ckpt = _save_checkpoint(deeper, tmp_path / "deeper.ckpt")
    _fails_in_one_line(
        ["test", "--config", config, "--ckpt_path", str(ckpt)], capsys, "(depth 3 vs 2)"
    )
    _fails_in_one_line(
        [
            "validate",
            "--config",
            config,
            "--ckpt_path",
            str(ckpt),
            "--model.depth=3",
            "--model.problem.init_args.seed=1",
        ],
        capsys,
        "(problem seed 0 vs 1)",
    )


@pytest.mark.slow
def test_the_console_command_prints_no_notices_and_fails_in_one_line(tmp_path: Path) -> None:
    """The real ``python -m lightning_unfold`` (as the console script runs it): no "args
    parameter" notice, no cloud-product tips, and a bad value is one stderr line."""
    env = dict(os.environ, PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop("LIGHTNING_UNFOLD_TRACEBACK", None)
    run = [sys.executable, "-m", "lightning_unfold", "fit", "--config", str(_tiny(tmp_path))]
    ok = subprocess.run(
        [*run, "--trainer.fast_dev_run=true"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-3000:]
    both = ok.stdout + ok.stderr
    assert "val/nmse_db" in both or "Trainer.fit" in both
    assert "args parameter" not in both and "💡" not in both and "litlogger" not in both
    bad = subprocess.run(
        [*run, "--model.depth=-3"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "lightning-unfold fit: error: depth (number of unfolded iterations K) must be an "
        "integer >= 1, got -3."
    ]


def test_a_matching_checkpoint_validates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    problem = SparseRecovery(m=8, n=16, sparsity=0.2, snr_db=None, rho=0.1, seed=0)
    module = UnfoldedModule(problem, paradigm="objective", variant="lista", depth=2, lr=0.01)
    ckpt = _save_checkpoint(module, tmp_path / "model.ckpt")
    # the learning rate is a training setting: it may differ from the checkpoint's
    argv = ["validate", "--config", str(_tiny(tmp_path)), "--ckpt_path", str(ckpt)]
    assert main(argv) == 0
    assert "val/nmse_db" in capsys.readouterr().out


def test_validate_on_a_config_without_validation_batches_says_so(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    monkeypatch.chdir(tmp_path)
    config = _tiny(
        tmp_path,
        ("  enable_progress_bar: false", "  enable_progress_bar: false\n  limit_val_batches: 0"),
    )
    lightning_log = logging.getLogger("lightning.pytorch")  # does not propagate to the root
    lightning_log.addHandler(caplog.handler)
    try:
        assert main(["validate", "--config", str(config)]) == 0
    finally:
        lightning_log.removeHandler(caplog.handler)
    assert "GPU available" in caplog.text  # the handler saw Lightning's messages ...
    assert "was configured so" not in caplog.text  # ... but no second note on the batches
    captured = capsys.readouterr()
    assert (
        "limit_val_batches: 0" in captured.err
        and "runs on the whole validation set" in captured.err
    )
    assert "val/nmse_db" in captured.out


def test_check_on_a_model_that_cannot_run_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each check's own failure is an ERROR in the report; a model that cannot be run on its
    problem's data at all ends the command with one line and exit 1, not a traceback."""
    import lightning_unfold.checks.cli as check_cli

    problem = SparseRecovery(m=8, n=16, sparsity=0.2, snr_db=None, rho=0.1, seed=0)
    module = UnfoldedModule(problem, paradigm="objective", variant="lista", depth=2)
    ckpt = _save_checkpoint(module, tmp_path / "model.ckpt")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (8x16 and 12x8)")

    monkeypatch.setattr(check_cli, "report_for_module", broken)
    argv = ["check", str(ckpt), "--out", str(tmp_path / "report")]
    err = _fails_in_one_line(argv, capsys, "could not run the model", "RuntimeError", code=1)
    assert "mat1 and mat2" in err
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        main([*argv, "--traceback"])
