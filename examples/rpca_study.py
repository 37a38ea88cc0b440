r"""RPCA: one solver, four paradigms — the comparative study of Shlezinger et al. (2025, §V-B).

Robust PCA :math:`X = L^\star R^{\star\top} + \Psi Y^\star` solved by alternating soft-thresholding
of the outliers and scaled gradient steps on the factors (:mod:`lightning_unfold.algorithms.rpca`),
unfolded to :math:`K = 10` layers four ways, against the hand-tuned classical solver and a black box:

========================  ==============================================================
``classical``             the classical iteration, hyperparameters from a grid search
``hyperparameters``       learned per-layer :math:`\eta_L, \eta_R, \zeta` (learned RPCA)
``objective``             additionally a learned :math:`\Psi_k` per layer
``correction``            (hyperparameters) + a two-layer conv correction of the L, R updates
``inductive_bias``        the iteration with Ψ implemented by a two-layer conv net
``black_box``             a residual 5-layer 3×3 conv net X → :math:`LR^\top`
                          (:class:`~lightning_unfold.algorithms.rpca.RPCABlackBoxNet`) with
                          about as many parameters as ``objective``
========================  ==============================================================

Two settings: *matched* (the models get the Ψ that generated the data) and *mismatched* (they get
:math:`\Psi + \sigma N`). Training: supervised relative loss
:math:`\|LR^\top - L^\star R^{\star\top}\|_F / \|L^\star R^{\star\top}\|_F`, sequential layer-wise
then end-to-end (:class:`~lightning_unfold.training.schedules.TwoStageSchedule`).

Run::

    python examples/rpca_study.py --preset cpu --out results/rpca_cpu
    python examples/rpca_study.py --preset full --out results/rpca_full   # GPU, n = 1000

``--out DIR`` writes ``DIR/results.json`` (``{"matched": {method: {"rel_error": [k = 1..K],
"params", "infer_ms", "train_s"}}, "mismatched": {...}}``), ``DIR/extras.json`` (configuration,
grid search, the classical solver run to convergence, the latency comparison, wall time) and the
two loss-vs-iteration plots ``DIR/matched.png``, ``DIR/mismatched.png``.
"""

# %%
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_unfold.algorithms.rpca import (
    RPCA,
    RPCAProblem,
    init_layer_thresholds,
    promote_hyperparameters,
    relative_frobenius_error,
)
from lightning_unfold.core.metrics import primary_metric
from lightning_unfold.core.unfolded import ClassicalSolver
from lightning_unfold.training import (
    SyntheticDataModule,
    UnfoldedModule,
    layer_metrics,
    tune_classical,
    warm_start,
)
from lightning_unfold.training.schedules import TwoStageSchedule
from lightning_unfold.training.study import (
    count_parameters,
    elapsed_printer,
    fit_timed,
    parse_study_args,
    plot_layer_curves,
    study_accelerator,
    study_parser,
    write_json,
)
from lightning_unfold.training.study import median_time as _timed

METHODS: tuple[str, ...] = (
    "classical",
    "hyperparameters",
    "objective",
    "correction",
    "inductive_bias",
    "black_box",
)
LEARNED: tuple[str, ...] = METHODS[1:]
#: start from the trained ``hyperparameters`` model (see :func:`warm_start`)
WARM_STARTED: tuple[str, ...] = ("objective", "correction", "inductive_bias")


@dataclass(frozen=True)
class Preset:
    """Sizes and budgets of one study run."""

    n1: int
    n2: int
    rank: int
    alpha: float
    sigma: float  # Ψ noise of the mismatched setting
    depth: int
    batch: int
    steps_per_layer: int  # sequential stage: steps per layer
    end_to_end_steps: int
    black_box_steps: int
    test_size: int
    channels: int  # conv-net width of the correction / inductive-bias variants
    lr: dict[str, float]
    grid: dict[str, tuple[float, ...]]
    max_classical_iter: int
    transform: str = "identity"
    grid_size: int = 32  # validation instances of the classical grid search


_LR = {
    "hyperparameters": 1e-2,
    "objective": 1e-3,
    "correction": 1e-3,
    "inductive_bias": 1e-3,
    "black_box": 1e-3,
}
_GRID = {
    "step": (0.5, 0.75, 1.0),
    "zeta": (0.5, 1.0, 2.0),
    "zeta_init": (1.0, 2.0),
    "decay": (0.3, 0.5, 0.7),
}

