"""The shared skeleton of the studies in ``examples/``.

Every study script (``examples/<name>_study.py --preset cpu|full --out DIR``) trains a few models
with a quiet Lightning ``Trainer``, times inference side by side in one run, and writes
``DIR/results.json``. What every study needs lives here once, for the scripts in ``examples/``
and for a study of your own (``docs/adding_a_problem.md`` shows one in a few lines):

- :func:`median_time` — median wall time of a callable after a warm-up call, under
  ``torch.no_grad()``, so that per-batch inference times of competing methods are measured the
  same way in one process; :func:`median_cpu_time` the same in CPU time of the process (steadier
  than wall time on a shared machine, and summed over threads);
- :func:`flush_denormals` — a context in which the CPU treats subnormal floats as zero, for
  timings that measure a method's arithmetic rather than the hardware's subnormal penalty;
- :func:`study_parser` and :func:`parse_study_args` — the shared command line (``--preset``,
  ``--out``, ``--threads``, optionally ``--device``), parsed with ``--threads`` applied;
  :func:`study_accelerator` turns ``--device`` into a Lightning accelerator and
  :func:`elapsed_printer` prints progress stamped with the seconds since the start;
- :func:`study_trainer` — a ``Trainer`` for a fixed number of optimizer steps with no logger,
  checkpointing, progress bar or model summary (a study prints its own progress);
  :func:`fit_timed` fits a module with it and returns the wall and CPU time of the fit
  (a :class:`Stopwatch`, also usable on its own through :func:`stopwatch`);
- :func:`count_parameters` — the size of a model, as every table of methods reports it
  (optionally in real numbers: a complex entry counts twice);
  :func:`per_item_times` — inference time per test item (wall and CPU);
- :func:`match_classical` — the efficiency comparison "how many iterations (and how much time)
  does the classical solver need to reach the learned model's layer-K metric";
- :func:`study_config` — the ``config`` record of ``results.json`` (preset, its fields, the
  machine's thread and CPU counts);
- :func:`plot_layer_curves` — the per-layer metric of every method in one labelled figure;
- :func:`write_json` — results written atomically (a temporary file renamed into place), so an
  interrupted study never leaves a truncated ``results.json`` behind.
"""

from __future__ import annotations

import argparse
import dataclasses
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
from torch import nn

__all__ = [
    "DEVICES",
    "Stopwatch",
    "count_parameters",
    "elapsed_printer",
    "fit_timed",
    "flush_denormals",
    "match_classical",
    "median_cpu_time",
    "median_time",
    "parse_study_args",
    "per_item_times",
    "plot_layer_curves",
    "stopwatch",
    "study_accelerator",
    "study_config",
    "study_parser",
    "study_trainer",
    "write_json",
]

#: the values of a study's ``--device`` (see :func:`study_accelerator`)
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def study_parser(
    doc: str | None,
    presets: Collection[str],
    *,
    out: str | os.PathLike[str] | None,
    default_preset: str = "cpu",
    threads: int | None = None,
    device: bool = False,
) -> argparse.ArgumentParser:
    """The command line every study shares: ``--preset`` (one of ``presets``), ``--out`` (the
    results folder; default ``out``) and ``--threads`` (torch CPU threads; ``None``: torch's
    default). The description is the first line of the study's docstring ``doc``; a study adds
    its own arguments to the parser it gets back. Parse it with :func:`parse_study_args`, which
    applies ``--threads``.

    ``device=True`` adds ``--device`` (one of :data:`DEVICES`, default ``auto``) for a study
    that can train on a GPU; :func:`study_accelerator` turns it into a Lightning accelerator.
    """
    parser = argparse.ArgumentParser(description=(doc or "").strip().split("\n")[0])
    parser.add_argument("--preset", choices=sorted(presets), default=default_preset)
    parser.add_argument(
        "--out",
        type=Path,
        default=None if out is None else Path(out),
        help="folder for results.json and the plots",
    )
    parser.add_argument("--threads", type=int, default=threads, help="torch CPU threads")
    if device:
        parser.add_argument(
            "--device",
            choices=DEVICES,
            default="auto",
            help="where to train: auto (a GPU when CUDA is available), cpu or cuda",
        )
    return parser


