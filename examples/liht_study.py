r"""Learned IHT on the LISTA benchmark: IHT, ISTA, FISTA, learned IHT variants and LISTA, per layer.

The standard sparse-recovery benchmark (Chen et al. 2018; Liu et al. 2019): :math:`H \in \mathbb
R^{250\times 500}`, :math:`\mathcal N(0, 1/m)` entries, unit-norm columns, Bernoulli(0.1)–Gaussian
codes, noiseless, :math:`K = 16`, pooled NMSE on held-out codes after every layer.

=======================  ==================================================================
``iht``                  classical IHT, μ = 1/‖H‖², threshold θ tuned on a validation set
``ista``, ``fista``      classical ISTA / FISTA on the LASSO (ρ = 0.1, the benchmark's value)
``iht_hyperparameters``  IHT with a learned step μ_k and threshold θ_k per layer (2K numbers)
``liht_cp``              LIHT with coupled weights: learned W_k (n×m) and θ_k per layer
``liht``                 LIHT of Xin et al. (2016): learned W1_k, W2_k, θ_k per layer
``lista_cp``, ``lista``  LISTA-CP / LISTA (soft thresholds), the benchmark's learned baselines
=======================  ==================================================================

Learned models start from their classical counterpart (the tuned IHT, or ISTA) and are trained
with the stage-wise schedule (:class:`~lightning_unfold.training.StagewiseSchedule`; the cpu
preset's stages are short, ≤ 40 steps). Besides the curves the study measures

* **efficiency** (the review's "LISTA is ~20× faster than ISTA"): the iterations the classical
  solver needs to reach each learned model's layer-K NMSE (on the first ``efficiency_size`` test
  codes, up to ``max_classical_iter`` iterations), and the wall time of both, side by side in one
  process;
* **restricted isometry** (:func:`lightning_unfold.checks.restricted_isometry`): for every
  layer's effective operator :math:`A_k = W_kH`, :math:`\hat\delta_s` on the same random supports
  of size :math:`s = pn` as the classical :math:`H^\top H/\|H\|^2` (lower bounds: see the check).

Run::

    python examples/liht_study.py --preset cpu --out runs/liht_cpu

Writes ``DIR/results.json`` (``{"methods": {name: {"nmse_db": [layer 1..K], "params",
"infer_ms", "train_s"}}, "efficiency": {...}, "isometry": {...}, "tuning": {...}, "config",
"wall_s"}``) and ``DIR/nmse_vs_layer.png``.
"""

# %%
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning_unfold.checks import restricted_isometry
from torch import Tensor

from lightning_unfold import ClassicalSolver, SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import FISTA, IHT, ISTA
from lightning_unfold.training import StagewiseSchedule, layer_metrics, tune_classical
from lightning_unfold.training.study import (
    count_parameters,
    fit_timed,
    match_classical,
    parse_study_args,
    plot_layer_curves,
    study_config,
    study_parser,
    write_json,
)
from lightning_unfold.training.study import median_time as _timed

CLASSICAL: tuple[str, ...] = ("iht", "ista", "fista")
LEARNED: tuple[str, ...] = ("iht_hyperparameters", "liht_cp", "liht", "lista_cp", "lista")
METHODS: tuple[str, ...] = CLASSICAL + LEARNED
#: (algorithm, paradigm, variant, lr of the schedule, classical counterpart)
SPECS: dict[str, tuple[str, str, str | None, float, str]] = {
    "iht_hyperparameters": ("iht", "hyperparameters", None, 1e-2, "iht"),
    "liht_cp": ("iht", "objective", "liht_cp", 1e-3, "iht"),
    "liht": ("iht", "objective", "liht", 5e-4, "iht"),
    "lista_cp": ("ista", "objective", "lista_cp", 1e-2, "ista"),
    "lista": ("ista", "objective", "lista", 1e-3, "ista"),
}