PRESETS: dict[str, Preset] = {
    # exercised by the test suite: seconds
    "tiny": Preset(
        n1=12,
        n2=10,
        rank=2,
        alpha=0.1,
        sigma=0.3,
        depth=3,
        batch=4,
        steps_per_layer=2,
        end_to_end_steps=3,
        black_box_steps=5,
        test_size=8,
        channels=2,
        lr=_LR,
        grid={"step": (0.75, 1.0), "zeta": (1.0,), "zeta_init": (2.0,), "decay": (0.5,)},
        max_classical_iter=200,
    ),
    # the issue asks for n = 200 within 20 minutes on 2 cores; on the shared 2-core machine the
    # conv variants cost ~8 s per training step at n = 200 (batch 16), so n = 64 is what fits.
    "cpu": Preset(
        n1=64,
        n2=64,
        rank=5,
        alpha=0.1,
        sigma=0.3,
        depth=10,
        batch=8,
        steps_per_layer=15,
        end_to_end_steps=100,
        black_box_steps=400,
        test_size=64,
        channels=8,
        lr=_LR,
        grid=_GRID,
        max_classical_iter=2000,
    ),
    # documented for a GPU (the LRPCA size, Cai et al. 2021)
    "full": Preset(
        n1=1000,
        n2=1000,
        rank=5,
        alpha=0.1,
        sigma=0.3,
        depth=10,
        batch=4,
        steps_per_layer=100,
        end_to_end_steps=1000,
        black_box_steps=3000,
        test_size=64,
        channels=16,
        lr=_LR,
        grid=_GRID,
        max_classical_iter=5000,
        grid_size=8,
    ),
}


def _problem(p: Preset, mismatched: bool) -> RPCAProblem:
    return RPCAProblem(
        n1=p.n1,
        n2=p.n2,
        rank=p.rank,
        outlier_fraction=p.alpha,
        transform=p.transform,
        psi_noise=p.sigma if mismatched else 0.0,
        seed=0,
    )


def _errors(model: torch.nn.Module, x: Tensor, target: Tensor, depth: int) -> list[float]:
    """The problem's primary metric (mean relative error) at layers 1..K (the black box has one
    output: repeated K times)."""
    problem = model.problem  # type: ignore[union-attr]
    metric = primary_metric(problem.metrics()).name
    return layer_metrics(model, problem, x, target, depth=depth, metrics=[metric])[metric][1:]


def grid_search(p: Preset, problem: RPCAProblem, device: torch.device) -> dict[str, Any]:
    """Hand-tuning of the classical solver: the grid point with the lowest mean relative error at
    layer K on a validation batch (its own seed stream, disjoint from training and test)."""
    x, target = problem.sample(p.grid_size, seed=(9, 0), dtype=torch.float64)
    found = tune_classical(problem, RPCA, p.grid, x.to(device), target.to(device), p.depth)
    return {"best": found.best, "best_error": found.score, "evaluated": len(found.scores)}


def latency(
    p: Preset,
    problem: RPCAProblem,
    opts: dict[str, float],
    learned: torch.nn.Module,
    x: Tensor,
    target: Tensor,
) -> dict[str, Any]:
    """The learned-hyperparameter model against the classical solver run until the same error."""
    goal = _errors(learned, x, target, p.depth)[-1]
    solver = ClassicalSolver(RPCA(**opts), problem, p.depth).to(x.device)
    alg, prm = solver.algorithm, solver.layer_params(1)
    needed = None
    with torch.no_grad():
        s = alg.init(x, prm)
        for k in range(1, p.max_classical_iter + 1):
            s = alg.step(s, x, prm, k)
            if float(relative_frobenius_error(alg.estimate(s), target).mean()) <= goal:
                needed = k
                break
    out: dict[str, Any] = {"learned_error": goal, "learned_layers": p.depth}
    out["classical_iterations"] = needed
    t_learned = _timed(lambda: learned(x))
    out["learned_ms"] = 1e3 * t_learned
    if needed is None:
        out["classical_ms"] = None
        out["iteration_ratio"] = None
        out["time_ratio"] = None
        out["note"] = (
            f"the classical solver did not reach the learned model's error within "
            f"{p.max_classical_iter} iterations"
        )
        return out
    t_classical = _timed(lambda: solver(x, depth=needed))
    out["classical_ms"] = 1e3 * t_classical
    out["iteration_ratio"] = needed / p.depth
    out["time_ratio"] = t_classical / t_learned
    return out


def train(
    p: Preset,
    problem: RPCAProblem,
    method: str,
    opts: dict[str, float],
    accelerator: str,
    seed: int,
    warm: UnfoldedModule | None = None,
) -> tuple[UnfoldedModule, float]:
    """Build and train one learned method (warm-started from ``warm``'s learned step sizes and
    thresholds when given); returns the module and the training wall time."""
    torch.manual_seed(seed)
    paradigm = method
    module = UnfoldedModule(
        problem,
        algorithm="rpca",
        algorithm_options=dict(opts),
        paradigm=paradigm,
        depth=p.depth,
        hidden=p.channels,
        lr=p.lr[method],
    )
    if method == "correction":
        promote_hyperparameters(module.model)
    if method == "inductive_bias":
        init_layer_thresholds(module.model, module.model.algorithm)
    if warm is not None:
        # variants 2-4 extend variant 1, and one learning rate small enough for Ψ_k and the conv
        # nets (1e-3) barely moves step sizes and thresholds: they start where variant 1 ended
        warm_start(module, warm, names=("eta_L", "eta_R", "zeta"))
    callbacks: list[L.Callback] = []
    if method == "black_box":
        max_steps = p.black_box_steps
    else:
        callbacks.append(
            TwoStageSchedule(
                steps_per_layer=p.steps_per_layer,
                end_to_end_steps=p.end_to_end_steps,
                log_curves=False,
            )
        )
        max_steps = -1
    data = SyntheticDataModule(
        problem, batch_size=p.batch, train_batches=100_000, val_size=p.batch, seed=seed
    )
    return module, fit_timed(module, data, max_steps, accelerator, callbacks).wall_s


