"""Layer-wise training schedules: what trains when, learning rates, errors, resume, DDP, CLI."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule
from lightning_unfold.training import (
    LayerwiseSchedule,
    SequentialSchedule,
    StagewiseSchedule,
    TwoStageSchedule,
)
from lightning_unfold.training.schedules import Scope
from lightning_unfold.training.study import study_trainer

ROOT = Path(__file__).resolve().parents[2]
PROBLEM = SparseRecovery(m=10, n=20, seed=0)


def _trainer(callbacks: list[Callback], **kw: Any) -> L.Trainer:
    """The library's quiet study trainer (no validation loop, no step limit unless given)."""
    return study_trainer(kw.pop("max_steps", -1), callbacks=callbacks, **kw)


def _data(**kw: Any) -> SyntheticDataModule:
    opts: dict[str, Any] = {"batch_size": 16, "train_batches": 4, "val_size": 64, "seed": 0}
    opts.update(kw)
    return SyntheticDataModule(PROBLEM, **opts)


def _module(variant: str = "lista_cp", depth: int = 3, **kw: Any) -> UnfoldedModule:
    torch.manual_seed(0)
    return UnfoldedModule(
        PROBLEM, paradigm="objective", variant=variant, depth=depth, lr=5e-3, **kw
    )


class Recorder(Callback):
    """Records, for every optimizer step, the stage, the group learning rates and which layers
    changed (by identity of the layer's tensors). Placed before the schedule in the list."""

    def __init__(self, schedule: LayerwiseSchedule) -> None:
        self.schedule = schedule
        self.steps: list[tuple[str, Scope, int, set[int], dict[int, float]]] = []
        self.round_start: dict[int, list[list[torch.Tensor]]] = {}

    def _snapshot(self, pl_module: Any) -> list[list[torch.Tensor]]:
        m = pl_module.model
        return [[p.detach().clone() for p in m.layer_parameters(k)] for k in range(1, m.depth + 1)]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        self._before = self._snapshot(pl_module)
        st = self.schedule.stage
        if st is not None:
            self.round_start.setdefault(st.layer, self._before)

    def on_before_optimizer_step(self, trainer: L.Trainer, pl_module: Any, optimizer: Any) -> None:
        self._lrs = {int(g["layer"]): float(g["lr"]) for g in optimizer.param_groups}

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        after = self._snapshot(pl_module)
        changed = {
            k + 1
            for k, (a, b) in enumerate(zip(self._before, after, strict=True))
            if any(not torch.equal(x, y) for x, y in zip(a, b, strict=True))
        }
        st = self.schedule.stage
        assert st is not None
        self.steps.append((st.name, st.scope, st.layer, changed, self._lrs))


def test_stagewise_trains_the_right_layers_with_age_decayed_rates() -> None:
    sched = StagewiseSchedule(patience=6, max_steps_per_stage=8, eval_every=2, lr=1e-2)
    rec = Recorder(sched)
    mod = _module()
    # unfolded layers start from identical values: value-based tracking would confuse them
    assert torch.equal(mod.model.layer_parameters(1)[0], mod.model.layer_parameters(2)[0])
    trainer = _trainer([rec, sched])
    trainer.fit(mod, _data())
    assert sched.done and len(sched.history) == 9
    assert [h["name"].split(" (")[0] for h in sched.history[:3]] == [
        "layer 1 / stage 1",
        "layer 1 / stage 2",
        "layer 1 / stage 3",
    ]
    assert all(1 <= h["steps"] <= 8 for h in sched.history)
    for _name, scope, k, changed, lrs in rec.steps:
        if scope is Scope.NEW:
            assert changed == {k}, (k, changed)
        else:
            assert k in changed and changed <= set(range(1, k + 1)), (k, changed)
        assert all(lrs[j] == 0.0 for j in range(k + 1, 4))
    # round 3, stage 3: layer j at 1e-2 * 0.02 * 0.3**(3 - j)
    lrs = next(lr for name, _s, k, _c, lr in rec.steps if k == 3 and "stage 3" in name)
    for j in (1, 2, 3):
        assert math.isclose(lrs[j], 1e-2 * 0.02 * 0.3 ** (3 - j), rel_tol=1e-12)
    # progress display and per-round curves
    assert float(trainer.callback_metrics["schedule/layer"]) == 3.0
    assert "schedule/nmse_db_layer/03" in trainer.callback_metrics
    assert sorted(sched.curves) == [1, 2, 3] and all(len(c) == 4 for c in sched.curves.values())
    assert mod.train_depth is None  # reset after fit