@dataclass(frozen=True)
class Preset:
    m: int
    n: int
    depth: int
    batch: int
    val_size: int
    test_size: int
    efficiency_size: int
    max_classical_iter: int
    patience: int
    max_steps_per_stage: int
    eval_every: int
    thresholds: tuple[float, ...]
    n_supports: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(20, 40, 3, 16, 64, 64, 32, 50, 2, 2, 1, (0.05, 0.1), 10),
    "cpu": Preset(
        250, 500, 16, 64, 1000, 1000, 256, 3000, 20, 40, 5, (0.05, 0.08, 0.1, 0.12, 0.15, 0.2), 300
    ),
    "full": Preset(
        250,
        500,
        16,
        64,
        1000,
        1000,
        1000,
        20000,
        4000,
        200_000,
        10,
        (0.05, 0.08, 0.1, 0.12, 0.15, 0.2),
        2000,
    ),
}


def _nmse(model: torch.nn.Module, x: Tensor, s: Tensor, depth: int | None = None) -> list[float]:
    """Pooled NMSE (dB) at layers 1..K (or ``depth``)."""
    problem = model.problem  # type: ignore[union-attr]
    return layer_metrics(model, problem, x, s, depth=depth, metrics=["nmse_db"])["nmse_db"][1:]


def tune_iht(p: Preset, problem: SparseRecovery) -> dict[str, Any]:
    r"""The threshold θ of classical IHT (μ = 1/‖H‖², so λ0 = θ²/(2μ)) with the best layer-K NMSE
    on a validation set drawn from its own seed stream."""
    x, s = problem.sample(p.val_size, seed=(9, 0))
    mu = 1.0 / problem.lipschitz
    weights = [theta**2 / (2 * mu) for theta in p.thresholds]
    found = tune_classical(problem, IHT, {"l0_weight": weights}, x, s, p.depth, dtype=None)
    scores = [
        {"theta": theta, "l0_weight": point["l0_weight"], "nmse_db": value}
        for theta, (point, value) in zip(p.thresholds, found.scores, strict=True)
    ]
    return {"grid": scores, "best": scores[weights.index(found.best["l0_weight"])]}


def train(
    p: Preset, problem: SparseRecovery, data: SyntheticDataModule, method: str, lam0: float
) -> tuple[UnfoldedModule, float]:
    alg, paradigm, variant, lr, _ = SPECS[method]
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(
        problem,
        algorithm=alg,
        algorithm_options={"l0_weight": lam0} if alg == "iht" else None,
        paradigm=paradigm,
        variant=variant,
        depth=p.depth,
        lr=lr,
    )
    schedule = StagewiseSchedule(
        patience=p.patience,
        max_steps_per_stage=p.max_steps_per_stage,
        eval_every=p.eval_every,
        eval_batches=1,
        log_curves=False,
    )
    return module, fit_timed(module, data, -1, callbacks=[schedule]).wall_s


