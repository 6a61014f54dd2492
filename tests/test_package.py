"""Tests for asr_s2s/__init__.py: the package API is imported lazily, so light commands stay light."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "torchaudio", "librosa")


def _run(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_asr_s2s_loads_neither_torch_nor_librosa() -> None:
    loaded = _run(f"import json, sys, asr_s2s; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert loaded == []


def test_config_command_does_not_import_torch() -> None:
    code = (
        "import contextlib, io, json, sys\n"
        "from asr_s2s.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    status = main(['config', '--set', 'train.epochs=3'])\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps([status, 'epochs: 3' in out.getvalue(), heavy]))"
    )
    assert _run(code) == [0, True, []]


def test_api_attributes_load_on_first_use_and_transcribe_is_the_function() -> None:
    # Importing the submodule first must not turn the package attribute into the module.
    code = (
        "import json, sys, types\n"
        "import asr_s2s.transcribe\n"
        "import asr_s2s\n"
        "from asr_s2s.transcribe import Transcriber, load_model, transcribe\n"
        "print(json.dumps([asr_s2s.transcribe is transcribe, asr_s2s.load_model is load_model,\n"
        "    asr_s2s.Transcriber is Transcriber,\n"
        "    isinstance(sys.modules['asr_s2s.transcribe'], types.ModuleType),\n"
        "    'load_model' in dir(asr_s2s), hasattr(asr_s2s, 'no_such_name')]))"
    )
    assert _run(code) == [True, True, True, True, True, False]
