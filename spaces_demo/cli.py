"""`vita-duplex` on the Space's checkpoint: `python -m spaces_demo.cli --audio talk.wav [--timeline t.png] ...`.

The library's command (`modeling_vita.cli_vita_duplex`, installed as `vita-duplex`) takes its model from `--model` or
`$VITA_MODEL` and knows nothing of this demo; this module is the same command with the Space's embedded checkpoint
(`spaces_demo/vita-tiny`, `runtime.DEFAULT_MODEL_DIR`) as its default model: used without `--model` (the library
command puts a default model before `$VITA_MODEL`). Every option is the library command's (`--help` lists them).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from modeling_vita.cli_vita_duplex import main as vita_duplex_main

if __package__:
    from .runtime import DEFAULT_MODEL_DIR
else:  # `python cli.py` on a Space: the siblings are top-level modules
    from runtime import DEFAULT_MODEL_DIR

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vita-duplex` with the embedded checkpoint as the default model; returns its exit status."""
    return vita_duplex_main(argv, default_model=str(DEFAULT_MODEL_DIR))


if __name__ == "__main__":
    sys.exit(main())
