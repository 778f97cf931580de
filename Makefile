# Every command a developer or CI needs. `make test` works on a fresh clone: it creates the
# virtual environment, installs the package with its dev tools (uv, reusing its download cache
# so torch is fetched once per machine), fetches Kafka's jars (Maven, cached in ~/.m2), then runs
# lint, format check, type check and the whole pytest suite against a real local broker, and
# builds the daemon's container image (podman; the image test runs the daemon from it).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The local broker's folder, where `lensnet` looks for it too (consumer/cli.py, kafka.sh).
KAFKA_DIR ?= $(or $(LOCAL_KAFKA_DIR),$(or $(TMPDIR),/tmp)/lensnet-kafka)
PYTEST_ARGS ?=
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)
# The image `make image` builds and the image test runs; the Kubernetes base manifests name it.
IMAGE ?= localhost/lensnet:$(VERSION)
# An index serving torch's CPU-only wheels (e.g. https://download.pytorch.org/whl/cpu) where it
# is reachable; empty: PyPI's torch, the CUDA build (deploy/README.md, "The image").
TORCH_INDEX ?=

.PHONY: help install bytecode kafka-jars registry-jars deploy-tools image wheelhouse lint typecheck unit test demo kafka-start kafka-stop clean

help:
	@echo "make demo        local Kafka broker, replay a simulated season through the daemon, print its alerts"
	@echo "make test        install everything, then lint, type-check and run the whole suite"
	@echo "make unit        the tests that need no broker (fast)"
	@echo "make image       the daemon's container image, $(IMAGE) (podman; deploy/README.md)"
	@echo "make kafka-start / kafka-stop   a local KRaft broker in $(KAFKA_DIR)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python --compile-bytecode -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# Bytecode of our own modules too: with PYTHONDONTWRITEBYTECODE set (as on CI machines) every
# `lensnet` process, the tests' daemons among them, would otherwise compile its imports from
# source, ~4-5 s a start (BENCHMARKS.md, "Start-up"). Stale files after an edit are ignored.
bytecode: $(STAMP)
	@$(BIN)/python -m compileall -q consumer model > /dev/null

install: $(STAMP) bytecode

kafka-jars:
	deploy/local-kafka/kafka.sh fetch

# Apicurio Registry (Confluent-compatible API) for the tests of alerts in the Confluent wire
# format; from Maven Central, cached in ~/.m2 and deploy/local-registry/target.
registry-jars:
	deploy/local-registry/registry.sh fetch

# kustomize and the CRDs the manifest tests validate against (tests/deploy), built and fetched
# once per machine into ~/.cache/lensnet-tools (deploy/tools.sh).
deploy-tools: install
	UV=$(BIN)/uv PYTHON=$(BIN)/python deploy/tools.sh all

# The container image with Debian's podman, runc and mmdebstrap (installed with apt-get when
# missing and run as root), from a wheelhouse of the venv's versions; no network in the build.
# Cached: a rebuild after a code change takes seconds (deploy/image/image.sh).
image: install
	IMAGE=$(IMAGE) TORCH_INDEX=$(TORCH_INDEX) PYTHON=$(BIN)/python deploy/image/image.sh build

# Only the wheelhouse the image installs from (build/image/wheelhouse), e.g. for `docker build`.
wheelhouse: install
	TORCH_INDEX=$(TORCH_INDEX) PYTHON=$(BIN)/python deploy/image/image.sh wheelhouse

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "not kafka" $(PYTEST_ARGS)

test: install kafka-jars registry-jars deploy-tools image lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

# Prefers port 9092 (the clients' default); `lensnet` finds the broker either way.
# KAFKA_ARGS="--brokers 3" starts a three-broker cluster, "--security sasl_ssl" one with TLS,
# SCRAM and ACLs (deploy/local-kafka/kafka.sh).
kafka-start: kafka-jars
	KAFKA_PORT=$${KAFKA_PORT:-9092} deploy/local-kafka/kafka.sh start $(KAFKA_ARGS) $(KAFKA_DIR)

kafka-stop:
	deploy/local-kafka/kafka.sh stop $(KAFKA_DIR)

DEMO_DIR ?= /tmp/lensnet-demo
DEMO_ENV = LENSNET_KAFKA__BOOTSTRAP_SERVERS=$$(cat $(KAFKA_DIR)/bootstrap) \
	LENSNET_STATE__DIRECTORY=$(DEMO_DIR)/state LENSNET_CONSUMER__GROUP_ID=lensnet-demo-$$(date +%s)

# The main job on one machine: broker, fresh topics (a second demo does not count its alerts
# twice), a simulated season replayed through the per-site topics, the daemon run until the
# season is drained, and the alerts it published. The broker stays up for ad-hoc commands.
demo: install kafka-start
	rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	$(BIN)/lensnet simulate $(DEMO_DIR)/season --stars 200 --seed 1
	$(DEMO_ENV) $(BIN)/lensnet topics create --recreate
	$(DEMO_ENV) $(BIN)/lensnet replay $(DEMO_DIR)/season
	@echo "lensnet run --until-end (its log: $(DEMO_DIR)/daemon.log) ..."
	@$(DEMO_ENV) $(BIN)/lensnet run --until-end --http-port 0 > $(DEMO_DIR)/daemon.log
	@$(DEMO_ENV) $(BIN)/lensnet alerts tail --from earliest --until-end
	@$(DEMO_ENV) $(BIN)/lensnet alerts plot $(DEMO_DIR)/plots --label YES --min-score 0.955
	@echo "truth of every star: $(DEMO_DIR)/season/labels.csv"
	@echo "broker left running at $$(cat $(KAFKA_DIR)/bootstrap) (stop it: make kafka-stop); try:"
	@echo "  .venv/bin/lensnet alerts stats"

clean:
	rm -rf $(VENV) deploy/local-kafka/target deploy/local-registry/target build/image .mypy_cache .ruff_cache .pytest_cache
