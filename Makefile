# Segmentor: `make run` (embedded: SQLite + file-system broker) and `make test` (PostgreSQL + Redis).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PG_ADMIN_URL ?= postgres://postgres@127.0.0.1:5432/postgres
TEST_DATABASE_URL ?= postgres://segmentor@127.0.0.1:5432/segmentor

.PHONY: run test lint typecheck pytest e2e db bench bench-1m bench-campaigns loadtest faults fuzz clean help

help:
	@echo "make run    start web + worker + beat with demo data (SQLite, file broker)"
	@echo "make test   lint, type-check and run the test suite (PostgreSQL, Redis)"
	@echo "make bench  run the benchmarks and print figures for bench/RESULTS.md"
	@echo "make bench-campaigns  campaigns only: 1M-delivery snapshot, email send vs django-post-office (smtp-sink)"

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	mkdir -p var
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py migrate --noinput
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py setup_periodic_tasks
	DEBUG=$${DEBUG:-1} $(BIN)/python manage.py seed_demo
	DEBUG=$${DEBUG:-1} $(BIN)/honcho start -f Procfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

# An ordinary role (no superuser, no BYPASSRLS) that owns the app's database, so
# row-level security applies to the app and to the tests.
db:
	@psql "$(PG_ADMIN_URL)" -v ON_ERROR_STOP=1 -qtAc \
	  "DO \$$\$$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'segmentor') THEN \
	     CREATE ROLE segmentor LOGIN CREATEDB NOSUPERUSER NOBYPASSRLS; END IF; END \$$\$$;"
	@psql "$(PG_ADMIN_URL)" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'segmentor'" | grep -q 1 || \
	  psql "$(PG_ADMIN_URL)" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE segmentor OWNER segmentor"

# The API fuzz runs in a process of its own: under xdist schemathesis's per-operation tests are collected
# but only the first one runs (the others are reported as nothing at all).
pytest: $(STAMP) db
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -n 2 --dist loadfile --create-db \
	  --ignore=tests/test_api_fuzz.py $(PYTEST_ARGS)
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest -p no:xdist --create-db tests/test_api_fuzz.py

test: lint typecheck pytest

e2e: $(STAMP) db
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/python -m pytest tests/e2e $(PYTEST_ARGS)

# Request path, API ingest and upsert, CSV import: each on a fresh database of its own; then segments
# on the 1M-contact tenant (built by `make bench-1m`); campaigns; journeys (a database of its own);
# message KPIs and results pages (on the 1M-contact tenant); send-time profiles (a database of its own).
bench: $(STAMP) db
	$(BIN)/python bench/run.py
	$(BIN)/python bench/api_ingest.py
	BENCH_IMPORT_ROWS=$${BENCH_IMPORT_ROWS:-20000} $(BIN)/python bench/import_csv.py
	$(BIN)/python bench/segments.py
	$(MAKE) bench-campaigns
	$(BIN)/python bench/journeys.py
	$(BIN)/python bench/analytics.py
	$(BIN)/python bench/send_time.py
	$(BIN)/python bench/personalization.py

# Campaigns: the snapshot on the 1M-contact tenant, then sending through 2 Celery workers to Postfix's
# smtp-sink (apt-get install postfix) against django-post-office; starts and stops its own processes.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

bench-campaigns: $(BENCH_STAMP) db
	$(BIN)/python bench/campaigns.py $(BENCH_ARGS)

# The 1M-contact / 10M-event tenant (built once, about 20 minutes here), then the contact list on it.
bench-1m: $(STAMP) db
	$(BIN)/python bench/build_tenant.py
	$(BIN)/python bench/contact_list.py

# 200 concurrent clients for 60 s (locust) against gunicorn, a Celery worker, PostgreSQL and Redis:
# event ingest, contact upsert, segment preview and page views mixed; fails on any error.
loadtest: $(BENCH_STAMP) db
	$(BIN)/python bench/loadtest.py

# Faults on services of its own (a private PostgreSQL cluster and Redis, gunicorn, Celery workers and
# beats; the shared ones are never touched): a worker killed mid-send, Redis and PostgreSQL restarted
# mid-send and mid-ingest, two beats, an SMTP server that refuses or stalls. Prints a table of outcomes;
# FAULTS_ARGS="--only kill,beat" runs some of them, "--keep" keeps the logs (bench/faults.py).
faults: $(STAMP)
	$(BIN)/python bench/faults.py $(FAULTS_ARGS)

# The API fuzzed from its own OpenAPI schema, deeper than in `make test` (tests/test_api_fuzz.py): more
# examples per operation, the coverage phase (boundary and invalid values of every parameter) and chains
# of linked operations. About an hour on 2 cores; FUZZ_EXAMPLES / FUZZ_STATEFUL / FUZZ_COVERAGE to change.
fuzz: $(STAMP) db
	DATABASE_URL=$(TEST_DATABASE_URL) FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-100} FUZZ_COVERAGE=$${FUZZ_COVERAGE:-1} \
	  FUZZ_STATEFUL=$${FUZZ_STATEFUL:-100} $(BIN)/python -m pytest -p no:xdist --create-db tests/test_api_fuzz.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var db.sqlite3*
