"""The runner, the pytest helper, reports, the `check` command and the callback."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from checks_helpers import DEPTH, PlainLISTA
from lightning_unfold.checks import Status
from torch import Tensor

from lightning_unfold import (
    ISTA,
    ClassicalSolver,
    SparseRecovery,
    SyntheticDataModule,
    UnfoldedModule,
    checks,
)

_PROBLEM = SparseRecovery(m=20, n=40, seed=0)
_DATA = _PROBLEM.sample(64, seed=(3, 0))


def _ista() -> ClassicalSolver:
    return ClassicalSolver(ISTA(), _PROBLEM, DEPTH)


# the pytest helper: a user's test parametrised over (model, check) with readable ids
@checks.pytest_parametrize({"ista": _ista}, _PROBLEM, _DATA, suite="coupling,descent")
def test_pytest_helper_runs_user_checks(model: object, check: checks.BoundCheck) -> None:
    result = check(model)
    assert result.passed, result.message


def test_pytest_helper_ids_are_readable() -> None:
    mark = checks.pytest_parametrize({"ista": _ista}, _PROBLEM, _DATA, suite="cheap")
    assert mark.kwargs["ids"] == [
        "ista-coupling",
        "ista-alista_coherence",
        "ista-linear_convergence",
        "ista-descent",
    ]


def test_generate_checks_yields_bound_checks() -> None:
    pairs = list(checks.generate_checks([_ista()], _PROBLEM, _DATA, suite="descent"))
    assert len(pairs) == 1
    model, check = pairs[0]
    assert check(model).passed


def test_suite_resolution_and_errors() -> None:
    assert checks.resolve_suite("cheap,reference_agreement")[0][-1] == "reference_agreement"
    with pytest.raises(ValueError, match="valid suites"):
        checks.resolve_suite("nope")
    with pytest.raises(ValueError, match="unknown checks"):
        checks.run_checks(_ista(), _PROBLEM, _DATA, options={"nope": {}})


def test_run_checks_skips_inapplicable_in_named_suites_and_errors_when_explicit() -> None:
    plain = PlainLISTA(_PROBLEM.H, _PROBLEM.rho, DEPTH)
    res = {r.name: r for r in checks.run_checks(plain, _PROBLEM, _DATA, "default")}
    # a skip counts neither as passed nor against the model
    assert res["alista_coherence"].status is Status.SKIPPED and not res["alista_coherence"].passed
    assert not res["alista_coherence"].counts_against
    assert res["reference_agreement"].status is Status.SKIPPED
    assert res["coupling"].passed
    explicit = checks.run_checks(plain, _PROBLEM, _DATA, "alista_coherence")[0]
    assert explicit.status is Status.ERROR and not explicit.passed


def test_run_checks_turns_exceptions_into_error_results() -> None:
    def diverged(x: Tensor) -> list[Tensor]:
        s = torch.zeros(x.shape[0], 40)
        return [s, s + float("nan"), s, s]

    r = checks.run_checks(diverged, _PROBLEM, _DATA, "linear_convergence")[0]
    assert r.status is Status.ERROR and "diverged" in r.message


def test_report_files_and_table(tmp_path: Path) -> None:
    results = checks.run_checks(_ista(), _PROBLEM, _DATA, "cheap", out_dir=tmp_path)
    report = checks.Report(results, checks.describe_model(_ista()))
    report.write(tmp_path)
    js = json.loads((tmp_path / "report.json").read_text())
    assert set(js) == {"summary", "counts", "exit_code", "checks", "model", "metrics"}
    keys = {"name", "status", "passed", "value", "threshold", "message"}
    assert all(set(c) == keys for c in js["checks"])
    assert all(c["passed"] == (c["status"] == "pass") for c in js["checks"])
    assert sum(js["counts"].values()) == len(js["checks"]) and js["exit_code"] == 1
    assert js["model"]["paradigm"] == "classical"
    md = (tmp_path / "report.md").read_text()
    assert "linear_convergence — FAIL" in md and "![descent](descent.png)" in md
    for name in ("coupling", "descent", "linear_convergence"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    table = checks.format_table(results)
    assert "linear_convergence" in table and "FAIL" in table and "skipped" in table
    assert report.exit_code == 1


def _train_module(tmp_path: Path, variant: str) -> Path:
    mod = UnfoldedModule(_PROBLEM, paradigm="objective", variant=variant, depth=4, lr=1e-2)
    trainer = L.Trainer(
        max_steps=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(mod, SyntheticDataModule(_PROBLEM, batch_size=16, train_batches=3, val_size=16))
    path = tmp_path / f"{variant}.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_check_command_on_a_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = _train_module(tmp_path, "lista_cp")
    out = tmp_path / "rep"
    code = checks.check_command([str(ckpt), "--suite", "coupling,descent", "--out", str(out)])
    captured = capsys.readouterr()
    printed = captured.out
    assert code == 0, printed
    assert "coupling" in printed and "PASS" in printed
    # progress on stderr, one line as each check starts and one as it ends
    lines = captured.err.strip().splitlines()
    assert lines[0] == "[1/2] coupling …" and lines[2] == "[2/2] descent …", lines
    assert lines[1].startswith("[1/2] coupling: PASS in ") and lines[1].endswith(" s")
    assert len(lines) == 4 and lines[3].startswith("[2/2] descent: PASS in ")
    js = json.loads((out / "report.json").read_text())
    assert [c["name"] for c in js["checks"]] == ["coupling", "descent"]
    assert js["model"]["variant"] == "lista_cp" and (out / "coupling.png").exists()
    # a failing check gives exit code 1
    assert (
        checks.check_command([str(ckpt), "--suite", "linear_convergence", "--out", str(out)]) == 1
    )


def test_check_command_rejects_bad_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.ckpt"
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.ones(3)}, plain)

    class Other(L.LightningModule):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(width, 1)

    other = tmp_path / "other.ckpt"
    trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.strategy.connect(Other())
    trainer.save_checkpoint(other)
    expected = {
        missing: "does not exist",
        corrupt: "not a readable",
        plain: "not a Lightning checkpoint",
        other: "another LightningModule",
    }
    for path, phrase in expected.items():
        assert checks.check_command([str(path), "--out", str(tmp_path / "r")]) == 2
        assert phrase in capsys.readouterr().err
    with pytest.raises(checks.CheckpointError, match="does not exist"):
        checks.load_checkpoint(missing)
    assert checks.check_command([str(plain), "--suite", "nope"]) == 2
    assert checks.check_command([]) == 2  # argparse usage error


def test_load_checkpoint_refuses_pickled_code(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("executed",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "obj": Evil()}, path)
    with pytest.raises(checks.CheckpointError, match="cannot be loaded safely"):
        checks.load_checkpoint(path)


def test_report_for_module_with_datamodule(tmp_path: Path) -> None:
    mod = UnfoldedModule(_PROBLEM, paradigm="objective", variant="alista", depth=4)
    dm = SyntheticDataModule(_PROBLEM, test_size=32)
    report = checks.report_for_module(mod, dm, tmp_path, suite="cheap")
    names = [r.name for r in report.results]
    assert names == ["coupling", "alista_coherence", "linear_convergence", "descent"]
    assert (tmp_path / "report.md").exists() and report.model["variant"] == "alista"


def test_verification_callback_logs_checks() -> None:
    mod = UnfoldedModule(_PROBLEM, paradigm="objective", variant="lista_cp", depth=4, lr=1e-2)
    cb = checks.VerificationCallback(suite="coupling,descent", every_n_val_epochs=1, n_samples=32)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[cb],
    )
    dm = SyntheticDataModule(_PROBLEM, batch_size=16, train_batches=2, val_size=32, test_size=32)
    trainer.fit(mod, dm)
    assert trainer.callback_metrics["check/coupling/passed"] == 1.0
    assert "check/descent/value" in trainer.callback_metrics
    assert [r.name for r in cb.results] == ["coupling", "descent"]
    assert len(cb.history) == 2  # once after the validation epoch, once at fit end
    restored = checks.VerificationCallback(suite="coupling,descent", every_n_val_epochs=1)
    restored.load_state_dict(cb.state_dict())
    assert restored.history == cb.history
    with pytest.raises(ValueError, match="valid suites"):
        checks.VerificationCallback(suite="nope")
