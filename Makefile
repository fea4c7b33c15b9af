# The review tool: `make run` to use it, `make test` to check it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test bench screenshots clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py bootstrap
	$(PY) manage.py serve

test: install
	$(PY) scripts/run_tests.py

bench: install
	$(PY) -m bench

screenshots: install
	SCREENSHOTS_DIR=docs $(if $(wildcard weights/demo.pth),SCREENSHOTS_CHECKPOINT=weights/demo.pth) $(PY) -m pytest tests/e2e -m e2e -q

clean:
	rm -rf var staticfiles
