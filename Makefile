# Two entry points for a fresh machine: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
OUT ?= out
EPOCHS ?= 10

.PHONY: venv demo demo-app lint test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[all]'
	touch $@

venv: $(VENV)/.installed

# Main job: synthetic logs -> prepared lists -> train DIR -> evaluate on test -> export the bundle and sign it
# into a repository of its own (fresh keys; root key in $(OUT)/keys/root.pem) -> the device trusts that root,
# installs the signed bundle, seeds the user's history, reranks one test slate (time: BENCHMARKS.md, main job).
DEVICE := DIR_DEVICE_HOME=$(OUT)/device $(VENV)/bin/dir-device
FEED := $(OUT)/feed_app

demo: venv
	$(VENV)/bin/dir-cloud synth --out $(OUT)/logs --seed 0 --force
	$(VENV)/bin/dir-cloud prepare --logs $(OUT)/logs --out $(OUT)/data --force
	$(VENV)/bin/dir-cloud stats --data $(OUT)/data
	rm -rf $(OUT)/run $(OUT)/device $(OUT)/keys $(OUT)/repo $(FEED)/home
	$(VENV)/bin/dir-cloud train --data $(OUT)/data --model dir --history device --epochs $(EPOCHS) --out $(OUT)/run
	$(VENV)/bin/dir-cloud evaluate --run $(OUT)/run --split test
	$(VENV)/bin/dir-cloud repo keys --out $(OUT)/keys
	$(VENV)/bin/dir-cloud repo init --repo $(OUT)/repo --root-key $(OUT)/keys/root.pem --keys $(OUT)/keys
	$(VENV)/bin/dir-cloud export --run $(OUT)/run --out $(OUT)/bundle --force --repo $(OUT)/repo --keys $(OUT)/keys
	$(VENV)/bin/dir-cloud slate --run $(OUT)/run --split test --row 0 --out $(OUT)/slate
	$(DEVICE) trust $(OUT)/repo/metadata/1.root.json
	$(DEVICE) install $(OUT)/bundle
	$(DEVICE) record --events $(OUT)/slate/history.jsonl
	$(DEVICE) rerank --slate $(OUT)/slate/slate.json --merge quota

# The demo feed app (examples/README.md): `make demo`'s run and signed bundle (the app trusts the demo's root),
# one user's slate pool (built once under $(OUT)/feed_app), then http://127.0.0.1:8765/ until Ctrl-C.

demo-app: venv
	test -f $(OUT)/bundle/tuf/timestamp.json || $(MAKE) demo
	test -d $(FEED)/pool || $(PY) -m examples.feed_app.build_pool --run $(OUT)/run --out $(FEED)/pool
	$(PY) -m examples.feed_app --slates $(FEED)/pool --bundle $(OUT)/bundle --home $(FEED)/home \
		--trust $(OUT)/repo/metadata/1.root.json

# Lint, formatting and types (ruff and mypy, configured in pyproject.toml); CI runs them before the tests.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT)
