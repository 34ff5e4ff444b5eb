"""Training, checkpoints and determinism, on tiny planted data with the light VBPR backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tru.checkpoint import CheckpointError, load_run, save_run
from tru.config import load_config
from tru.data.dataset import load_dataset, write_dataset
from tru.eval.evaluator import evaluate
from tru.models import build_backbone
from tru.models.pop import MostPopular
from tru.train.trainer import Trainer

from .conftest import make_tiny_frame


def _fit(ds, epochs: int = 25, seed: int = 7, backbone: str = "vbpr"):
    cfg = load_config(
        backbone,
        overrides={
            "epochs": epochs,
            "seed": seed,
            "train_batch_size": 256,
            "stopping_step": 10,
            "device": "cpu",
        },
    )
    model = build_backbone(backbone, ds, cfg)
    return model, cfg, Trainer(model, ds, cfg, log=lambda _s: None).fit()


def test_training_beats_popularity(tiny) -> None:
    _, _, result = _fit(tiny)
    pop = evaluate(MostPopular(tiny), tiny, "test")
    assert result.test["recall@20"] > pop["recall@20"] + 0.05
    assert result.test["ndcg@20"] > pop["ndcg@20"]


def test_training_is_deterministic_on_cpu(tiny) -> None:
    m1, _, r1 = _fit(tiny, epochs=3)
    m2, _, r2 = _fit(tiny, epochs=3)
    for (k, a), b in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(a, b), k
    assert r1.test == r2.test
    m3, _, _ = _fit(tiny, epochs=3, seed=8)
    assert not torch.equal(m1.user_embedding.weight, m3.user_embedding.weight)


def test_early_stopping_keeps_best(tiny) -> None:
    cfg = load_config(
        "vbpr",
        overrides={
            "epochs": 200,
            "seed": 1,
            "stopping_step": 2,
            "train_batch_size": 256,
            "learning_rate": 0.05,
        },
    )
    model = build_backbone("vbpr", tiny, cfg)
    result = Trainer(model, tiny, cfg, log=lambda _s: None).fit()
    assert result.stopped_early and result.epochs_run < 200
    assert result.epochs_run == result.best_epoch + 1 + 2
    assert evaluate(model, tiny, "valid")["recall@20"] == pytest.approx(result.best_valid["recall@20"])


def test_checkpoint_roundtrip_and_refusals(tiny, tmp_path) -> None:
    model, cfg, result = _fit(tiny, epochs=2)
    run = save_run(tmp_path / "run", model, cfg, tiny, metrics={"test": result.test})
    loaded = load_run(run, tiny)
    assert evaluate(loaded.model, tiny, "test") == pytest.approx(result.test)
    # another dataset: refused with the fingerprint named
    df, feats = make_tiny_frame(seed=5)
    write_dataset(tmp_path / "other", "other", df, feats)
    other = load_dataset(tmp_path / "other", validate=False)
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_run(run, other)
    with pytest.raises(CheckpointError, match="embedding_size"):
        load_run(run, tiny, config_overrides={"embedding_size": 32})
    # a pickled (unsafe) object is refused by weights_only loading
    torch.save({"format_version": 1, "evil": np.random.default_rng(0)}, run / "model.pt")
    with pytest.raises(CheckpointError, match="weights_only"):
        load_run(run, tiny)
