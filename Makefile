# Two entry points for a fresh machine: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
OUT ?= out

.PHONY: venv demo demo-app test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[all]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/dir-cloud synth --out $(OUT)/logs --seed 0
	$(VENV)/bin/dir-cloud prepare --logs $(OUT)/logs --out $(OUT)/data

# The demo feed app (examples/README.md): from `make demo`'s data, a small DIR run, its TFLite bundle and
# one user's slate pool (each built once, under $(OUT)/feed_app), then http://127.0.0.1:8765/ until Ctrl-C.
FEED := $(OUT)/feed_app

demo-app: venv
	test -f $(OUT)/data/dataset.json || $(MAKE) demo
	test -f $(FEED)/run/metrics.json || $(VENV)/bin/dir-cloud train --data $(OUT)/data --out $(FEED)/run --epochs 3 --resume
	test -f $(FEED)/bundle/manifest.json || $(VENV)/bin/dir-cloud export --run $(FEED)/run --out $(FEED)/bundle --backends tflite
	test -d $(FEED)/pool || $(PY) -m examples.feed_app.build_pool --run $(FEED)/run --out $(FEED)/pool
	$(PY) -m examples.feed_app --slates $(FEED)/pool --bundle $(FEED)/bundle --home $(FEED)/home

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT)
