"""``python -m asr_s2s``: the same as the ``asr-s2s`` command (and what torchrun launches)."""

import sys

from asr_s2s.cli import main

sys.exit(main())
