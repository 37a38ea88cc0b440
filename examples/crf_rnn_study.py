r"""CRF-RNN: mean-field inference of a dense CRF unrolled and trained end to end, on shipped images.

Segmentation of brick (foreground) composited on grass (background) through masks cut from
scikit-image's shipped images (:class:`~lightning_unfold.algorithms.Segmentation`,
``source="skimage"``): training masks from ``horse.png``, test masks from ``phantom.png``; the
textures from the top halves of ``brick.png`` / ``grass.png`` for training and the bottom halves
for testing. A weak linear unary (intensity, 3×3 mean and standard deviation; classical weights by
linear discriminant analysis on training images) feeds a dense CRF with Gaussian spatial and
bilateral kernels (:class:`~lightning_unfold.algorithms.MeanFieldCRF`).

=======================  ==========================================================================
``unary``                the unary classifier alone (layer 0)
``crf_converged``        the hand-set CRF (weights tuned on training images) run to convergence
``crf_K``                the same CRF, K mean-field iterations
``crf_rnn``              CRF-RNN: unary, kernel weights and compatibility learned end to end, one
                         parameter set shared by the K iterations (Zheng et al. 2015)
``crf_rnn_iou``          CRF-RNN trained on the soft-IoU loss instead of the cross-entropy
``crf_rnn_untied``       the same with a parameter set per iteration
``step_sizes``           the hand-set CRF with learned step sizes η_k only
``black_box``            a dilated CNN with about as many parameters as ``crf_rnn_untied``
``black_box_large``      the same CNN with about ``large_params`` parameters
=======================  ==========================================================================

Learned models: cross-entropy (or soft IoU) of the layer-K marginals (Adam, fresh training
images each step). Time per image: median of 5 forward passes over the test set, side by side in
one process, as wall time and as CPU time of the process (the latter is steadier on a shared
machine).

Run::

    python examples/crf_rnn_study.py --preset cpu --out runs/crf_rnn

Writes ``DIR/results.json`` and ``DIR/miou_vs_layer.png``, ``DIR/examples.png``.
"""

# %%
from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_unfold import ClassicalSolver, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import MeanFieldCRF, Segmentation
from lightning_unfold.algorithms.crf import SHIPPED_IMAGES
from lightning_unfold.core.metrics import layer_curves
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

#: learned method -> (paradigm, tied, lr, training loss)
LEARNED: dict[str, tuple[str, bool, float, str]] = {
    "crf_rnn": ("objective", True, 3e-2, "cross_entropy"),
    "crf_rnn_iou": ("objective", True, 3e-2, "soft_iou"),
    "crf_rnn_untied": ("objective", False, 3e-2, "cross_entropy"),
    "step_sizes": ("hyperparameters", False, 3e-2, "cross_entropy"),
    "black_box": ("black_box", False, 1e-2, "cross_entropy"),
    "black_box_large": ("black_box", False, 3e-3, "cross_entropy"),
}


@dataclass(frozen=True)
class Preset:
    size: int
    depth: int
    batch: int
    steps: int
    test_size: int
    tune_size: int
    large_params: int
    max_iter: int
    chunk: int
    bb_steps: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(16, 3, 4, 3, 8, 4, 400, 30, 8, 3),
    "cpu": Preset(32, 8, 8, 300, 48, 16, 3000, 300, 16, 600),
}
#: the hand-set CRF's grid (w_s, w_b), tuned on training images at convergence
GRID = tuple(itertools.product((1.0, 2.0, 4.0, 8.0), (0.0, 1.0)))


def _chunked_traj(model: torch.nn.Module, x: Tensor, chunk: int) -> Tensor:
    """Stacked estimates ``(K + 1, B, L, H, W)`` of ``model`` over ``x``, ``chunk`` images at a
    time (the dense kernels hold N² entries per image)."""
    with torch.no_grad():
        parts = [model(xc).stacked_estimates() for xc in x.split(chunk)]
    return torch.cat(parts, dim=1)


