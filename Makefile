# StayAfrica Operations Portal.
#   make run    set everything up on a fresh machine and serve the portal + messaging service
#   make test   the same setup, then every suite (lint, Django, Erlang, browser)
# Each setup step is skipped when already done, so both commands are cheap to repeat.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
.DEFAULT_GOAL := run

VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .venv/.stamps

# What the project needs from Debian, installed (as root) only when missing.
# Libraries are checked with dpkg; tools by their command, because a machine may already
# have them from elsewhere (Node.js from NodeSource ships npm, and Debian's npm package
# conflicts with it).
DEBIAN_PACKAGES := erlang-base erlang-dev erlang-eunit erlang-common-test erlang-inets erlang-tools \
	erlang-crypto erlang-ssl erlang-mochiweb erlang-jiffy erlang-cowlib erlang-proper erlang-proper-dev \
	chromium fonts-dejavu-core
DEBIAN_COMMANDS := rebar3:rebar3 psql:postgresql-client pg_isready:postgresql-client node:nodejs npm:npm wrk:wrk \
	redis-server:redis-server redis-cli:redis-tools pgbouncer:pgbouncer \
	nginx:nginx-light openssl:openssl pg_dump:postgresql-client pg_restore:postgresql-client promtool:prometheus

# DEBUG is off unless set (portal/settings.py), and with it off the portal refuses the
# development secrets. The demo, the development servers and the test suites are
# development mode, so their targets turn it on here; `make serve` is production.
DEV := DEBUG=true

# Tests and benchmarks run on PostgreSQL; `make run` uses the embedded SQLite default.
PG_URL ?= postgres://postgres@127.0.0.1:5432/stayafrica
TEST_DATABASE_URL := $(or $(DATABASE_URL),$(PG_URL))
# The Django suites run in parallel (pytest-xdist), one process per core by default; each
# worker has its own test database (test_<name>_gw0, ...), live server and Erlang node.
# A few tests take up to a minute (seed_demo, the backup drill, `deploy/serve`) where most
# take a second: --dist worksteal lets an idle worker take tests queued for the busy one.
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist worksteal

.PHONY: run test setup debian-packages python-packages python-dev-packages node-packages postgres migrate demo-data \
	lint test-python test-sqlite test-e2e test-alerts bench-ledger bench-portal bench-stack serve stack dev-serve redis \
	clean lock backup restore

setup: debian-packages python-packages node-packages erlang-build erlang-release