def test_round_decay_scales_each_round_and_keeps_the_age_decay() -> None:
    sched = StagewiseSchedule(patience=None, max_steps_per_stage=2, lr=1e-2, round_decay=0.5)
    rec = Recorder(sched)
    _trainer([rec, sched]).fit(_module(), _data())
    assert sched.done
    for name, _scope, k, _changed, lrs in rec.steps:
        c = {"stage 1": 1.0, "stage 2": 0.2, "stage 3": 0.02}[name.split(" / ")[1].split(" (")[0]]
        for j in range(1, k + 1):
            expected = 1e-2 * c * 0.5 ** (k - 1) * (0.3 ** (k - j) if c != 1.0 else 1.0)
            if c == 1.0 and j < k:
                expected = 0.0  # stage 1 trains the new layer alone
            assert math.isclose(lrs[j], expected, rel_tol=1e-12), (name, j, lrs[j], expected)
        assert math.isclose(lrs[0], 1e-2 * c * 0.5 ** (k - 1), rel_tol=1e-12)  # shared params


def test_stagewise_end_to_end_stage_trains_every_layer_at_one_rate() -> None:
    sched = StagewiseSchedule(
        patience=None,
        max_steps_per_stage=2,
        lr=1e-2,
        end_to_end_steps=3,
        end_to_end_lr_multiplier=0.1,
    )
    rec = Recorder(sched)
    _trainer([rec, sched]).fit(_module(), _data())
    assert sched.done and len(sched.history) == 3 * 3 + 1
    assert sched.history[-1]["scope"] == "all" and sched.history[-1]["steps"] == 3
    e2e = [(c, lrs) for _n, s, _k, c, lrs in rec.steps if s is Scope.ALL]
    assert len(e2e) == 3 and e2e[0][0] == {1, 2, 3}  # every layer moves
    assert all(math.isclose(lr, 1e-3, rel_tol=1e-12) for lr in e2e[0][1].values())  # no age decay
    assert StagewiseSchedule().final_stages(3) == []  # off by default: the reference protocol


