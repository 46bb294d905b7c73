"""The generated smart-home command set: deterministic, valid, and non-IID the way homes are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fleet.smarthome import INTENTS, make_households, write_smarthome


def _read(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_same_seed_same_bytes_and_every_line_is_valid(tmp_path: Path) -> None:
    a = write_smarthome(tmp_path / "a", 4, seed=3)
    b = write_smarthome(tmp_path / "b", 4, seed=3)
    for fa, fb in zip(a, b, strict=True):
        assert (fa / "train.jsonl").read_bytes() == (fb / "train.jsonl").read_bytes()
    rows = _read(a[0] / "train.jsonl")
    assert len(rows) == 40
    for row in rows:
        assert isinstance(row["text"], str) and row["text"].strip()
        assert isinstance(row["label"], int) and 0 <= row["label"] < len(INTENTS)
    assert json.loads((tmp_path / "a" / "labels.json").read_text()) == list(INTENTS)
    assert len(_read(tmp_path / "a" / "test.jsonl")) == 20 * 20  # unseen households


def test_households_differ_in_words_and_label_mix(tmp_path: Path) -> None:
    homes = make_households(12, alpha=0.3, seed=1)
    assert len({h.rooms for h in homes}) == 12
    mixes = np.array([h.intent_weights for h in homes])  # (12, intents)
    assert np.allclose(mixes.sum(1), 1.0)
    # skewed: a typical home puts most of its commands on few intents
    assert float(np.median(np.sort(mixes, axis=1)[:, -3:].sum(1))) > 0.6
    folders = write_smarthome(tmp_path, 6, alpha=0.3, seed=1)
    vocab = [
        {w for row in _read(f / "train.jsonl") for w in str(row["text"]).split()} for f in folders
    ]
    shared = set.intersection(*vocab)
    assert all(len(v - shared) > 5 for v in vocab)  # each home has words of its own
