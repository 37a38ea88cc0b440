r"""SCN: sparse-coding super-resolution unrolled as a LISTA network, on shipped photographs.

×2 super-resolution of the luminance (:class:`~lightning_unfold.algorithms.SuperResolution`,
``source="skimage"``): antialiased bicubic downsampling by 2, bicubic upsampling back. The
dictionary pair and every learned model are fitted on crops of six photographs shipped with
scikit-image (astronaut, coffee, rocket, motorcycle_left, brick, gravel); the scores are on four
others (camera, chelsea, coins, moon), as whole images or their central ``test_crop`` parts.

=====================  ============================================================================
``bicubic``            the observation itself
``sc_sr_converged``    sparse-coding SR (Yang et al. 2010, Zeyde et al. 2010): ISTA per patch on
                       the fitted dictionary pair, run to a relative change of ``tol``
``sc_sr_K``            the same, K ISTA iterations
``scn``                SCN (Wang et al. 2015): extractor, LISTA (one W, S, per-atom thresholds for
                       all K stages), D_h learned end to end from the classical initialisation
``scn_untied``         the same with a parameter set per stage
``black_box``          a residual three-layer CNN (SRCNN-like), as many parameters as scn_untied
=====================  ============================================================================

PSNR (dB, peak 1) and SSIM (Gaussian window 11, σ = 1.5) on the luminance in [0, 1], estimates
clipped to [0, 1], a border of 2 pixels (the scale) cropped on every side; per test image and
their mean. Learned models: mean squared error of the layer-K image (Adam, each parameter's rate
scaled by its initial magnitude, fresh training crops every step). Time per image: median of 3
forward passes over the test images, wall and CPU time of this process, side by side in one
process; ``sc_sr_converged``: one solve to the tolerance.

Run::

    python examples/scn_study.py --preset cpu --out runs/scn

Writes ``DIR/results.json``, ``DIR/psnr_vs_layer.png`` and ``DIR/crops.png``.
"""

# %%
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_unfold import ClassicalSolver, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import SparseCodingSR, SuperResolution
from lightning_unfold.algorithms.scn import SHIPPED_IMAGES, psnr, ssim
from lightning_unfold.training.study import (
    count_parameters,
    fit_timed,
    parse_study_args,
    plot_layer_curves,
    stopwatch,
    study_config,
    study_parser,
    write_json,
)

#: learned method -> (paradigm, variant, tied)
LEARNED: dict[str, tuple[str, str | None, bool]] = {
    "scn": ("objective", "lista", True),
    "scn_untied": ("objective", "lista", False),
    "black_box": ("black_box", None, False),
}


@dataclass(frozen=True)
class Preset:
    size: int
    patch: int
    atoms: int
    lam: float
    training_patches: int
    dictionary_iterations: int
    depth: int
    batch: int
    steps: int
    lr: float
    test_crop: int | None
    tol: float
    max_iter: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(16, 3, 16, 0.01, 800, 2, 3, 4, 4, 1e-2, 24, 1e-4, 100),
    "cpu": Preset(32, 5, 64, 0.01, 10000, 5, 5, 16, 400, 1e-2, None, 1e-5, 1500),
}


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
    """Median wall and median CPU time of this process for ``fn()`` (seconds; one warm-up
    call, no autograd; CPU time is the steadier figure on a shared machine)."""
    with torch.no_grad():
        fn()
        walls, cpus = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def scores(estimates: list[Tensor], targets: list[Tensor], border: int) -> dict[str, Any]:
    """PSNR and SSIM per test image and their means."""
    p = [float(psnr(e, t, border)) for e, t in zip(estimates, targets, strict=True)]
    s = [float(ssim(e, t, border)) for e, t in zip(estimates, targets, strict=True)]
    return {
        "psnr": statistics.fmean(p),
        "ssim": statistics.fmean(s),
        "psnr_per_image": p,
        "ssim_per_image": s,
    }


def layer_psnr(
    model: torch.nn.Module, xs: list[Tensor], ys: list[Tensor], border: int
) -> list[float]:
    """Mean PSNR over the test images after each layer 0..K."""
    with torch.no_grad():
        per_image = [
            [float(psnr(e, y, border)) for e in model(x).estimates]
            for x, y in zip(xs, ys, strict=True)
        ]
    return [statistics.fmean(col) for col in zip(*per_image, strict=True)]


def train_model(
    p: Preset, train: SuperResolution, options: dict[str, Any], name: str, seed: int
) -> tuple[torch.nn.Module, float]:
    paradigm, variant, tied = LEARNED[name]
    L.seed_everything(seed, verbose=False)
    module = UnfoldedModule(
        train,
        algorithm="sc_sr",
        algorithm_options=options,
        paradigm=paradigm,
        variant=variant,
        depth=p.depth,
        tied=tied,
        black_box_params=None,
        lr=p.lr,
        lr_scaling="magnitude" if paradigm != "black_box" else "none",
    )
    data = SyntheticDataModule(
        train, batch_size=p.batch, train_batches=p.steps, val_size=1, test_size=1, seed=seed
    )
    seconds = fit_timed(module, data, p.steps).wall_s
    return module.model.eval(), seconds


