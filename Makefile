# Two entry points for a fresh machine: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
OUT ?= out

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[all]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/dir-cloud synth --out $(OUT)/logs --seed 0
	$(VENV)/bin/dir-cloud prepare --logs $(OUT)/logs --out $(OUT)/data

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT)
