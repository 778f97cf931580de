# Every command a developer or CI needs. `make test` works on a fresh clone: it creates the
# virtual environment, installs the package with its dev tools (uv, reusing its download cache
# so torch is fetched once per machine), fetches Kafka's jars (Maven, cached in ~/.m2), then runs
# lint, format check, type check and the whole pytest suite against a real local broker.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Reinstall only when the dependency list changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
KAFKA_DIR ?= $(or $(LOCAL_KAFKA_DIR),/tmp/lensnet-kafka)
PYTEST_ARGS ?=

.PHONY: help install kafka-jars lint typecheck unit test demo kafka-start kafka-stop clean

help:
	@echo "make demo        local Kafka broker, simulate + replay a small season, score it with LensNet"
	@echo "make test        install everything, then lint, type-check and run the whole suite"
	@echo "make unit        the tests that need no broker (fast)"
	@echo "make kafka-start / kafka-stop   a local KRaft broker in $(KAFKA_DIR)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check uv
	$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

kafka-jars:
	deploy/local-kafka/kafka.sh fetch

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest -m "not kafka" $(PYTEST_ARGS)

test: install kafka-jars lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

kafka-start: kafka-jars
	deploy/local-kafka/kafka.sh start $(KAFKA_DIR)

kafka-stop:
	deploy/local-kafka/kafka.sh stop $(KAFKA_DIR)

DEMO_SEASON ?= /tmp/lensnet-demo-season
# Prints the stars LensNet scores as events (p_event >= 0.45), highest first.
define DEMO_TABLE
import csv, json, sys
truth = {int(r["star_id"]): r["label"] for r in csv.DictReader(open(sys.argv[1] + "/labels.csv"))}
rows = [json.loads(line) for line in sys.stdin]
scored = [r for r in rows if r.get("status") == "scored"]
hits = sorted((r for r in scored if r["p_event"] >= 0.45), key=lambda r: -r["p_event"])
print(f"{len(scored)} stars scored at the end of the season, {len(hits)} with p_event >= 0.45:")
print(f"{'star':>12} {'LensNet':>8} {'p_event':>8} {'triggered':>9} {'dchi2':>10} {'truth':>6}")
for r in hits[:25]:
    print(f"{r['star_id']:>12} {r['label']:>8} {r['p_event']:8.3f} {str(r['triggered']):>9}"
          f" {r['dchi2']:10.1f} {truth.get(r['star_id'], '?'):>6}")
endef
export DEMO_TABLE

demo: install kafka-start
	rm -rf $(DEMO_SEASON)
	$(BIN)/lensnet simulate $(DEMO_SEASON) --stars 200 --seed 1
	LENSNET_KAFKA__BOOTSTRAP_SERVERS=$$(cat $(KAFKA_DIR)/bootstrap) $(BIN)/lensnet replay $(DEMO_SEASON)
	LENSNET_KAFKA__BOOTSTRAP_SERVERS=$$(cat $(KAFKA_DIR)/bootstrap) $(BIN)/lensnet topics describe
	$(BIN)/lensnet classify $(DEMO_SEASON) | $(BIN)/python -c "$$DEMO_TABLE" $(DEMO_SEASON)
	@echo "broker left running at $$(cat $(KAFKA_DIR)/bootstrap); stop it with: make kafka-stop"

clean:
	rm -rf $(VENV) deploy/local-kafka/target .mypy_cache .ruff_cache .pytest_cache
