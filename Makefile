# Quick start: `make demo` runs the main job, `make test` runs the test suite.
# Both create a virtual environment in .venv and install everything they need first.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Headless rendering through EGL (Mesa on a CPU-only machine).
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

SYSTEM_PACKAGES := libegl1 libegl-mesa0 libgl1-mesa-dri libglib2.0-0
# Only the test of the suite's HTML report needs a browser; without it that test skips.
TEST_SYSTEM_PACKAGES := chromium

.PHONY: demo test setup system-packages test-system-packages clean

demo: setup
	$(BIN)/robota demo

test: setup test-system-packages
	$(BIN)/python -m pytest -m "not gpu" $(PYTEST_ARGS)

setup: system-packages $(VENV)/.installed

# Installs Mesa's EGL when run as root on Debian or Ubuntu; otherwise names what is missing.
system-packages:
	@missing=""; \
	for p in $(SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "Installing system packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "Missing system packages for headless rendering:$$missing"; \
		echo "Install them with: sudo apt-get install$$missing"; \
		exit 1; \
	fi

# Installs the browser for the report test when run as root; otherwise that test skips.
test-system-packages:
	@missing=""; \
	for p in $(TEST_SYSTEM_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
		echo "Installing test packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
		echo "Optional test packages missing:$$missing (the HTML report test will skip)"; \
	fi

# torch is installed first and pinned: a plain `torch` requirement would pull a CUDA build of
# several GB, while the CPU build 2.13.0 satisfies the project's range.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $@

clean:
	rm -rf $(VENV) build *.egg-info
