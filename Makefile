# One place for the project's commands; README.md names them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# The exact tested versions (setup.cfg holds the supported ranges); every install below goes through it.
CONSTRAINTS ?= constraints.txt

.PHONY: install install-dev test test-slow test-all style quality bench vita-tiny demo

install:
	$(PIP) install -e . -c $(CONSTRAINTS)
	# silero-vad bundles its ONNX model; its extras and pins would pull an old torch, so no dependencies.
	$(PIP) install --no-deps -c $(CONSTRAINTS) silero-vad
	# pipecat-ai bundles the Smart Turn end-of-turn ONNX model; only that file is used (pipecat is never imported).
	$(PIP) install --no-deps -c $(CONSTRAINTS) pipecat-ai

install-dev: install
	$(PIP) install -e ".[dev]" -c $(CONSTRAINTS)

test: install-dev
	$(PYTHON) -m pytest -m "not slow" -q

test-slow: install-dev
	$(PYTHON) -m pytest -m slow -q

test-all: install-dev
	$(PYTHON) -m pytest -q

style:
	ruff format modeling_vita processing_vita recipes spaces_demo tests benchmarks
	ruff check --fix modeling_vita processing_vita recipes spaces_demo tests benchmarks

quality:
	ruff format --check modeling_vita processing_vita recipes spaces_demo tests benchmarks
	ruff check modeling_vita processing_vita recipes spaces_demo tests benchmarks

bench: install-dev
	$(PYTHON) -m benchmarks.bench_model

# Train the embedded default model from nothing (data, vocabulary extension, tower pretraining, 4 stages,
# evaluation, export to spaces_demo/vita-tiny); 43.6 minutes measured on 2 CPU cores. Needs espeak-ng (apt).
vita-tiny: install-dev
	$(PYTHON) -m recipes.vita_tiny

# The Gradio Space (spaces_demo/) on the embedded spaces_demo/vita-tiny, or on $VITA_MODEL; http://127.0.0.1:7860.
demo: install
	$(PIP) install -e ".[demo]" -c $(CONSTRAINTS)
	$(PYTHON) -m spaces_demo.app
