"""asr-s2s: speech recognition with a stacked-LSTM encoder whose final states start a character decoder.

>>> import asr_s2s
>>> model = asr_s2s.load_model("exp/digits/model.pt")
>>> model.transcribe("audio.wav").text
"""

from __future__ import annotations

__version__ = "0.1.0"

# As in whisper, the package-level ``transcribe`` is the function (the module stays reachable as
# ``sys.modules["asr_s2s.transcribe"]`` and through ``from asr_s2s.transcribe import ...``).
from asr_s2s.transcribe import Transcriber, load_model, transcribe  # noqa: E402

__all__ = ["Transcriber", "__version__", "load_model", "transcribe"]
