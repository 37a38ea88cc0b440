r"""The LISTA benchmark: ISTA, FISTA, LISTA, LISTA-CP, LISTA-CPSS and ALISTA, layer by layer.

The standard sparse-recovery benchmark of Chen et al. (2018) and Liu et al. (2019): dictionary
:math:`H \in \mathbb R^{250\times 500}` with :math:`\mathcal N(0, 1/m)` entries and unit-norm
columns, Bernoulli(0.1)–Gaussian codes, noiseless (or ``--snr`` dB), :math:`K = 16` layers,
batch 64, and the pooled NMSE

.. math:: \mathrm{NMSE}_k = 10\log_{10}\frac{\sum_i\|\hat s_i^{(k)} - s_i\|^2}{\sum_i\|s_i\|^2}

on 1000 test samples after every layer. Learned models are trained with the stage-wise schedule
(:class:`~lightning_unfold.training.StagewiseSchedule`): for each new layer, layer k alone at
lr, then layers 1..k at 0.2·lr and 0.02·lr, older layers' rates decayed by 0.3 per round, each
stage ending on held-out patience. Each model's settings are in
``examples/configs/lista_benchmark/<model>.yaml``.

Run::

    python examples/lista_benchmark.py --preset small --out runs/lista_small

``--preset small`` fits in about 15 minutes on 2 CPU cores (short stages); ``--preset medium``
keeps the literature's schedule with stages of 120–600 steps sized to at most ~51 minutes of
training on 2 cores even if no stage stops early (:func:`worst_case_seconds`, from measured step
times); ``--preset full`` is the literature's budget (patience 4000 steps, up to 200 000 steps per
stage: days on a CPU); ``--preset tiny`` is a seconds-long smoke run. Writes ``DIR/results.json``
(``{"<model>": {"nmse_db": [layer 1..K], "train_seconds": s}}``), ``DIR/nmse_vs_layer.png`` and
``DIR/run_info.json`` (preset, environment, stage history, wall time).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.training import LayerwiseNMSE, StagewiseSchedule
from lightning_unfold.training.study import fit_timed, parse_study_args, study_parser

MODELS: tuple[str, ...] = ("ista", "fista", "lista", "lista_cp", "lista_cpss", "alista")
CONFIGS = Path(__file__).resolve().parent / "configs" / "lista_benchmark"

#: the standard benchmark (Chen et al. 2018; Liu et al. 2019)
_STANDARD = {"m": 250, "n": 500, "depth": 16, "batch_size": 64, "val_size": 1000, "test_size": 1000}
#: problem and data sizes per preset: small and full share the benchmark and differ only in the
#: schedule's stage lengths, which are in each model's YAML
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {"m": 20, "n": 40, "depth": 4, "batch_size": 16, "val_size": 64, "test_size": 64},
    "small": dict(_STANDARD),
    "medium": dict(_STANDARD),
    "full": dict(_STANDARD),
}
#: measured ms per optimizer step of the small preset on a quiet 2-core machine, 1 thread,
#: averaged over all stages (train depths 1..16) and including the held-out evaluations
#: (docs/schedules.md: train seconds / optimizer steps); the basis of :func:`worst_case_seconds`
MS_PER_STEP: dict[str, float] = {
    "lista": 68.0,
    "lista_cp": 41.0,
    "lista_cpss": 53.0,
    "alista": 42.0,
}


def worst_case_seconds(preset: str, models: Sequence[str] = MODELS) -> float:
    """Training time of ``preset`` if no stage stops early on patience: (rounds × 3 stages ×
    ``max_steps_per_stage`` + ``end_to_end_steps``) × :data:`MS_PER_STEP` (standard-size
    presets only)."""
    if preset == "tiny":
        raise ValueError("The estimate is for the standard-size presets (small, medium, full).")
    total = 0.0
    for name in models:
        sched = (load_config(name).get("schedule") or {}).get(preset)
        if name in MS_PER_STEP and sched is not None:
            stages = 3 * PRESETS[preset]["depth"]
            steps = stages * sched["max_steps_per_stage"] + sched.get("end_to_end_steps", 0)
            total += steps * MS_PER_STEP[name] / 1e3
    return total


def load_config(model: str) -> dict[str, Any]:
    """A model's benchmark settings: ``model`` (UnfoldedModule arguments) and ``schedule``."""
    path = CONFIGS / f"{model}.yaml"
    if not path.exists():
        raise ValueError(f"No config {path}; valid models: {list(MODELS)}.")
    cfg = yaml.safe_load(path.read_text())
    if not isinstance(cfg, dict) or "model" not in cfg:
        raise ValueError(f"{path} needs a 'model:' section (UnfoldedModule arguments).")
    return cfg


