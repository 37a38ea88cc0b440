"""``python -m benchmarks``: the speed tables (Markdown + JSON), measured side by side in one run.

Usage::

    python -m benchmarks                          # preset cpu, every family and section
    python -m benchmarks --preset tiny --out /tmp/b --sections layer,step
    python -m benchmarks --families sparse --threads 2
    python -m benchmarks gpu                      # every family on a GPU vs the CPU (gpu.py)
    python -m benchmarks efficiency               # learned vs classical at equal quality

Writes ``DIR/results.json`` (``{"env": ..., "<family>": {"<section>": {...}}}``) and
``DIR/results.md`` (the tables). Sections: ``layer`` (one layer ÷ its matmul floor), ``step``
(Lightning ÷ a bare PyTorch loop, with the breakdown), ``inference`` (unfolded vs classical at
equal accuracy, vs the per-instance reference), ``ddp`` (2 processes ÷ 1 process), ``options``
(``compile=True`` and bf16 autocast: speed-up, compile time, the accuracy they cost).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import benchmarks.families  # noqa: F401  (registers sparse and rpca)
from benchmarks import REGISTRY
from benchmarks.suite import (
    bench_ddp,
    bench_inference,
    bench_layer,
    bench_options,
    bench_step,
    machine_env,
)

SECTIONS: tuple[str, ...] = ("layer", "step", "inference", "ddp", "options")
#: per preset: timing repeats, training steps per round, rounds, DDP steps
BUDGETS: dict[str, dict[str, int]] = {
    "tiny": {"repeats": 3, "steps": 12, "rounds": 1, "ddp_steps": 8},
    "cpu": {"repeats": 10, "steps": 30, "rounds": 2, "ddp_steps": 24},
}


def _f(v: Any, fmt: str = ".2f") -> str:
    return "—" if v is None else format(v, fmt)


def to_markdown(results: dict[str, Any]) -> str:
    env = results["env"]
    lines = [
        f"# Benchmarks (preset {env['preset']})",
        "",
        f"torch {env['torch']}, {env['threads']} thread(s), {env['cpus']} CPU(s), "
        f"load average {env['load_before']} before / {env['load_after']} after, "
        f"{env['seconds']:.0f} s. Ratios are of timings taken side by side (round-robin medians).",
        "",
    ]
    fams = [k for k in results if k != "env"]
    if any("layer" in results[f] for f in fams):
        lines += [
            "## One layer vs the matmul floor (same shapes and dtype)",
            "",
            "| family | shapes | fwd ms (layer / floor) | fwd ratio | fwd+bwd ms (layer / floor) "
            "| fwd+bwd ratio | GFLOP/s layer fwd+bwd / floor |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in fams:
            r = results[f].get("layer")
            if r:
                ms, gf = r["ms"], r["gflops_per_s"]
                lines.append(
                    f"| {f} | {r['shapes']} | {ms['layer fwd']:.3f} / {ms['floor fwd']:.3f} | "
                    f"{r['ratio_fwd']:.2f} | {ms['layer fwd+bwd']:.3f} / {ms['floor fwd+bwd']:.3f}"
                    f" | {r['ratio_fwd_bwd']:.2f} | {gf['layer fwd+bwd']:.1f} / "
                    f"{gf['floor fwd+bwd']:.1f} |"
                )
        lines.append("")
    if any("step" in results[f] for f in fams):
        lines += [
            "## One training step: Lightning vs a bare PyTorch loop",
            "",
            "| family | batch | bare ms | Lightning ms | ratio | ratio, NaN check synced every "
            "step (before) | bare: data / fwd+loss / bwd / optim / proj | Lightning: data+loop / "
            "fwd+loss / bwd / optim+proj+log+hooks |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for f in fams:
            r = results[f].get("step")
            if r:
                b, lt = r["bare_ms"], r["lightning_ms"]
                bare_parts = " / ".join(
                    f"{b[k]:.2f}"
                    for k in ("data", "forward + loss", "backward", "optimizer", "projection")
                )
                light_parts = " / ".join(f"{v:.2f}" for k, v in lt.items() if k != "step")
                lines.append(
                    f"| {f} | {r['batch']} | {b['step']:.2f} | {lt['step']:.2f} | "
                    f"{r['ratio']:.3f} | {r['ratio_sync_every_step']:.3f} | {bare_parts} | "
                    f"{light_parts} |"
                )
        lines.append("")
    if any("inference" in results[f] for f in fams):
        lines += [
            "## Inference at equal accuracy",
            "",
            "| family | solver | metric | iterations | ms / instance | time ÷ unfolded |",
            "|---|---|---|---|---|---|",
        ]
        for f in fams:
            r = results[f].get("inference")
            if not r:
                continue
            u = r["unfolded"]
            lines.append(
                f"| {f} | unfolded (trained {r['train_steps']} steps, {r['train_seconds']:.1f} s)"
                f" | {r['metric']} {u['metric']:.2f} | {u['layers']} | "
                f"{u['ms_per_instance']:.4f} | 1 |"
            )
            for name, c in r["classical"].items():
                lines.append(
                    f"| {f} | {name} to the same {r['metric']} | best {c['best_metric']:.2f}, "
                    f"at K: {c['metric_at_K']:.2f} | {_f(c['iterations_to_match'], 'd')} | "
                    f"{_f(c['ms_per_instance'], '.4f')} | {_f(c['time_ratio_vs_unfolded'])} |"
                )
            ref = r.get("reference")
            if ref:
                lines.append(
                    f"| {f} | {ref['name']} ({ref['instances']} instances) | {ref['metric']:.2f}"
                    f" | — | {ref['ms_per_instance']:.1f} | {ref['time_ratio_vs_unfolded']:.0f} |"
                )
        lines.append("")
    if any("ddp" in results[f] for f in fams):
        lines += [
            "## DDP on CPU: 2 processes vs 1",
            "",
            "| family | batch per rank | samples/s: 1 proc 1 thread / 1 proc 2 threads / "
            "2 procs | 2 procs ÷ 1 proc (1 thread) | ÷ 1 proc (2 threads) |",
            "|---|---|---|---|---|",
        ]
        for f in fams:
            r = results[f].get("ddp")
            if r:
                sps = " / ".join(f"{v:.0f}" for v in r["samples_per_s"].values())
                lines.append(
                    f"| {f} | {r['batch_per_rank']} | {sps} | {r['ratio']:.2f} | "
                    f"{r['ratio_vs_2_threads']:.2f} |"
                )
        lines.append("")
    if any("options" in results[f] for f in fams):
        lines += [
            "## Opt-in options: torch.compile and bf16 autocast (Lightning, same start and data)",
            "",
            "| family | option | step ms | speed-up | first step ms | metric after the steps "
            "| cost (dB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in fams:
            r = results[f].get("options")
            if not r:
                continue
            for name, v in r["runs"].items():
                lines.append(
                    f"| {f} | {name} | {v['step_ms']:.2f} | {v['speedup']:.2f} | "
                    f"{v['first_step_ms']:.0f} | {r['metric']} {v['metric']:.2f} | "
                    f"{v['metric_cost_db']:+.2f} |"
                )
            lines.append(
                f"| {f} | bf16 autocast at inference (float32-trained model) | — | — | — | — | "
                f"{r['bf16_inference_metric_cost_db']:+.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


def run(
    preset: str, families: Sequence[str], sections: Sequence[str], out: Path | None
) -> dict[str, Any]:
    budget = BUDGETS[preset]
    t0 = time.perf_counter()
    results: dict[str, Any] = {"env": machine_env(preset)}
    for name in families:
        fam = REGISTRY[name]
        sizes = fam.sizes[preset]
        res: dict[str, Any] = {}
        for sec in sections:
            print(f"[{time.perf_counter() - t0:6.1f}s] {name}: {sec}", flush=True)
            if sec == "layer":
                res[sec] = bench_layer(fam, sizes, budget["repeats"])
            elif sec == "step":
                res[sec] = bench_step(fam, sizes, budget["steps"], budget["rounds"])
            elif sec == "inference":
                res[sec] = bench_inference(fam, sizes, budget["repeats"])
            elif sec == "ddp":
                res[sec] = bench_ddp(fam, sizes, budget["ddp_steps"])
            elif sec == "options":
                res[sec] = bench_options(fam, sizes, budget["steps"])
        results[name] = res
    results["env"]["load_after"] = round(os.getloadavg()[0], 2)
    results["env"]["seconds"] = time.perf_counter() - t0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))
        (out / "results.md").write_text(to_markdown(results))
    return results


def _choices(value: str, valid: Sequence[str], what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in valid]
    if bad or not items:
        raise SystemExit(f"Unknown {what} {bad or value!r}; valid: {', '.join(valid)}.")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["gpu"]:  # GPU readiness of every family: benchmarks/gpu.py
        from benchmarks.gpu import main as gpu_main

        return gpu_main(argv[1:])
    if argv[:1] == ["efficiency"]:  # the review's efficiency table: benchmarks/efficiency.py
        from benchmarks.efficiency import main as efficiency_main

        return efficiency_main(argv[1:])
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(BUDGETS), default="cpu")
    p.add_argument("--families", default=",".join(REGISTRY), help="comma-separated")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    p.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    fams = _choices(args.families, list(REGISTRY), "families")
    secs = _choices(args.sections, SECTIONS, "sections")
    results = run(args.preset, fams, secs, args.out)
    print(to_markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
