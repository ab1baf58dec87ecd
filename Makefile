# gitopsd: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages the tests use: git, systemd-analyze (systemd), sshd for real SSH targets, and a real
# Prometheus (with promtool) scraping the daemon's /metrics and evaluating monitoring/alerts.yml, and chromium
# for the web dashboard's browser tests (Playwright drives it: no browser download); PostgreSQL (initdb, pg_ctl,
# postgres) for the store's tests on its second backend (tests/postgres_fixture.py); python3-venv, because the
# installed end-to-end test (tests/e2e/test_installed.py) installs the built wheel as the README's Install does;
# Alertmanager for freezes raised by alerts, gnupg for OpenPGP-signed commits.
DEBIAN_PACKAGES := git systemd openssh-server openssh-client bubblewrap util-linux mount python3-venv prometheus prometheus-alertmanager chromium postgresql gnupg

.PHONY: format venv venv-deps deps demo lint test test-modules test-fast check fuzz bench docs clean

# The virtualenv needs only Python's venv module (python3-venv, for Debian's python3): installed first and alone, so
# that `make -j2 deps venv`, as `make test` runs it, unpacks the other Debian packages while pip installs.
venv-deps:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	  else echo "$(PYTHON) has no venv module: install python3-venv with apt-get"; exit 1; fi; }

# Byte-code for every installed file as pip would write it, but on every core at once (pip compiles one file at a
# time: 36 s became 29 s here). It must be written now: sandboxed runs are `nobody`, who cannot write it there later.
$(STAMP): pyproject.toml | venv-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --no-compile -e '.[test]'
	$(BIN)/python -m compileall -q -j0 $(VENV)/lib gitopsd
	touch $(STAMP)

venv: $(STAMP)

# Installs missing Debian packages when run as root (CI); otherwise only says what is missing.
deps: venv-deps
	@missing=""; for p in $(DEBIAN_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing Debian packages:$$missing (install them with apt-get)"; fi; \
	fi

demo: $(STAMP)
	$(BIN)/python -m gitopsd.installers.demo

# The checks that keep the shape: types (mypy --strict), ruff's rules (bugs, security, imports, pyupgrade,
# simplify, complexity: pyproject.toml) and its formatter, and the layers and single importers of import-linter
# (pyproject.toml, [tool.importlinter]). `make format` applies the formatter.
lint: $(STAMP)
	$(BIN)/mypy
	$(BIN)/ruff check gitopsd tests bench tools fuzz
	$(BIN)/ruff format --no-cache --check gitopsd tests bench tools fuzz
	$(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff check --fix gitopsd tests bench tools fuzz
	$(BIN)/ruff format gitopsd tests bench tools fuzz

# Four workers on the 2 cores, one test file each at a time (--dist loadfile): most of a test's time is spent
# waiting on the daemon, Ansible or a server, so two workers left the cores idle 40-50 % of a quiet run. Files that
# create Unix users or start servers use names and ports of their own, and tests look only at their own processes,
# so files never meet; a file's fixtures stay in one process. TEST_WORKERS=2 for a machine that is busy otherwise.
TEST_WORKERS ?= 4
# The Debian packages and the virtualenv at once (apt-get and pip each keep one core busy), then lint and the test
# modules' cache side by side, then the suite.
test:
	@$(MAKE) --no-print-directory -j2 deps venv
	@$(MAKE) --no-print-directory -j2 lint test-modules
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

# pytest's rewritten test modules, cached in tests/**/__pycache__ while the lint keeps one core busy: every worker
# collects every test file, and on a fresh clone each rewrote all of them again (20 s of CPU for the four, 8 s with
# the cache; pytest reads it where PYTHONDONTWRITEBYTECODE is set too, but writes it only where it is not). Only a
# cache: a collection error is the suite's to report, with its output.
test-modules: $(STAMP)
	@env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest --collect-only -q -p no:cacheprovider >/dev/null 2>&1 || true

test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# Every coverage-guided fuzz target (fuzz/fuzz_*.py, atheris) for FUZZ_SECONDS each, one after the other; what they
# learn stays in .fuzz/<target>/ (seeded from fuzz/corpus/<target>/), a finding in .fuzz/crash-* (docs: DEVELOPMENT.md).
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	@for target in fuzz/fuzz_*.py; do name=$$(basename $$target .py); mkdir -p .fuzz/$$name; \
	  echo "== $$name: $(FUZZ_SECONDS)s (log: .fuzz/$$name.log)"; \
	  if ! (cd fuzz && GITOPSD_FUZZ_TMP=../.fuzz/tmp ../$(BIN)/python $$name.py -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=2048 \
	        -artifact_prefix=../.fuzz/crash-$$name- ../.fuzz/$$name $$([ -d corpus/$$name ] && echo corpus/$$name)) \
	        > .fuzz/$$name.log 2>&1; then tail -40 .fuzz/$$name.log; exit 1; fi; \
	  grep '^Done' .fuzz/$$name.log; rm -rf .fuzz/tmp; done
# The fast lane before a commit (about 50 s on 2 cores): the lint, then the unit tests (one process: two workers
# were no faster, 15 s either way).
check: $(STAMP) lint
	$(BIN)/python -m pytest -q tests/unit

# docs/cli.md from the command line's parser, the reason ids in docs/api.md from core/reasons.py (tests/unit/test_docs.py
# fails when they disagree).
docs: $(STAMP)
	$(BIN)/python tools/gen_cli_docs.py
	$(BIN)/python tools/gen_config_docs.py
	$(BIN)/python tools/gen_reason_docs.py

# Byte-compiled first, as an installed package would be: the hooks start a Python on every push.
bench: $(STAMP)
	$(BIN)/python -m compileall -q gitopsd
	$(BIN)/python bench/run.py

clean:
	rm -rf .demo .pytest_cache
