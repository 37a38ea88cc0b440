from __future__ import annotations

from typing import Any

import lightning as L
import pytest


@pytest.fixture
def quiet_trainer() -> Any:
    def make(**kw: Any) -> L.Trainer:
        opts: dict[str, Any] = dict(
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        opts.update(kw)
        return L.Trainer(**opts)

    return make
