"""Training metrics as they come: one JSON record per line in ``metrics.jsonl``, and TensorBoard scalars."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from asr_s2s.errors import TrainingError


class MetricsLogger:
    """Appends records to ``out_dir/metrics.jsonl`` and mirrors their numbers to TensorBoard
    (``out_dir/tensorboard``, tag ``kind/name`` at ``step``) when tensorboard is installed.

    Each record has ``kind`` (train, dev, average), ``step`` and ``epoch``. A logger that is not
    ``enabled`` (ranks other than 0) writes nothing.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._writer: Any = None  # None: not opened yet; False: tensorboard is not installed

    def log(self, record: dict[str, Any]) -> None:
        """Write one record; raises :class:`TrainingError` naming the file when it cannot be written."""
        if not self.enabled:
            return
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        except OSError as err:
            raise TrainingError(f"{self.path}: cannot write ({err.strerror or err})") from None
        if self._writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(str(self.path.parent / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                self._writer = False
        if self._writer:
            for key, value in record.items():
                if key not in ("step", "epoch", "kind") and isinstance(value, int | float):
                    self._writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        """Flush and close the TensorBoard files (the JSONL file is closed after each record)."""
        if self._writer:
            self._writer.close()
        self._writer = None
