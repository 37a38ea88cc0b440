"""``python -m benchmarks gpu``: its refusal without CUDA, its choice of configs, its verdicts and
table, and one run of its pipeline with the CPU standing in for the GPU.

The CUDA path itself needs a GPU; everything around it runs here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import gpu  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402


def test_without_cuda_it_refuses_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["gpu", "--out", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m benchmarks gpu: error: no CUDA")
    assert not list(tmp_path.iterdir())  # nothing ran, nothing written


def test_bad_arguments_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gpu", "--steps", "0"]) == 2
    assert main(["gpu", "--test-accelerator", "cpu", "--settings", "fp16"]) == 2
    assert "valid: cpu,fp32,bf16,ddp" in capsys.readouterr().err
    assert main(["gpu", "--test-accelerator", "cpu", "--configs", "nosuch"]) == 2
    assert "No config named ['nosuch']" in capsys.readouterr().err


def test_one_config_per_family_and_every_family() -> None:
    families = gpu.discover()
    names = [f.name for f in families]
    assert len(names) == len(set(names))
    # every algorithm a shipped config trains is a family of the table
    every = {gpu._algorithm(gpu._load(p)) for p in gpu.CONFIGS.glob("*.yaml")}
    assert set(names) == every and len(names) >= 11
    for fam in families:
        assert fam.config.is_file()
        # a learned paradigm wherever the family has one
        others = [gpu._load(gpu.CONFIGS / a)["model"].get("paradigm") for a in fam.alternatives]
        if any(p not in gpu.BASELINE_PARADIGMS for p in others):
            assert fam.paradigm not in gpu.BASELINE_PARADIGMS, fam
    ista = next(f for f in families if f.name == "ista")
    assert ista.config.name == "alista.yaml"  # learned, no callbacks, first by name
    chosen = gpu.discover(only=["lista.yaml", "liht"])  # names or stems, exactly those
    assert sorted(f.config.name for f in chosen) == ["liht.yaml", "lista.yaml"]


def _run(before: float, after: float, **extra: Any) -> dict[str, Any]:
    return {"before": before, "after": after, "metric": "nmse_db", "unit": "dB", **extra}


def test_verdicts_hold_each_setting_to_its_tolerance() -> None:
    cpu, fp32, bf16, ddp = gpu.settings("cuda", 2, rtol=0.10)
    ref = _run(-5.0, -15.0)  # gain -10 dB
    assert gpu.verdict(ref, ref, cpu, atol=0.05) == "ok (reference)"
    assert gpu.verdict(_run(-5.004, -14.2), ref, fp32, atol=0.05) == "ok"  # gain -9.2: 8 %
    v = gpu.verdict(_run(-5.0, -13.0), ref, fp32, atol=0.05)  # gain -8: 20 % off
    assert v.startswith("training gain -8 vs CPU -10")
    assert gpu.verdict(_run(-5.0, -13.0), ref, bf16, atol=0.05) == "ok"  # bf16: 25 %
    assert gpu.verdict(_run(-5.05, -13.0), ref, fp32, atol=0.05).startswith("before training")
    assert gpu.verdict(_run(-5.05, -14.0), ref, bf16, atol=0.05) == "ok"  # 1 % < 2e-2
    assert gpu.verdict(_run(-5.0, float("nan")), ref, ddp, atol=0.05).startswith("not finite")
    assert gpu.verdict({"error": "exit 1: boom"}, ref, ddp, atol=0.05) == "error: exit 1: boom"
    assert gpu.verdict(_run(-5.0, -15.0), {"error": "x"}, fp32, 0.05) == "no CPU reference"
    # a family that barely trains in --steps is judged by the absolute tolerance
    flat = _run(-5.0, -5.01)
    assert gpu.verdict(_run(-5.0, -5.04), flat, fp32, atol=0.05) == "ok"


def test_the_table_has_a_row_per_run() -> None:
    cpu, fp32 = gpu.settings("cuda", 1, 0.1)[:2]
    rows = [
        {
            "family": "ista", "config": "alista.yaml", "paradigm": "objective",
            "setting": s.name, "devices": 1, "strategy": "auto", "precision": s.precision,
            "result": r, "verdict": gpu.verdict(r, rows_ref, s, 0.05),
        }
        for s, r, rows_ref in [
            (cpu, _run(-4.0, -20.0, steps_per_s=50.0), _run(-4.0, -20.0)),
            (fp32, {"error": "exit 1: CUDA error"}, _run(-4.0, -20.0)),
        ]
    ]  # fmt: skip
    results = {
        "env": {"steps": 300, "device": "NVIDIA X", "n_devices": 1, "torch": "t",
                "lightning": "l", "seconds": 12.0},
        "rows": rows,
    }  # fmt: skip
    md = gpu.to_markdown(results)
    assert "| ista | alista.yaml | cpu | 1 | 32-true | 50.0 | nmse_db | -4 → -20 dB | -16 |" in md
    assert "| ista | alista.yaml | fp32 | 1 | 32-true | — | — | — | — | error: exit 1: CUDA" in md
    assert md.strip().endswith("1 of 2 runs agree with their CPU reference.")


def test_a_run_fits_and_validates_before_and_after(tmp_path: Path) -> None:
    """:func:`benchmarks.gpu.run_one` in this process, on the CPU: the code path of every
    setting but the device names."""
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "model:\n  problem:\n    class_path: lightning_unfold.SparseRecovery\n"
        "    init_args: {m: 8, n: 16, sparsity: 0.2, snr_db: null, rho: 0.1, seed: 0}\n"
        "  depth: 3\n  paradigm: objective\n  variant: lista_cp\n  lr: 0.01\n"
        "data: {batch_size: 16, train_batches: 4, val_size: 64}\n"
        "trainer: {limit_val_batches: 0}\n"  # as rpca_hyperparameters: validated anyway
    )
    setting = gpu.Setting("cpu", "cpu", 1)
    result = gpu.run_one(config, setting, steps=6, root=tmp_path / "run")
    assert result["steps"] == 6 and result["rank"] == 0 and result["fit_seconds"] > 0
    assert result["metric"] == "nmse_db" and result["unit"] == "dB"
    assert not result["higher_is_better"]
    assert result["before"] < 0 and result["after"] < result["before"]  # trained
    again = gpu.run_one(config, setting, steps=6, root=tmp_path / "again")
    assert again["before"] == result["before"] and again["after"] == result["after"]  # seeded


@pytest.mark.slow
def test_the_pipeline_with_the_cpu_standing_in(tmp_path: Path) -> None:
    """The whole command (worker processes, JSON, Markdown) with ``accelerator=cpu`` in place of
    ``cuda``: the CPU reference and the fp32 setting on one family, a few steps."""
    out = tmp_path / "gpu"
    code = main(
        ["gpu", "--test-accelerator", "cpu", "--steps", "3", "--configs", "lista",
         "--settings", "fp32", "--out", str(out)]
    )  # fmt: skip
    results = json.loads((out / "gpu.json").read_text())
    rows = results["rows"]
    assert [r["setting"] for r in rows] == ["cpu", "fp32"]
    assert code == 0, rows
    # the same seeded config on the same device twice: the same numbers
    assert rows[0]["result"]["after"] == rows[1]["result"]["after"]
    assert rows[1]["verdict"] == "ok"
    assert "| ista | lista.yaml | fp32 |" in (out / "gpu.md").read_text()