def test_sequential_and_two_stage_plans() -> None:
    seq = SequentialSchedule(steps_per_layer=3, finetune_steps=2, finetune_lr_multiplier=0.5)
    rec = Recorder(seq)
    _trainer([rec, seq]).fit(_module(), _data())
    assert [(h["scope"], h["steps"]) for h in seq.history] == [("new", 3), ("prefix", 2)] * 3
    ft = next(lrs for _n, s, k, _c, lrs in rec.steps if s is Scope.PREFIX and k == 2)
    assert ft[1] == ft[2] == pytest.approx(5e-3 * 0.5) and ft[3] == 0.0

    warm = SequentialSchedule(steps_per_layer=3, layers=2, warm_start=True)
    rec = Recorder(warm)
    _trainer([rec, warm]).fit(_module(), _data())
    start1, start2 = rec.round_start[1], rec.round_start[2]
    assert not torch.equal(start2[0][0], start1[0][0])  # layer 1 trained in round 1 ...
    assert all(torch.equal(a, b) for a, b in zip(start2[0], start2[1], strict=True))  # ... copied

    two = TwoStageSchedule(epochs_per_layer=1, end_to_end_steps=5, end_to_end_lr_multiplier=0.1)
    rec = Recorder(two)
    _trainer([rec, two]).fit(_module(), _data())
    assert [(h["scope"], h["steps"]) for h in two.history] == [("new", 4)] * 3 + [("all", 5)]
    e2e = [(c, lrs) for _n, s, _k, c, lrs in rec.steps if s is Scope.ALL]
    assert len(e2e) == 5 and e2e[0][0] == {1, 2, 3}
    assert all(lr == pytest.approx(5e-4) for lr in e2e[0][1].values())


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: StagewiseSchedule(stage_multipliers=[1.0, 0.0]), r"stage_multipliers\[1\]"),
        (lambda: StagewiseSchedule(age_decay=1.5), r"age_decay must lie in \(0, 1\]"),
        (lambda: StagewiseSchedule(round_decay=1.5), r"round_decay must lie in \(0, 1\]"),
        (lambda: StagewiseSchedule(end_to_end_steps=0), "end_to_end_steps must be"),
        (lambda: SequentialSchedule(3, round_decay=0.0), "round_decay must be"),
        (lambda: SequentialSchedule(), "steps_per_layer or epochs_per_layer"),
        (lambda: SequentialSchedule(3, 1), "not both"),
        (lambda: TwoStageSchedule(3, end_to_end_steps=0), "end_to_end_steps must be"),
        (lambda: SequentialSchedule(3, lr_multiplier=-1.0), "lr_multiplier must be"),
    ],
)
def test_bad_arguments(make: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("module", "schedule", "match"),
    [
        (lambda: _module(tied=True), SequentialSchedule(2), "no per-layer parameters"),
        (
            lambda: UnfoldedModule(PROBLEM, paradigm="classical", depth=3),
            SequentialSchedule(2),
            "no per-layer parameters",
        ),
        (lambda: _module(), SequentialSchedule(2, layers=5), r"valid choices: layers in 1\.\.3"),
    ],
)
def test_misconfigured_fit(module: Any, schedule: LayerwiseSchedule, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _trainer([schedule]).fit(module(), _data())


@pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
def test_patience_needs_validation_data_and_ddp_needs_unused_parameters() -> None:
    mod = _module()
    loader = _data().train_dataloader()
    with pytest.raises(ValueError, match="needs validation data"):
        _trainer([StagewiseSchedule(patience=2)]).fit(mod, train_dataloaders=loader)
    dm = _data()
    dm.setup()
    sched = StagewiseSchedule(patience=2, max_steps_per_stage=2, eval_every=1, layers=1)
    # dataloaders given to fit() are read through the validation loop's public setup_data(),
    # which Lightning honours only with validation switched on
    trainer = _trainer([sched], limit_val_batches=1)
    trainer.fit(mod, train_dataloaders=loader, val_dataloaders=dm.val_dataloader())
    assert sched.done and sched.history[0]["best_loss"] is not None


@pytest.mark.parametrize("find_unused", [False, True])
def test_ddp_needs_unused_parameters_read_off_the_wrapped_model(find_unused: bool) -> None:
    """The check reads DDP's public ``find_unused_parameters`` on the wrapped model (one gloo
    process), not the strategy's private keyword arguments."""
    import socket
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        wrapped = DistributedDataParallel(_module(), find_unused_parameters=find_unused)
        trainer = SimpleNamespace(strategy=SimpleNamespace(model=wrapped))
        sched = StagewiseSchedule()
        if find_unused:
            sched._require_unused_parameters(trainer)  # type: ignore[arg-type]
        else:
            with pytest.raises(ValueError, match="find_unused_parameters=True"):
                sched._require_unused_parameters(trainer)  # type: ignore[arg-type]
    finally:
        dist.destroy_process_group()


class _Kill(Callback):
    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.at_step:
            raise RuntimeError("killed")


def _stagewise(restore_best: bool = False) -> StagewiseSchedule:
    return StagewiseSchedule(
        patience=4, max_steps_per_stage=7, eval_every=2, eval_batches=1, restore_best=restore_best
    )


class _StageEnds(Callback):
    """After the schedule (placed after it in the list): the held-out loss of the parameters each
    stage starts from and ends on, on the stage's own loss (truncated to its layer)."""

    def __init__(self, schedule: StagewiseSchedule) -> None:
        self.schedule = schedule
        self.start: list[float] = []
        self.end: list[float] = []
        self._index = -1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        st = self.schedule.stage
        if st is not None and self.schedule.stage_index != self._index:
            self._index = self.schedule.stage_index
            self.start.append(self.schedule.held_out_loss(trainer, pl_module, st.layer))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        if self.schedule.stage_index != self._index or self.schedule.done:
            layer = self.schedule.history[-1]["layer"]
            self.end.append(self.schedule.held_out_loss(trainer, pl_module, layer))


@pytest.mark.parametrize("restore_best", [True, False])
def test_restore_best_ends_every_stage_on_its_best_held_out_loss(restore_best: bool) -> None:
    # lr 0.3 is far too large for these thresholds and steps: the last iterate of a stage wanders
    # above the best one, which is what restore_best exists to undo
    sched = StagewiseSchedule(
        patience=6,
        max_steps_per_stage=12,
        eval_every=1,
        eval_batches=1,
        lr=0.3,
        restore_best=restore_best,
    )
    ends = _StageEnds(sched)
    _trainer([sched, ends]).fit(_module(), _data())
    assert sched.done and len(ends.end) == len(ends.start) == len(sched.history) == 9
    best = [h["best_loss"] for h in sched.history]
    if restore_best:
        # each stage ends on its best loss, never above where it started
        assert ends.end == pytest.approx(best, rel=1e-6)
        assert all(e <= s * (1 + 1e-6) for s, e in zip(ends.start, ends.end, strict=True))
        assert sched.best_params is None  # dropped once a stage is over
    else:
        # the last iterate: some stage ends measurably above its best
        assert any(e > b * 1.05 for e, b in zip(ends.end, best, strict=True))


def test_restore_best_needs_patience() -> None:
    with pytest.raises(ValueError, match=r"restore_best=True.*set patience"):
        _trainer([StagewiseSchedule(patience=None, restore_best=True)]).fit(_module(), _data())


@pytest.mark.parametrize(
    ("fresh_train", "restore_best"), [(True, False), (False, False), (False, True)]
)
def test_resume_mid_stage_matches_uninterrupted(
    tmp_path: Path, fresh_train: bool, restore_best: bool
) -> None:
    data = {"fresh_train": fresh_train, "train_size": 64}  # 4 steps per epoch either way
    full = _stagewise(restore_best)
    ref = _module()
    _trainer([full]).fit(ref, _data(**data))
    assert full.done

    def ckpt() -> ModelCheckpoint:  # every epoch's last step (4 steps per epoch)
        return ModelCheckpoint(
            dirpath=tmp_path, save_last=True, every_n_train_steps=4, save_top_k=0
        )

    first = _stagewise(restore_best)
    with pytest.raises(RuntimeError, match="killed"):
        _trainer([first, _Kill(at_step=14), ckpt()], enable_checkpointing=True).fit(
            _module(), _data(**data)
        )
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if "StagewiseSchedule" in k)
    assert saved["global_step"] == 12 and 0 < state["steps_in_stage"]  # killed mid-stage

    resumed = _stagewise(restore_best)
    mod = _module()
    _trainer([resumed, ckpt()], enable_checkpointing=True).fit(
        mod, _data(**data), ckpt_path=tmp_path / "last.ckpt"
    )
    assert resumed.done and resumed.history == full.history
    for a, b in zip(ref.parameters(), mod.parameters(), strict=True):
        assert torch.equal(a, b)