def _solve(
    solver: ClassicalSolver, x: Tensor, chunk: int, max_iter: int
) -> tuple[Tensor, int, bool]:
    """The converged marginals (tolerance 1e-5 on the relative change), the most iterations any
    chunk needed and whether every chunk converged."""
    outs, iters, converged = [], 0, True
    for xc in x.split(chunk):
        res = solver.solve(xc, tol=1e-5, max_iter=max_iter, warn=False)  # reported instead
        outs.append(res.trajectory.estimates[-1])
        iters, converged = max(iters, res.iterations), converged and res.converged
    return torch.cat(outs), iters, converged


def tune(p: Preset, train: Segmentation) -> dict[str, Any]:
    """The grid point (w_s, w_b) with the best converged mIoU on ``tune_size`` training images."""
    x, y = train.sample(p.tune_size, seed=(5, 0))
    scores = {}
    for ws, wb in GRID:
        solver = ClassicalSolver(MeanFieldCRF(spatial_weight=ws, bilateral_weight=wb), train, 1)
        q, _, _ = _solve(solver, x, p.chunk, p.max_iter)
        scores[(ws, wb)] = layer_curves(q[None], y, x, train.metrics())["miou"][0]
    best = max(scores, key=lambda k: scores[k])
    return {
        "spatial_weight": best[0],
        "bilateral_weight": best[1],
        "grid_miou": {f"{k[0]},{k[1]}": v for k, v in scores.items()},
    }


def train_model(
    p: Preset, train: Segmentation, name: str, options: dict[str, float], seed: int
) -> tuple[torch.nn.Module, float]:
    paradigm, tied, lr, loss = LEARNED[name]
    steps = p.bb_steps if paradigm == "black_box" else p.steps
    train = Segmentation(**{**train.init_args(), "loss": loss})
    L.seed_everything(seed, verbose=False)
    module = UnfoldedModule(
        train,
        algorithm="mean_field_crf",
        algorithm_options=options,
        paradigm=paradigm,
        depth=p.depth,
        tied=tied,
        black_box_params=p.large_params if name == "black_box_large" else None,
        lr=lr,
    )
    data = SyntheticDataModule(
        train, batch_size=p.batch, train_batches=steps, val_size=1, test_size=1, seed=seed
    )
    seconds = fit_timed(module, data, steps).wall_s
    return module.model.eval(), seconds


