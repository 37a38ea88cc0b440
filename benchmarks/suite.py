"""The measurements of the benchmark suite (one function per section, each returns a dict).

Timing discipline: contenders run round-robin, ``repeats`` times each after a warm-up, and the
median is kept; on CUDA every timed call ends with a synchronisation. The figures that matter are
the ratios, measured side by side.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from benchmarks import Family
from lightning_unfold import ClassicalSolver, SyntheticDataModule, UnfoldedModule
from lightning_unfold.algorithms import make_algorithm


def machine_env(preset: str) -> dict[str, Any]:
    """The ``env`` record of a benchmark's results: the preset, torch's version and CPU threads,
    the CPU count, the platform and the 1-minute load average before the run (a loaded machine
    inflates every wall time; add ``load_after`` when the run ends)."""
    return {
        "preset": preset,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "load_before": round(os.getloadavg()[0], 2),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_wall_and_cpu(
    fns: Mapping[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, dict[str, float]]:
    """Round-robin medians of every contender: ``{name: {"wall": s, "cpu": s}}``.

    After one warm-up call each, the contenders run in turn ``repeats`` times; wall time is
    ``time.perf_counter`` and CPU time this process's ``time.process_time`` (all threads), each
    call ending with a device synchronisation. On a shared machine the CPU time is the steadier
    figure: it does not count the time the process waited for a core."""
    for fn in fns.values():  # warm-up
        fn()
    _sync(device)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            wall[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {k: {"wall": statistics.median(wall[k]), "cpu": statistics.median(cpu[k])} for k in fns}


def _median_times(
    fns: Mapping[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Round-robin median wall seconds of every contender (:func:`median_wall_and_cpu`)."""
    return {k: v["wall"] for k, v in median_wall_and_cpu(fns, repeats, device).items()}


# -- layer vs matmul floor -----------------------------------------------------------------------
def _fwd_bwd(run: Callable[[], Sequence[Tensor]], leaves: Sequence[Tensor]) -> Callable[[], None]:
    outs = run()
    g = torch.Generator().manual_seed(1)
    cot = [torch.randn(o.shape, generator=g, dtype=o.dtype).to(o.device) for o in outs]

    def fn() -> None:
        for leaf in leaves:
            leaf.grad = None
        torch.autograd.backward(list(run()), cot)

    return fn


def bench_layer(family: Family, sizes: Mapping[str, Any], repeats: int) -> dict[str, Any]:
    """FLOP rate of one layer (forward; forward + backward) ÷ that of its products alone."""
    case = family.layer_case(family.make_problem(sizes), sizes)
    dev = torch.device("cpu")

    def fwd(run: Callable[[], Sequence[Tensor]]) -> Callable[[], object]:
        def f() -> object:
            with torch.no_grad():
                return run()

        return f

    t = _median_times(
        {
            "layer fwd": fwd(case.layer),
            "floor fwd": fwd(case.floor),
            "layer fwd+bwd": _fwd_bwd(case.layer, case.layer_leaves),
            "floor fwd+bwd": _fwd_bwd(case.floor, case.floor_leaves),
        },
        repeats,
        dev,
    )
    gf = case.flops / 1e9
    return {
        "shapes": case.shapes,
        "gflop_forward": gf,
        "ms": {k: v * 1e3 for k, v in t.items()},
        "gflops_per_s": {
            "layer fwd": gf / t["layer fwd"],
            "floor fwd": gf / t["floor fwd"],
            # backward of a product is two products: 3x the forward flops in all
            "layer fwd+bwd": 3 * gf / t["layer fwd+bwd"],
            "floor fwd+bwd": 3 * gf / t["floor fwd+bwd"],
        },
        "ratio_fwd": t["layer fwd"] / t["floor fwd"],
        "ratio_fwd_bwd": t["layer fwd+bwd"] / t["floor fwd+bwd"],
    }


# -- a training step: Lightning vs a bare loop ----------------------------------------------------
class StepTimer(Callback):
    """Timestamps of Lightning's hooks around every training step (rank 0 writes them to
    ``out`` at the end when given, so that ``ddp_spawn`` workers can report)."""

    def __init__(self, out: str | None = None) -> None:
        self.out = out
        self.marks: list[dict[str, float]] = []

    def _mark(self, key: str) -> None:
        if key == "start":
            self.marks.append({})
        if self.marks:
            self.marks[-1][key] = time.perf_counter()

    def on_train_batch_start(self, *args: Any) -> None:
        self._mark("start")

    def on_before_backward(self, *args: Any) -> None:
        self._mark("before_backward")

    def on_after_backward(self, *args: Any) -> None:
        self._mark("after_backward")

    def on_train_batch_end(self, *args: Any) -> None:
        self._mark("end")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.out is not None and trainer.global_rank == 0:
            Path(self.out).write_text(json.dumps(self.marks))