class _RankReport(Callback):
    def __init__(self, schedule: StagewiseSchedule, out: str) -> None:
        self.schedule, self.out = schedule, out

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        params = [p.detach().double().sum().item() for p in pl_module.parameters()]
        report = {"history": self.schedule.history, "params": params, "done": self.schedule.done}
        Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(report))


@pytest.mark.ddp
def test_ddp_spawn_two_processes_agree(tmp_path: Path) -> None:
    sched = StagewiseSchedule(patience=2, max_steps_per_stage=4, eval_every=2, layers=2)
    rec = Recorder(sched)  # asserts inside the workers would fail the run
    trainer = _trainer(
        [rec, sched, _RankReport(sched, str(tmp_path))],
        strategy="ddp_spawn_find_unused_parameters_true",
        devices=2,
    )
    trainer.fit(_module(), _data())
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["done"] and r1["done"]
    assert r0["history"] == r1["history"] and len(r0["history"]) == 6
    assert r0["params"] == r1["params"]


@pytest.mark.filterwarnings("ignore::jsonargparse._deprecated.JsonargparseDeprecationWarning")
@pytest.mark.parametrize(
    ("config", "cls", "variant"),
    [
        ("schedule_stagewise", StagewiseSchedule, "alista"),
        ("schedule_two_stage", TwoStageSchedule, "lista_cp"),
    ],
)
def test_yaml_config_builds_the_schedule(
    monkeypatch: pytest.MonkeyPatch, config: str, cls: type, variant: str
) -> None:
    from lightning_unfold.cli import UnfoldCLI

    monkeypatch.setattr("sys.argv", ["lightning-unfold"])
    cfg = ROOT / "examples" / "configs" / f"{config}.yaml"
    cli = UnfoldCLI(
        UnfoldedModule,
        SyntheticDataModule,
        args=["--config", str(cfg), "--trainer.logger=false"],
        run=False,
    )
    scheds = [cb for cb in cli.trainer.callbacks if isinstance(cb, LayerwiseSchedule)]  # type: ignore[attr-defined]
    assert len(scheds) == 1 and type(scheds[0]) is cls
    assert cli.model.hparams["variant"] == variant and cli.model.depth == 16


