# The two commands of the README. Each bootstraps uv (from PyPI) when the
# machine lacks it, then installs exactly what uv.lock pins into .venv,
# compiled to bytecode: where PYTHONDONTWRITEBYTECODE is set (as on our CI
# machines) Python never caches it, and every process that imports TensorFlow
# compiled its sources again (about 10 s of CPU each; docs/DESIGN.md).
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
# Without a display, GUI tests run on a virtual one (Debian's xvfb).
XVFB_RUN := $(if $(DISPLAY),,$(shell command -v xvfb-run 2>/dev/null))
XVFB_ARGS := -a -s "-screen 0 1280x720x24 -ac +extension GLX"

.PHONY: setup demo test

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet --user uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv
	@$(UV) sync --locked --quiet --compile-bytecode

demo: setup
	.venv/bin/fedkb demo

test: setup
	$(if $(XVFB_RUN),$(XVFB_RUN) $(XVFB_ARGS)) $(UV) run pytest