def lightning_phases(marks: Sequence[Mapping[str, float]], skip: int) -> dict[str, float]:
    """Median seconds per phase from :class:`StepTimer` marks, skipping ``skip`` warm-up steps."""
    ms = list(marks)[skip:]
    step = [b["end"] - a["end"] for a, b in itertools.pairwise(ms)]
    data = [b["start"] - a["end"] for a, b in itertools.pairwise(ms)]
    med = statistics.median
    return {
        "step": med(step),
        "data + loop": med(data),
        "forward + loss": med(m["before_backward"] - m["start"] for m in ms),
        "backward": med(m["after_backward"] - m["before_backward"] for m in ms),
        "optimizer + projection + logging + hooks": med(m["end"] - m["after_backward"] for m in ms),
    }


def _trainer(steps: int, callbacks: list[Callback], root: str, **kw: Any) -> L.Trainer:
    from lightning.pytorch.loggers import CSVLogger

    opts: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_steps=steps,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        logger=CSVLogger(root),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
        default_root_dir=root,
    )
    opts.update(kw)
    return L.Trainer(**opts)


def _module_and_data(
    family: Family, sizes: Mapping[str, Any], train_batches: int, **module_kw: Any
) -> tuple[UnfoldedModule, SyntheticDataModule]:
    problem = family.make_problem(sizes)
    module = UnfoldedModule(problem, **{**family.module_kwargs(sizes), **module_kw})
    data = SyntheticDataModule(
        problem, batch_size=sizes["batch"], train_batches=train_batches, val_size=8, test_size=8
    )
    return module, data


