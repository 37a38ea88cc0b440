"""The shared study skeleton: timing, the quiet trainer and atomic results."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from lightning_unfold.training.study import (
    DEVICES,
    Stopwatch,
    count_parameters,
    elapsed_printer,
    fit_timed,
    flush_denormals,
    match_classical,
    median_cpu_time,
    median_time,
    parse_study_args,
    per_item_times,
    stopwatch,
    study_accelerator,
    study_config,
    study_parser,
    study_trainer,
    write_json,
)


def test_median_time_measures_the_call_and_runs_without_grad() -> None:
    calls: list[bool] = []

    def fn() -> None:
        calls.append(torch.is_grad_enabled())
        time.sleep(0.01)

    t = median_time(fn, repeats=3)
    assert len(calls) == 4  # one warm-up + three timed
    assert not any(calls)
    assert 0.009 <= t < 1.0
    assert len(calls) == 4
    median_time(fn, repeats=1, warmup=False)
    assert len(calls) == 5


def test_flush_denormals_zeroes_subnormals_inside_and_restores_after() -> None:
    tiny = torch.finfo(torch.float32).tiny
    sub = torch.tensor([tiny / 8.0], dtype=torch.float32)  # a subnormal float32
    assert float(sub) != 0.0
    with flush_denormals() as supported:
        inside = float(sub * 1.0)
    if supported:  # x86 with SSE3, ARM: the product of a subnormal is flushed to 0
        assert inside == 0.0
    assert float(sub * 1.0) == pytest.approx(tiny / 8.0)  # switched off again after the block
    with pytest.raises(RuntimeError, match="boom"), flush_denormals():
        raise RuntimeError("boom")
    assert float(sub * 1.0) != 0.0  # and after an exception too


def test_median_time_rejects_no_repeats() -> None:
    with pytest.raises(ValueError, match="repeats"):
        median_time(lambda: None, repeats=0)
    with pytest.raises(ValueError, match="repeats"):
        median_cpu_time(lambda: None, repeats=0)


def test_median_cpu_time_counts_computation_not_waiting() -> None:
    """Sleeping costs wall time but (almost) no CPU time; a busy loop costs CPU time."""
    calls: list[bool] = []

    def sleep() -> None:
        calls.append(torch.is_grad_enabled())
        time.sleep(0.03)

    def busy() -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:
            pass

    assert median_cpu_time(sleep, repeats=3) < 0.015
    assert len(calls) == 4 and not any(calls)  # warm-up + three, without grad
    assert median_cpu_time(busy, repeats=3) >= 0.02


def test_study_trainer_is_quiet_and_overridable() -> None:
    trainer = study_trainer(7)
    assert trainer.max_steps == 7
    assert trainer.logger is None
    assert trainer.checkpoint_callback is None
    assert not trainer.progress_bar_callback
    assert trainer.limit_val_batches == 0
    assert study_trainer(3, limit_val_batches=2).limit_val_batches == 2
    with pytest.raises(ValueError, match="max_steps"):
        study_trainer(0)


def test_write_json_is_atomic_and_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = write_json(tmp_path / "run", "results.json", {"a": [1, 2]})
    assert json.loads(target.read_text()) == {"a": [1, 2]}

    class Unserialisable:
        def __repr__(self) -> str:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_json(tmp_path / "run", "results.json", {"a": Unserialisable()})
    assert json.loads(target.read_text()) == {"a": [1, 2]}
    assert not list((tmp_path / "run").glob("*.tmp"))


def test_plot_layer_curves_draws_every_method_with_labelled_axes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lightning_unfold.training.study import plot_layer_curves

    seen: dict[str, object] = {}
    real_close = plt.close

    def keep(fig: object) -> None:  # look at the figure before it is closed
        ax = fig.axes[0]  # type: ignore[attr-defined]
        seen["labels"] = [line.get_label() for line in ax.get_lines()]
        seen["styles"] = [line.get_linestyle() for line in ax.get_lines()]
        seen["axes"] = (ax.get_xlabel(), ax.get_ylabel())
        seen["yscale"] = ax.get_yscale()
        real_close(fig)

    monkeypatch.setattr(plt, "close", keep)
    path = tmp_path / "curves.png"
    plot_layer_curves(
        {"ista": [-1.0, -2.0], "lista": [-3.0, -6.0]},
        path,
        title="t",
        ylabel="NMSE (dB)",
        dashed={"ista"},
    )
    assert path.stat().st_size > 5000
    assert seen["labels"] == ["ista", "lista"] and seen["styles"] == ["--", "-"]
    assert seen["axes"] == ("layer / iteration k", "NMSE (dB)") and seen["yscale"] == "linear"
    plot_layer_curves({"rpca": [0.5, 0.01]}, path, title="t", ylabel="relative error", logy=True)
    assert seen["yscale"] == "log"


@dataclass(frozen=True)
class _Preset:
    depth: int
    sizes: tuple[int, ...]


def test_parse_study_args_applies_threads_and_device_is_validated() -> None:
    parser = study_parser("A study.\n\nMore text.", {"tiny": 0, "cpu": 1}, out="runs/x")
    assert parser.description == "A study."
    before = torch.get_num_threads()
    try:
        args = parse_study_args(parser, ["--preset", "tiny", "--threads", "1"])
        assert (args.preset, args.out, args.threads) == ("tiny", Path("runs/x"), 1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        assert parse_study_args(parser, []).threads is None
        assert torch.get_num_threads() == 2  # no --threads: left alone
    finally:
        torch.set_num_threads(before)
    assert not hasattr(parser.parse_args([]), "device")
    with_device = study_parser(None, ["tiny"], out=None, default_preset="tiny", device=True)
    args = with_device.parse_args(["--device", "cpu"])
    assert args.device == "cpu" and args.out is None
    assert with_device.parse_args([]).device == "auto"
    with pytest.raises(SystemExit):
        with_device.parse_args(["--device", "tpu"])


def test_study_accelerator_maps_devices_and_rejects_others() -> None:
    assert study_accelerator("cpu") == "cpu"
    assert study_accelerator("cuda") == "gpu"
    assert study_accelerator("auto") == ("gpu" if torch.cuda.is_available() else "cpu")
    assert set(DEVICES) == {"auto", "cpu", "cuda"}
    with pytest.raises(ValueError, match="auto"):
        study_accelerator("gpu")


def test_elapsed_printer_stamps_messages(capsys: pytest.CaptureFixture[str]) -> None:
    log = elapsed_printer(time.perf_counter() - 12.0)
    log("trained")
    out = capsys.readouterr().out
    stamp, msg = out.split("s ", 1)
    assert 12.0 <= float(stamp) < 60.0 and msg == "trained\n"


def test_study_config_records_preset_fields_extras_and_machine() -> None:
    import os

    config = study_config("tiny", _Preset(3, (1, 2)), problem={"m": 4})
    assert list(config) == ["preset", "depth", "sizes", "problem", "torch_threads", "cpu_count"]
    assert config["preset"] == "tiny" and config["depth"] == 3 and config["sizes"] == (1, 2)
    assert config["problem"] == {"m": 4}
    assert config["torch_threads"] == torch.get_num_threads()
    assert config["cpu_count"] == os.cpu_count()
    with pytest.raises(TypeError, match="dataclass"):
        study_config("tiny", {"depth": 3})
    with pytest.raises(TypeError, match="dataclass"):
        study_config("tiny", _Preset)


def test_count_parameters_counts_trainable_or_all() -> None:
    net = torch.nn.Linear(3, 2)
    assert count_parameters(net) == 8
    net.bias.requires_grad_(False)
    assert count_parameters(net) == 6
    assert count_parameters(net, trainable_only=False) == 8


def test_stopwatch_measures_wall_and_cpu_even_on_error() -> None:
    with stopwatch() as clock:
        time.sleep(0.03)
    assert clock.wall_s >= 0.03 and clock.cpu_s < 0.02
    with pytest.raises(RuntimeError, match="boom"), stopwatch() as failed:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.02:
            pass
        raise RuntimeError("boom")
    assert failed.cpu_s >= 0.02 and failed.wall_s >= failed.cpu_s * 0.5
    assert Stopwatch() == Stopwatch(0.0, 0.0)


def test_fit_timed_trains_the_module_for_max_steps_and_times_it() -> None:
    import lightning as L

    from lightning_unfold import SparseRecovery, SyntheticDataModule, UnfoldedModule

    problem = SparseRecovery(m=8, n=16, sparsity=0.2, rho=0.05, seed=0)
    L.seed_everything(0, verbose=False)
    module = UnfoldedModule(problem, paradigm="hyperparameters", depth=2, lr=1e-2)
    before = [q.detach().clone() for q in module.parameters()]
    data = SyntheticDataModule(problem, batch_size=4, train_batches=10, val_size=4, seed=0)
    clock = fit_timed(module, data, 3)
    assert isinstance(clock, Stopwatch) and clock.wall_s > 0.0 and clock.cpu_s > 0.0
    assert module.trainer.global_step == 3
    after = list(module.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))


def test_per_item_times_divides_the_median_by_the_items() -> None:
    def busy() -> None:
        t0 = time.process_time()
        while time.process_time() - t0 < 0.01:
            pass

    times = per_item_times(busy, 4, unit="channel", repeats=2)
    assert list(times) == ["ms_per_channel", "cpu_ms_per_channel"]
    assert times["cpu_ms_per_channel"] >= 10.0 / 4
    assert times["ms_per_channel"] >= 0.9 * times["cpu_ms_per_channel"]
    with pytest.raises(ValueError, match="n_items"):
        per_item_times(busy, 0)


def test_match_classical_finds_the_first_iteration_at_the_goal() -> None:
    built: list[int] = []

    def classical(k: int):  # builds a "solver" of k iterations
        built.append(k)
        return lambda x: time.sleep(0.002 * k * x)

    learned = lambda x: time.sleep(0.002 * x)  # noqa: E731
    nmse = [-1.0, -3.0, -5.0, -7.0]  # lower is better
    entry = match_classical(learned, classical, 1, nmse, -4.5, 2, higher_is_better=False, repeats=1)
    assert list(entry) == [
        "learned_layers",
        "learned_ms",
        "classical_iterations",
        "classical_ms",
        "iteration_ratio",
        "time_ratio",
    ]
    assert entry["classical_iterations"] == 3 and built == [3]
    assert entry["iteration_ratio"] == 1.5 and entry["learned_layers"] == 2
    assert entry["time_ratio"] == pytest.approx(entry["classical_ms"] / entry["learned_ms"])
    assert entry["time_ratio"] > 1.5  # three sleeps against one
    sdr = [1.0, 2.0, 3.0]  # higher is better; the goal met exactly counts as reached
    hit = match_classical(learned, classical, 1, sdr, 2.0, 1, higher_is_better=True, label="fista")
    assert hit["fista_iterations"] == 2 and "fista_ms" in hit
    miss = match_classical(learned, classical, 1, sdr, 3.5, 1, higher_is_better=True, repeats=1)
    assert miss["classical_iterations"] is None and built == [3, 2]  # never built
    assert miss["classical_ms"] is miss["iteration_ratio"] is miss["time_ratio"] is None
    with pytest.raises(ValueError, match="depth"):
        match_classical(learned, classical, 1, sdr, 1.0, 0, higher_is_better=True)


def test_count_parameters_as_real_counts_a_complex_entry_twice() -> None:
    net = torch.nn.Linear(3, 2, dtype=torch.complex64)
    assert count_parameters(net) == 8
    assert count_parameters(net, as_real=True) == 16
    net.bias.requires_grad_(False)
    assert count_parameters(net, as_real=True) == 12
    assert count_parameters(net, trainable_only=False, as_real=True) == 16
    assert count_parameters(torch.nn.Linear(3, 2), as_real=True) == 8  # real: unchanged
