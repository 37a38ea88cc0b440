"""UserDataModule: the user's own tensors, arrays and files, checked at load time."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch

from lightning_unfold import SparseRecovery, UnfoldedModule, UserDataModule
from lightning_unfold.algorithms.detection import MIMODetection
from lightning_unfold.cli import main
from lightning_unfold.core.metrics import labelled_rows

PROB = SparseRecovery(m=8, n=16, seed=0)


def _data(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    x, s = PROB.sample(n, seed=1, dtype=torch.float64)
    return x.numpy(), s.numpy()


def _all_rows(dm: UserDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    dm.setup()
    assert dm._sets is not None
    xs = torch.cat([dm._sets[k].tensors[0] for k in ("train", "val", "test")])
    ss = torch.cat([dm._sets[k].tensors[1] for k in ("train", "val", "test")])
    return xs, ss


def _same_rows(a: torch.Tensor, b: np.ndarray) -> None:
    """``a`` holds the rows of ``b`` in some order (the split permutes them)."""
    key = lambda t: sorted(map(tuple, np.asarray(t, dtype=np.float32).reshape(len(t), -1).tolist()))  # noqa: E731
    assert key(a.numpy()) == key(b)


# -- round trips ---------------------------------------------------------------------------------
def _write(fmt: str, tmp: Path, x: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    if fmt == "npz":
        np.savez(tmp / "obs.npz", x=x, s=s)
        return {"path": str(tmp / "obs.npz")}
    if fmt == "npy":
        np.save(tmp / "x.npy", x)
        np.save(tmp / "s.npy", s)
        return {"path": str(tmp / "x.npy"), "target_path": str(tmp / "s.npy")}
    if fmt == "npz_and_npy":  # observations in one file, targets in another
        np.savez(tmp / "x_only.npz", x=x)
        np.save(tmp / "s.npy", s)
        return {"path": str(tmp / "x_only.npz"), "target_path": str(tmp / "s.npy")}
    if fmt == "mat":
        scipy.io.savemat(tmp / "obs.mat", {"y_obs": x, "s_true": s})
        return {"path": str(tmp / "obs.mat"), "x_key": "y_obs", "target_key": "s_true"}
    if fmt == "pt_dict":
        torch.save({"x": torch.from_numpy(x), "s": torch.from_numpy(s)}, tmp / "obs.pt")
        return {"path": str(tmp / "obs.pt")}
    if fmt == "pt_pair":
        torch.save((torch.from_numpy(x), torch.from_numpy(s)), tmp / "pair.pt")
        return {"path": str(tmp / "pair.pt")}
    if fmt == "arrays":
        return {"x": x, "target": s}
    assert fmt == "tensors"
    return {"x": torch.from_numpy(x), "target": torch.from_numpy(s)}


@pytest.mark.parametrize(
    "fmt", ["npz", "npy", "npz_and_npy", "mat", "pt_dict", "pt_pair", "arrays", "tensors"]
)
def test_round_trip_of_every_source(fmt: str, tmp_path: Path) -> None:
    x, s = _data(50)
    dm = UserDataModule(PROB, **_write(fmt, tmp_path, x, s), val_fraction=0.2, test_fraction=0.1)
    xs, ss = _all_rows(dm)
    assert xs.dtype == torch.float32 and ss.dtype == torch.float32
    assert {k: len(v) for k, v in dm._sets.items()} == {"train": 35, "val": 10, "test": 5}
    _same_rows(xs, x)
    _same_rows(ss, s)
    # rows stay paired with their targets through the split
    for k in ("train", "val", "test"):
        xk, sk = dm._sets[k].tensors
        i = np.argmin(np.abs(x.astype(np.float32) - xk[0].numpy()).sum(1))
        np.testing.assert_allclose(sk[0].numpy(), s[i].astype(np.float32))
    assert dm.rows == 50 and dm.labelled_count == 50


def test_split_is_seeded_and_the_same_for_every_instance() -> None:
    x, s = _data(40)
    a = UserDataModule(PROB, x=x, target=s, seed=3)
    b = UserDataModule(PROB, x=x, target=s, seed=3)
    c = UserDataModule(PROB, x=x, target=s, seed=4)
    for dm in (a, b, c):
        dm.setup()
    assert torch.equal(a._sets["val"].tensors[0], b._sets["val"].tensors[0])
    assert not torch.equal(a._sets["val"].tensors[0], c._sets["val"].tensors[0])
    # training order: a seeded permutation per epoch
    order = [bx for bx, _ in a.train_dataloader()]
    assert all(
        torch.equal(u, v)
        for u, v in zip(order, [bx for bx, _ in b.train_dataloader()], strict=True)
    )


def test_float64_keeps_precision() -> None:
    x, s = _data(20)
    xs, _ = _all_rows(UserDataModule(PROB, x=x, target=s, dtype="float64"))
    assert xs.dtype == torch.float64
    _same_rows(xs.float(), x)


# -- the error table -----------------------------------------------------------------------------
def _bad(tmp: Path, name: str) -> tuple[dict[str, Any], str]:
    """Each bad input and the message it must give (regex)."""
    x, s = _data(30)
    p = str(tmp / "observations.npz")
    if name == "nan":
        x = x.copy()
        x[17, 3] = np.nan
        np.savez(p, x=x, s=s)
        return {"path": p}, r"observations\.npz\['x'\]\[17, 3\] is NaN; observations must be finite"
    if name == "inf":
        x = x.copy()
        x[4, 0], x[9, 1] = -np.inf, np.inf
        np.savez(p, x=x, s=s)
        return {"path": p}, r"\['x'\]\[4, 0\] is -Inf \(and 1 more non-finite entries\)"
    if name == "wrong_shape":
        np.savez(p, x=x[:, :7], s=s)
        return {
            "path": p
        }, r"\['x'\] has shape \(30, 7\), but this SparseRecovery expects .*\(B, 8\)"
    if name == "wrong_target_shape":
        np.savez(p, x=x, s=s[:, :5])
        return {
            "path": p
        }, r"\['s'\] has shape \(30, 5\), but .* expects targets of shape \(B, 16\)"
    if name == "row_mismatch":
        np.savez(p, x=x, s=s[:29])
        return {"path": p}, r"\['s'\] has 29 rows but the observations have 30"
    if name == "wrong_dtype_text":
        np.savez(p, x=np.array([["a"] * 8] * 30), s=s)
        return {"path": p}, r"\['x'\] has dtype <U1 \(text\); it must hold numbers"
    if name == "wrong_dtype_complex":
        np.savez(p, x=x + 1j, s=s)
        return {
            "path": p
        }, r"\['x'\] is complex \(torch.complex128\) but this problem's observations are real"
    if name == "missing_key":
        np.savez(p, y=x, s=s)
        return {
            "path": p
        }, r"observations\.npz has no key 'x'; its keys are 's', 'y'\. .*--data\.x_key"
    if name == "missing_target_key":
        np.savez(p, x=x, labels=s)
        return {
            "path": p
        }, r"has no key 's'; its keys are 'labels', 'x'\..*target_key=None for unlabelled"
    if name == "partly_nan_target":
        s = s.copy()
        s[6, 2] = np.nan
        np.savez(p, x=x, s=s)
        return {
            "path": p
        }, r"\['s'\]\[6\] is partly NaN \(entry 2\): mark an unlabelled row with NaN in every"
    if name == "unreadable":
        Path(p).write_bytes(b"this is not a zip archive")
        return {"path": p}, r"observations\.npz: could not read it as a \.npz file"
    if name == "missing_file":
        return {"path": str(tmp / "nowhere.npz")}, r"nowhere\.npz: no such file"
    if name == "unsupported":
        (tmp / "obs.csv").write_text("1,2\n")
        return {"path": str(tmp / "obs.csv")}, r"unsupported file type '\.csv'; valid: \['\.npz'"
    if name == "matlab_v73":
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116) + b"\x00" * 8 + b"\x00\x02IM"
        (tmp / "big.mat").write_bytes(header + b"\x00" * 400)
        return {
            "path": str(tmp / "big.mat")
        }, r"big\.mat is a MATLAB v7\.3 \(HDF5\) file.*'-v7'.*h5py"
    if name == "pt_object":
        torch.save({"x": [1, 2, 3], "s": torch.zeros(3)}, tmp / "obj.pt")
        return {"path": str(tmp / "obj.pt")}, r"obj\.pt\['x'\] is a list, not an array or a tensor"
    raise AssertionError(name)


BAD = [
    "nan",
    "inf",
    "wrong_shape",
    "wrong_target_shape",
    "row_mismatch",
    "wrong_dtype_text",
    "wrong_dtype_complex",
    "missing_key",
    "missing_target_key",
    "partly_nan_target",
    "unreadable",
    "missing_file",
    "unsupported",
    "matlab_v73",
    "pt_object",
]


@pytest.mark.parametrize("name", BAD)
def test_every_bad_file_gives_one_clear_error(name: str, tmp_path: Path) -> None:
    kwargs, match = _bad(tmp_path, name)
    error = FileNotFoundError if name == "missing_file" else ValueError
    with pytest.raises(error, match=match):
        UserDataModule(PROB, **kwargs).setup()


def test_detection_specific_errors_name_the_row(tmp_path: Path) -> None:
    prob = MIMODetection(n_users=2, n_antennas=3, snr_db=10.0)
    x, s = prob.sample(20, seed=0, dtype=torch.float64)
    # the problem's own check (noise variance > 0) runs too, and the failing row is named
    bad = x.clone()
    bad[5, -1] = 0.0
    np.savez(tmp_path / "rx.npz", x=bad.numpy(), s=s.numpy())
    with pytest.raises(ValueError, match=r"rx\.npz\['x'\]\[5\]: The noise variance .* must be > 0"):
        UserDataModule(prob, path=str(tmp_path / "rx.npz")).setup()
    # symbol indices must be integers
    np.savez(tmp_path / "rx.npz", x=x.numpy(), s=s.numpy().astype(np.float64))
    with pytest.raises(
        ValueError, match=r"\['s'\] has dtype torch.float64, but .* integer indices"
    ):
        UserDataModule(prob, path=str(tmp_path / "rx.npz")).setup()
    partly = s.clone()
    partly[3, 0] = -1
    with pytest.raises(ValueError, match=r"target\[3\] is partly unlabelled"):
        UserDataModule(prob, x=x, target=partly).setup()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one source"),
        ({"path": "a.npz", "x": np.zeros((2, 8))}, "exactly one source"),
        ({"path": "a.npz", "target": np.zeros((2, 16))}, "target= goes with x="),
        ({"x": np.zeros((4, 8)), "val_fraction": 1.0}, r"val_fraction must lie in \[0, 1\)"),
        ({"x": np.zeros((4, 8)), "val_fraction": 0.5, "test_fraction": 0.5}, "leaves no training"),
        ({"x": np.zeros((4, 8)), "dtype": "float16"}, "dtype must be 'float32' or 'float64'"),
        ({"x": np.zeros((4, 8)), "batch_size": 0}, "batch_size must be an integer >= 1"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        UserDataModule(PROB, **kwargs)


def test_too_few_rows_and_a_missing_problem() -> None:
    with pytest.raises(ValueError, match="2 rows are too few"):
        UserDataModule(PROB, x=np.zeros((2, 8)), val_fraction=0.3, test_fraction=0.3).setup()
    with pytest.raises(ValueError, match="UserDataModule has no problem"):
        UserDataModule(x=np.zeros((4, 8))).setup()


# -- labelled, unlabelled and partly labelled data -----------------------------------------------
def test_unlabelled_data_trains_unsupervised(tmp_path: Path, quiet_trainer: Any) -> None:
    x, _ = _data(64)
    np.save(tmp_path / "x.npy", x)
    dm = UserDataModule(PROB, path=str(tmp_path / "x.npy"), target_key=None, batch_size=16)
    _, ss = _all_rows(dm)
    assert torch.isnan(ss).all() and dm.labelled_count == 0
    module = UnfoldedModule(PROB, paradigm="hyperparameters", depth=3, supervision="unsupervised")
    before = [p.detach().clone() for p in module.parameters()]
    quiet_trainer(max_epochs=1, limit_val_batches=0).fit(module, dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_partly_labelled_data_trains_semi_supervised_and_scores_labelled_rows_only(
    quiet_trainer: Any,
) -> None:
    x, s = _data(80)
    s = s.copy()
    s[::2] = np.nan  # every other row unlabelled
    dm = UserDataModule(PROB, x=x, target=s, batch_size=16, val_fraction=0.25, test_fraction=0.0)
    dm.setup()
    assert dm.labelled_count == 40
    val_x, val_s = dm._sets["val"].tensors
    assert 0 < int(labelled_rows(val_s).sum()) < len(val_s)
    module = UnfoldedModule(
        PROB, paradigm="objective", variant="lista", depth=3, supervision="semi_supervised"
    )
    quiet_trainer(max_epochs=1).fit(module, dm)
    # the validation NMSE is the one of the labelled validation rows alone
    keep = labelled_rows(val_s)
    with torch.no_grad():
        est = module.model(val_x[keep]).final_estimate
    err = (est - val_s[keep]).pow(2).sum(1).sum() / val_s[keep].pow(2).sum(1).sum()
    assert module.curves["val"]["nmse_db"][-1] == pytest.approx(10 * np.log10(float(err)), abs=1e-3)
    # the test set is empty with test_fraction=0, and testing says so without failing
    assert dm.test_dataloader() == []


def test_detection_targets_with_unlabelled_rows(tmp_path: Path, quiet_trainer: Any) -> None:
    prob = MIMODetection(n_users=2, n_antennas=3, snr_db=10.0)
    x, s = prob.sample(40, seed=0)
    s[::4] = -1
    torch.save({"x": x, "s": s}, tmp_path / "rx.pt")
    dm = UserDataModule(prob, path=str(tmp_path / "rx.pt"), batch_size=8)
    _, ss = _all_rows(dm)
    assert ss.dtype == torch.int64 and dm.labelled_count == 30
    module = UnfoldedModule(
        prob,
        algorithm="soft_ic",
        paradigm="hyperparameters",
        depth=2,
        supervision="semi_supervised",
    )
    quiet_trainer(max_epochs=1, max_steps=3).fit(module, dm)
    assert 0.0 <= module.curves["val"]["ber"][-1] <= 1.0


@pytest.mark.parametrize(
    "paradigm", ["hyperparameters", "objective", "correction", "inductive_bias", "black_box"]
)
def test_every_paradigm_trains_on_user_data(paradigm: str, quiet_trainer: Any) -> None:
    x, s = _data(64)
    dm = UserDataModule(PROB, x=x, target=s, batch_size=16)
    module = UnfoldedModule(PROB, paradigm=paradigm, depth=3)
    before = [p.detach().clone() for p in module.parameters()]
    quiet_trainer(max_epochs=1, max_steps=3).fit(module, dm)
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    curve = module.curves["val"]["nmse_db"]  # every layer scored on the user's rows
    assert len(curve) == module.depth + 1 and all(np.isfinite(curve))


def test_the_classical_baseline_validates_on_user_data(quiet_trainer: Any) -> None:
    x, s = _data(64)
    dm = UserDataModule(PROB, x=x, target=s)
    module = UnfoldedModule(PROB, paradigm="classical", depth=5)
    quiet_trainer(max_epochs=1).validate(module, dm, verbose=False)
    curve = module.curves["val"]["nmse_db"]
    assert curve[5] < curve[1] < 0.0  # ISTA improves layer by layer on the user's rows


# -- DDP and the CLI -----------------------------------------------------------------------------
@pytest.mark.ddp
def test_ddp_spawn_on_two_cpu_processes(tmp_path: Path, quiet_trainer: Any) -> None:
    x, s = _data(96)
    np.savez(tmp_path / "obs.npz", x=x, s=s)
    dm = UserDataModule(PROB, path=str(tmp_path / "obs.npz"), batch_size=8)
    module = UnfoldedModule(PROB, paradigm="objective", variant="lista_cp", depth=2)
    trainer = quiet_trainer(
        devices=2, strategy="ddp_spawn", max_epochs=2, default_root_dir=tmp_path
    )
    before = [p.detach().clone() for p in module.parameters()]
    trainer.fit(module, dm)
    assert trainer.state.finished
    assert any(
        not torch.equal(a, b.detach()) for a, b in zip(before, module.parameters(), strict=True)
    )


CONFIG = """\
trainer:
  accelerator: cpu
  devices: 1
  max_epochs: 3
  logger: false
  enable_checkpointing: false
  enable_progress_bar: false
  enable_model_summary: false