def plot_examples(x: Tensor, y: Tensor, panels: dict[str, Tensor], path: Path) -> None:
    """Rows: test images; columns: the input, each method's labels, the truth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = x.shape[0], len(panels) + 2
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 1.9 * rows), squeeze=False)
    for r in range(rows):
        views = [
            ("input", x[r, 0], "gray"),
            *((n, q[r].argmax(0), "viridis") for n, q in panels.items()),
        ]
        views.append(("truth", y[r], "viridis"))
        for c, (title, img, cmap) in enumerate(views):
            ax = axes[r][c]
            ax.imshow(
                img.numpy(), cmap=cmap, vmin=None if c == 0 else 0, vmax=None if c == 0 else 1
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out="runs/crf_rnn")
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    wall = time.perf_counter()
    train = Segmentation(size=p.size, source="skimage", split="train", seed=0)
    test = Segmentation(size=p.size, source="skimage", split="test", seed=0)
    x, y = test.sample(p.test_size, seed=(3, 0))
    metrics = test.metrics()

    def score(q: Tensor) -> dict[str, float]:
        c = layer_curves(q[None], y, x, metrics)
        return {m.name: c[m.name][0] for m in metrics}

    tuned = tune(p, train)
    options = {k: tuned[k] for k in ("spatial_weight", "bilateral_weight")}
    print(f"hand-set CRF: w_s = {options['spatial_weight']}, w_b = {options['bilateral_weight']}")
    methods: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    classical = ClassicalSolver(MeanFieldCRF(**options), test, p.depth)
    est = _chunked_traj(classical, x, p.chunk)
    crf_curves = layer_curves(est, y, x, metrics)
    unary_params = classical.layer_params(1)

    methods["unary"] = {
        **score(est[0]),
        "params": 0,
        **per_item_times(lambda: classical.algorithm.unary_marginals(x, unary_params), p.test_size),
    }
    conv_q, iters, converged = _solve(classical, x, p.chunk, p.max_iter)
    with stopwatch() as clock:
        _solve(classical, x, p.chunk, p.max_iter)
    methods["crf_converged"] = {
        **score(conv_q),
        "params": 0,
        "iterations": iters,
        "converged": converged,
        "ms_per_image": 1e3 * clock.wall_s / p.test_size,
        "cpu_ms_per_image": 1e3 * clock.cpu_s / p.test_size,
    }
    methods["crf_K"] = {
        **score(est[-1]),
        "params": 0,
        **per_item_times(lambda: [classical.predict(xc) for xc in x.split(p.chunk)], p.test_size),
    }
    curves["crf (hand-set)"] = crf_curves["miou"]
    panels = {"unary": est[0], "CRF converged": conv_q, f"CRF K={p.depth}": est[-1]}
    for i, name in enumerate(LEARNED):
        model, seconds = train_model(p, train, name, options, seed=i)
        q = _chunked_traj(model, x, p.chunk)
        c = layer_curves(q, y, x, metrics)
        methods[name] = {
            **score(q[-1]),
            "params": count_parameters(model),
            **per_item_times(
                lambda m=model: [m.predict(xc) for xc in x.split(p.chunk)], p.test_size
            ),
            "train_s": seconds,
        }
        if name != "black_box" and name != "black_box_large":
            curves[name] = c["miou"]
            methods[name]["miou_per_layer"] = c["miou"]
        if name in ("crf_rnn", "crf_rnn_iou"):
            panels[f"CRF-RNN{' (IoU)' if name == 'crf_rnn_iou' else ''} K={p.depth}"] = q[-1]
            learned = model.layer_params(1)
            methods[name]["learned"] = {
                k: learned[k].detach().tolist()
                for k in ("spatial_weight", "bilateral_weight", "compatibility", "step")
            }
        print(
            f"{name:>16}: mIoU {methods[name]['miou']:.3f}, accuracy "
            f"{methods[name]['pixel_accuracy']:.3f}, {methods[name]['params']} parameters, "
            f"trained {seconds:.0f} s"
        )
    methods["crf_K"]["miou_per_layer"] = crf_curves["miou"]
    wall = time.perf_counter() - wall
    results = {
        "methods": methods,
        "hand_set": tuned,
        "images": {
            split: {**files, "texture_rows": "0-255" if split == "train" else "256-511"}
            for split, files in SHIPPED_IMAGES.items()
        },
        "config": study_config(
            args.preset, p, train_problem=train.init_args(), test_problem=test.init_args()
        ),
        "wall_s": wall,
    }
    write_json(args.out, "results.json", results)
    plot_layer_curves(
        {k: v[1:] for k, v in curves.items()},
        args.out / "miou_vs_layer.png",
        title=f"brick on grass, {p.size}×{p.size}, test masks from phantom.png ({args.preset})",
        ylabel="mIoU",
        dashed=("crf (hand-set)",),
    )
    plot_examples(x[:4], y[:4], {k: v[:4] for k, v in panels.items()}, args.out / "examples.png")
    for name, res in methods.items():
        print(
            f"{name:>16}  mIoU {res['miou']:.3f}  acc {res['pixel_accuracy']:.3f}  "
            f"params {res['params']:>5}  {res['ms_per_image']:.2f} ms/image (wall), "
            f"{res['cpu_ms_per_image']:.2f} (CPU)"
        )
    print(f"wall time {wall:.0f} s; wrote {args.out}/results.json and the plots")
    return results


if __name__ == "__main__":
    main()
