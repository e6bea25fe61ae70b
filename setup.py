"""pip needs a setup.py or pyproject.toml beside setup.cfg; all metadata lives in setup.cfg."""

from setuptools import setup

setup()