@torch.no_grad()
def nmse_curve(module: UnfoldedModule, data: SyntheticDataModule) -> list[float]:
    """Pooled test NMSE (dB) after layers 1..K."""
    module.eval()
    metric = LayerwiseNMSE(module.depth)
    with torch.no_grad():
        for x, s in data.test_dataloader():
            metric.update(module.model(x).stacked_estimates(), s)
    return [float(v) for v in metric.compute()[1:]]


def run_model(
    name: str, preset: str, problem: SparseRecovery, data: SyntheticDataModule, seed: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Train (if learned) and evaluate one model; returns its result and its stage history."""
    cfg = load_config(name)
    size = PRESETS[preset]
    L.seed_everything(seed, verbose=False)
    module = UnfoldedModule(problem, depth=size["depth"], **cfg["model"])
    history: list[dict[str, Any]] = []
    seconds = 0.0
    if cfg["model"].get("paradigm") != "classical":
        sched_cfg = (cfg.get("schedule") or {}).get(preset)
        if sched_cfg is None:
            raise ValueError(f"{CONFIGS / (name + '.yaml')} has no schedule for preset {preset!r}.")
        schedule = StagewiseSchedule(**sched_cfg)
        # no validation loop: stage decisions use the schedule's held-out evaluation
        seconds = fit_timed(module, data, -1, callbacks=[schedule]).wall_s
        history = schedule.history
    curve = nmse_curve(module, data)
    return {"nmse_db": curve, "train_seconds": seconds}, history


def plot(results: dict[str, dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, res in results.items():
        curve = res["nmse_db"]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", ms=3, label=name)
    ax.set_xlabel("layer / iteration k")
    ax.set_ylabel("NMSE (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    parser = study_parser(__doc__, PRESETS, out="runs/lista_benchmark", default_preset="small")
    parser.add_argument("--snr", type=float, default=None, help="SNR in dB (default noiseless)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    args = parse_study_args(parser, argv)
    size = PRESETS[args.preset]
    problem = SparseRecovery(
        m=size["m"], n=size["n"], sparsity=0.1, snr_db=args.snr, rho=0.1, seed=args.seed
    )
    data = SyntheticDataModule(
        problem,
        batch_size=size["batch_size"],
        train_batches=100,
        val_size=size["val_size"],
        test_size=size["test_size"],
        seed=args.seed,
    )
    data.setup()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.preset != "tiny":
        est = worst_case_seconds(args.preset, args.models)
        print(f"preset {args.preset}: at most {est / 60:.0f} min of training (quiet machine)")
    wall = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    for name in args.models:
        results[name], histories[name] = run_model(name, args.preset, problem, data, args.seed)
        res = results[name]
        print(
            f"{name:>10}: NMSE at layer {len(res['nmse_db'])} = {res['nmse_db'][-1]:7.2f} dB "
            f"(trained {res['train_seconds']:.0f} s, {sum(h['steps'] for h in histories[name])} "
            "steps)",
            flush=True,
        )
        (args.out / "results.json").write_text(json.dumps(results, indent=2))
    wall = time.perf_counter() - wall
    snr = "noiseless" if args.snr is None else f"SNR {args.snr:g} dB"
    plot(
        results,
        args.out / "nmse_vs_layer.png",
        f"m={size['m']}, n={size['n']}, K={size['depth']}, {snr} ({args.preset})",
    )
    info = {
        "preset": args.preset,
        "problem": problem.init_args(),
        "seed": args.seed,
        "wall_seconds": wall,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "stages": histories,
    }
    (args.out / "run_info.json").write_text(json.dumps(info, indent=2))
    print(f"total wall time {wall:.0f} s; wrote {args.out}/results.json, nmse_vs_layer.png")
    return results


if __name__ == "__main__":
    main()