def plot_crops(panels: dict[str, Tensor], target: Tensor, border: int, path: Path) -> None:
    """A 64 × 64 crop (the image's centre) of the target and of each method's estimate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    H, W = target.shape[-2:]
    side = min(64, H, W)
    r, c = (H - side) // 2, (W - side) // 2
    views = {"ground truth": target, **panels}
    fig, axes = plt.subplots(1, len(views), figsize=(2.4 * len(views), 2.7), squeeze=False)
    for ax, (title, img) in zip(axes[0], views.items(), strict=True):
        crop = img[0, 0, r : r + side, c : c + side].clamp(0, 1)
        ax.imshow(crop.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        if title != "ground truth":
            title = f"{title}\n{float(psnr(img, target, border)):.2f} dB"
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out="runs/scn")
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    wall = time.perf_counter()
    train = SuperResolution(size=p.size, source="skimage", split="train", seed=0)
    test = SuperResolution(size=p.size, source="skimage", split="test", seed=0)
    border = test.border
    images = test.test_images(crop=p.test_crop, dtype=torch.float32)
    names = [n for n, _, _ in images]
    xs, ys = [x for _, x, _ in images], [y for _, _, y in images]
    options = {
        "patch": p.patch,
        "atoms": p.atoms,
        "lam": p.lam,
        "dictionary_iterations": p.dictionary_iterations,
        "training_patches": p.training_patches,
    }
    with stopwatch() as fit_clock:
        classical = ClassicalSolver(SparseCodingSR(**options), test, p.depth)
    fit_s = fit_clock.wall_s
    print(f"dictionary pair fitted in {fit_s:.0f} s")

    def per_image(run: Callable[[Tensor], Any]) -> dict[str, float]:
        def all_images() -> None:
            for x in xs:
                run(x)

        wall_s, cpu_s = timed(all_images)
        return {"ms_per_image": 1e3 * wall_s / len(xs), "cpu_ms_per_image": 1e3 * cpu_s / len(xs)}

    methods: dict[str, Any] = {}
    curves: dict[str, list[float]] = {}
    # the observation itself: no time beyond the interpolation every method starts from
    methods["bicubic"] = {**scores(xs, ys, border), "params": 0, "ms_per_image": 0.0}
    with stopwatch() as conv:
        solved = [classical.solve(x, tol=p.tol, max_iter=p.max_iter, warn=False) for x in xs]
    converged = [r.trajectory.estimates[-1] for r in solved]
    methods["sc_sr_converged"] = {
        **scores(converged, ys, border),
        "params": 0,
        "iterations": [r.iterations for r in solved],
        "converged": all(r.converged for r in solved),
        "ms_per_image": 1e3 * conv.wall_s / len(xs),
        "cpu_ms_per_image": 1e3 * conv.cpu_s / len(xs),
    }
    at_k = [classical.predict(x) for x in xs]
    methods["sc_sr_K"] = {
        **scores(at_k, ys, border),
        "params": 0,
        **per_image(classical.predict),
    }
    curves["SC-SR (ISTA)"] = layer_psnr(classical, xs, ys, border)
    panels = {"bicubic": xs[0], "SC-SR converged": converged[0], f"SC-SR K={p.depth}": at_k[0]}
    for i, name in enumerate(LEARNED):
        model, seconds = train_model(p, train, options, name, seed=i)
        with torch.no_grad():
            out = [model.predict(x) for x in xs]
        methods[name] = {
            **scores(out, ys, border),
            "params": count_parameters(model),
            **per_image(model.predict),
            "train_s": seconds,
        }
        if name != "black_box":
            curves[name] = layer_psnr(model, xs, ys, border)
            methods[name]["psnr_per_layer"] = curves[name]
        panels[{"scn": "SCN", "scn_untied": "SCN untied", "black_box": "CNN"}[name]] = out[0]
        print(
            f"{name:>16}: PSNR {methods[name]['psnr']:.2f} dB, SSIM {methods[name]['ssim']:.4f}, "
            f"{methods[name]['params']} parameters, trained {seconds:.0f} s"
        )
    methods["sc_sr_K"]["psnr_per_layer"] = curves["SC-SR (ISTA)"]
    wall = time.perf_counter() - wall
    results = {
        "methods": methods,
        "images": {"train": list(SHIPPED_IMAGES["train"]), "test": names},
        "test_shapes": {n: list(y.shape[-2:]) for n, y in zip(names, ys, strict=True)},
        "dictionary_fit_s": fit_s,
        "config": study_config(
            args.preset,
            p,
            train_problem=train.init_args(),
            test_problem=test.init_args(),
            border=border,
        ),
        "wall_s": wall,
    }
    write_json(args.out, "results.json", results)
    bic = methods["bicubic"]["psnr"]
    conv = methods["sc_sr_converged"]["psnr"]
    plot_layer_curves(
        {
            **{k: v[1:] for k, v in curves.items()},
            "bicubic": [bic] * p.depth,
            "SC-SR converged": [conv] * p.depth,
        },
        args.out / "psnr_vs_layer.png",
        title=f"×2 luminance, mean over {', '.join(names)} ({args.preset})",
        ylabel="PSNR (dB)",
        dashed=("SC-SR (ISTA)", "bicubic", "SC-SR converged"),
    )
    plot_crops(panels, ys[0], border, args.out / "crops.png")
    for name, res in methods.items():
        print(
            f"{name:>16}  PSNR {res['psnr']:.2f} dB  SSIM {res['ssim']:.4f}  params "
            f"{res['params']:>6}  {res['ms_per_image']:.1f} ms/image (wall), "
            f"{res.get('cpu_ms_per_image', 0.0):.1f} (CPU)"
        )
    print(f"wall time {wall:.0f} s; wrote {args.out}/results.json and the plots")
    return results


if __name__ == "__main__":
    main()
