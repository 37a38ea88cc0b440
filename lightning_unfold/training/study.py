"""The shared skeleton of the studies in ``examples/``.

Every study script (``examples/<name>_study.py --preset cpu|full --out DIR``) trains a few models
with a quiet Lightning ``Trainer``, times inference side by side in one run, and writes
``DIR/results.json``. These three pieces are the same in every study, so they live here once:

- :func:`median_time` — median wall time of a callable after a warm-up call, under
  ``torch.no_grad()``, so that per-batch inference times of competing methods are measured the
  same way in one process; :func:`median_cpu_time` the same in CPU time of the process (steadier
  than wall time on a shared machine, and summed over threads);
- :func:`flush_denormals` — a context in which the CPU treats subnormal floats as zero, for
  timings that measure a method's arithmetic rather than the hardware's subnormal penalty;
- :func:`study_trainer` — a ``Trainer`` for a fixed number of optimizer steps with no logger,
  checkpointing, progress bar or model summary (a study prints its own progress);
- :func:`plot_layer_curves` — the per-layer metric of every method in one labelled figure;
- :func:`write_json` — results written atomically (a temporary file renamed into place), so an
  interrupted study never leaves a truncated ``results.json`` behind.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch

__all__ = [
    "flush_denormals",
    "median_cpu_time",
    "median_time",
    "plot_layer_curves",
    "study_parser",
    "study_trainer",
    "write_json",
]


def study_parser(
    doc: str | None,
    presets: Collection[str],
    *,
    out: str | os.PathLike[str] | None,
    default_preset: str = "cpu",
    threads: int | None = None,
) -> argparse.ArgumentParser:
    """The command line every study shares: ``--preset`` (one of ``presets``), ``--out`` (the
    results folder; default ``out``) and ``--threads`` (torch CPU threads; ``None``: torch's
    default). The description is the first line of the study's docstring ``doc``; a study adds
    its own arguments to the parser it gets back. Apply ``--threads`` with
    ``torch.set_num_threads`` when it is not ``None``."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0])
    parser.add_argument("--preset", choices=sorted(presets), default=default_preset)
    parser.add_argument("--out", type=Path, default=None if out is None else Path(out))
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    return parser


def _median_seconds(
    fn: Callable[[], Any], repeats: int, warmup: bool, clock: Callable[[], float]
) -> float:
    """Median of ``repeats`` timings of ``fn()`` by ``clock``, under ``torch.no_grad()``."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}.")
    with torch.no_grad():
        if warmup:
            fn()
        times = []
        for _ in range(repeats):
            t0 = clock()
            fn()
            times.append(clock() - t0)
    return statistics.median(times)


def median_time(fn: Callable[[], Any], repeats: int = 5, *, warmup: bool = True) -> float:
    """Median wall time of ``fn()`` in **seconds**, under ``torch.no_grad()``.

    One warm-up call (allocations, lazy initialisation) is made first unless ``warmup=False``.
    The median of ``repeats`` calls is robust to the occasional descheduling of a shared machine;
    time competing methods with the same ``repeats`` in one run and report their ratio.
    """
    return _median_seconds(fn, repeats, warmup, time.perf_counter)


def median_cpu_time(fn: Callable[[], Any], repeats: int = 5, *, warmup: bool = True) -> float:
    """Median CPU time of the process (``time.process_time``: user + system, all threads) over
    ``repeats`` calls of ``fn()`` in **seconds**, under ``torch.no_grad()``, after one warm-up
    call unless ``warmup=False``. Report it beside :func:`median_time`: on a machine shared
    with other jobs the wall time grows with the load, the CPU time much less."""
    return _median_seconds(fn, repeats, warmup, time.process_time)


@contextmanager
def flush_denormals() -> Iterator[bool]:
    """Treat subnormal floats as zero on the CPU inside the block (``torch.set_flush_denormal``,
    x86 with SSE3 and ARM); yields whether the CPU supports it, and switches it off after.

    A solver whose iterates decay geometrically (WMMSE switching a user off: its amplitude is
    multiplied by a small factor each iteration) passes through subnormal numbers, and x86
    CPUs compute on those up to a hundred times slower. On this project's CI-class machine that
    made float32 WMMSE-100 1.7x as slow (94.0 against 54.3 ms for 1000 channels, measured),
    which would inflate any speed-up measured against it. Time competing methods inside this
    block, all alike. Values below ``torch.finfo(dtype).tiny`` become 0 there, far below any
    quantity a solver here reports.
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield supported
    finally:
        torch.set_flush_denormal(False)


def study_trainer(
    max_steps: int,
    accelerator: str = "cpu",
    callbacks: Sequence[L.Callback] | None = None,
    **overrides: Any,
) -> L.Trainer:
    """A quiet ``Trainer`` that runs exactly ``max_steps`` optimizer steps on one device.

    Validation, logging, checkpointing, the progress bar and the model summary are off (studies
    evaluate their own held-out sets and print their own progress); ``overrides`` replace any of
    these keyword arguments, e.g. ``limit_val_batches=1`` for a schedule that reads held-out
    curves, or ``max_epochs`` for an epoch-based run.
    """
    if max_steps == 0 or max_steps < -1:
        raise ValueError(f"max_steps must be positive (or -1 for no limit), got {max_steps}.")
    options: dict[str, Any] = dict(
        accelerator=accelerator,
        devices=1,
        max_steps=max_steps,
        max_epochs=-1,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks or []),
    )
    options.update(overrides)
    return L.Trainer(**options)


def write_json(out: str | os.PathLike[str], name: str, payload: Any) -> Path:
    """Write ``payload`` as indented JSON to ``out/name`` atomically and return the path.

    The directory is created if needed. The file is first written beside its target and renamed
    into place, so a study stopped mid-write keeps its previous complete file.
    """
    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / name
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, target)
    return target


def plot_layer_curves(
    curves: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    *,
    title: str,
    ylabel: str,
    dashed: Collection[str] = (),
    logy: bool = False,
) -> None:
    """Plot each method's metric against the layer (1..K) into ``path`` (PNG).

    ``dashed`` names the classical baselines, drawn dashed next to the learned models' solid
    lines; ``ylabel`` should carry the metric's unit (e.g. "NMSE (dB)"); ``logy`` draws the
    metric on a log scale (e.g. a relative error).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.0, 4.6))
    for name, curve in curves.items():
        style = "--" if name in dashed else "-"
        ax.plot(range(1, len(curve) + 1), list(curve), style, marker="o", ms=3, label=name)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("layer / iteration k")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both" if logy else "major")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