def run_setting(
    p: Preset, mismatched: bool, device: torch.device, accelerator: str, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """All methods in one setting: (results entry, extras entry)."""
    name = "mismatched" if mismatched else "matched"
    problem = _problem(p, mismatched)
    tuned = grid_search(p, problem, device)
    opts = tuned["best"]
    log(f"[{name}] grid search: {opts} -> {tuned['best_error']:.3e} at K={p.depth}")
    x, target = problem.sample(p.test_size, seed=(3, 0))
    x, target = x.to(device), target.to(device)
    results: dict[str, Any] = {}
    classical = ClassicalSolver(RPCA(**opts), problem, p.depth).to(device)
    results["classical"] = {
        "rel_error": _errors(classical, x, target, p.depth),
        "params": 0,
        "infer_ms": 1e3 * _timed(lambda: classical(x)) / p.test_size,
        "train_s": 0.0,
    }
    converged = ClassicalSolver(RPCA(**opts), problem, 1, dtype=torch.float64).to(device)
    sol = converged.solve(x.double(), tol=1e-9, max_iter=p.max_classical_iter, warn=False)
    conv_err = relative_frobenius_error(sol.trajectory.final_estimate, target.double())
    extras: dict[str, Any] = {
        "grid_search": tuned,
        "classical_converged": {
            "rel_error": float(conv_err.mean()),
            "iterations": sol.iterations,
            "converged": sol.converged,
        },
    }
    modules: dict[str, UnfoldedModule] = {}
    for i, method in enumerate(LEARNED):
        warm = modules["hyperparameters"] if method in WARM_STARTED else None
        module, seconds = train(p, problem, method, opts, accelerator, seed=i, warm=warm)
        if warm is not None:  # the warm start's own training counts
            seconds += results["hyperparameters"]["train_s"]
        model = module.model.to(device).eval()
        modules[method] = module
        results[method] = {
            "rel_error": _errors(model, x, target, p.depth),
            "params": count_parameters(model),
            "infer_ms": 1e3 * _timed(lambda m=model: m(x)) / p.test_size,
            "train_s": seconds,
        }
        log(
            f"[{name}] {method:16s} final {results[method]['rel_error'][-1]:.3e}  "
            f"params {results[method]['params']}  train {seconds:.1f} s"
        )
    log(f"[{name}] classical        final {results['classical']['rel_error'][-1]:.3e}")
    extras["latency"] = latency(
        p, problem, opts, modules["hyperparameters"].model.eval(), x, target
    )
    log(f"[{name}] latency: {extras['latency']}")
    return results, extras


def plot(results: dict[str, Any], path: Path, title: str) -> None:
    plot_layer_curves(
        {method: results[method]["rel_error"] for method in METHODS},
        path,
        title=title,
        ylabel=r"relative error $\|LR^T - L^\star R^{\star T}\|_F / \|L^\star R^{\star T}\|_F$",
        dashed=("classical", "black_box"),
        logy=True,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out=None, threads=1, device=True)
    parser.add_argument("--transform", choices=("identity", "orthogonal", "dct"), default=None)
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    if args.transform is not None:
        p = replace(p, transform=args.transform)
    accelerator = study_accelerator(args.device)
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    t0 = time.perf_counter()
    log = elapsed_printer(t0)

    results: dict[str, Any] = {}
    extras: dict[str, Any] = {"preset": args.preset, "config": asdict(p), "device": str(device)}
    for mismatched in (False, True):
        name = "mismatched" if mismatched else "matched"
        results[name], extras[name] = run_setting(p, mismatched, device, accelerator, log)
    extras["wall_s"] = time.perf_counter() - t0
    log(f"done in {extras['wall_s']:.1f} s")
    if args.out is not None:
        write_json(args.out, "results.json", results)
        write_json(args.out, "extras.json", extras)
        for name in ("matched", "mismatched"):
            sigma = f", Ψ noise σ = {p.sigma}" if name == "mismatched" else ""
            plot(
                results[name],
                args.out / f"{name}.png",
                f"RPCA {p.n1}×{p.n2}, r = {p.rank}, α = {p.alpha} — {name}{sigma}",
            )
    return {"results": results, "extras": extras}


if __name__ == "__main__":
    main()
