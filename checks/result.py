"""The record a check returns: :class:`CheckResult` with a :class:`Status`."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = ["CheckResult", "NotApplicableError", "Status"]


class Status(enum.Enum):
    """Outcome of a check; each member carries a sentence a person can read."""

    PASSED = "The check passed: the model shows the property the theory predicts."
    FAILED = "The check failed: the measured value is on the wrong side of its threshold."
    ERROR = (
        "The check could not be completed (e.g. a reference solver failed or the model does not "
        "expose what the check needs); the message says why and what to try."
    )
    SKIPPED = "The check does not apply to this model and was skipped; the message says why."

    @property
    def label(self) -> str:
        """Short upper-case label for tables: PASS, FAIL, ERROR, SKIP."""
        return {"PASSED": "PASS", "FAILED": "FAIL", "ERROR": "ERROR", "SKIPPED": "SKIP"}[self.name]


class NotApplicableError(ValueError):
    """Raised by a check called on a model it cannot examine (the message says why)."""


@dataclass(frozen=True)
class CheckResult:
    """What one check found.

    Attributes:
        name: the check's registry name (e.g. ``"linear_convergence"``).
        passed: ``True`` only when the check ran and the property holds; ``False`` for a
            failure, an error or a skipped check (a skip is never counted as passed, nor as
            failed: see :attr:`counts_against`).
        value: the measured figure the verdict is based on (``None`` if it could not be measured).
        threshold: the figure ``value`` is compared with.
        message: one or two sentences: what was found and what it means.
        details: everything else measured (per-layer curves, fits, settings), JSON-friendly.
        counterexample: an instance on which the property fails, where one exists.
        figures: paths of the plots written for this result.
        status: :class:`Status`; derived from ``passed`` unless given (``ERROR``/``SKIPPED``).
    """

    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    counterexample: dict[str, Any] | None = None
    figures: tuple[Path, ...] = ()
    status: Status | None = None

    def __post_init__(self) -> None:
        status = self.status
        if status is None:
            status = Status.PASSED if self.passed else Status.FAILED
        if status is Status.SKIPPED:
            object.__setattr__(self, "passed", False)
        if status in (Status.FAILED, Status.ERROR) and self.passed:
            raise ValueError(f"A {status.name} result cannot have passed=True.")
        if status is Status.PASSED and not self.passed:
            raise ValueError("A PASSED result must have passed=True.")
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "figures", tuple(Path(f) for f in self.figures))
        for attr in ("value", "threshold"):
            v = getattr(self, attr)
            if v is not None:
                object.__setattr__(self, attr, float(v))

    @classmethod
    def error(cls, name: str, message: str, **details: Any) -> CheckResult:
        """A result for a check that could not be completed."""
        return cls(name, False, None, None, message, dict(details), status=Status.ERROR)

    @classmethod
    def skipped(cls, name: str, message: str) -> CheckResult:
        """A result for a check that does not apply to the model."""
        return cls(name, False, None, None, message, status=Status.SKIPPED)

    @property
    def counts_against(self) -> bool:
        """Whether this result makes a suite fail: a FAIL or an ERROR (not a skip)."""
        return self.status in (Status.FAILED, Status.ERROR)

    def with_figures(self, figures: tuple[Path, ...]) -> CheckResult:
        """A copy with ``figures`` set."""
        return replace(self, figures=tuple(figures))

    def summary(self) -> dict[str, Any]:
        """The fields of ``report.json``: name, status (``pass``/``fail``/``skip``/``error``),
        passed (true only for ``pass``), value, threshold, message."""
        assert self.status is not None
        return {
            "name": self.name,
            "status": self.status.label.lower(),
            "passed": self.status is Status.PASSED,
            "value": _json_number(self.value),
            "threshold": _json_number(self.threshold),
            "message": self.message,
        }


def _json_number(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return float(v)
