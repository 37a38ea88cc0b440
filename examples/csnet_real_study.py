r"""ADMM-CSNet against tuned ADMM-TV on real images shipped inside PyPI wheels.

Problem: :class:`~lightning_unfold.algorithms.CompressiveImaging` with
``images="skimage:...,pydicom:..."`` — grey levels in [0, 1] of photographs from scikit-image's
``skimage/data`` and an MR and a CT slice from pydicom's ``pydicom/data/test_files``, all files
inside the installed wheels (``pip install lightning-unfold[images]``; nothing is downloaded).
One variable-density random k-space mask (25 % of the coefficients by default), complex data at
30 dB SNR. Three disjoint image sets:

==========  ========================================================================  ===========
set         images                                                                    view
==========  ========================================================================  ===========
train       scikit-image: astronaut, brick, camera, chelsea, coffee, gravel,           random
            hubble_deep_field, ihc, motorcycle_left, page, rocket                      patches
tune        scikit-image: cell, clock_motion, grass, text                              whole
test        scikit-image: coins, moon, retina, microaneurysms; pydicom: MR_small       whole
            (MR slice), CT_small (CT slice)
==========  ========================================================================  ===========

====================  ====================================================================
``admm_tv``           classical ADMM-TV, K iterations, (λ, ρ) tuned on the *tune* images
                      (``tune_classical``) for the best PSNR at iteration K
``admm_tv_best``      classical ADMM-TV, (λ, ρ, iterations) tuned on the tune images for the
                      best PSNR within ``max_classical_iter`` iterations
``hyperparameters``   learned per-stage λ, ρ, η (soft thresholds, TV filters), trained end to end
``admm_csnet``        ADMM-CSNet: per-stage learned filters, piecewise-linear shrinkage, λ, ρ, η,
                      trained end to end (the MSE of the last stage, as Yang et al.)
``admm_csnet_multi``  the same network trained on the MSE of every stage, weighted log(1 + k)
                      (``formulation="multi_iteration"``), so that every stage is an estimate
====================  ====================================================================

``classical_oracle`` in the results is an upper bound for ADMM-TV, not a method: the grid's
(λ, ρ) and iteration count (up to ``max_classical_iter``) with the best PSNR on the *test*
images themselves.

The learned models start from the tuned ``admm_tv`` values and are trained with Adam (each
parameter's step scaled by its initial magnitude, a cosine schedule down to 5 % of the rate) on
fresh training patches every step. Every method is scored on the same noisy measurements of
the test images (each image ``repeats`` times with independent noise): mean PSNR and SSIM per
stage, per test image at the last stage, parameters, and time per image as wall and CPU time
(medians of 5 passes over the test set, side by side in one process).

Run::

    python examples/csnet_real_study.py --preset cpu --out runs/csnet_real

Writes ``DIR/results.json`` (``{"methods": {name: {"psnr_db": [stage 0..K], "ssim",
"per_image": {image: {"psnr_db", "ssim"}}, "params", "ms_per_image", "cpu_ms_per_image",
"train_s", "train_cpu_s"}}, "images", "tuning", "classical_oracle", "config", "wall_s",
"cpu_s"}``) and
``DIR/csnet_real.png`` (PSNR and SSIM per stage; the MR slice and one photograph reconstructed).
"""

# %%
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from lightning_unfold import ClassicalSolver, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import ADMMTV, CompressiveImaging
from lightning_unfold.algorithms.imaging import SHIPPED_IMAGES, parse_image_set, psnr, ssim
from lightning_unfold.training import LRScheduler, layer_metrics, tune_classical
from lightning_unfold.training.study import (
    count_parameters,
    fit_timed,
    parse_study_args,
    per_item_times,
    stopwatch,
    study_config,
    study_parser,
    write_json,
)