model:
  problem:
    class_path: lightning_unfold.SparseRecovery
    init_args: {m: 8, n: 16, seed: 0}
  depth: 3
  paradigm: objective
  variant: lista
data:
  batch_size: 16
"""


def test_cli_fit_on_a_user_npz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, s = _data(120)
    np.savez(tmp_path / "obs.npz", x=x, s=s)
    (tmp_path / "config.yaml").write_text(CONFIG)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning-unfold"])
    args = ["fit", "--config", "config.yaml", "--data", "UserDataModule", "--data.path", "obs.npz"]
    assert main(args) == 0
    # a bad file through the same command: the error names the file and the entry
    x[17, 3] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, s=s)
    capsys.readouterr()
    assert main([*args[:-1], "bad.npz"]) == 1  # a failed run, reported in one line
    err = capsys.readouterr().err
    assert "lightning-unfold fit: error: bad.npz['x'][17, 3] is NaN; observations must be" in err


# -- the guide page ------------------------------------------------------------------------------
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "your_data.md"


def run_guide(folder: Path) -> dict[str, str]:
    """Execute docs/your_data.md in ``folder``: YAML blocks are written to the file their first
    line names, Python blocks run, each ``lightning-unfold`` line of a bash block runs through
    the CLI. Returns the printed output of each command line (stdout and stderr)."""
    import contextlib
    import io
    import os
    import re
    import shlex

    outputs: dict[str, str] = {}
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for lang, body in re.findall(r"```(\w+)\n(.*?)```", GUIDE.read_text(), flags=re.S):
            if lang == "yaml":
                name = re.match(r"# file: (\S+)\n", body)
                assert name, "a YAML block of the guide must start with '# file: NAME'"
                Path(name.group(1)).write_text(body)
            elif lang == "python":
                exec(compile(body, str(GUIDE), "exec"), {"__name__": "docs_your_data"})
            elif lang == "bash":
                for line in body.strip().splitlines():
                    argv = shlex.split(line)
                    assert argv[0] == "lightning-unfold", line
                    buf = io.StringIO()
                    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
                        assert main(argv[1:]) == 0, line
                    outputs[line] = buf.getvalue()
    finally:
        os.chdir(cwd)
    return outputs


def _test_ber(out: str) -> float:
    import re

    found = re.search(r"test/ber\s*[│|]?\s*([0-9.eE+-]+)", out)
    assert found, out
    return float(found.group(1))


@pytest.mark.slow
def test_the_guide_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["lightning-unfold"])
    outputs = run_guide(tmp_path)
    tests = [out for line, out in outputs.items() if line.startswith("lightning-unfold test")]
    learned, classical = (_test_ber(out) for out in tests)
    print("GUIDE", learned, classical)
    for out in tests:
        print(out)
    # the numbers the page prints are the ones this run measures
    text = GUIDE.read_text()
    assert f"{learned:.4f}" in text and f"{classical:.4f}" in text
