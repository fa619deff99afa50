"""The model's shape, without TensorFlow: the CLI checks a run's settings, and refuses
bad ones, before it pays TensorFlow's import (seconds, tens of seconds on a loaded machine)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 10_000
    seq_len: int = 20  # T: tokens of context the model reads
    embedding_dim: int = 96  # E
    lstm_units: int = 256  # U

    def __post_init__(self):
        for name, value in dataclasses.asdict(self).items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)