#: the three disjoint image sets (every file ships inside the scikit-image or pydicom wheel)
TRAIN = (
    "skimage:astronaut,brick,camera,chelsea,coffee,gravel,hubble_deep_field,ihc,"
    "motorcycle_left,page,rocket"
)
TUNE = "skimage:cell,clock_motion,grass,text"
TEST = "skimage:coins,moon,retina,microaneurysms,pydicom:MR_small,CT_small"
#: learned method -> (paradigm, loss formulation)
LEARNED: dict[str, tuple[str, str]] = {
    "hyperparameters": ("hyperparameters", "end_to_end"),
    "admm_csnet": ("objective", "end_to_end"),
    "admm_csnet_multi": ("objective", "multi_iteration"),
}
CLASSICAL: tuple[str, ...] = ("admm_tv", "admm_tv_best")
METHODS: tuple[str, ...] = CLASSICAL + tuple(LEARNED)


@dataclass(frozen=True)
class Preset:
    size: int
    depth: int
    batch: int
    steps: int
    lr: float
    repeats: int  # noisy measurements per test image
    weights: tuple[float, ...]
    penalties: tuple[float, ...]
    max_classical_iter: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(16, 3, 4, 3, 1e-2, 1, (2e-3, 8e-3), (0.01, 0.05), 12),
    "cpu": Preset(
        64,
        10,
        8,
        1000,
        1e-2,
        4,
        (2e-3, 4e-3, 8e-3, 1.6e-2),
        (0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
        300,
    ),
    "full": Preset(
        128,
        15,
        16,
        3000,
        5e-3,
        8,
        (2e-3, 4e-3, 8e-3, 1.6e-2),
        (0.04, 0.08, 0.16, 0.32, 0.64, 1.28),
        1000,
    ),
}


def problems(size: int, rate: float) -> dict[str, CompressiveImaging]:
    """The train (patches), tune and test (whole images) problems: one mask (seed 0)."""
    views = {"train": (TRAIN, "patches"), "tune": (TUNE, "whole"), "test": (TEST, "whole")}
    out = {
        name: CompressiveImaging(size=size, sampling_rate=rate, images=imgs, crop=crop, seed=0)
        for name, (imgs, crop) in views.items()
    }
    assert all(torch.equal(p.mask, out["train"].mask) for p in out.values())
    return out


def with_weight(problem: CompressiveImaging, weight: float) -> CompressiveImaging:
    return CompressiveImaging(**{**problem.init_args(), "tv_weight": weight})


def tune(p: Preset, tune_problem: CompressiveImaging, y: Tensor, x: Tensor) -> dict[str, Any]:
    """(λ, ρ) of ADMM-TV on the tune images: best PSNR at K, and best (λ, ρ, k) within budget."""
    found = tune_classical(
        tune_problem,
        ADMMTV,
        {"tv_weight": p.weights, "penalty": p.penalties},
        y,
        x,
        p.depth,
        curve_to=p.max_classical_iter,
        dtype=None,
    )
    rows = [
        {**point, "psnr_at_K": score, "best_psnr": max(c), "best_iter": c.index(max(c))}
        for (point, score), c in zip(found.scores, found.curves, strict=True)
    ]
    best = max(rows, key=lambda r: r["best_psnr"])
    return {
        "at_K": {"tv_weight": found.best["tv_weight"], "penalty": found.best["penalty"]},
        "best": {k: best[k] for k in ("tv_weight", "penalty", "best_iter")},
        "grid": rows,
    }


def train(
    p: Preset, problem: CompressiveImaging, rho: float, paradigm: str, formulation: str, seed: int
):
    """Training on fresh patches; returns the model, wall and CPU seconds."""
    L.seed_everything(seed, verbose=False)
    module = UnfoldedModule(
        problem,
        algorithm="admm_tv",
        algorithm_options={"penalty": rho},
        paradigm=paradigm,
        formulation=formulation,
        depth=p.depth,
        lr=p.lr,
        lr_scaling="magnitude",  # λ ≈ 1e-3, ρ ≈ 1e-2 and filter taps ≈ 1 move alike per step
        scheduler=LRScheduler("cosine", floor=0.05),
    )
    data = SyntheticDataModule(
        problem, batch_size=p.batch, train_batches=p.steps, val_size=p.batch, seed=seed
    )
    clock = fit_timed(module, data, p.steps)
    return module.model.eval(), clock.wall_s, clock.cpu_s


