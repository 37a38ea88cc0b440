r"""DUBLID: blind deblurring by unrolled half-quadratic splitting, on shipped photographs.

Random motion blur (a smooth random camera path in an m × m box, :func:`~lightning_unfold.
algorithms.dublid.motion_kernel`) of grey crops of scikit-image's shipped photographs
(:class:`~lightning_unfold.algorithms.BlindDeblurring`, circular convolution, noise at
``snr_db``): training crops from astronaut, camera, chelsea, coffee and motorcycle_left, test
crops from coins, rocket and moon (:data:`~lightning_unfold.algorithms.dublid.DEBLUR_IMAGES`).
Image and kernel are estimated together; the PSNR and the relative kernel error are taken after
the best integer shift within ±m//2 pixels (the shift ambiguity of blind deblurring).

=========================  =======================================================================
``blurred``                the observation itself (kernel: the identity)
``classical_K``            the alternating HQS solver (:class:`~lightning_unfold.algorithms.
                           HQSBlindDeblur`, 4 difference filters), K iterations, θ, ζ, ε tuned
                           for iteration K on held-out training images
``classical_converged``    the same solver tuned for ``tune_iter`` iterations and run to
                           convergence (relative change ≤ 1e-5, at most ``max_iter``)
``dublid``                 DUBLID: K layers, filters, thresholds, penalties and ε learned per layer
                           end to end (paradigm ``objective``), initialised at ``classical_K``
``learned_hyperparameters`` the same with the classical filters (θ, ζ, ε per layer learned only)
=========================  =======================================================================

Learned models: image MSE + 0.01 × relative kernel error² (the problem's supervised loss) at
layer K, Adam, fresh training crops each step. Time per image: median of 5 forward passes over
the test set, as wall time and as CPU time of the process.

Run::

    python examples/dublid_study.py --preset cpu --out runs/dublid

Writes ``DIR/results.json``, ``DIR/psnr_vs_layer.png`` and ``DIR/examples.png``.
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
from torch import Tensor

from lightning_unfold import ClassicalSolver, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import BlindDeblurring, HQSBlindDeblur
from lightning_unfold.algorithms.dublid import DEBLUR_IMAGES
from lightning_unfold.core.metrics import layer_curves
from lightning_unfold.training import tune_classical
from lightning_unfold.training.study import (
    count_parameters,
    fit_timed,
    parse_study_args,
    per_item_times,
    plot_layer_curves,
    stopwatch,
    study_config,
    study_parser,
    write_json,
)

#: learned method -> (paradigm, lr)
LEARNED: dict[str, tuple[str, float]] = {
    "dublid": ("objective", 3e-3),
    "learned_hyperparameters": ("hyperparameters", 3e-3),
}
FILTERS = "tv4"
#: the converged run stops when the largest relative change of an image's estimate is below this
#: (float32: a tighter tolerance meets the rounding floor)
TOL = 1e-5


@dataclass(frozen=True)
class Preset:
    size: int
    kernel_size: int
    depth: int
    batch: int
    steps: int
    test_size: int
    tune_size: int
    tune_iter: int
    max_iter: int
    thresholds: tuple[float, ...]
    penalties: tuple[float, ...]
    kernel_regs: tuple[float, ...]


PRESETS: dict[str, Preset] = {
    "tiny": Preset(32, 7, 3, 4, 3, 4, 4, 20, 40, (0.05, 0.1), (0.03,), (3.0, 10.0)),
    "cpu": Preset(
        64, 13, 10, 8, 600, 32, 16, 150, 2000,
        (0.02, 0.035, 0.05, 0.08), (0.01, 0.03, 0.1), (3.0, 10.0, 30.0),
    ),
}  # fmt: skip


def tune(p: Preset, train: BlindDeblurring) -> dict[str, Any]:
    """θ, ζ, ε on ``tune_size`` held-out training crops: the best grid point at iteration K and
    the best at ``tune_iter`` (the converged run), from one sweep of per-iteration curves."""
    x, target = train.sample(p.tune_size, seed=(5, 0), dtype=torch.float64)
    grid = {"threshold": p.thresholds, "penalty": p.penalties, "kernel_reg": p.kernel_regs}
    found = tune_classical(
        train, HQSBlindDeblur, grid, x, target, p.tune_iter, options={"filters": FILTERS}
    )
    points = [pt for pt, _ in found.scores]
    at_k = max(range(len(points)), key=lambda i: found.curves[i][p.depth])
    return {
        "at_K": points[at_k],
        "at_K_psnr_db": found.curves[at_k][p.depth],
        "converged": found.best,
        "converged_psnr_db": found.score,
        "grid_psnr_db": [
            {**pt, "at_K": c[p.depth], "at_tune_iter": c[-1]}
            for pt, c in zip(points, found.curves, strict=True)
        ],
    }


def train_model(
    p: Preset, train: BlindDeblurring, name: str, options: dict[str, Any], seed: int
) -> tuple[torch.nn.Module, float]:
    paradigm, lr = LEARNED[name]
    L.seed_everything(seed, verbose=False)
    module = UnfoldedModule(
        train,
        algorithm="hqs_deblur",
        algorithm_options=options,
        paradigm=paradigm,
        depth=p.depth,
        lr=lr,
    )
    data = SyntheticDataModule(
        train, batch_size=p.batch, train_batches=p.steps, val_size=1, test_size=1, seed=seed
    )
    seconds = fit_timed(module, data, p.steps).wall_s
    return module.model.eval(), seconds


def plot_examples(
    problem: BlindDeblurring, y: Tensor, target: Tensor, panels: dict[str, Tensor], path: Path
) -> None:
    """Per test image two rows: the images (blurred, each method, truth) and their kernels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_img, cols = y.shape[0], len(panels) + 1
    fig, axes = plt.subplots(2 * n_img, cols, figsize=(1.9 * cols, 3.6 * n_img), squeeze=False)
    truth_x, truth_k = problem.unpack(target)
    for r in range(n_img):
        views = [(name, *problem.unpack(est[r])) for name, est in panels.items()]
        views.append(("truth", truth_x[r], truth_k[r]))
        for c, (title, img, ker) in enumerate(views):
            axes[2 * r][c].imshow(img.clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
            axes[2 * r + 1][c].imshow(ker.numpy(), cmap="magma")
            if r == 0:
                axes[0][c].set_title(title, fontsize=8)
            for ax in (axes[2 * r][c], axes[2 * r + 1][c]):
                ax.set_xticks([])
                ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out="runs/dublid")
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    wall = time.perf_counter()
    common = {"size": p.size, "kernel_size": p.kernel_size, "source": "skimage", "seed": 0}
    train = BlindDeblurring(**common, split="train")
    test = BlindDeblurring(**common, split="test")
    y, target = test.sample(p.test_size, seed=(3, 0))
    metrics = test.metrics()

    def score(est: Tensor) -> dict[str, float]:
        c = layer_curves(est[None], target, y, metrics)
        return {m.name: c[m.name][0] for m in metrics}

    tuned = tune(p, train)
    at_k = {**tuned["at_K"], "filters": FILTERS}
    at_conv = {**tuned["converged"], "filters": FILTERS}
    print(f"tuned at K = {p.depth}: {tuned['at_K']}; at {p.tune_iter}: {tuned['converged']}")
    methods: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    identity = HQSBlindDeblur(**at_k)
    classical = ClassicalSolver(identity, test, p.depth)
    with torch.no_grad():
        traj = classical(y).stacked_estimates()
    c_curves = layer_curves(traj, target, y, metrics)
    methods["blurred"] = {**score(traj[0]), "params": 0, "ms_per_image": 0.0}
    methods["classical_K"] = {
        **score(traj[-1]),
        "params": 0,
        **per_item_times(lambda: classical.predict(y), p.test_size),
        "psnr_db_per_layer": c_curves["psnr_db"],
        "options": at_k,
    }
    curves["classical (tuned at K)"] = c_curves["psnr_db"]
    conv_solver = ClassicalSolver(HQSBlindDeblur(**at_conv), test, 1)
    with torch.no_grad():
        res = conv_solver.solve(y, tol=TOL, max_iter=p.max_iter, warn=False)  # reported
        with stopwatch() as clock:
            conv_solver.solve(y, tol=TOL, max_iter=p.max_iter, warn=False)
    conv_est = res.trajectory.final_estimate
    residual = conv_solver.algorithm.fixed_point_residual(
        res.trajectory.final, y, conv_solver.layer_params(1)
    )
    methods["classical_converged"] = {
        **score(conv_est),
        "params": 0,
        "iterations": res.iterations,
        "converged": res.converged,
        "final_change": res.final_change,
        "fixed_point_residual": {
            "mean": float(residual.mean()),
            "max": float(residual.max()),
        },
        "ms_per_image": 1e3 * clock.wall_s / p.test_size,
        "cpu_ms_per_image": 1e3 * clock.cpu_s / p.test_size,
        "options": at_conv,
    }
    panels = {"blurred": traj[0], f"HQS K={p.depth}": traj[-1], "HQS converged": conv_est}
    for i, name in enumerate(LEARNED):
        model, train_s = train_model(p, train, name, at_k, seed=i)
        with torch.no_grad():
            est = model(y).stacked_estimates()
        c = layer_curves(est, target, y, metrics)
        methods[name] = {
            **score(est[-1]),
            "params": count_parameters(model),
            **per_item_times(lambda m=model: m.predict(y), p.test_size),
            "train_s": train_s,
            "psnr_db_per_layer": c["psnr_db"],
            "kernel_error_per_layer": c["kernel_error"],
        }
        curves[name] = c["psnr_db"]
        if name == "dublid":
            panels[f"DUBLID K={p.depth}"] = est[-1]
            learned = model.layer_params(p.depth)
            methods[name]["last_layer"] = {
                k: learned[k].detach().tolist() for k in ("threshold", "penalty", "kernel_reg")
            }
        print(
            f"{name:>24}: PSNR {methods[name]['psnr_db']:.2f} dB, kernel error "
            f"{methods[name]['kernel_error']:.3f}, {methods[name]['params']} parameters, "
            f"trained {train_s:.0f} s"
        )
    wall = time.perf_counter() - wall
    results = {
        "methods": methods,
        "tuning": tuned,
        "images": {split: list(names) for split, names in DEBLUR_IMAGES.items()},
        "config": study_config(
            args.preset,
            p,
            filters=FILTERS,
            train_problem=train.init_args(),
            test_problem=test.init_args(),
        ),
        "wall_s": wall,
    }
    write_json(args.out, "results.json", results)
    plot_layer_curves(
        {k: v[1:] for k, v in curves.items()},
        args.out / "psnr_vs_layer.png",
        title=f"test crops {p.size}×{p.size}, {p.kernel_size}×{p.kernel_size} motion blur "
        f"({args.preset}); blurred input {methods['blurred']['psnr_db']:.2f} dB",
        ylabel="PSNR (dB, shift-aligned)",
        dashed=("classical (tuned at K)",),
    )
    k = min(3, p.test_size)
    plot_examples(
        test, y[:k], target[:k], {n: v[:k] for n, v in panels.items()}, args.out / "examples.png"
    )
    for name, r in methods.items():
        print(
            f"{name:>24}  PSNR {r['psnr_db']:6.2f} dB  kernel error {r['kernel_error']:.3f}  "
            f"params {r['params']:>5}  {r['ms_per_image']:.2f} ms/image (wall)"
        )
    print(f"wall time {wall:.0f} s; wrote {args.out}/results.json and the plots")
    return results


if __name__ == "__main__":
    main()