debian-packages:
	@missing=$$(for p in $(DEBIAN_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done; \
		for pair in $(DEBIAN_COMMANDS); do \
		command -v $${pair%%:*} >/dev/null || echo $${pair#*:}; done); \
	missing=$$(echo $$missing | tr ' ' '\n' | sort -u | tr '\n' ' '); \
	if [ -n "$${missing// /}" ]; then \
		echo "==> Installing Debian packages:" $$missing; \
		if [ "$$(id -u)" != 0 ]; then echo "Run as root (or sudo) to install:" $$missing; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

$(STAMPS)/python: requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "==> Installing Python packages into $(VENV)"
	@# This machine's pip config lists local mirrors that may be absent: hide those warnings only.
	@$(PY) -m pip install -q --upgrade pip 2>&1 | { grep -v '^WARNING: Location' || true; }
	@$(PY) -m pip install -q -r requirements.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	@mkdir -p $(STAMPS) && touch $@

python-packages: $(STAMPS)/python

# Test, lint and benchmark tools (requirements-dev.txt = the runtime set + those), for the
# targets that need them; `make run` never installs them. Re-runs when either lock changes.
$(STAMPS)/python-dev: requirements-dev.txt $(STAMPS)/python
	@echo "==> Installing Python test and lint tools into $(VENV)"
	@$(PY) -m pip install -q -r requirements-dev.txt 2>&1 | { grep -v '^WARNING: Location' || true; }
	@mkdir -p $(STAMPS) && touch $@

python-dev-packages: $(STAMPS)/python-dev

# Regenerates both hashed lock files from requirements.in and requirements-dev.in. uv resolves
# (fast, and hashes every file PyPI has for a pinned release, so pip's --require-hashes mode
# accepts whichever wheel a machine picks); it lives in its own venv at a pinned version, not
# in the project's. It keeps the versions already in the locks: to move one, change its pin in
# the .in file, or pass LOCK_ARGS='--upgrade-package NAME'. The dev lock is constrained by the
# runtime lock, so both pin every shared package alike. Resolved for this machine's python3,
# the interpreter .venv is made from.
UV_VERSION := 0.13.9
LOCK_TOOLS := $(VENV)/.lock-tools
UV_COMPILE := $(LOCK_TOOLS)/bin/uv pip compile --quiet --generate-hashes --python python3 \
	--custom-compile-command 'make lock' $(LOCK_ARGS)

$(STAMPS)/uv-$(UV_VERSION):
	@test -x $(LOCK_TOOLS)/bin/python || python3 -m venv $(LOCK_TOOLS)
	@$(LOCK_TOOLS)/bin/python -m pip install -q uv==$(UV_VERSION) 2>&1 | { grep -v '^WARNING: Location' || true; }
	@mkdir -p $(STAMPS) && touch $@

lock: $(STAMPS)/uv-$(UV_VERSION)
	@echo "==> Compiling requirements.txt and requirements-dev.txt (uv $(UV_VERSION), with hashes)"
	@$(UV_COMPILE) requirements.in -o requirements.txt
	@$(UV_COMPILE) requirements-dev.in -o requirements-dev.txt

$(STAMPS)/node: package.json package-lock.json
	@echo "==> Installing front-end packages (npm)"
	@npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(STAMPS) && touch $@

node-packages: $(STAMPS)/node

# PostgreSQL for tests and benchmarks: start the local cluster if it is installed but stopped.
postgres:
	@if [ -n "$(DATABASE_URL)" ]; then exit 0; fi; \
	if pg_isready -q -h 127.0.0.1 -p 5432; then exit 0; fi; \
	if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then \
		echo "==> Starting the local PostgreSQL cluster"; \
		pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start; \
		for i in $$(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; \
	fi; \
	echo "PostgreSQL is not running on 127.0.0.1:5432 and no local cluster could be started."; \
	echo "Install it (apt-get install postgresql) or set DATABASE_URL=postgres://user@host:port/db."; \
	exit 1

migrate: python-packages
	@$(DEV) $(PY) manage.py migrate --noinput -v 0

demo-data: migrate
	@$(DEV) FINANCE_LOG_LEVEL=WARNING $(PY) manage.py seed_demo

# Redis, the shared cache of the production profile and the tests that run it: start a
# local one if it is installed but not answering (it keeps nothing on disk: a cache).
REDIS_URL ?= redis://127.0.0.1:6379/0
redis:
	@if redis-cli -u "$(REDIS_URL)" ping >/dev/null 2>&1; then exit 0; fi; \
	case "$(REDIS_URL)" in redis://127.0.0.1:6379*|redis://localhost:6379*) ;; \
	*) echo "Redis does not answer at $(REDIS_URL)."; exit 1;; esac; \
	echo "==> Starting a local Redis on 127.0.0.1:6379"; \
	redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no >/dev/null; \
	for i in $$(seq 30); do redis-cli -u "$(REDIS_URL)" ping >/dev/null 2>&1 && exit 0; sleep 0.2; done; \
	echo "Redis did not start on 127.0.0.1:6379."; exit 1

run: setup demo-data redis
	@$(MAKE) --no-print-directory dev-serve

# The production profile (deploy/serve): DEBUG off, gunicorn, WhiteNoise, Redis, the
# messaging service's OTP release, against DATABASE_URL (PostgreSQL). Needs SECRET_KEY,
# MESSAGING_COOKIE, MESSAGING_SHARED_SECRET and METRICS_TOKEN (and each enabled provider's).
serve: setup postgres redis
	@REDIS_URL=$(REDIS_URL) MESSAGING_RELEASE=$(MESSAGING_RELEASE) deploy/serve

# The scaled-out shape on this machine (deploy/stack.py): nginx (TLS on STACK_PORT, default
# 8443) in front of two gunicorn app servers and two clustered Erlang nodes from the release,
# one background-job worker, against DATABASE_URL and REDIS_URL. DEBUG off: needs the same
# secrets as `make serve`. Ctrl-C stops everything it started.
stack: setup postgres redis
	@DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(REDIS_URL) $(PY) -m deploy.stack

# The development servers `make run` starts: Django's runserver on :8000, one background-job
# worker and the Erlang messaging service from its build directory on :8765; Ctrl-C stops
# them all. The server and the worker share Redis as their cache (the stats chart's samples
# are written by the worker and read by the server).
DEV_SHARED := REDIS_URL=$(REDIS_URL) CACHE_KEY_PREFIX=stayafrica-dev DJANGO_API_URL=http://127.0.0.1:8000
dev-serve:
	@$(DEV) $(PY) manage.py print_demo_logins
	@echo "==> Portal:    http://127.0.0.1:8000/admin/   (hosts: http://127.0.0.1:8000/statement/)"
	@echo "==> Messaging: $${ERLANG_MESSAGING_URL:-http://127.0.0.1:8765}/health"
	@$(DEV) erlang_messaging/bin/messaging-start & messaging_pid=$$!; \
	$(DEV) $(DEV_SHARED) $(PY) manage.py run_worker & worker_pid=$$!; \
	trap 'kill $$messaging_pid $$worker_pid 2>/dev/null' EXIT INT TERM; \
	$(DEV) $(DEV_SHARED) $(PY) manage.py runserver 127.0.0.1:8000

lint: python-dev-packages
	@echo "==> ruff check / ruff format --check"
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .

test-python: setup postgres redis python-dev-packages
	@echo "==> Django test suites on PostgreSQL"
	@# The suites use the in-process cache; the tests of the production profile start real
	@# servers that share Redis (TEST_REDIS_URL), under a key prefix of their own.
	@env -u REDIS_URL $(DEV) DATABASE_URL=$(TEST_DATABASE_URL) TEST_REDIS_URL=$(REDIS_URL) \
		$(VENV)/bin/pytest $(XDIST) finance messaging portal jobs

test-e2e: setup postgres redis python-dev-packages
	@echo "==> Browser tests (Playwright + Chromium)"
	@$(DEV) DATABASE_URL=$(TEST_DATABASE_URL) $(VENV)/bin/pytest e2e

# `make run`'s embedded default: migrations, demo data and the ledger check on SQLite.
test-sqlite: python-packages
	@echo "==> SQLite smoke run (the make run default)"
	@rm -f /tmp/stayafrica-smoke.sqlite3
	@$(DEV) DATABASE_URL=sqlite:////tmp/stayafrica-smoke.sqlite3 $(PY) manage.py migrate --noinput -v 0
	@$(DEV) DATABASE_URL=sqlite:////tmp/stayafrica-smoke.sqlite3 FINANCE_LOG_LEVEL=WARNING $(PY) manage.py seed_demo
	@$(DEV) DATABASE_URL=sqlite:////tmp/stayafrica-smoke.sqlite3 FINANCE_LOG_LEVEL=WARNING $(PY) manage.py seed_demo
	@$(DEV) DATABASE_URL=sqlite:////tmp/stayafrica-smoke.sqlite3 $(PY) manage.py check_ledger

# The Prometheus alert rules (deploy/prometheus/): the rule file, the example configuration
# (checked from a copy beside stand-in token files, so promtool also loads the rules through
# it) and the rules' unit tests.
test-alerts: debian-packages
	@echo "==> Prometheus: promtool check rules / check config / test rules"
	@promtool check rules deploy/prometheus/alerts.yml
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		cp deploy/prometheus/prometheus.yml deploy/prometheus/alerts.yml "$$tmp" && \
		mkdir "$$tmp/secrets" && touch "$$tmp/secrets/metrics-token" "$$tmp/secrets/messaging-secret" && \
		promtool check config "$$tmp/prometheus.yml"
	@promtool test rules deploy/prometheus/alerts_test.yml

test: setup lint test-alerts test-python test-sqlite erlang-test test-e2e

# Benchmarks are developer runs: they get the same environment as the tests. Each measures
# with DEBUG off and private secrets of its own (bench/*.py); bench-portal seeds its data
# in development mode.
bench-ledger: setup postgres python-dev-packages
	@$(DEV) DATABASE_URL=$(TEST_DATABASE_URL) $(PY) bench/ledger.py

bench-portal: setup postgres python-dev-packages
	@$(DEV) DATABASE_URL=$(TEST_DATABASE_URL) $(PY) bench/portal.py

# The scaled-out shape (deploy/stack.py, DEBUG off inside) under wrk, through nginx.
bench-stack: setup postgres redis python-dev-packages
	@$(DEV) DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(REDIS_URL) $(PY) bench/stack.py

# Backup and restore (deploy/backup.py; no Django settings, so no secrets needed).
#   make backup                  DATABASE_URL (pg_dump), the write-ahead logs of MESSAGING_DATA_DIR
#                                or MESSAGING_DATA_DIRS, and a manifest of checksums, into
#                                $(BACKUP_DIR)/stayafrica-<UTC time>/
#   make restore BACKUP=<dir>    into DATABASE_URL, which must exist and be empty (and empty
#                                MESSAGING_DATA_DIR(S) if given), then manage.py check_ledger
# BACKUP_DATABASE_URL overrides DATABASE_URL when that one goes through PgBouncer.
BACKUP_DIR ?= backups
backup: python-packages
	@BACKUP_DIR="$(BACKUP_DIR)" $(PY) -m deploy.backup backup

restore: python-packages
	@if [ -z "$(BACKUP)" ]; then echo "Usage: make restore BACKUP=<backup directory>"; exit 2; fi
	@$(PY) -m deploy.backup restore "$(BACKUP)"

clean:
	rm -rf $(VENV) node_modules db.sqlite3 staticfiles

-include mk/erlang.mk