def per_image(names: Sequence[str], est: Tensor, x: Tensor) -> dict[str, dict[str, float]]:
    """Last-stage PSNR and SSIM of each test image, averaged over its noisy repeats."""
    scores = {"psnr_db": psnr(est, x), "ssim": ssim(est, x)}
    idx = torch.arange(x.shape[0]) % len(names)
    return {
        name.split(":")[1]: {k: float(v[idx == i].mean()) for k, v in scores.items()}
        for i, name in enumerate(names)
    }


def plot(
    methods: dict[str, Any],
    examples: dict[str, dict[str, Tensor]],
    truth: dict[str, Tensor],
    path: Path,
    title: str,
) -> None:
    """PSNR and SSIM per stage (top) and reconstructions of two test images (bottom rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = ["zero-filled", "admm_tv", "admm_csnet", "admm_csnet_multi"]
    fig = plt.figure(figsize=(13.0, 4.0 + 2.6 * len(truth)))
    grid = fig.add_gridspec(1 + len(truth), 5, height_ratios=[1.5] + [1.0] * len(truth))
    for cols, key, label in (
        (slice(0, 3), "psnr_db", "mean PSNR (dB)"),
        (slice(3, 5), "ssim", "mean SSIM"),
    ):
        ax = fig.add_subplot(grid[0, cols])
        for name, res in methods.items():
            style = "--" if name in CLASSICAL else "-"
            curve = res[key]
            ax.plot(range(len(curve)), curve, style, marker="o", ms=3, label=name)
        K = len(methods["admm_csnet"][key]) - 1
        longest = max(len(res[key]) for res in methods.values()) - 1
        ticks = list(range(K + 1))
        if longest > K:  # a longer classical run: linear up to K, logarithmic after
            ax.set_xscale("symlog", linthresh=max(K, 1))
            ticks += [t for t in (2 * K, 5 * K, 10 * K, 20 * K, 50 * K) if t <= longest]
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.set_xlabel("stage / iteration k (0: zero-filled)")
        ax.set_ylabel(label)
        # stages of the end-to-end models are not estimates (they may fall far below): the axis
        # starts a little under the zero-filled stage 0, what lies lower is cut off
        start = methods["admm_tv"][key][0]
        ax.set_ylim(bottom=start - (4.0 if key == "psnr_db" else 0.15))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for row, (image, target) in enumerate(truth.items(), start=1):
        panels = {"truth": target, **{m: examples[m][image] for m in shown}}
        for col, (name, img) in enumerate(panels.items()):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(img.clamp(0, 1).numpy(), cmap="gray", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
            if name == "truth":
                ax.set_title(f"{image} (truth)", fontsize=9)
            else:
                value = float(psnr(img[None], target[None]))
                ax.set_title(f"{name}: {value:.2f} dB", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = study_parser(__doc__, PRESETS, out="runs/csnet_real")
    parser.add_argument(
        "--sampling-rate", type=float, default=0.25, help="fraction of k-space sampled"
    )
    args = parse_study_args(parser, argv)
    p = PRESETS[args.preset]
    wall, cpu0 = time.perf_counter(), time.process_time()
    probs = problems(p.size, args.sampling_rate)
    test_names = parse_image_set(TEST)
    y_tune, x_tune = probs["tune"].sample(len(parse_image_set(TUNE)), seed=(2, 0))
    y, x = probs["test"].sample(p.repeats * len(test_names), seed=(3, 0))

    with stopwatch() as tune_clock:
        tuning = tune(p, probs["tune"], y_tune, x_tune)
    tuning.update(tune_s=tune_clock.wall_s, tune_cpu_s=tune_clock.cpu_s)
    lam, rho = tuning["at_K"]["tv_weight"], tuning["at_K"]["penalty"]
    best = tuning["best"]
    print(f"tuned on {TUNE}: at K λ={lam:g} ρ={rho:g}; best {best}")

    test = with_weight(probs["test"], lam)
    models: dict[str, torch.nn.Module] = {
        "admm_tv": ClassicalSolver(ADMMTV(penalty=rho), test, p.depth),
        "admm_tv_best": ClassicalSolver(
            ADMMTV(penalty=best["penalty"]),
            with_weight(probs["test"], best["tv_weight"]),
            max(best["best_iter"], 1),
        ),
    }
    train_s = {name: (tuning["tune_s"], tuning["tune_cpu_s"]) for name in CLASSICAL}
    for i, (name, (paradigm, formulation)) in enumerate(LEARNED.items()):
        model, seconds, cpu_s = train(
            p, with_weight(probs["train"], lam), rho, paradigm, formulation, seed=i
        )
        models[name], train_s[name] = model, (seconds, cpu_s)
        print(f"{name:>16}: trained {seconds:.0f} s wall, {cpu_s:.0f} s CPU")

    methods: dict[str, Any] = {}
    examples: dict[str, dict[str, Tensor]] = {"zero-filled": {}}
    shown = {"MR_small": test_names.index("pydicom:MR_small"), "coins": 0}
    zero_filled = test.zero_filled(y)
    for image, i in shown.items():
        examples["zero-filled"][image] = zero_filled[i]
    n = x.shape[0]
    for name, model in models.items():
        curves = layer_metrics(model, test, y, x)
        with torch.no_grad():
            final = model(y).final_estimate.double()
        examples[name] = {image: final[i] for image, i in shown.items()}
        methods[name] = {
            "psnr_db": curves["psnr_db"],
            "ssim": curves["ssim"],
            "per_image": per_image(test_names, final, x.double()),
            "params": count_parameters(model),
            "stages": len(curves["psnr_db"]) - 1,
            **per_item_times(lambda m=model: m(y), n),
            "train_s": train_s[name][0],
            "train_cpu_s": train_s[name][1],
        }
        res = methods[name]
        print(
            f"{name:>16}: PSNR {res['psnr_db'][-1]:6.2f} dB, SSIM {res['ssim'][-1]:.3f} at stage "
            f"{res['stages']}; {res['ms_per_image']:.2f} ms/image wall, "
            f"{res['cpu_ms_per_image']:.2f} ms CPU"
        )
    # an upper bound for ADMM-TV, not a method: (λ, ρ, iterations) chosen on the test images
    t0 = time.process_time()
    oracle = tune_classical(
        test,
        ADMMTV,
        {"tv_weight": p.weights, "penalty": p.penalties},
        y,
        x,
        p.depth,
        curve_to=p.max_classical_iter,
        dtype=None,
    )
    point, curve = max(zip(oracle.scores, oracle.curves, strict=True), key=lambda pc: max(pc[1]))
    classical_oracle = {
        **point[0],
        "iterations": curve.index(max(curve)),
        "psnr_db": max(curve),
        "best_at_K_psnr_db": max(c[p.depth] for c in oracle.curves),
        "cpu_s": time.process_time() - t0,
    }
    print(f"ADMM-TV tuned on the test images themselves (upper bound): {classical_oracle}")
    images = {
        name: {
            "package": SHIPPED_IMAGES[key].distribution,
            "file": SHIPPED_IMAGES[key].path,
            "content": SHIPPED_IMAGES[key].content,
            "set": split,
        }
        for split, spec in (("train", TRAIN), ("tune", TUNE), ("test", TEST))
        for key in parse_image_set(spec)
        for name in [key.split(":")[1]]
    }
    results = {
        "methods": methods,
        "images": images,
        "tuning": tuning,
        "classical_oracle": classical_oracle,
        "config": study_config(
            args.preset,
            p,
            sampled_fraction=test.sampled_fraction,
            problem=test.init_args(),
            test_measurements=n,
        ),
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu0,
    }
    write_json(args.out, "results.json", results)
    plot(
        methods,
        examples,
        {image: x[i].double() for image, i in shown.items()},
        args.out / "csnet_real.png",
        f"real images {p.size}×{p.size}, random mask {100 * test.sampled_fraction:.1f} %, "
        f"30 dB, K = {p.depth} ({args.preset} preset; trained on scikit-image photographs, "
        "tested on others and on pydicom's MR/CT slices)",
    )
    print(f"wall {results['wall_s']:.0f} s, CPU {results['cpu_s']:.0f} s; wrote {args.out}")
    if not all(math.isfinite(v) for m in methods.values() for v in m["psnr_db"]):
        raise FloatingPointError("a method produced a non-finite PSNR")
    return results


if __name__ == "__main__":
    main()
