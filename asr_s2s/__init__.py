"""asr-s2s: speech recognition with a stacked-LSTM encoder whose final states start a character decoder.

>>> import asr_s2s
>>> model = asr_s2s.load_model("exp/digits/model.pt")
>>> model.transcribe("audio.wav").text
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Transcriber", "__version__", "load_model", "transcribe"]

if TYPE_CHECKING:
    from asr_s2s.transcribe import Transcriber, load_model, transcribe


def __getattr__(name: str) -> Any:
    # Imported lazily so that `asr-s2s --help` does not pay for importing torch.
    if name in ("Transcriber", "load_model", "transcribe"):
        from asr_s2s import transcribe as module

        return getattr(module, name)
    raise AttributeError(f"module 'asr_s2s' has no attribute {name!r}")