def bare_loop(
    module: UnfoldedModule, data: SyntheticDataModule, steps: int
) -> tuple[dict[str, float], list[float]]:
    """A hand-written PyTorch loop on ``module.model``: data, forward + loss, backward, Adam,
    projection — the same computation as ``UnfoldedModule.training_step`` + ``optimizer_step``.
    Returns the seconds per phase of the median step (by total time) and the losses."""
    model = module.model
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=module.hparams.lr)
    project = getattr(model, "project_parameters_", None)
    it = iter(data.train_dataloader())
    phases: dict[str, list[float]] = {
        k: [] for k in ("step", "data", "forward + loss", "backward", "optimizer", "projection")
    }
    losses = []
    for _ in range(steps):
        t0 = time.perf_counter()
        try:
            x, target = next(it)
        except StopIteration:
            it = iter(data.train_dataloader())
            x, target = next(it)
        t1 = time.perf_counter()
        traj = model(x)
        loss = module.problem.supervised_loss(traj.final_estimate, target)  # the family's own
        assert loss is not None  # the synthetic data are labelled
        t2 = time.perf_counter()
        if not losses:  # the same loss as the module's (supervised, end to end)
            torch.testing.assert_close(loss, module.loss(traj, x, target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        if project is not None:
            project()
        t5 = time.perf_counter()
        losses.append(loss.detach())
        for k, v in zip(
            phases, (t5 - t0, t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True
        ):
            phases[k].append(v)
    # the breakdown of the median step (not per-phase medians, which need not add up to the
    # median step on a jittery machine): its parts sum to its total exactly
    order = sorted(range(steps), key=lambda i: phases["step"][i])
    mid = order[steps // 2]
    return {k: v[mid] for k, v in phases.items()}, [float(v) for v in losses]


def bench_step(
    family: Family, sizes: Mapping[str, Any], steps: int, rounds: int = 2
) -> dict[str, Any]:
    """Median training-step time under Lightning ÷ the bare loop's, ``rounds`` alternations.

    Lightning runs twice per round: as configured (the NaN check read on the host every 50
    steps) and with ``check_finite_every=1`` — the host read every step, as before issue 16."""
    skip = min(5, steps // 4)
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "lightning": [], "lightning_sync": []}
    with tempfile.TemporaryDirectory() as root:
        for _ in range(rounds):
            mod_b, data_b = _module_and_data(family, sizes, steps)
            runs["bare"].append(bare_loop(mod_b, data_b, steps)[0])
            for key, kw in (("lightning", {}), ("lightning_sync", {"check_finite_every": 1})):
                mod_l, data_l = _module_and_data(family, sizes, steps, **kw)
                timer = StepTimer()
                _trainer(steps, [timer], root).fit(mod_l, data_l)
                runs[key].append(lightning_phases(timer.marks, skip))
    med = statistics.median
    ph = {key: {k: med(r[k] for r in rs) for k in rs[0]} for key, rs in runs.items()}
    return {
        "batch": sizes["batch"],
        "steps": steps,
        "rounds": rounds,
        "bare_ms": {k: v * 1e3 for k, v in ph["bare"].items()},
        "lightning_ms": {k: v * 1e3 for k, v in ph["lightning"].items()},
        "lightning_sync_every_step_ms": {k: v * 1e3 for k, v in ph["lightning_sync"].items()},
        "ratio": ph["lightning"]["step"] / ph["bare"]["step"],
        "ratio_sync_every_step": ph["lightning_sync"]["step"] / ph["bare"]["step"],
    }


# -- inference at equal accuracy -----------------------------------------------------------------
def _train_bare(module: UnfoldedModule, data: SyntheticDataModule, steps: int) -> float:
    t = time.perf_counter()
    bare_loop(module, data, steps)
    return time.perf_counter() - t


def bench_inference(family: Family, sizes: Mapping[str, Any], repeats: int) -> dict[str, Any]:
    """The unfolded model (trained ``train_steps`` steps) vs each classical solver run until it
    matches the model's accuracy, and vs the per-instance reference solver."""
    module, data = _module_and_data(family, sizes, sizes["train_steps"])
    train_s = _train_bare(module, data, sizes["train_steps"])
    problem = module.problem
    x, target = problem.sample(sizes["batch"], seed=(99, 1))
    model = module.model.eval()
    with torch.no_grad():
        ours = family.metric(model(x).final_estimate, target)
    depth = sizes["depth"]
    max_it = int(sizes.get("max_it", 2000))
    rows: dict[str, Any] = {}
    fns: dict[str, Callable[[], object]] = {"unfolded": lambda: model(x)}
    for name in family.classical:
        solver = ClassicalSolver(make_algorithm(name), problem, max_it)
        with torch.no_grad():
            ests = solver(x).estimates
        curve = [family.metric(e, target) for e in ests[1:]]
        k = next((i + 1 for i, v in enumerate(curve) if v <= ours), None)
        rows[name] = {
            "iterations_to_match": k,
            "metric_at_K": curve[depth - 1],
            "best_metric": min(curve),
        }
        if k is not None:
            short = ClassicalSolver(make_algorithm(name), problem, k)
            fns[name] = lambda short=short: short(x)
    with torch.no_grad():
        t = _median_times(fns, repeats, torch.device("cpu"))
    per = {k: v / sizes["batch"] for k, v in t.items()}
    for name in rows:
        rows[name]["ms_per_instance"] = per[name] * 1e3 if name in per else None
        rows[name]["time_ratio_vs_unfolded"] = per[name] / per["unfolded"] if name in per else None
    out: dict[str, Any] = {
        "metric": family.metric_name,
        "train_steps": sizes["train_steps"],
        "train_seconds": train_s,
        "unfolded": {"layers": depth, "metric": ours, "ms_per_instance": per["unfolded"] * 1e3},
        "classical": rows,
    }
    ref = family.reference
    if ref is not None:
        xs = x[: ref.instances].double().numpy()
        t0 = time.perf_counter()
        est = ref.solve(xs, problem)
        sec = (time.perf_counter() - t0) / ref.instances
        ref_metric = family.metric(torch.from_numpy(est), target[: ref.instances])
        out["reference"] = {
            "name": ref.name,
            "instances": ref.instances,
            "ms_per_instance": sec * 1e3,
            "metric": ref_metric,
            "time_ratio_vs_unfolded": sec / per["unfolded"],
        }
    return out


# -- DDP throughput ------------------------------------------------------------------------------
def _ddp_run(
    family: Family, sizes: Mapping[str, Any], steps: int, devices: int, root: str
) -> float:
    """Median seconds per step (rank 0) of a ``devices``-process fit with one thread each."""
    out = os.path.join(root, f"marks_{devices}.json")
    module, data = _module_and_data(family, sizes, steps)
    kw: dict[str, Any] = {"strategy": "ddp_spawn", "devices": devices} if devices > 1 else {}
    _trainer(steps, [StepTimer(out)], root, **kw).fit(module, data)
    marks = json.loads(Path(out).read_text())
    return lightning_phases(marks, min(5, steps // 4))["step"]


def bench_ddp(family: Family, sizes: Mapping[str, Any], steps: int) -> dict[str, Any]:
    """Samples/s of 2 ``ddp_spawn`` processes (1 thread each, batch B per rank) ÷ 1 process
    (1 thread, batch B); also 1 process with 2 threads for reference. B is the family's
    ``ddp_batch`` size (default: its ``batch``): each step all-reduces every gradient once, so
    the per-rank batch must be large enough for the computation to outweigh that exchange."""
    b = int(sizes.get("ddp_batch", sizes["batch"]))
    sizes = {**sizes, "batch": b}
    threads = torch.get_num_threads()
    env_port = os.environ.get("MASTER_PORT")
    with tempfile.TemporaryDirectory() as root:
        try:
            torch.set_num_threads(1)
            single = _ddp_run(family, sizes, steps, 1, root)
            torch.set_num_threads(2)
            single2 = _ddp_run(family, sizes, steps, 1, root)
            torch.set_num_threads(1)
            ddp = _ddp_run(family, sizes, steps, 2, root)
        finally:
            torch.set_num_threads(threads)
            if env_port is None:  # Lightning leaves its port behind in the parent
                os.environ.pop("MASTER_PORT", None)
    return {
        "batch_per_rank": b,
        "steps": steps,
        "samples_per_s": {
            "1 process, 1 thread": b / single,
            "1 process, 2 threads": b / single2,
            "2 processes (ddp_spawn), 1 thread each": 2 * b / ddp,
        },
        "ratio": (2 * b / ddp) / (b / single),
        "ratio_vs_2_threads": (2 * b / ddp) / (b / single2),
    }


# -- opt-in speed options: torch.compile and bf16 autocast ----------------------------------------
def bench_options(family: Family, sizes: Mapping[str, Any], steps: int) -> dict[str, Any]:
    """Lightning training for ``steps`` steps from the same start, three ways: float32 eager,
    ``compile=True`` (first step = compile time) and ``precision="bf16-mixed"``; the accuracy
    each reaches (evaluated in float32), and bf16 autocast at inference on the float32 model."""
    problem = family.make_problem(sizes)
    x, target = problem.sample(sizes["batch"], seed=(99, 2))
    skip = min(5, steps // 4)
    runs: dict[str, Any] = {}
    variants: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
        "float32": ({}, {}),
        "compile": ({"compile": True}, {}),
        "bf16-mixed": ({}, {"precision": "bf16-mixed"}),
    }
    fp32_model = None
    with tempfile.TemporaryDirectory() as root:
        for name, (module_kw, trainer_kw) in variants.items():
            module, data = _module_and_data(family, sizes, steps, **module_kw)
            timer = StepTimer()
            t0 = time.perf_counter()
            _trainer(steps, [timer], root, **trainer_kw).fit(module, data)
            wall = time.perf_counter() - t0
            step = lightning_phases(timer.marks, skip)["step"]
            first = timer.marks[0]["end"] - timer.marks[0]["start"]
            model = module.model.eval()
            with torch.no_grad():
                metric = family.metric(model(x).final_estimate, target)
            runs[name] = {
                "step_ms": step * 1e3,
                "first_step_ms": first * 1e3,
                "fit_seconds": wall,
                "metric": metric,
            }
            if name == "float32":
                fp32_model = model
    base = runs["float32"]
    for r in runs.values():
        r["speedup"] = base["step_ms"] / r["step_ms"]
        r["metric_cost_db"] = r["metric"] - base["metric"]
    runs["compile"]["compile_seconds"] = (
        runs["compile"]["first_step_ms"] - runs["compile"]["step_ms"]
    ) / 1e3
    assert fp32_model is not None
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_inf = family.metric(fp32_model(x).final_estimate.float(), target)
    return {
        "steps": steps,
        "metric": family.metric_name,
        "runs": runs,
        "bf16_inference_metric_cost_db": bf16_inf - base["metric"],
    }