def test_lista_benchmark_tiny_preset(tmp_path: Path, load_example: Callable[[str], Any]) -> None:
    bench = load_example("lista_benchmark")
    bench.main(["--preset", "tiny", "--out", str(tmp_path)])
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results) == ["ista", "fista", "lista", "lista_cp", "lista_cpss", "alista"]
    for name, res in results.items():
        assert set(res) == {"nmse_db", "train_seconds"}
        assert len(res["nmse_db"]) == 4 and all(math.isfinite(v) for v in res["nmse_db"])
        assert (res["train_seconds"] > 0) == (name not in ("ista", "fista"))
    assert results["fista"]["nmse_db"][-1] < results["ista"]["nmse_db"][-1]
    info = json.loads((tmp_path / "run_info.json").read_text())
    assert [len(info["stages"][m]) for m in ("lista", "alista")] == [12, 12]  # 4 rounds x 3
    assert (tmp_path / "nmse_vs_layer.png").stat().st_size > 0


def test_the_plan_and_its_learning_rates_need_no_trainer() -> None:
    """The plan is pure: stages and per-layer learning rates from the arguments and the depth."""
    from lightning_unfold.training.plan import layer_lr

    sched = StagewiseSchedule(patience=5, max_steps_per_stage=9, end_to_end_steps=4)
    stages = sched.build(3)
    assert [(st.layer, st.scope) for st in stages[:3]] == [
        (1, Scope.NEW),
        (1, Scope.PREFIX),
        (1, Scope.PREFIX),
    ]
    assert len(stages) == 3 * 3 + 1 and stages[-1].scope is Scope.ALL and stages[-1].max_steps == 4
    opts = sched.options
    assert opts.age_decay == 0.3  # the stage-wise schedule's own default
    round3_stage2 = stages[7]
    assert round3_stage2.layer == 3 and round3_stage2.scope is Scope.PREFIX
    lrs = [layer_lr(round3_stage2, j, 1.0, opts) for j in range(1, 4)]
    assert lrs == pytest.approx([0.2 * 0.3**2, 0.2 * 0.3, 0.2])
    assert layer_lr(stages[6], 2, 1.0, opts) == 0.0  # round 3's first stage trains layer 3 only
    assert layer_lr(stages[-1], 1, 1.0, opts) == pytest.approx(0.02)  # end to end: no age decay
    two = TwoStageSchedule(steps_per_layer=2, epochs_per_layer=None, end_to_end_epochs=3)
    with pytest.raises(ValueError, match="give it in steps"):
        two.build(2)
    assert two.build(2, steps_per_epoch=5)[-1].max_steps == 15


def test_shared_options_one_dataclass_from_python_or_a_mapping() -> None:
    from lightning_unfold.training import ScheduleOptions

    a = SequentialSchedule(steps_per_layer=3, options=ScheduleOptions(eval_batches=2, lr=0.1))
    b = SequentialSchedule(steps_per_layer=3, options={"eval_batches": 2}, lr=0.1)
    assert a.options == b.options and a.eval_batches == 2 and b.lr == 0.1
    assert a.options.age_decay == 1.0
    with pytest.raises(TypeError, match="Did you mean restore_best"):
        SequentialSchedule(steps_per_layer=3, restore_bset=True)
    with pytest.raises(ValueError, match="round_decay must lie in"):
        ScheduleOptions(round_decay=1.5)
