"""The descent study's tiny preset runs and writes results.json in the issue's schema."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_descent_study_tiny_preset(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location(
        "descent_study", ROOT / "examples" / "descent_study.py"
    )
    assert spec is not None and spec.loader is not None
    study = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = study  # dataclasses look their module up there
    spec.loader.exec_module(study)
    study.main(["--preset", "tiny", "--out", str(tmp_path)])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res) == {"in_distribution", "perturbation", "out_of_distribution"}
    K = study.PRESETS["tiny"].depth
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
