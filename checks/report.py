"""Reports: a text table for terminals, ``report.json``, ``report.md`` and plots."""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lightning_unfold.core.algorithm import ProblemSpec
from lightning_unfold.core.metrics import labelled_rows, layer_curves

from .context import _problem_of, as_check_data, as_trajectory_fn, describe_model
from .result import CheckResult, Status
from .runner import run_checks

__all__ = ["Report", "build_report", "format_table", "metric_curves", "report_for_module"]


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    return f"{v:.3g}" if 1e-3 <= a < 1e4 else f"{v:.2e}"


def format_table(results: Sequence[CheckResult], width: int = 100) -> str:
    """A readable fixed-width table of results, each followed by its message (wrapped)."""
    name_w = max([len("check"), *(len(r.name) for r in results)]) + 2
    head = f"{'check':<{name_w}}{'result':<8}{'value':>11}{'threshold':>12}"
    lines = [head, "─" * max(len(head), 60)]
    for r in results:
        label = r.status.label if r.status else ("PASS" if r.passed else "FAIL")
        lines.append(f"{r.name:<{name_w}}{label:<8}{_fmt(r.value):>11}{_fmt(r.threshold):>12}")
        lines.extend(
            textwrap.wrap(r.message, width=width, initial_indent="    ", subsequent_indent="    ")
        )
    counts = _counts(results)
    lines.append("─" * max(len(head), 60))
    lines.append(counts)
    return "\n".join(lines)


def _counts(results: Sequence[CheckResult]) -> str:
    n = {s: sum(r.status is s for r in results) for s in Status}
    ran = len(results) - n[Status.SKIPPED]
    parts = [f"{n[Status.PASSED]} of {ran} checks passed"]
    if n[Status.FAILED]:
        parts.append(f"{n[Status.FAILED]} failed")
    if n[Status.ERROR]:
        parts.append(f"{n[Status.ERROR]} could not run")
    if n[Status.SKIPPED]:
        parts.append(f"{n[Status.SKIPPED]} skipped (not applicable)")
    return ", ".join(parts) + "."


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


