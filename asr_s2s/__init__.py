"""asr-s2s: speech recognition with a stacked-LSTM encoder whose final states start a character decoder.

>>> import asr_s2s
>>> model = asr_s2s.load_model("exp/digits/model.pt")
>>> model.transcribe("audio.wav").text

This module owns the package-level API only. ``load_model``, ``Transcriber`` and ``transcribe`` are
imported on first use, so that ``import asr_s2s`` (and every ``asr-s2s`` command, e.g. ``config``)
does not load torch or librosa before it needs them.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Transcriber", "__version__", "load_model", "transcribe"]

# The attributes imported on first use, all from asr_s2s.transcribe.
_LAZY = ("Transcriber", "load_model", "transcribe")

if TYPE_CHECKING:
    from asr_s2s.transcribe import Transcriber, load_model, transcribe  # noqa: F401


class _Package(types.ModuleType):
    """The package's module type: imports the API attributes on first access."""

    def __getattr__(self, name: str) -> Any:
        if name not in _LAZY:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module("asr_s2s.transcribe"), name)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # As in whisper, the package-level ``transcribe`` is the function: importing the submodule
        # ``asr_s2s.transcribe`` would bind the module here (it stays reachable as
        # ``sys.modules["asr_s2s.transcribe"]`` and through ``from asr_s2s.transcribe import ...``).
        if name == "transcribe" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_LAZY))


sys.modules[__name__].__class__ = _Package
