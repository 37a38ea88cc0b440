"""The benchmark suite (``python -m benchmarks``): its tiny preset end to end, and registration."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import REGISTRY, Family, register  # noqa: E402
from benchmarks.__main__ import main  # noqa: E402


def _finite_positive(*values: Any) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values)


def test_tiny_preset_writes_the_tables(tmp_path: Path) -> None:
    assert (
        main(["--preset", "tiny", "--out", str(tmp_path), "--sections", "layer,step,inference"])
        == 0
    )
    res = json.loads((tmp_path / "results.json").read_text())
    assert {"sparse", "rpca"} <= set(res) and res["env"]["preset"] == "tiny"
    for fam in ("sparse", "rpca"):
        layer, step, inf = (res[fam][k] for k in ("layer", "step", "inference"))
        assert _finite_positive(layer["ratio_fwd"], layer["ratio_fwd_bwd"], *layer["ms"].values())
        assert _finite_positive(step["ratio"], *step["bare_ms"].values())
        assert set(step["lightning_ms"]) == {
            "step",
            "data + loop",
            "forward + loss",
            "backward",
            "optimizer + projection + logging + hooks",
        }
        # the breakdown's parts fit in the step they break down
        assert (
            sum(v for k, v in step["bare_ms"].items() if k != "step")
            <= step["bare_ms"]["step"] * 1.01
        )
        assert math.isfinite(inf["unfolded"]["metric"]) and inf["reference"]["ms_per_instance"] > 0
        for row in inf["classical"].values():
            k = row["iterations_to_match"]
            assert k is None or (k >= 1 and row["ms_per_instance"] > 0)
    md = (tmp_path / "results.md").read_text()
    for title in ("matmul floor", "bare PyTorch loop", "equal accuracy"):
        assert title in md
    # classical ISTA initialisation: the untrained-then-briefly-trained model is no worse than
    # the classical solver at the same depth
    sparse = res["sparse"]["inference"]
    assert sparse["unfolded"]["metric"] <= sparse["classical"]["ista"]["metric_at_K"] + 0.5


@pytest.mark.ddp
def test_tiny_ddp_throughput_section(tmp_path: Path) -> None:
    main(["--preset", "tiny", "--out", str(tmp_path), "--sections", "ddp", "--families", "sparse"])
    ddp = json.loads((tmp_path / "results.json").read_text())["sparse"]["ddp"]
    assert _finite_positive(ddp["ratio"], ddp["ratio_vs_2_threads"], *ddp["samples_per_s"].values())
    assert "2 procs ÷ 1 proc" in (tmp_path / "results.md").read_text()


def test_registering_a_family_is_checked() -> None:
    sparse = REGISTRY["sparse"]
    with pytest.raises(ValueError, match="already registered"):
        register(sparse)
    bad = Family(
        name="bad",
        sizes={"tiny": {"depth": 2}},
        make_problem=sparse.make_problem,
        module_kwargs=sparse.module_kwargs,
        layer_case=sparse.layer_case,
        classical=(),
        metric=sparse.metric,
    )
    with pytest.raises(ValueError, match=re.escape("lack {'batch'}")):
        register(bad)
    assert "bad" not in REGISTRY
    with pytest.raises(SystemExit, match="valid: layer, step"):
        main(["--sections", "layers"])


def test_lista_benchmark_medium_preset_fits_an_hour_and_follows_the_schedule(
    load_example: Callable[[str], Any],
) -> None:
    bench = load_example("lista_benchmark")
    # the estimate reproduces the small preset's measured 567-585 s from below its worst case
    assert 567 <= bench.worst_case_seconds("small") <= 1.3 * 585
    assert bench.worst_case_seconds("medium") <= 60 * 60
    for name in ("lista", "lista_cp", "lista_cpss", "alista"):
        sched = bench.load_config(name)["schedule"]
        assert sched["medium"]["max_steps_per_stage"] > sched["small"]["max_steps_per_stage"]
    with pytest.raises(ValueError, match="standard-size presets"):
        bench.worst_case_seconds("tiny")


# -- python -m benchmarks efficiency ---------------------------------------------------------------
#: the families registered when the efficiency table was written: each has a row
_TABLE_FAMILIES = (
    "ista",
    "fista",
    "admm_lasso",
    "iht",
    "rpca",
    "wmmse",
    "soft_ic",
    "projected_gradient",
    "hybrid_pga",
    "admm_tv",
    "nmf",
    "ista_rpca",
    "fista_rpca",
    "corona",
    "mean_field_crf",
    "hqs_deblur",
)


@pytest.mark.slow  # about 6 s on a quiet machine: twelve rows, each trained and matched
def test_efficiency_tiny_preset_matches_every_row(tmp_path: Path) -> None:
    import logging

    from benchmarks.efficiency import ROWS

    lightning_log, threads = logging.getLogger("lightning.pytorch"), torch.get_num_threads()
    level = lightning_log.level
    assert main(["efficiency", "--preset", "tiny", "--out", str(tmp_path), "--threads", "1"]) == 0
    # it runs in-process here: the caller's logging and threads are left as they were (muting
    # Lightning's logger for good made later tests that read its messages fail)
    assert lightning_log.level == level and torch.get_num_threads() == threads
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["env"]["preset"] == "tiny" and set(res["rows"]) == set(ROWS)
    for name, row in res["rows"].items():
        better = (lambda a, b: a >= b) if row["higher_is_better"] else (lambda a, b: a <= b)
        goal = row["learned"]["metric_at_K"]
        assert math.isfinite(goal), name
        assert row["learned"]["curve"][row["depth"]] == goal
        assert _finite_positive(*row["learned"]["time_per_instance"].values())
        for bb in row["black_box"].values():  # the family's network, about the asked size
            assert bb["params"] > 0 and math.isfinite(bb["metric"])
        for label, c in row["classical"].items():
            k, head = c["iterations_to_match"], c["curve_head"]
            if k is None:  # never: its best falls short of the learned model's
                assert not better(c["best"], goal) and c["wall_ratio"] is None
                assert 1 <= c["plateau_iteration"] <= c["max_it"]
            else:  # the first iteration that reaches the goal
                assert 1 <= k <= c["max_it"] and c["iteration_ratio"] == k / row["depth"]
                if k < len(head):
                    assert better(head[k], goal), (name, label)
                assert all(not better(v, goal) for v in head[1:k]), (name, label)
                assert _finite_positive(c["wall_ratio"], c["cpu_ratio"])
            assert _finite_positive(*c["time_at_K_per_instance"].values())
    md = (tmp_path / "results.md").read_text()
    assert "“over 50 times faster than Fast-ISTA”" in md and "ADMM-CSNet" in md
    assert "may be 20 times faster than ISTA" in md
    assert "“can be 1000 times faster than TV-based deblurring”" in md
    # every family known when the table was written has a row
    assert not set(_TABLE_FAMILIES) & set(res["uncovered"])


def test_efficiency_rows_are_checked_and_new_families_are_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import efficiency, efficiency_rows  # noqa: F401  (rows registered)
    from benchmarks.efficiency import Classical, EfficiencyRow, register_row, uncovered_families
    from lightning_unfold.algorithms import FAMILIES

    ok = Classical("ISTA", "ista")
    with pytest.raises(ValueError, match="already registered"):
        register_row(EfficiencyRow("lista", "LISTA", "lista", ("ista",), (ok,)))
    with pytest.raises(ValueError, match=r"no config .nope.*valid: .*lista_cp"):
        register_row(EfficiencyRow("x", "X", "nope", ("ista",), (ok,)))
    with pytest.raises(ValueError, match="registered classical solvers, got \\['istaa'\\]"):
        register_row(EfficiencyRow("x", "X", "lista", ("ista",), (Classical("I", "istaa"),)))
    with pytest.raises(ValueError, match="unknown presets \\['gpu'\\]"):
        register_row(EfficiencyRow("x", "X", "lista", ("ista",), (ok,), presets={"gpu": {}}))
    assert "x" not in efficiency.ROWS
    monkeypatch.setitem(FAMILIES, "new_family", FAMILIES["ista"])
    assert "new_family" in uncovered_families()
    md = efficiency.to_markdown(
        {
            "env": {"preset": "tiny", "torch": "", "threads": 1, "cpus": 1, "load_before": 0},
            "rows": {},
            "uncovered": uncovered_families(),
        }
    )
    assert "without an efficiency row" in md and "new_family" in md
    with pytest.raises(SystemExit, match="valid: lista, lista_cp"):
        main(["efficiency", "--rows", "listaa"])
