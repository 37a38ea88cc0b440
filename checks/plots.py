"""PNG plots of check results (matplotlib, Agg backend: no display needed).

Each plot is drawn from a result's ``details``, so results computed elsewhere (e.g. loaded from
a callback's history) can be plotted too.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from .result import CheckResult, Status

__all__ = ["PLOTTERS", "plot_result", "plot_results"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _verdict(result: CheckResult) -> str:
    return f"{result.name.replace('_', ' ')}: {result.status.label if result.status else ''}"


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def _linear_convergence(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    mean = np.asarray(d["mean_error"])
    k = np.arange(mean.shape[0])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    lo = np.maximum(np.asarray(d["q10_error"]), 1e-300)
    ax.fill_between(k, lo, np.asarray(d["q90_error"]), alpha=0.2, label="10–90% of samples")
    ax.semilogy(k, np.maximum(mean, 1e-300), "o-", label="mean error")
    classical = d.get("classical")
    if classical:  # the yardstick: the classical solver over the same iterations
        cm = np.asarray(classical["mean_error"], dtype=float)
        ax.semilogy(
            np.arange(cm.shape[0]),
            np.maximum(cm, 1e-300),
            "s--",
            ms=3,
            color="0.45",
            label=f"classical {classical['operator']} (q = {classical['fit']['q']:.3g})",
        )
    fit = d["fit"]
    kk = np.arange(fit["start"], fit["stop"])
    ax.semilogy(
        kk,
        np.exp(fit["c"]) * fit["q"] ** kk,
        "--",
        lw=2,
        label=f"fit q = {fit['q']:.3g}, R² = {fit['r2']:.3f}",
    )
    env = d["envelope"]
    ax.semilogy(
        k,
        env["eta_B"] * np.exp(-env["c"] * k) + env["C_sigma"],
        ":",
        color="gray",
        label=f"envelope ηB·e^(−ck) + Cσ (e^(−c) = {np.exp(-env['c']):.3g})",
    )
    lowest = float(np.min(lo[lo > 0], initial=np.min(mean)))
    if 0 < d.get("floor", 0) and d["floor"] >= lowest / 10:
        ax.axhline(d["floor"], color="k", lw=0.8, alpha=0.4, label="precision/noise floor")
    ax.set_xlabel("layer k")
    ax.set_ylabel(str(d.get("what", "‖s^(k) − s*‖₂")))
    ax.set_title(f"{_verdict(result)} (threshold q ≤ {d['q_max']:g})")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _coupling(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    c = np.asarray(d["residual"])
    k = np.arange(1, c.shape[0] + 1)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    if np.all(c <= d["tol"]):
        ax.plot(k, c, "o-")
        ax.set_ylim(-d["tol"], 2 * d["tol"])
        ax.text(
            0.5,
            0.8,
            f"coupled at every layer (residual ≤ {d['tol']:g})",
            transform=ax.transAxes,
            ha="center",
        )
    else:
        ax.semilogy(k, np.maximum(c, 1e-16), "o-", label="residual c_k")
        if result.threshold is not None:
            ax.axhline(result.threshold, color="r", ls="--", label="needed at layer K")
        ax.legend(fontsize=8)
    ax.set_xlabel("layer k")
    ax.set_xticks(k)
    ax.set_ylabel("‖W2 − (I − W1·H)‖_F / ‖W2‖_F")
    ax.set_title(_verdict(result))
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _descent(result: CheckResult, path: Path) -> Path:
    d = result.details
    if "ratios" not in d:  # descent measured on the objective or a metric: its per-layer curve
        return _per_layer_value(result, path)
    plt = _pyplot()
    r = np.array([np.nan if v is None else v for v in d["ratios"]], dtype=float)
    k = np.arange(1, r.shape[0] + 1)
    bad = set(d["violated_layers"])
    floor = set(d.get("layers_at_floor", ()))
    colors = ["tab:red" if i in bad else "tab:gray" if i in floor else "tab:blue" for i in k]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.bar(k, np.nan_to_num(r, posinf=np.nanmax(r[np.isfinite(r)], initial=1) * 1.5), color=colors)
    ax.axhline(1.0 - d["eps"], color="r", ls="--", label=f"1 − ε = {1 - d['eps']:g}")
    classical = d.get("classical")
    if classical:  # the yardstick: the classical solver's ratios on the same samples
        cm = np.asarray(classical["mean_value"], dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            cr = cm[1:] / cm[:-1]
        ax.plot(k, cr, "s", color="0.3", ms=5, label=f"classical {classical['operator']}")
    finite = r[np.isfinite(r)]
    ax.set_ylim(0, max(1.25, 1.1 * float(np.max(finite, initial=1.0))))
    ax.set_xlabel("layer k")
    ax.set_ylabel(f"ratio r_k of the mean {d.get('what', 'distance to s*')}")
    ax.set_title(_verdict(result) + " (red: violated; grey: at precision floor)")
    ax.set_xticks(k)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def _per_layer_value(result: CheckResult, path: Path) -> Path:
    """A per-layer curve (objective, certificate or metric) with the violating layers in red."""
    plt = _pyplot()
    d = result.details
    v = np.asarray(d.get("mean_value", d.get("mean_objective", [])), dtype=float)
    k = np.arange(v.shape[0])
    bad = [i for i in d.get("violated_layers", []) if 0 <= i < v.shape[0]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.plot(k, v, "o-", label="mean over samples")
    if bad:
        ax.plot(bad, v[bad], "o", color="tab:red", ms=9, label="layer that does not descend")
    classical = d.get("classical")
    if classical and len(classical["mean_value"]) == v.shape[0]:
        ax.plot(
            k,
            classical["mean_value"],
            "s--",
            ms=3,
            color="0.45",
            label=f"classical {classical['operator']}",
        )
    ax.set_xlabel("layer k")
    ax.set_xticks(k)
    ax.set_ylabel(str(d.get("what", "mean objective")))
    ax.set_title(_verdict(result), fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _generalization(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    K = np.asarray(d["depths"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.errorbar(
        K, d["gap"], yerr=2 * np.asarray(d["test_se"]), fmt="o-", capsize=3, label="measured gap"
    )
    ax.plot(
        K,
        d["scale"] * np.asarray(d["bound_shape"]),
        "--",
        label="bound shape a·√(P log K/|D|), fitted at smallest K",
    )
    ax.plot(K, d["allowed"], ":", color="r", label=f"allowed ({d['slack']:g}× shape + 2 se)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(K, [str(v) for v in K])
    ax.set_xlabel("depth K")
    ax.set_ylabel(f"test − train {d.get('loss', 'NMSE')}")
    ax.set_title(f"{_verdict(result)} (|D| = {d['n_train']})")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _agreement(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    if "kkt_residual" not in d:  # agreement in objective with the classical solver
        return _objective_agreement(result, path)
    dist = np.asarray(d["relative_distance"])
    kkt = np.asarray(d["kkt_residual"])
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(dist, kkt, label="samples")
    if result.threshold is not None:
        ax.axvline(result.threshold, color="r", ls="--", label="largest allowed mean distance")
    ax.set_xlim(0, 1.1 * max(float(dist.max()), result.threshold or 0.0))
    ax.set_ylim(0, 1.1 * float(kkt.max()) + 1e-12)
    ax.set_xlabel(f"‖s^(K) − s*‖ / ‖s*‖ ({d.get('reference_name', 'CVXPY reference')})")
    ax.set_ylabel(str(d.get("certificate_name", "KKT residual of s^(K) (× ρ)")))
    ax.set_title(_verdict(result))
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


def _objective_agreement(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    names = ["model s^(K)", "classical, converged"]
    vals = [d["model_objective"], d["reference_objective"]]
    ax.bar(names, vals, color=["tab:blue", "tab:gray"])
    ax.set_ylabel(f"mean {d.get('quantity', 'objective')}")
    ax.set_title(_verdict(result), fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    return _save(fig, path)


def _descending_constraints(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    cmap = plt.get_cmap("viridis")
    expected = d.get("criterion", "samples") == "expected"
    curves = d["ratios_perturbed"] if expected else d["fraction"]
    keys = list(curves)
    for i, key in enumerate(keys):
        f = np.asarray(curves[key], dtype=float)
        k = np.arange(1, f.shape[0] + 1)
        style = {"color": "k", "lw": 2.2} if key == "0" else {"color": cmap(i / max(len(keys), 2))}
        label = "unperturbed" if key == "0" else f"β = {key}"
        ax.plot(k, f if expected else 100 * f, "o-", ms=4, label=label, **style)
    ref = d.get("reference_label", "s*")
    by = "‖s^(l−1) − s*‖" if d.get("scale", "norm") == "distance" else "‖s^(l−1)‖"
    if expected:
        ax.axhline(1.0 - d["eps"], color="r", ls="--", lw=1, label="must stay below")
        ax.set_ylabel(f"E‖s^(l) − s*‖ / E‖s̃^(l−1) − s*‖, s* = {ref}", fontsize=8)
        rule = f"expected ratio per layer, input perturbed by β·{by}"
    else:
        ax.axhline(100 * d["min_fraction"], color="r", ls="--", lw=1, label="required overall")
        ax.set_ylim(-3, 103)
        ax.set_ylabel(f"samples descending at layer l (%), s* = {ref}", fontsize=8)
        rule = f"‖s^(l) − s*‖ < ‖s̃^(l−1) − s*‖, input perturbed by β·{by}"
    ax.set_xlabel("layer l")
    ax.set_title(_verdict(result) + "\n" + rule, fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="best")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def _safeguard(result: CheckResult, path: Path) -> Path:
    plt = _pyplot()
    d = result.details
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.8))
    fb = np.asarray(d["fallback_fraction"])
    k = np.arange(1, fb.shape[0] + 1)
    a1.bar(k, 100 * fb, color="tab:orange")
    a1.set_ylim(0, 105)
    a1.set_xticks(k)
    a1.set_xlabel("layer k")
    a1.set_ylabel("samples falling back to T(s^(k−1)) (%)")
    a1.set_title("safeguard decisions per layer", fontsize=9)
    a1.grid(True, axis="y", alpha=0.3)
    curve = np.asarray(d["curve"], dtype=float)
    K = fb.shape[0]
    a2.semilogy(
        K + curve[:, 0], np.maximum(curve[:, 1], 1e-300), "o-", ms=3, label="safeguarded model"
    )
    alone = d.get("classical_alone")
    if alone:  # the yardstick: the classical solver from its own initialisation
        ac = np.asarray(alone["curve"], dtype=float)
        a2.semilogy(
            ac[:, 0],
            np.maximum(ac[:, 1], 1e-300),
            "s--",
            ms=3,
            color="0.45",
            label="classical alone",
        )
    a2.axvline(K, color="0.7", lw=0.8)
    a2.axhline(d["tol"], color="r", ls="--", label=f"tol = {d['tol']:g}")
    a2.set_xlabel(f"iterations (K = {K} layers, then classical)")
    label = f"largest {d.get('certificate_name', d['certificate'])}"
    a2.set_ylabel(textwrap.fill(label, 38), fontsize=8 if len(label) > 38 else 10)
    a2.set_title(_verdict(result), fontsize=9)
    a2.legend(fontsize=8)
    a2.grid(True, which="both", alpha=0.3)
    return _save(fig, path)


PLOTTERS: dict[str, Callable[[CheckResult, Path], Path]] = {
    "linear_convergence": _linear_convergence,
    "coupling": _coupling,
    "descent": _descent,
    "generalization": _generalization,
    "reference_agreement": _agreement,
    "descending_constraints": _descending_constraints,
    "safeguard": _safeguard,
    "objective_descent": _per_layer_value,
}


def plot_result(result: CheckResult, out_dir: str | Path) -> tuple[Path, ...]:
    """Write the plot of ``result`` to ``out_dir/<name>.png``; ``()`` if it has none.

    Raises whatever the plotter raises; :func:`plot_results` reports such failures instead.
    """
    if result.status in (Status.SKIPPED, Status.ERROR) or result.name not in PLOTTERS:
        return ()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return (PLOTTERS[result.name](result, out / f"{result.name}.png"),)


def plot_results(results: Sequence[CheckResult], out_dir: str | Path) -> list[CheckResult]:
    """Plot every result and return copies with their ``figures`` set.

    A plot that cannot be drawn does not stop the report: the result keeps its verdict and its
    ``details["plot_error"]`` says what went wrong (the Markdown report prints it).
    """
    out: list[CheckResult] = []
    for r in results:
        try:
            figures = plot_result(r, out_dir)
        except Exception as exc:  # a plot is a view of a result, never a reason to lose it
            _pyplot().close("all")
            details = {**r.details, "plot_error": f"{type(exc).__name__}: {exc}"}
            out.append(replace(r, details=details))
            continue
        out.append(r.with_figures(r.figures + figures))
    return out
