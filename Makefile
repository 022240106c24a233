# Run `make help` for the targets. Every target works on a fresh machine: it creates .venv first,
# and the engine-backed ones start a Docker Engine and a local registry when none answers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
SELECT ?=
DEVICE ?=
# SELECT='glob ...' picks images by name; DEVICE=cpu (or gpu) picks every image of that device.
SELECT_ARGS := $(foreach s,$(SELECT),--select '$(s)') $(if $(DEVICE),--select '*-$(DEVICE)-inference')
# The file system growth `make build-all` keeps within (the disk schedule: builds wait for what
# finished images free); MAX_DISK_GROWTH= (empty) lets the run use every free byte.
MAX_DISK_GROWTH ?= 45GB
# The committed catalog (docs/images.md) comes from a full run; a narrowed run writes its own into build/.
CATALOG_DIR := $(if $(SELECT)$(DEVICE),build,docs)

.DEFAULT_GOAL := help
.PHONY: help venv render lock catalog check lint unit golden test build-all build publish bench bench-platforms bench-cache bench-incremental load compat clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/builder: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv: $(BIN)/builder ## Create .venv with the builder and its test tools

render: venv ## Re-render images/ from matrix.yaml and templates/
	$(BIN)/builder render

lock: venv ## Re-lock every image's install set (needs the index; SELECT narrows), then re-render
	$(BIN)/builder lock $(SELECT_ARGS)
	$(BIN)/builder render

lint: venv ## hadolint every generated Dockerfile (config: .hadolint.yaml)
	$(BIN)/hadolint images/*/Dockerfile

unit: venv ## Fast tests: matrix, render, tags, lint (no engine)
	$(BIN)/pytest tests/unit

golden: venv ## Rewrite tests/golden/ from the templates (the unit tests only compare; review the diff)
	$(BIN)/python tests/update_golden.py

check: venv ## render --check + lock --check (offline) + hadolint + unit tests
	$(BIN)/builder render --check
	$(BIN)/builder lock --check
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory unit

test: venv ## The tests CI runs: render and lock checks, hadolint, unit and engine-backed tests
	$(BIN)/builder render --check
	$(BIN)/builder lock --check
	$(MAKE) --no-print-directory lint
	$(BIN)/pytest

test-other-engine: venv ## The reproducibility, publish and verify tests on the other Engine line, 26.1 (stop the running dockerd first)
	BUILDER_ENGINE=26.1 $(BIN)/pytest -m both_engines tests/integration

build-all: venv ## The main job: build, smoke-test, tag and publish every image (SELECT='glob', DEVICE=cpu narrow; MAX_DISK_GROWTH=45GB)
	$(BIN)/builder render --check
	$(BIN)/builder lock --check
	$(BIN)/builder all --prune-cache $(if $(MAX_DISK_GROWTH),--max-disk-growth '$(MAX_DISK_GROWTH)') $(SELECT_ARGS)
	$(BIN)/builder catalog --out $(CATALOG_DIR)/images.md --json $(CATALOG_DIR)/images.json

build: venv ## Build and smoke-test (no push) the images (SELECT='glob ...' narrows)
	$(BIN)/builder test $(SELECT_ARGS)

publish: venv ## Push the images already tested and tagged latest
	$(BIN)/builder publish $(SELECT_ARGS)

bench: venv ## Benchmark: cold build, no-op rebuild, sizes, unique bytes, seconds to healthy (COLD=1: the cold ratio only)
	$(BIN)/python benchmarks/bench.py $(if $(COLD),--cold-only) $(SELECT_ARGS)

bench-platforms: venv ## Benchmark: the arm64 build of the sklearn image against amd64 and against pip under QEMU
	$(BIN)/python benchmarks/platforms.py

bench-incremental: venv ## Benchmark: a no-op `builder all` (up-to-date images), on a fresh runner, after one pin change; SPLIT=1: a no-op release split by platform (PLATFORM=linux/amd64: its jobs only; FIRST_WHOLE=1: the first release in one job)
	$(BIN)/python benchmarks/incremental.py $(if $(SPLIT),--split $(if $(FIRST_WHOLE),--first-whole) $(foreach p,$(PLATFORM),--platform '$(p)')) $(SELECT_ARGS)

bench-cache: venv ## Benchmark: a fresh runner's build from the registry cache against a cold one (restarts the Engine)
	$(BIN)/python benchmarks/registry_cache.py $(SELECT_ARGS)

load: venv ## Served-load benchmark: wrk on the sklearn image's POST /score, 1 worker and the default
	$(BIN)/python benchmarks/load.py

catalog: venv ## Write docs/images.md and docs/images.json from build/report.json, the locks and the built images
	$(BIN)/builder catalog

compat: venv ## Refresh compat.yaml from package metadata (needs the package index), then re-render
	$(BIN)/builder compat refresh
	$(BIN)/builder render

clean: ## builder prune (the builder's images, BuildKit cache, registry storage, build/), then remove .venv
	if [ -x $(BIN)/builder ]; then $(BIN)/builder prune; fi
	rm -rf $(VENV)
