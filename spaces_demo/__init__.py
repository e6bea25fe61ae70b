"""The VITA Gradio Space (issue #8): `python -m spaces_demo.app`; on a Hugging Face Space this folder is the repo root
and `app.py` runs as a script (see README.md here). `python -m spaces_demo.cli` is the `vita-duplex` command on the
Space's embedded checkpoint. Nothing is imported or loaded by importing this package."""

import logging

logger = logging.getLogger(__name__)
