"""The descent study's tiny presets (both parts) run and write their results and plots."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 24 small models and one again: about 11 s of one quiet core
def test_descent_study_regime_tiny_preset(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("descent_study")
    summary = study.main(["--preset", "tiny", "--out", str(tmp_path)])
    preset = study.PRESETS["tiny"]
    K, seeds = preset.depth, [str(s) for s in preset.seeds]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["summary"] == json.loads(json.dumps(summary))
    per_seed = res["per_seed"]
    assert set(per_seed) == set(preset.families)
    for variants in per_seed.values():
        assert set(variants) == set(study.VARIANTS)
        for runs in variants.values():
            assert sorted(runs) == sorted(seeds)
            for r in runs.values():
                d = r["in_distribution"]
                assert len(d["nmse_db"]) == K + 1 and len(d["ratio"]) == K
                assert set(r["observation"]) == {f"{v:g}" for v in study.OBS_DELTAS[1:]}
                assert set(r["iterate"]) == {f"{v:g}" for v in study.ITER_BETAS[1:]}
                assert set(r["out_of_distribution"]) == {
                    "dictionary",
                    *(f"snr_{v:g}db" for v in study.OOD_SNRS_DB),
                }
                for group in ("observation", "iterate"):
                    for st in r[group].values():
                        assert all(0.0 <= f <= 1.0 for f in st["descending_fraction"])
                assert isinstance(r["check"]["passed"], bool)
                assert set(r["check"]["largest_ratio"]) == {"0", "0.01", "0.1"}
                assert set(r["check_paper"]["overall"]) == {
                    "0",
                    *(f"{b:g}" for b in study.CHECK_BETAS),
                }
    for fam, variants in summary.items():
        for variant, entry in variants.items():
            ratio = entry["in_distribution"]["ratio"]
            # the summary is the mean and spread of the per-seed curves
            runs = [per_seed[fam][variant][s]["in_distribution"]["ratio"] for s in seeds]
            assert ratio["mean"] == pytest.approx(
                [sum(v) / len(v) for v in zip(*runs, strict=True)]
            )
            assert all(lo <= hi for lo, hi in zip(ratio["min"], ratio["max"], strict=True))
            assert 0.0 <= entry["layers_not_descending"]["mean"][0] <= 1.0
    for png in ("regime_layers", "regime_robustness"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5000
    details = json.loads((tmp_path / "details.json").read_text())
    assert details["cpu_s"] > 0 and set(details["training"]) == set(preset.families)
    n_models = len(preset.families) * len(study.VARIANTS) * len(seeds)
    assert len(list((tmp_path / "models").glob("*.pt"))) == n_models
    # --merge adds (or retrains) some arms and keeps the others' results
    old = per_seed["lista_cp"]["end_to_end"]
    args = ["--preset", "tiny", "--out", str(tmp_path), "--merge", "--families", "lista"]
    study.main([*args, "--variants", "constrained_noise", "--seeds", "0"])
    merged = json.loads((tmp_path / "per_seed.json").read_text())
    assert merged["lista_cp"]["end_to_end"] == old
    assert merged["lista"]["constrained_noise"]["0"] == per_seed["lista"]["constrained_noise"]["0"]


def test_descent_study_rejects_unknown_family_and_variant(
    load_example: Callable[[str], Any],
) -> None:
    study = load_example("descent_study")
    problem = study.SparseRecovery(m=8, n=16, seed=0)
    with pytest.raises(ValueError, match="valid"):
        study.regime_module("fista", "end_to_end", problem, study.PRESETS["tiny"])
    with pytest.raises(ValueError, match="valid"):
        study.regime_module("lista", "sequential", problem, study.PRESETS["tiny"])


def test_descent_study_safeguards_tiny_preset(
    tmp_path: Path, load_example: Callable[[str], Any]
) -> None:
    study = load_example("descent_study")
    study.main(["--part", "safeguards", "--preset", "tiny", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res) == {"in_distribution", "perturbation", "out_of_distribution"}
    K = study.SAFEGUARD_PRESETS["tiny"].depth
    assert set(res["in_distribution"]) == set(study.MODELS)
    for r in res["in_distribution"].values():
        assert set(r) == {"nmse_db", "ratio", "descending_fraction"}
        assert len(r["nmse_db"]) == K + 1 and len(r["ratio"]) == len(r["descending_fraction"]) == K
    for per_beta in res["perturbation"].values():
        assert set(per_beta) == {"0.01", "0.1", "1", "10", "100", "1000"}
        assert all(len(v) == K for v in per_beta.values())
    assert set(res["out_of_distribution"]) == set(study.SETTINGS)
    for models in res["out_of_distribution"].values():
        assert len(models) == 2 * len(study.MODELS)
        for name, r in models.items():
            assert set(r) == {"nmse_db", "fallback_fraction", "kkt_after_continue"}
            assert isinstance(r["kkt_after_continue"], float)
            assert len(r["fallback_fraction"]) == (K if name.endswith("_safeguarded") else 0)
    for png in ("in_distribution", "perturbation", "out_of_distribution"):
        assert (tmp_path / f"{png}.png").stat().st_size > 5000
    details = json.loads((tmp_path / "details.json").read_text())
    assert "timing_ms" in details and "lista_cp_safeguarded" in details["timing_ms"]
    # the fallback fractions of all three mu rules, the study's own rule among them
    for setting, models in details["out_of_distribution"].items():
        for name, extra in models.items():
            by_rule = extra["fallback_fraction_by_rule"]
            assert set(by_rule) == {"ema", "geometric", "recent"}
            assert all(len(v) == K and all(0.0 <= f <= 1.0 for f in v) for v in by_rule.values())
            own = res["out_of_distribution"][setting][name]["fallback_fraction"]
            assert by_rule[study.MU_UPDATE] == own
