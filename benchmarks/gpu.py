"""``python -m benchmarks gpu``: is every family ready for a GPU? One command, one table.

For each family (one shipped config of ``examples/configs/*.yaml`` per algorithm, a learned
paradigm preferred), the same config is fitted for ``--steps`` optimizer steps (default 300) in
four settings, each in its own process:

========  =================================================================================
setting   trainer
========  =================================================================================
cpu       ``accelerator=cpu, devices=1, precision=32-true`` — the reference
fp32      ``accelerator=cuda, devices=1, precision=32-true``
bf16      ``accelerator=cuda, devices=1, precision=bf16-mixed``
ddp       ``accelerator=cuda, devices=<all visible>, strategy=ddp, precision=32-true``
========  =================================================================================

Every run is seeded alike (the config's ``seed_everything``, default 0) and validated on the
config's validation set before and after training; the table gives the primary metric at layer
K both times, the steps per second, and the verdict against the CPU run:

* **before training** the model is the same function of the same data on both devices, so the
  metrics differ only by rounding: within ``1e-3`` relative (fp32; cuBLAS and MKL sum in
  different orders, float32 epsilon 1.2e-7 grows with depth and reduction length) or ``2e-2``
  (bf16 autocast: 8 mantissa bits, a relative step of 2^-8 = 3.9e-3 per rounding, a few
  roundings deep);
* **after training**, trajectories of a few hundred Adam steps separate (non-associative sums
  differ from the first step on, and the difference is amplified by the optimizer), so the
  comparison is of the *training gain* (metric after − before): the device's gain must be within
  ``--rtol`` (default 10 %) of the CPU's, 25 % for bf16 (whose gradients are rounded to 8 bits
  every step) and for DDP (which trains on ``devices`` × the batch per step, a different
  trajectory by design), plus an absolute ``atol`` (default 0.05 in the metric's unit) so that a
  family whose gain is ~0 after ``--steps`` does not fail on noise.

Writes ``DIR/gpu.json`` and ``DIR/gpu.md`` (default ``runs/gpu``) and prints the table; exit 0
when every run agrees with its CPU reference, 1 when one does not or fails, 2 when no CUDA device
is visible (said in one line, before anything runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "examples" / "configs"
PROG = "python -m benchmarks gpu"

#: paradigms that are not the unfolded network itself: chosen only when a family has no other
BASELINE_PARADIGMS = ("classical", "black_box")


@dataclass(frozen=True)
class Setting:
    """One way of running a config: a Trainer's accelerator, devices, strategy and precision,
    and the tolerances its result is held to against the CPU run (see the module docstring)."""

    name: str
    accelerator: str
    devices: int
    strategy: str = "auto"
    precision: str = "32-true"
    #: relative tolerance of the metric before training (rounding only)
    init_rtol: float = 1e-3
    #: relative tolerance of the training gain
    gain_rtol: float = 0.10


def settings(accelerator: str, n_devices: int, rtol: float) -> list[Setting]:
    """The four settings on ``accelerator`` (``"cuda"``; ``"cpu"`` only in the test suite)."""
    loose = max(rtol, 0.25)
    return [
        Setting("cpu", "cpu", 1, gain_rtol=0.0),
        Setting("fp32", accelerator, 1, gain_rtol=rtol),
        Setting("bf16", accelerator, 1, precision="bf16-mixed", init_rtol=2e-2, gain_rtol=loose),
        Setting("ddp", accelerator, n_devices, strategy="ddp", gain_rtol=loose),
    ]


@dataclass
class Family:
    """A family (its algorithm) and the shipped config that represents it."""

    name: str
    config: Path
    paradigm: str
    alternatives: list[str] = field(default_factory=list)


def _load(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def _algorithm(config: dict[str, Any]) -> str:
    """The config's algorithm, or its problem's default one when the config leaves it out."""
    model = config.get("model") or {}
    if model.get("algorithm"):
        return str(model["algorithm"])
    import importlib

    module_name, _, cls = str(model["problem"]["class_path"]).rpartition(".")
    return str(getattr(importlib.import_module(module_name), cls).default_algorithm)


def discover(folder: Path = CONFIGS, only: Sequence[str] = ()) -> list[Family]:
    """One config per family (algorithm) from ``folder/*.yaml``.

    Within a family: a learned paradigm before a baseline, a config without callbacks (plain
    training) before one with a schedule, then by file name. ``only`` (file names or stems)
    takes exactly those configs instead.
    """
    groups: dict[str, list[tuple[tuple[bool, bool, str], Path, str]]] = {}
    wanted = {Path(o).stem for o in only}
    for path in sorted(folder.glob("*.yaml")):
        if wanted and path.stem not in wanted:
            continue
        cfg = _load(path)
        model = cfg.get("model") or {}
        if "problem" not in model:
            continue
        paradigm = str(model.get("paradigm", "objective"))
        callbacks = bool((cfg.get("trainer") or {}).get("callbacks"))
        key = (paradigm in BASELINE_PARADIGMS, callbacks, path.name)
        groups.setdefault(_algorithm(cfg), []).append((key, path, paradigm))
    if wanted:
        found = {p.stem for entries in groups.values() for _, p, _ in entries}
        missing = sorted(wanted - found)
        if missing:
            raise ValueError(f"No config named {missing} in {folder}.")
        return [
            Family(name, path, paradigm)
            for name, entries in groups.items()
            for _, path, paradigm in entries
        ]
    families = []
    for name, entries in sorted(groups.items()):
        entries.sort(key=lambda e: e[0])
        _, path, paradigm = entries[0]
        families.append(Family(name, path, paradigm, [p.name for _, p, _ in entries[1:]]))
    return families


# --- one run, in its own process ----------------------------------------------------------


def run_one(config: Path, setting: Setting, steps: int, root: Path) -> dict[str, Any]:
    """Fit ``config`` for ``steps`` steps under ``setting``; validate before and after.

    Returns the primary metric at layer K before and after training, its name, unit and
    direction, and the fit's wall time. Runs in the calling process (under DDP, Lightning
    starts the other ranks by re-running this process's command line).
    """
    import torch

    from lightning_unfold.cli import UnfoldCLI
    from lightning_unfold.training import SyntheticDataModule, UnfoldedModule

    args = [
        "--config", str(config),
        f"--trainer.accelerator={setting.accelerator}",
        f"--trainer.devices={setting.devices}",
        f"--trainer.strategy={setting.strategy}",
        f"--trainer.precision={setting.precision}",
        f"--trainer.max_steps={steps}",
        "--trainer.max_epochs=-1",
        "--trainer.limit_val_batches=0",  # no validation during fit: measured before and after
        "--trainer.num_sanity_val_steps=0",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
    ]  # fmt: skip
    cli = UnfoldCLI(
        UnfoldedModule,
        SyntheticDataModule,
        args=args,
        run=False,
        save_config_callback=None,
        seed_everything_default=0,
    )
    trainer, model, data = cli.trainer, cli.model, cli.datamodule

    def validate() -> float:
        trainer.limit_val_batches = 1.0
        trainer.validate(model, data, verbose=False)
        trainer.limit_val_batches = 0
        return float(model.primary_curves["val"][-1])

    before = validate()
    if setting.accelerator == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.fit(model, data)
    if setting.accelerator == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    after = validate()
    metric = model.primary_metric
    return {
        "rank": trainer.global_rank,
        "steps": int(trainer.global_step),
        "fit_seconds": seconds,
        "steps_per_s": trainer.global_step / seconds if seconds > 0 else None,
        "metric": metric.name,
        "unit": metric.unit,
        "higher_is_better": bool(metric.better(1.0, 0.0)),
        "before": before,
        "after": after,
        "device_name": torch.cuda.get_device_name(0) if setting.accelerator == "cuda" else "cpu",
    }


def _worker(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog=f"{PROG} (worker)")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--setting", type=json.loads, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--root", type=Path, required=True)
    p.add_argument("--json", type=Path, required=True)
    a = p.parse_args(list(argv))
    result = run_one(a.config, Setting(**a.setting), a.steps, a.root)
    if result["rank"] == 0:
        a.json.write_text(json.dumps(result, indent=2))
    return 0


def _spawn(config: Path, setting: Setting, steps: int, out: Path, timeout: float) -> dict[str, Any]:
    """Run :func:`run_one` in a fresh process (a clean CUDA context; DDP's launcher re-runs it)."""
    tag = f"{config.stem}-{setting.name}"
    root = out / "runs" / tag
    root.mkdir(parents=True, exist_ok=True)
    result_file = root / "result.json"
    result_file.unlink(missing_ok=True)
    cmd = [
        sys.executable, "-m", "benchmarks.gpu", "--worker",
        "--config", str(config), "--setting", json.dumps(asdict(setting)),
        "--steps", str(steps), "--root", str(root), "--json", str(result_file),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    (root / "log.txt").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not result_file.is_file():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": f"exit {proc.returncode}: {lines[-1] if lines else 'no output'}"}
    result = json.loads(result_file.read_text())
    result["process_seconds"] = time.perf_counter() - start
    return result


# --- verdicts and the table ---------------------------------------------------------------


def verdict(run: dict[str, Any], ref: dict[str, Any], setting: Setting, atol: float) -> str:
    """``"ok"``, or why ``run`` disagrees with the CPU reference ``ref`` (module docstring)."""
    if "error" in run:
        return f"error: {run['error']}"
    if "error" in ref:
        return "no CPU reference"
    if not all(math.isfinite(run[k]) for k in ("before", "after")):
        return f"not finite: before {run['before']}, after {run['after']}"
    if setting.name == "cpu":
        return "ok (reference)"
    b_ref, b = ref["before"], run["before"]
    if abs(b - b_ref) > setting.init_rtol * abs(b_ref) + 1e-6:
        return f"before training {b:.4g} vs CPU {b_ref:.4g} (rtol {setting.init_rtol:g})"
    gain_ref, gain = ref["after"] - b_ref, run["after"] - b
    if abs(gain - gain_ref) > setting.gain_rtol * abs(gain_ref) + atol:
        return (
            f"training gain {gain:+.4g} vs CPU {gain_ref:+.4g} "
            f"(rtol {setting.gain_rtol:g}, atol {atol:g})"
        )
    return "ok"


def to_markdown(results: dict[str, Any]) -> str:
    env = results["env"]
    lines = [
        f"# GPU readiness ({env['steps']} steps per run)",
        "",
        f"{env['device']}; {env['n_devices']} device(s); torch {env['torch']}, lightning "
        f"{env['lightning']}; {env['seconds']:.0f} s in all. Metric: the family's primary metric "
        "at layer K on its validation set, before → after training; 'gain' = after − before; "
        "each row is checked against the CPU row of its family (tolerances in "
        "`benchmarks/gpu.py`).",
        "",
        "| family | config | setting | devices | precision | steps/s | metric | before → after "
        "| gain | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        r = row["result"]
        if "error" in r:
            cells = ["—", "—", "—", "—"]
        else:
            unit = f" {r['unit']}" if r.get("unit") else ""
            sps = "—" if r.get("steps_per_s") is None else f"{r['steps_per_s']:.1f}"
            cells = [
                sps,
                str(r["metric"]),
                f"{r['before']:.4g} → {r['after']:.4g}{unit}",
                f"{r['after'] - r['before']:+.4g}",
            ]
        lines.append(
            f"| {row['family']} | {row['config']} | {row['setting']} | {row['devices']} | "
            f"{row['precision']} | {' | '.join(cells)} | {row['verdict']} |"
        )
    n_ok = sum(row["verdict"].startswith("ok") for row in results["rows"])
    lines += ["", f"{n_ok} of {len(results['rows'])} runs agree with their CPU reference."]
    return "\n".join(lines) + "\n"


def run_all(
    families: Sequence[Family],
    setting_list: Sequence[Setting],
    steps: int,
    out: Path,
    atol: float,
    timeout: float,
) -> dict[str, Any]:
    import lightning
    import torch

    t0 = time.perf_counter()
    cuda = torch.cuda.is_available()
    rows = []
    for fam in families:
        ref: dict[str, Any] | None = None
        for setting in setting_list:
            print(f"[{time.perf_counter() - t0:7.1f} s] {fam.name}: {setting.name}", flush=True)
            result = _spawn(fam.config, setting, steps, out, timeout)
            if setting.name == "cpu":
                ref = result
            rows.append(
                {
                    "family": fam.name,
                    "config": fam.config.name,
                    "paradigm": fam.paradigm,
                    "setting": setting.name,
                    "devices": setting.devices,
                    "strategy": setting.strategy,
                    "precision": setting.precision,
                    "result": result,
                    "verdict": verdict(result, ref or {"error": "none"}, setting, atol),
                }
            )
    results = {
        "env": {
            "steps": steps,
            "device": torch.cuda.get_device_name(0) if cuda else "no CUDA device (test mode)",
            "n_devices": torch.cuda.device_count() if cuda else setting_list[-1].devices,
            "torch": torch.__version__,
            "lightning": lightning.__version__,
            "atol": atol,
            "settings": [asdict(s) for s in setting_list],
            "seconds": time.perf_counter() - t0,
        },
        "families": [
            {"name": f.name, "config": f.config.name, "alternatives": f.alternatives}
            for f in families
        ],
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(results, indent=2))
    (out / "gpu.md").write_text(to_markdown(results))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks gpu [--steps N] [--configs A,B] [--out DIR]``; exit code."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["--worker"]:
        return _worker(args_list[1:])
    p = argparse.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Exit codes: 0 every run agrees with its CPU reference, 1 one does not or "
        "failed, 2 no CUDA device or a bad argument.",
    )
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per run (300)")
    p.add_argument(
        "--configs",
        default="",
        help="comma-separated config names of examples/configs (default: one per family)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/gpu"), help="where the table goes")
    p.add_argument("--rtol", type=float, default=0.10, help="relative tolerance of the gain")
    p.add_argument("--atol", type=float, default=0.05, help="absolute tolerance of the gain")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run (1800)")
    p.add_argument(
        "--settings", default="", help="comma-separated subset of fp32,bf16,ddp (all; cpu always)"
    )
    # the test suite runs the whole pipeline with the CPU standing in for CUDA
    p.add_argument("--test-accelerator", default=None, help=argparse.SUPPRESS)
    try:
        a = p.parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0)
    if a.steps < 1:
        print(f"{PROG}: error: --steps must be >= 1, got {a.steps}.", file=sys.stderr)
        return 2
    import torch

    if a.test_accelerator is None and not torch.cuda.is_available():
        print(
            f"{PROG}: error: no CUDA device is visible (torch {torch.__version__}, "
            "torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU.",
            file=sys.stderr,
        )
        return 2
    accelerator = a.test_accelerator or "cuda"
    n_devices = torch.cuda.device_count() if a.test_accelerator is None else 2
    all_settings = settings(accelerator, n_devices, a.rtol)
    chosen = {s.strip() for s in a.settings.split(",") if s.strip()}
    unknown = sorted(chosen - {s.name for s in all_settings})
    if unknown:
        valid = ",".join(s.name for s in all_settings)
        print(f"{PROG}: error: unknown settings {unknown}; valid: {valid}.", file=sys.stderr)
        return 2
    if chosen:  # the CPU reference always runs first
        all_settings = [s for s in all_settings if s.name in chosen | {"cpu"}]
    try:
        families = discover(CONFIGS, [c for c in a.configs.split(",") if c.strip()])
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    results = run_all(families, all_settings, a.steps, a.out, a.atol, a.timeout)
    print(to_markdown(results))
    print(f"Written: {a.out / 'gpu.md'}, {a.out / 'gpu.json'}")
    return 0 if all(r["verdict"].startswith("ok") for r in results["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
