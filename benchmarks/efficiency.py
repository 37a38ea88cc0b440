r"""``python -m benchmarks efficiency``: the unrolling review's efficiency table, measured.

For every problem family whose learned (unrolled) model has a classical counterpart, one row:

1. the learned model of a shipped config (``examples/configs/<name>.yaml``, sizes and training
   length reduced per preset) is trained briefly, end to end, at its depth :math:`K`;
2. its primary metric at layer :math:`K` on a held-out test set is the *goal*;
3. each classical solver (hyperparameters tuned on a validation set where a grid is given, with
   :func:`~lightning_unfold.training.tune_classical`) is run up to ``max_it`` iterations on the
   same test set (:func:`~lightning_unfold.training.layer_metrics`), and the first iteration
   that reaches the goal is read off — or "never", with the solver's best value, the iteration
   of that best and the iteration where it stalls (within 1 % of its whole gain);
4. the learned model, the classical solver at that many iterations and at :math:`K`, and the
   black-box baselines run **side by side in one process** on the same batch, same device, same
   framework and precision (round-robin, medians; wall and CPU time);
5. parameters: the learned model's trainable real numbers against black-box networks
   (the family's own black box) of 1× and more that many parameters, trained alike;
6. the claim of Monga, Li & Eldar (2021), "Algorithm unrolling", beside the row ("—" where the
   review makes none).

Adding a family is one :class:`EfficiencyRow` (about ten lines) passed to :func:`register_row`;
families of :data:`~lightning_unfold.algorithms.FAMILIES` that no row covers are listed in the
output, so a newly registered family shows up as missing rather than silently absent.

Usage::

    python -m benchmarks efficiency                      # preset cpu, every row
    python -m benchmarks efficiency --preset tiny --rows lista_cp,liht --out /tmp/eff

Writes ``DIR/results.json`` (``{"env": ..., "rows": {name: {...}}, "uncovered": [...]}``) and
``DIR/results.md`` (default ``runs/efficiency``).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightning_unfold import ClassicalSolver, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import ALGORITHMS, FAMILIES
from lightning_unfold.core.algorithm import ProblemSpec, problem_from_config
from lightning_unfold.core.metrics import ProblemMetric, primary_metric
from lightning_unfold.training import layer_metrics, tune_classical
from lightning_unfold.training.study import (
    count_parameters,
    fit_timed,
    flush_denormals,
    write_json,
)

__all__ = [
    "PRESETS",
    "ROWS",
    "Classical",
    "EfficiencyRow",
    "main",
    "register_row",
    "run",
    "to_markdown",
]

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "configs"

#: Monga, Li & Eldar, "Algorithm unrolling: interpretable, efficient deep learning for signal
#: and image processing", IEEE Signal Processing Magazine 38(2), 2021 — the claims quoted
REVIEW = "Monga, Li & Eldar (2021), Algorithm unrolling"


@dataclass(frozen=True)
class Classical:
    """A classical solver a learned model is compared with.

    Attributes:
        label: its name in the table (``"FISTA"``).
        algorithm: its registered name (:data:`~lightning_unfold.algorithms.ALGORITHMS`).
        options: fixed constructor arguments.
        grid: hyperparameters (or the problem's objective weights) tuned on a validation set by
            :func:`~lightning_unfold.training.tune_classical`, scored after ``tune_it``
            iterations of the preset; empty: the options as given.
        inherit_options: start from the learned model's ``algorithm_options`` (the same
            dictionary, filters or sizes as the network it is compared with); ``options``
            override them.
    """

    label: str
    algorithm: str
    options: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    inherit_options: bool = False


@dataclass(frozen=True)
class EfficiencyRow:
    """One row of the efficiency table.

    Attributes:
        name: the row's key (``"lista_cp"``).
        title: the learned model's name in the table (``"LISTA-CP"``).
        config: a shipped config in ``examples/configs/`` (without ``.yaml``): its ``model``
            section (problem, algorithm, paradigm, variant, depth, lr, ...) is the learned model.
        families: the :data:`~lightning_unfold.algorithms.FAMILIES` rows the row covers.
        classical: the classical solvers to match.
        claim: the review's claim for this model ("—": none).
        presets: per preset, overrides: ``problem`` (the problem's arguments), ``depth``,
            ``steps`` (training steps), ``batch``, ``test`` (test-set size), ``max_it`` (the
            classical solvers' budget), ``tune_it``, ``lr``, ``model`` (more model arguments).
        test_problem: problem arguments of the test set only (e.g. a held-out image split).
    """

    name: str
    title: str
    config: str
    families: tuple[str, ...]
    classical: tuple[Classical, ...]
    claim: str = "—"
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    test_problem: Mapping[str, Any] = field(default_factory=dict)


#: per preset: defaults of the rows' sizes, the timing repeats and the black-box widths
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "steps": 2,
        "batch": 4,
        "test": 8,
        "val": 4,
        "max_it": 20,
        "tune_it": 5,
        "repeats": 1,
        "black_box_scales": (1,),
    },
    "cpu": {
        "steps": 300,
        "batch": 32,
        "test": 256,
        "val": 64,
        "max_it": 2000,
        "tune_it": 200,
        "repeats": 3,
        "black_box_scales": (1, 10),
    },
}

#: every registered row, by name
ROWS: dict[str, EfficiencyRow] = {}


def register_row(row: EfficiencyRow) -> EfficiencyRow:
    """Add ``row`` to :data:`ROWS` (its config must exist, its solvers be registered)."""
    if row.name in ROWS:
        raise ValueError(f"An efficiency row named {row.name!r} is already registered.")
    if not (CONFIGS / f"{row.config}.yaml").is_file():
        raise ValueError(
            f"Row {row.name!r}: no config {row.config!r} in {CONFIGS}; valid: "
            f"{sorted(p.stem for p in CONFIGS.glob('*.yaml'))}."
        )
    unknown = [c.algorithm for c in row.classical if c.algorithm not in ALGORITHMS]
    if unknown or not row.classical:
        raise ValueError(
            f"Row {row.name!r} needs registered classical solvers, got {unknown or 'none'}; "
            f"valid: {sorted(ALGORITHMS)}."
        )
    bad = set(row.presets) - set(PRESETS)
    if bad:
        raise ValueError(
            f"Row {row.name!r}: unknown presets {sorted(bad)}; valid: {list(PRESETS)}."
        )
    ROWS[row.name] = row
    return row


def uncovered_families() -> list[str]:
    """Registered families (:data:`~lightning_unfold.algorithms.FAMILIES`) no row covers."""
    covered = {f for row in ROWS.values() for f in row.families}
    return [name for name in FAMILIES if name not in covered]


# -- one row -------------------------------------------------------------------------------------
def _load_model_config(name: str) -> tuple[dict[str, Any], float | None]:
    """The ``model`` section of ``examples/configs/<name>.yaml`` and the trainer's gradient
    clipping value (``None``: none)."""
    import yaml

    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    return dict(cfg["model"]), (cfg.get("trainer") or {}).get("gradient_clip_val")


def _cpu_and_wall(
    fns: Mapping[str, Callable[[], object]], repeats: int
) -> dict[str, dict[str, float]]:
    """Round-robin medians of wall and CPU (process) seconds per call, after a warm-up, under
    ``torch.no_grad()`` — :func:`benchmarks.suite.median_wall_and_cpu`."""
    from benchmarks.suite import median_wall_and_cpu

    with torch.no_grad():
        return median_wall_and_cpu(fns, repeats, torch.device("cpu"))


def _plateau(curve: Sequence[float], metric: ProblemMetric) -> int:
    """Where a classical solver stalls: the first iteration (≥ 1) whose value lies within 1 % of
    the solver's whole gain (from iteration 1 to its best) of that best."""
    values = list(curve[1:])
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 1
    best = max(finite) if metric.higher_is_better else min(finite)
    gain = abs(finite[0] - best)
    return next(
        i + 1 for i, v in enumerate(values) if math.isfinite(v) and abs(v - best) <= 0.01 * gain
    )


#: classical curves already measured in this process (same problem, solver, test set, budget)
_CURVES: dict[tuple[Any, ...], list[float]] = {}


def _reaches(metric: ProblemMetric, value: float, goal: float) -> bool:
    return math.isfinite(value) and not metric.better(goal, value)


def _fit(
    problem: ProblemSpec,
    kwargs: Mapping[str, Any],
    steps: int,
    batch: int,
    clip: float | None,
    seed: int,
) -> tuple[UnfoldedModule, dict[str, float]]:
    import lightning as L

    L.seed_everything(seed, verbose=False)
    module = UnfoldedModule(problem, **kwargs)
    data = SyntheticDataModule(
        problem, batch_size=batch, train_batches=steps, val_size=1, seed=seed
    )
    extra = {"gradient_clip_val": clip} if clip else {}
    clock = fit_timed(module, data, steps, **extra)
    return module, {"wall_s": clock.wall_s, "cpu_s": clock.cpu_s}


def measure_row(
    row: EfficiencyRow, preset: str, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, match and time one row (see the module docstring); a JSON-ready dict."""
    sz = {**PRESETS[preset], **row.presets.get(preset, {})}
    cfg, clip = _load_model_config(row.config)
    prob_cfg = dict(cfg.pop("problem"))
    init = {**(prob_cfg.get("init_args") or {}), **sz.get("problem", {})}
    problem = problem_from_config({"class_path": prob_cfg["class_path"], "init_args": init})
    test_problem = (
        type(problem)(**{**problem.init_args(), **row.test_problem})
        if row.test_problem
        else problem
    )
    kwargs = {**cfg, **sz.get("model", {})}
    if "depth" in sz:
        kwargs["depth"] = sz["depth"]
    if "lr" in sz:
        kwargs["lr"] = sz["lr"]
    if len(kwargs.get("layer_weights") or []) not in (0, kwargs.get("depth", 16)):
        kwargs.pop("layer_weights")  # the config's weights are for its own depth
    depth = int(kwargs.get("depth", 16))
    metric = primary_metric(problem.metrics())
    x, target = test_problem.sample(sz["test"], seed=(77, 1))
    xv, tv = problem.sample(sz["val"], seed=(77, 2))

    log(f"{row.name}: training {row.title} ({sz['steps']} steps of {sz['batch']})")
    module, train_time = _fit(problem, kwargs, sz["steps"], sz["batch"], clip, seed=0)
    learned = module.model.eval()
    curve_learned = layer_metrics(learned, test_problem, x, target, metrics=[metric.name])[
        metric.name
    ]
    goal = curve_learned[depth]
    out: dict[str, Any] = {
        "title": row.title,
        "config": row.config,
        "families": list(row.families),
        "claim": row.claim,
        "metric": metric.name,
        "metric_label": metric.axis_label(),
        "higher_is_better": metric.higher_is_better,
        "depth": depth,
        "train": {"steps": sz["steps"], "batch": sz["batch"], **train_time},
        "problem": {k: v for k, v in test_problem.init_args().items() if _plain(v)},
        "test_size": sz["test"],
        "learned": {
            "metric_at_K": goal,
            "curve": curve_learned,
            "params": count_parameters(learned, as_real=True),
        },
    }
    fns: dict[str, Callable[[], object]] = {"learned": lambda: learned(x)}

    # black boxes: the family's own black-box network at 1x, 10x ... the learned model's size
    bbs: dict[str, Any] = {}
    n_learned = max(count_parameters(learned, as_real=True), 1)
    for scale in sz["black_box_scales"]:
        bb_kwargs = {
            k: v
            for k, v in kwargs.items()
            if k in ("algorithm", "algorithm_options", "supervision", "depth")
        }
        bb_kwargs.update(paradigm="black_box", black_box_params=max(scale * n_learned, 64), lr=1e-3)
        log(f"{row.name}: training the black box at {scale}x the parameters")
        bb_module, bb_time = _fit(problem, bb_kwargs, sz["steps"], sz["batch"], clip, seed=1)
        bb = bb_module.model.eval()
        bb_metric = layer_metrics(bb, test_problem, x, target, depth=1, metrics=[metric.name])
        key = f"black_box_x{scale}"
        bbs[key] = {
            "params": count_parameters(bb, as_real=True),
            "metric": bb_metric[metric.name][-1],
            "train": bb_time,
        }
        fns[key] = lambda bb=bb: bb(x)
    out["black_box"] = bbs

    rows: dict[str, Any] = {}
    for c in row.classical:
        inherited = (kwargs.get("algorithm_options") or {}) if c.inherit_options else {}
        options = {**inherited, **c.options}
        cproblem = test_problem
        tuned: dict[str, Any] = {}
        if c.grid:
            log(f"{row.name}: tuning {c.label} over {dict(c.grid)}")
            found = tune_classical(
                problem, c.algorithm, c.grid, xv, tv, sz["tune_it"], options=options, dtype=None
            )
            tuned = found.best
            alg_args = {k: v for k, v in tuned.items() if k not in problem.init_args()}
            prob_args = {k: v for k, v in tuned.items() if k in problem.init_args()}
            options.update(alg_args)
            if prob_args:
                cproblem = type(test_problem)(**{**test_problem.init_args(), **prob_args})
        key = (
            type(cproblem).__name__,
            repr(sorted(cproblem.init_args().items())),
            c.algorithm,
            repr(sorted(options.items())),
            sz["max_it"],
            sz["test"],
        )
        if key not in _CURVES:  # rows sharing a problem and a solver share its run
            log(f"{row.name}: {c.label} up to {sz['max_it']} iterations")
            solver = ClassicalSolver(ALGORITHMS[c.algorithm](**options), cproblem, sz["max_it"])
            _CURVES[key] = layer_metrics(
                solver, cproblem, x, target, depth=sz["max_it"], metrics=[metric.name]
            )[metric.name]
        curve = _CURVES[key]
        body = list(curve[1:])
        finite = [v for v in body if math.isfinite(v)] or [math.nan]
        best_value = max(finite) if metric.higher_is_better else min(finite)
        k = next((i + 1 for i, v in enumerate(body) if _reaches(metric, v, goal)), None)
        rows[c.label] = {
            "algorithm": c.algorithm,
            "options": {k2: v for k2, v in options.items() if _plain(v)},
            "tuned": tuned,
            "iterations_to_match": k,
            "metric_at_K": body[depth - 1] if depth <= len(body) else None,
            "best": best_value,
            "best_iteration": body.index(best_value) + 1 if best_value in body else None,
            "plateau_iteration": _plateau(curve, metric),
            "max_it": sz["max_it"],
            "curve_head": curve[: min(len(curve), 4 * depth + 1)],
        }
        at_k = ClassicalSolver(ALGORITHMS[c.algorithm](**options), cproblem, depth)
        fns[f"{c.label}@K"] = lambda s=at_k: s(x)
        if k is not None:
            short = ClassicalSolver(ALGORITHMS[c.algorithm](**options), cproblem, k)
            fns[f"{c.label}@match"] = lambda s=short: s(x)
    log(f"{row.name}: timing {list(fns)} side by side ({sz['repeats']} rounds)")
    with flush_denormals():
        t = _cpu_and_wall(fns, sz["repeats"])
    n = x.shape[0]
    per = {k: {"wall_ms": 1e3 * v["wall"] / n, "cpu_ms": 1e3 * v["cpu"] / n} for k, v in t.items()}
    out["learned"]["time_per_instance"] = per["learned"]
    for key in bbs:
        bbs[key]["time_per_instance"] = per[key]
    for label, r in rows.items():
        r["time_at_K_per_instance"] = per[f"{label}@K"]
        m = per.get(f"{label}@match")
        r["time_to_match_per_instance"] = m
        r["iteration_ratio"] = (
            None if r["iterations_to_match"] is None else (r["iterations_to_match"] / depth)
        )
        r["wall_ratio"] = None if m is None else m["wall_ms"] / per["learned"]["wall_ms"]
        r["cpu_ratio"] = None if m is None else m["cpu_ms"] / per["learned"]["cpu_ms"]
    out["classical"] = rows
    return out


def _plain(v: Any) -> bool:
    return (
        v is None
        or isinstance(v, (bool, int, float, str))
        or (isinstance(v, (list, tuple)) and all(isinstance(e, (int, float, str)) for e in v))
    )


# -- the table -----------------------------------------------------------------------------------
def _g(v: float | None, fmt: str = ".3g") -> str:
    return "—" if v is None or not math.isfinite(v) else format(v, fmt)


def to_markdown(results: Mapping[str, Any]) -> str:
    """The efficiency table (one line per learned model and classical solver) and notes."""
    env = results["env"]
    lines = [
        f"# Efficiency of unrolled networks against their classical solvers (preset {env['preset']})",
        "",
        f"torch {env['torch']}, {env['threads']} thread(s), {env['cpus']} CPU(s), load average "
        f"{env['load_before']} before / {env.get('load_after', '?')} after, "
        f"{env.get('seconds', 0):.0f} s wall, {env.get('cpu_seconds', 0):.0f} s CPU. Every "
        "model runs on the same CPU in PyTorch float32, side by side in one process "
        "(round-robin medians); times are per test instance.",
        "",
        "| learned (K) | metric: learned at K | classical | classical at K | iterations to "
        "match (÷ K) | or never: best (at it.), stalls at | time to match ÷ learned: wall / CPU "
        "| params learned / black box (its metric) | review's claim |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["rows"].values():
        learned = r["learned"]
        sizes = {v["params"]: v for v in r.get("black_box", {}).values()}  # one per size built
        bb = "; ".join(f"{n} ({_g(v['metric'])})" for n, v in sizes.items())
        first = True
        for label, c in r["classical"].items():
            k = c["iterations_to_match"]
            match = "never" if k is None else f"{k} ({_g(c['iteration_ratio'], '.3g')}×)"
            never = (
                f"{_g(c['best'])} (it. {c['best_iteration']}), stalls at {c['plateau_iteration']}"
                f" of {c['max_it']}"
            )
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{r['title']} ({r['depth']})" if first else "",
                        f"{r['metric_label']}: {_g(learned['metric_at_K'])}" if first else "",
                        label,
                        _g(c["metric_at_K"]),
                        match,
                        never if k is None else "—",
                        f"{_g(c['wall_ratio'], '.2f')} / {_g(c['cpu_ratio'], '.2f')}",
                        f"{learned['params']} / {bb}" if first else "",
                        r["claim"] if first else "",
                    ]
                )
                + " |"
            )
            first = False
    lines += [
        "",
        "Iterations to match: the first classical iteration whose metric on the test set is at "
        "least as good as the learned model's at layer K; *never*: not within the budget, with "
        "the classical solver's best value, where it was reached and where the solver stalls "
        "(within 1 % of its whole gain). Black boxes: the family's own black-box network asked "
        "for 1× (and 10×) the learned model's parameters (a network cannot always be built "
        "that small; the count shown is the one built), trained alike; trainable real numbers "
        "(a complex entry counts twice). Ratios above 1 favour the learned model. Claims: "
        f"{REVIEW}, quoted; its general claim that unrolled networks need fewer parameters "
        "than the networks they replace applies to every row (the parameters column).",
        "",
    ]
    if results.get("uncovered"):
        lines += [
            "Registered families without an efficiency row (add an `EfficiencyRow` in "
            f"`benchmarks/efficiency_rows.py`): {', '.join(results['uncovered'])}.",
            "",
        ]
    return "\n".join(lines)


def run(preset: str, rows: Sequence[str], out: Path | None) -> dict[str, Any]:
    """Measure ``rows`` at ``preset``; write ``out/results.json`` and ``out/results.md``."""
    from benchmarks.suite import machine_env

    t0, c0 = time.perf_counter(), time.process_time()
    results: dict[str, Any] = {
        "env": {**machine_env(preset), "review": REVIEW},
        "rows": {},
        "uncovered": uncovered_families(),
    }
    for name in rows:
        s0, p0 = time.perf_counter(), time.process_time()
        results["rows"][name] = measure_row(
            ROWS[name],
            preset,
            log=lambda m: print(
                f"[{time.perf_counter() - t0:7.1f} s, CPU {time.process_time() - c0:7.1f} s] {m}",
                flush=True,
            ),
        )
        results["rows"][name]["seconds"] = time.perf_counter() - s0
        results["rows"][name]["cpu_seconds"] = time.process_time() - p0
        if out is not None:  # partial results survive an interrupted run
            write_json(out, "results.json", results)
    results["env"]["load_after"] = round(os.getloadavg()[0], 2)
    results["env"]["seconds"] = time.perf_counter() - t0
    results["env"]["cpu_seconds"] = time.process_time() - c0
    if out is not None:
        write_json(out, "results.json", results)
        (out / "results.md").write_text(to_markdown(results))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    import benchmarks.efficiency_rows  # noqa: F401  (registers the rows)

    p = argparse.ArgumentParser(
        prog="python -m benchmarks efficiency",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated")
    p.add_argument("--out", type=Path, default=Path("runs/efficiency"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    names = [v.strip() for v in args.rows.split(",") if v.strip()]
    bad = [v for v in names if v not in ROWS]
    if bad or not names:
        raise SystemExit(f"Unknown rows {bad or args.rows!r}; valid: {', '.join(ROWS)}.")
    # the row logs its own progress: Lightning's banners are muted for the run, and the caller's
    # logger levels and thread count are restored afterwards (main() also runs in-process)
    loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    levels, threads = [lg.level for lg in loggers], torch.get_num_threads()
    try:
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        results = run(args.preset, names, args.out)
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        torch.set_num_threads(threads)
    print(to_markdown(results))
    return 0