def parse_study_args(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """Parse ``argv`` (``None``: the process's arguments) with a :func:`study_parser` parser and
    apply ``--threads`` (``torch.set_num_threads``) when it is set; return the arguments."""
    args = parser.parse_args(argv)
    threads = getattr(args, "threads", None)
    if threads is not None:
        torch.set_num_threads(threads)
    return args


def study_accelerator(device: str) -> str:
    """The Lightning accelerator of a study's ``--device``: ``"gpu"`` for ``"cuda"``, and for
    ``"auto"`` when ``torch.cuda.is_available()``; otherwise ``"cpu"``."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {list(DEVICES)}, got {device!r}.")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "gpu" if use_cuda else "cpu"


def elapsed_printer(start: float | None = None) -> Callable[[str], None]:
    """A ``log(msg)`` function that prints ``msg`` after the seconds elapsed since ``start``
    (a ``time.perf_counter()`` value; default: now), flushed at once so that a study's log
    follows its progress when written to a file."""
    t0 = time.perf_counter() if start is None else start

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t0:7.1f}s {msg}", flush=True)

    return log


def study_config(preset: str, settings: Any, **extra: Any) -> dict[str, Any]:
    """The ``config`` record of a study's ``results.json``: the preset's name, every field of
    its settings dataclass ``settings`` (``dataclasses.asdict``), then ``extra`` (the problems'
    ``init_args()``, options), then the machine: torch's CPU threads and ``os.cpu_count()``, so
    that timings can be read against the machine that measured them."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise TypeError(
            f"settings must be a dataclass instance (the study's preset), got {type(settings)}."
        )
    return {
        "preset": preset,
        **dataclasses.asdict(settings),
        **extra,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def count_parameters(
    model: nn.Module, *, trainable_only: bool = True, as_real: bool = False
) -> int:
    """The number of scalar parameters of ``model``, only those with ``requires_grad`` unless
    ``trainable_only=False``: the "params" column of a study. A complex entry counts once, or
    twice with ``as_real=True`` (real numbers learned: a fair size comparison between a complex
    model and a real black box)."""
    return sum(
        q.numel() * (2 if as_real and q.is_complex() else 1)
        for q in model.parameters()
        if q.requires_grad or not trainable_only
    )


@dataclasses.dataclass
class Stopwatch:
    """Wall time (``time.perf_counter``) and CPU time of the process (``time.process_time``,
    all threads) of a block, in seconds; filled when the block of :func:`stopwatch` ends."""

    wall_s: float = 0.0
    cpu_s: float = 0.0


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """Time a block: ``with stopwatch() as clock: ...`` then ``clock.wall_s``, ``clock.cpu_s``
    (also set when the block raises). One run, no warm-up: for a training run or a solve
    to convergence; time repeated inference with :func:`median_time`."""
    clock = Stopwatch()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield clock
    finally:
        clock.wall_s = time.perf_counter() - t0
        clock.cpu_s = time.process_time() - c0


def fit_timed(
    module: L.LightningModule,
    data: L.LightningDataModule,
    max_steps: int,
    accelerator: str = "cpu",
    callbacks: Sequence[L.Callback] | None = None,
    **overrides: Any,
) -> Stopwatch:
    """Fit ``module`` on ``data`` with :func:`study_trainer` (``max_steps``, ``accelerator``,
    ``callbacks`` and ``overrides`` as there) and return the wall and CPU time of the fit.

    Seed before building the module (``L.seed_everything``) as usual; this function draws
    nothing itself, so a study gives the same numbers as with its own trainer.
    """
    trainer = study_trainer(max_steps, accelerator, callbacks, **overrides)
    with stopwatch() as clock:
        trainer.fit(module, datamodule=data)
    return clock


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


def per_item_times(
    fn: Callable[[], Any], n_items: int, *, unit: str = "image", repeats: int = 5
) -> dict[str, float]:
    """Inference time per item of a call ``fn()`` that processes ``n_items`` test items:
    ``{"ms_per_<unit>": median wall ms / n_items, "cpu_ms_per_<unit>": median CPU ms /
    n_items}`` (:func:`median_time`, then :func:`median_cpu_time`, ``repeats`` calls each)."""
    if n_items < 1:
        raise ValueError(f"n_items must be >= 1, got {n_items}.")
    return {
        f"ms_per_{unit}": 1e3 * median_time(fn, repeats) / n_items,
        f"cpu_ms_per_{unit}": 1e3 * median_cpu_time(fn, repeats) / n_items,
    }


def match_classical(
    learned: Callable[[Any], Any],
    classical: Callable[[int], Callable[[Any], Any]],
    x: Any,
    curve: Sequence[float],
    goal: float,
    depth: int,
    *,
    higher_is_better: bool,
    repeats: int = 5,
    label: str = "classical",
) -> dict[str, Any]:
    r"""How many iterations, and how much time, the classical solver needs to match a learned
    model: a claim such as "LISTA is ~20× faster than ISTA", measured on one batch ``x``.

    ``curve[k - 1]`` is the classical solver's metric after :math:`k` iterations (from one long
    run), ``goal`` the learned model's metric at its layer ``depth`` = K. The answer is the
    first :math:`k^\star` whose value reaches the goal (``>=`` when ``higher_is_better``, else
    ``<=``), or ``None``. ``learned`` is the learned model and ``classical(k)`` builds the
    classical solver of :math:`k` iterations (e.g. ``lambda k: ClassicalSolver(alg, problem,
    k)``), built before its timing starts; ``learned(x)`` and then the solver on ``x`` are
    timed with :func:`median_time` (``repeats`` calls each).

    Returns ``{"learned_layers": K, "learned_ms", "<label>_iterations": k*, "<label>_ms",
    "iteration_ratio": k*/K, "time_ratio": classical time / learned time}`` — the last three
    ``None`` when the curve never reaches the goal (say why in a note of your own).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}.")
    better = (lambda v: v >= goal) if higher_is_better else (lambda v: v <= goal)
    needed = next((k + 1 for k, v in enumerate(curve) if better(v)), None)
    t_learned = median_time(lambda: learned(x), repeats)
    entry: dict[str, Any] = {
        "learned_layers": depth,
        "learned_ms": 1e3 * t_learned,
        f"{label}_iterations": needed,
    }
    if needed is None:
        entry.update({f"{label}_ms": None, "iteration_ratio": None, "time_ratio": None})
        return entry
    solver = classical(needed)
    t_classical = median_time(lambda: solver(x), repeats)
    entry[f"{label}_ms"] = 1e3 * t_classical
    entry["iteration_ratio"] = needed / depth
    entry["time_ratio"] = t_classical / t_learned
    return entry


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
