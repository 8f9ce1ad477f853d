# webinarpass: `make run` starts the bot, `make test` runs the whole suite. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TEST_POSTGRES_URL ?= postgresql+asyncpg://postgres@127.0.0.1:5432/test

.DEFAULT_GOAL := help
.PHONY: help install install-test run demo migrate test test-sqlite test-postgres lint format locales bench-rush bench-fanout

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	@touch $(VENV)/.installed $@

install: $(VENV)/.installed ## install the bot into .venv

install-test: $(VENV)/.installed-test ## install the bot and the test tools into .venv

run: install ## start the bot (polling; SQLite by default; needs BOT_TOKEN, see .env.example)
	$(BIN)/python -m bot

demo: install ## the whole product locally: sandbox Telegram, scripted users, a transcript
	$(BIN)/python -m bot demo

migrate: install ## apply database migrations
	$(BIN)/python -m bot migrate

test: install-test ## lint, then the whole suite on SQLite and on PostgreSQL
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m bot locales check > /dev/null
	TEST_DATABASE=sqlite $(BIN)/python -m pytest -q
	@if $(BIN)/python -c "import asyncio, asyncpg, sys; from sqlalchemy.engine import make_url; u = make_url('$(TEST_POSTGRES_URL)'); asyncio.run(asyncpg.connect(host=u.host, port=u.port or 5432, user=u.username, password=u.password, database=u.database, timeout=3))" 2>/dev/null; then \
		TEST_DATABASE=postgres TEST_POSTGRES_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -q; \
	elif [ -n "$$REQUIRE_POSTGRES" ]; then \
		echo "PostgreSQL is required (REQUIRE_POSTGRES) but not reachable at $(TEST_POSTGRES_URL)"; exit 1; \
	else \
		echo "PostgreSQL not reachable at $(TEST_POSTGRES_URL): the PostgreSQL run was skipped (see README)"; \
	fi

test-sqlite: install-test ## the suite on SQLite only
	TEST_DATABASE=sqlite $(BIN)/python -m pytest -q

test-postgres: install-test ## the suite on PostgreSQL only
	TEST_DATABASE=postgres TEST_POSTGRES_URL=$(TEST_POSTGRES_URL) $(BIN)/python -m pytest -q

lint: install-test ## ruff check and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-test ## format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

locales: install ## write locales/messages.pot and check every catalog
	$(BIN)/python -m bot locales extract
	$(BIN)/python -m bot locales check

bench-rush: install ## ticket rush benchmark (flows/s, pre-checkout p99, ratio to an echo bot)
	$(BIN)/python -m bench.rush

bench-fanout: install ## reminder fan-out benchmark under Telegram's rate limits
	$(BIN)/python -m bench.fanout