def efficiency(
    p: Preset,
    problem: SparseRecovery,
    classical: dict[str, torch.nn.Module],
    learned: dict[str, torch.nn.Module],
    x: Tensor,
    s: Tensor,
) -> dict[str, Any]:
    """Iterations and wall time of the classical counterpart to reach each learned model's
    layer-K NMSE on the same codes (one process, one after the other)."""
    curves = {
        name: _nmse(ClassicalSolver(model.algorithm, problem, 1), x, s, p.max_classical_iter)
        for name, model in classical.items()
    }
    result: dict[str, Any] = {
        "protocol": (
            f"NMSE on the first {x.shape[0]} test codes; the classical solver is iterated up to "
            f"{p.max_classical_iter} times and the first iteration at or below the learned "
            "model's layer-K NMSE is reported; wall times are medians of 5 runs of a forward "
            f"pass on the {x.shape[0]} codes, measured in the same process (shared CPU)."
        ),
        "classical_best_db": {k: min(v) for k, v in curves.items()},
    }
    for name, model in learned.items():
        counterpart = SPECS[name][4]
        goal = _nmse(model, x, s)[-1]
        curve = curves[counterpart]
        entry: dict[str, Any] = {
            "classical": counterpart,
            "learned_nmse_db": goal,
            **match_classical(
                model,
                lambda k, a=classical[counterpart].algorithm: ClassicalSolver(a, problem, k),
                x,
                curve,
                goal,
                p.depth,
                higher_is_better=False,
            ),
        }
        if entry["classical_iterations"] is None:
            entry["note"] = (
                f"{counterpart} did not reach {goal:.2f} dB within {p.max_classical_iter} "
                f"iterations (its best: {min(curve):.2f} dB)"
            )
        result[name] = entry
    return result


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    plot_layer_curves(
        {name: res["nmse_db"] for name, res in results.items()},
        path,
        title=title,
        ylabel="NMSE (dB)",
        dashed=CLASSICAL,
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out="runs/liht_study")
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    wall = time.perf_counter()
    problem = SparseRecovery(m=p.m, n=p.n, sparsity=0.1, snr_db=None, rho=0.1, seed=0)
    data = SyntheticDataModule(
        problem,
        batch_size=p.batch,
        train_batches=100,
        val_size=p.val_size,
        test_size=p.test_size,
        seed=0,
    )
    data.setup()
    assert data._test is not None
    x, s = data._test.tensors
    tuning = tune_iht(p, problem)
    lam0 = tuning["best"]["l0_weight"]
    print(f"IHT threshold tuned: {tuning['best']}", flush=True)
    classical = {
        "iht": ClassicalSolver(IHT(l0_weight=lam0), problem, p.depth),
        "ista": ClassicalSolver(ISTA(), problem, p.depth),
        "fista": ClassicalSolver(FISTA(), problem, p.depth),
    }
    methods: dict[str, Any] = {}
    for name, model in classical.items():
        methods[name] = {
            "nmse_db": _nmse(model, x, s),
            "params": 0,
            "infer_ms": 1e3 * _timed(lambda m=model: m(x)),
            "train_s": 0.0,
        }
    learned: dict[str, torch.nn.Module] = {}
    for name in LEARNED:
        module, seconds = train(p, problem, data, name, lam0)
        model = module.model.eval()
        learned[name] = model
        methods[name] = {
            "nmse_db": _nmse(model, x, s),
            "params": count_parameters(model),
            "infer_ms": 1e3 * _timed(lambda m=model: m(x)),
            "train_s": seconds,
        }
        print(
            f"{name:>20}: layer-{p.depth} NMSE {methods[name]['nmse_db'][-1]:7.2f} dB "
            f"(trained {seconds:.0f} s)",
            flush=True,
        )
    n_eff = min(p.efficiency_size, x.shape[0])
    eff = efficiency(p, problem, classical, learned, x[:n_eff], s[:n_eff])
    iso: dict[str, Any] = {}
    for name in ("iht", *LEARNED):
        model = classical[name] if name == "iht" else learned[name]
        res = restricted_isometry(
            model, problem, (x[:8].double(), s[:8].double()), n_supports=p.n_supports
        )
        iso[name] = {
            "passed": res.passed,
            "worst_layer_delta": res.value,
            "classical_delta": res.threshold,
            "per_layer": res.details["per_layer"],
            "exact": res.details["exact"],
            "support_size": res.details["support_size"],
            "message": res.message,
        }
    wall = time.perf_counter() - wall
    results = {
        "methods": methods,
        "efficiency": eff,
        "isometry": iso,
        "tuning": tuning,
        "config": study_config(args.preset, p, problem=problem.init_args()),
        "wall_s": wall,
    }
    write_json(args.out, "results.json", results)
    plot(
        methods,
        args.out / "nmse_vs_layer.png",
        f"sparse recovery m={p.m}, n={p.n}, p=0.1, noiseless ({args.preset} preset)",
    )
    print(f"wall time {wall:.0f} s; wrote {args.out}/results.json and nmse_vs_layer.png")
    return results


if __name__ == "__main__":
    main()
