# The review tool: `make run` to use it, `make test` to check it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# `make run` needs only what the tool runs on; tests, benchmarks and screenshots add the
# development tools (pytest, a browser driver, an S3 server), so a first run installs less.
RUNTIME_STAMP := $(VENV)/.runtime-stamp
DEV_STAMP := $(VENV)/.dev-stamp
PORT ?= 8000

.PHONY: install run test bench screenshots clean

$(RUNTIME_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(DEV_STAMP)

# Migrate and make the admin account (`manage.py bootstrap`, seconds), then the web server and
# the cluster at once; on a first run the cluster trains the demo model while the tool is up.
run: $(RUNTIME_STAMP)
	$(PY) manage.py serve --bootstrap --port $(PORT)

test: install
	$(PY) scripts/run_tests.py

bench: install
	$(PY) -m bench

screenshots: install
	SCREENSHOTS_DIR=docs $(if $(wildcard weights/demo.pth),SCREENSHOTS_CHECKPOINT=weights/demo.pth) $(PY) -m pytest tests/e2e -m e2e -q

clean:
	rm -rf var staticfiles
