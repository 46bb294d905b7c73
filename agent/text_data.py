"""Text on the device: `train.jsonl` / `test.jsonl` tokenised with the model's own tokenizer.

A line is one JSON object `{"text": "...", "label": <int>}`. The tokenizer is the artifacts'
`tokenizer.json` (verified by sha256 like every artifact) run by `tokenizers`, the Rust
tokenizer: no torch, no transformers on the device. Output is what a text model's step graph eats:

    ids     (n, max_length) int64, [CLS] ... [SEP] then [PAD] = 0 (the model masks ids == 0)
    labels  (n,) int64 in [0, num_classes)

A data folder is untrusted input: the file size is bounded before reading, every line is checked
(JSON object, a non-empty string `text` of bounded length, an integer `label` in range), and every
error names the file and line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from protocol.errors import DataError

__all__ = [
    "MAX_TEXT_CHARS",
    "MAX_TEXT_FILE_BYTES",
    "TEXT_TEST_FILE",
    "TEXT_TRAIN_FILE",
    "TextTokenizer",
    "load_text_split",
]

TEXT_TRAIN_FILE = "train.jsonl"
TEXT_TEST_FILE = "test.jsonl"
MAX_TEXT_FILE_BYTES = 64 << 20  # a device's own commands, not a corpus
MAX_TEXT_CHARS = 2_000  # one command or message; longer is truncated by tokens anyway


class TextTokenizer:
    """`tokenizer.json` with fixed-length truncation and padding (pad id 0)."""

    def __init__(self, path: Path, max_length: int) -> None:
        if max_length < 2:
            raise DataError(f"max_length must be >= 2 tokens, got {max_length}")
        try:
            from tokenizers import Tokenizer  # the device's text extra; Rust, no torch
        except ImportError as exc:
            raise DataError(
                "this model reads text: install the tokenizer with pip install 'fleetlearn[agent]'"
            ) from exc
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception subclasses
            raise DataError(f"{path}: not a readable tokenizer.json: {exc}") from exc
        tokenizer.enable_truncation(max_length)
        tokenizer.enable_padding(length=max_length, pad_id=0)
        self._tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        """(len(texts), max_length) int64 token ids."""
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.zeros((len(texts), self.max_length), np.int64)
        for row, enc in enumerate(encodings):
            ids[row] = enc.ids
        return ids


def _check_line(record: Any, where: str, num_classes: int) -> tuple[str, int]:
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object with 'text' and 'label'")
    text, label = record.get("text"), record.get("label")
    if not isinstance(text, str) or not text.strip():
        raise DataError(f"{where}: 'text' must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise DataError(f"{where}: 'text' has {len(text)} characters (limit {MAX_TEXT_CHARS})")
    if not isinstance(label, int) or isinstance(label, bool):
        raise DataError(f"{where}: 'label' must be an integer, got {label!r}")
    if not 0 <= label < num_classes:
        raise DataError(f"{where}: label {label} outside [0, {num_classes - 1}]")
    return text, label


def load_text_split(
    path: Path, tokenizer: TextTokenizer, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Read, check and tokenise one .jsonl file; returns (ids, labels)."""
    try:
        size = path.stat().st_size
        if size > MAX_TEXT_FILE_BYTES:
            raise DataError(f"{path}: {size} bytes (limit {MAX_TEXT_FILE_BYTES})")
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file not found") from exc
    except OSError as exc:
        raise DataError(f"{path}: unreadable: {exc}") from exc
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text: {exc}") from exc
    texts: list[str] = []
    labels: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not JSON: {exc.msg}") from exc
        text, label = _check_line(record, where, num_classes)
        texts.append(text)
        labels.append(label)
    if not texts:
        raise DataError(f"{path}: no samples")
    return tokenizer(texts), np.asarray(labels, np.int64)
