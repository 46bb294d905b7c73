"""Durable state: the append-only update log and atomic checkpoints."""

from server.durability.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from server.durability.log import (
    LogPosition,
    LogRecord,
    TailReport,
    UpdateLog,
    fsync_dir,
    read_from,
)

__all__ = [
    "CHECKPOINT_NAME",
    "Checkpoint",
    "LogPosition",
    "LogRecord",
    "TailReport",
    "UpdateLog",
    "fsync_dir",
    "load_checkpoint",
    "read_from",
    "save_checkpoint",
]