@dataclass
class Report:
    """The results of a suite on one model, and where its files were written.

    Attributes:
        results: one :class:`CheckResult` per check.
        model: description of the model (class, paradigm, depth, problem, parameters).
        out_dir: directory of ``report.json``, ``report.md`` and plots, if written.
        metrics: the problem's metrics per layer on the checked data (:func:`metric_curves`),
            the primary one first.
    """

    results: list[CheckResult]
    model: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)

    def metrics_summary(self) -> list[str]:
        """One line per metric: its value at the last layer, the primary one marked."""
        lines = []
        for name, m in self.metrics.items():
            vals = m["values"]
            unit = f" {m['unit']}" if m["unit"] else ""
            tag = " (primary)" if m["primary"] else ""
            arrow = "higher" if m["higher_is_better"] else "lower"
            lines.append(
                f"{m['label']}{tag} [{name}, {arrow} is better]: layer 0 {_fmt(vals[0])}{unit} → "
                f"layer {len(vals) - 1} {_fmt(vals[-1])}{unit}"
            )
        return lines

    @property
    def passed(self) -> bool:
        """Whether no check failed or errored (skipped checks count neither way)."""
        return not any(r.counts_against for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 when every check passed (or was skipped), 1 otherwise."""
        return 0 if self.passed else 1

    def table(self) -> str:
        """The problem's metrics (first and last layer), then :func:`format_table` of the results."""
        head = self.metrics_summary()
        return "\n".join([*head, ""] if head else []) + format_table(self.results)

    def to_json(self) -> dict[str, Any]:
        """``{"summary", "counts", "checks": [{"name", "status", "passed", "value", "threshold",
        "message"}, ...], "model", "metrics"}``; ``status`` is ``pass``/``fail``/``skip``/``error``
        and ``passed`` is true only for ``pass``."""
        counts = {s.label.lower(): sum(r.status is s for r in self.results) for s in Status}
        checks = []
        for r in self.results:
            entry = r.summary()
            if "plot_error" in r.details:
                entry["plot_error"] = r.details["plot_error"]
            checks.append(entry)
        return {
            "summary": _counts(self.results),
            "counts": counts,
            "exit_code": self.exit_code,
            "checks": checks,
            "model": _jsonable(self.model),
            "metrics": _jsonable(self.metrics),
        }

    def to_markdown(self) -> str:
        """A report a person can read: verdicts, a table, then each check with its plot."""
        rel = self.out_dir
        title = self.model.get("class", "model")
        desc = ", ".join(
            f"{k} = {self.model[k]}"
            for k in ("paradigm", "variant", "algorithm_class", "depth", "supervision")
            if self.model.get(k) is not None
        )
        out = [f"# Verification report: {title}", ""]
        if desc:
            out += [desc, ""]
        out += [f"**{_counts(self.results)}**", ""]
        if self.metrics:
            names = list(self.metrics)
            depth = max(len(m["values"]) for m in self.metrics.values())
            heads = [
                f"{self.metrics[n]['label']}"
                + (f" ({self.metrics[n]['unit']})" if self.metrics[n]["unit"] else "")
                for n in names
            ]
            out += ["| layer | " + " | ".join(heads) + " |", "|---" * (len(names) + 1) + "|"]
            for k in range(depth):
                row = [
                    _fmt(self.metrics[n]["values"][k])
                    if k < len(self.metrics[n]["values"])
                    else "—"
                    for n in names
                ]
                out.append(f"| {k} | " + " | ".join(row) + " |")
            out.append("")
        out += ["| check | result | value | threshold |", "|---|---|---|---|"]
        for r in self.results:
            label = r.status.label if r.status else ""
            out.append(f"| {r.name} | {label} | {_fmt(r.value)} | {_fmt(r.threshold)} |")
        out.append("")
        for r in self.results:
            out += [f"## {r.name} — {r.status.label if r.status else ''}", "", r.message, ""]
            for f in r.figures:
                path = os.path.relpath(f, rel) if rel is not None else str(f)
                out += [f"![{r.name}]({path})", ""]
            if "plot_error" in r.details:
                out += [f"(The plot could not be drawn: {r.details['plot_error']}.)", ""]
            if r.counterexample:
                summary = {
                    k: v
                    for k, v in r.counterexample.items()
                    if not isinstance(v, (list, tuple)) or len(v) <= 4
                }
                if summary:
                    items = ", ".join(
                        f"{k} = {_fmt(v) if isinstance(v, float) else v}"
                        for k, v in summary.items()
                    )
                    out += [f"Counterexample: {items}.", ""]
        prob = self.model.get("problem")
        if prob:
            out += [
                "## Model",
                "",
                "```json",
                json.dumps(_jsonable(self.model), indent=2),
                "```",
                "",
            ]
        return "\n".join(out)

    def write(self, out_dir: str | Path) -> Path:
        """Write ``report.json`` and ``report.md`` (and plots, if not yet) to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        if not any(r.figures for r in self.results):
            from .plots import plot_results

            self.results = plot_results(self.results, out)
        self.out_dir = out
        (out / "report.json").write_text(
            json.dumps(self.to_json(), indent=2, allow_nan=False, ensure_ascii=False) + "\n",
            encoding="utf-8",
        )
        (out / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        return out


def report_for_module(
    module: Any,
    datamodule_or_data: Any = None,
    out_dir: str | Path | None = None,
    *,
    suite: str | Sequence[str] = "default",
    n_samples: int = 256,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    problem: ProblemSpec | None = None,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run ``suite`` on a trained module and build (and, with ``out_dir``, write) its report.

    Args:
        module: an :class:`~lightning_unfold.training.UnfoldedModule` or any trajectory producer
            (a model of another library: then pass ``problem``).
        datamodule_or_data: a datamodule (its test split), ``(x, target)``, or ``None`` (drawn
            from the problem).
        out_dir: where ``report.json``, ``report.md`` and the PNG plots go.
        problem: the problem the model solves (default ``module.problem``).
        progress: one line per check started and finished (see
            :func:`~lightning_unfold.checks.run_checks`).
    """
    results = run_checks(
        module,
        problem,
        datamodule_or_data,
        suite,
        n_samples=n_samples,
        options=options,
        seed=seed,
        progress=progress,
    )
    return build_report(
        results,
        module,
        datamodule_or_data,
        out_dir,
        n_samples=n_samples,
        problem=problem,
        seed=seed,
    )


def build_report(
    results: Sequence[CheckResult],
    model: Any,
    data: Any = None,
    out_dir: str | Path | None = None,
    *,
    n_samples: int = 256,
    problem: ProblemSpec | None = None,
    seed: int = 0,
) -> Report:
    """A :class:`Report` of ``results`` with the model's description and per-layer metrics,
    written to ``out_dir`` when given. A metric that cannot be computed is recorded in
    ``model["metrics_error"]``, never raised: the report is always written."""
    description = describe_model(model)
    try:
        metrics = metric_curves(model, data, n_samples, problem=problem, seed=seed)
    except Exception as exc:  # the verdicts matter more than the metric table
        metrics = {}
        description["metrics_error"] = f"{type(exc).__name__}: {exc}"
    report = Report(list(results), description, metrics=metrics)
    if out_dir is not None:
        report.write(out_dir)
    return report


def metric_curves(
    model: Any,
    data: Any = None,
    n_samples: int = 256,
    *,
    problem: ProblemSpec | None = None,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """The problem's metrics at every layer of ``model`` on ``data`` (as :func:`as_check_data`
    reads it): ``{name: {"label", "unit", "higher_is_better", "primary", "values": [0..K]}}``.

    Empty when neither ``problem`` nor the model's problem is known; metrics that need targets
    are left out when the data have no labels.
    """
    problem = problem if problem is not None else _problem_of(model)
    if problem is None:
        return {}
    x, target = as_check_data(data, problem, n_samples=n_samples, seed=seed)
    specs = list(problem.metrics())
    if target is None or not bool(labelled_rows(target).any()):
        specs = [m for m in specs if not m.needs_target]
        target = torch.full((x.shape[0],), float("nan"))
    if not specs:
        return {}
    traj = as_trajectory_fn(model)(x)
    curves = layer_curves(traj.stacked_estimates(), target, x, specs)
    primary = problem.metrics()[0].name
    return {
        m.name: {
            "label": m.label,
            "unit": m.unit,
            "higher_is_better": m.higher_is_better,
            "primary": m.name == primary,
            "values": curves[m.name],
        }
        for m in specs
    }
