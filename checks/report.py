"""Reports: a text table for terminals, ``report.json``, ``report.md`` and plots."""

from __future__ import annotations

import json
import math
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .context import describe_model
from .result import CheckResult, Status
from .runner import run_checks

__all__ = ["Report", "format_table", "report_for_module"]


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
    """

    results: list[CheckResult]
    model: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def passed(self) -> bool:
        """Whether no check failed or errored (skipped checks do not count)."""
        return all(r.passed for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 when every check passed (or was skipped), 1 otherwise."""
        return 0 if self.passed else 1

    def table(self) -> str:
        """:func:`format_table` of the results."""
        return format_table(self.results)

    def to_json(self) -> dict[str, Any]:
        """``{"checks": [{"name", "passed", "value", "threshold", "message"}, ...], "model": {...}}``."""
        return {
            "checks": [r.summary() for r in self.results],
            "model": _jsonable(self.model),
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
    options: dict[str, dict[str, Any]] | None = None,
) -> Report:
    """Run ``suite`` on a trained module and build (and, with ``out_dir``, write) its report.

    Args:
        module: an :class:`~lightning_unfold.training.UnfoldedModule` or any trajectory producer
            with a ``problem`` attribute.
        datamodule_or_data: a datamodule (its test split), ``(x, target)``, or ``None`` (drawn
            from the module's problem).
        out_dir: where ``report.json``, ``report.md`` and the PNG plots go.
    """
    results = run_checks(
        module,
        None,
        datamodule_or_data,
        suite,
        n_samples=n_samples,
        options=options,
        out_dir=out_dir,
    )
    report = Report(results, describe_model(module))
    if out_dir is not None:
        report.write(out_dir)
    return report
