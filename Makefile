# The two commands: `make run` and `make test`. Both set up .venv and the demo data first.
PYTHON ?= python3
VENV   ?= .venv
DATA   ?= data
HOST   ?= 127.0.0.1
PORT   ?= 8000
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.installed

CHROMIUM ?= /usr/bin/chromium

.PHONY: run test demo setup bench clean browser services cluster

setup: $(STAMP)

$(STAMP): pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]' -e 'clients/python[all]'
	touch $(STAMP)

# Builds only the demo datasets that are missing or incomplete.
demo: $(STAMP)
	$(PY) -m labservice demo build --data $(DATA)

run: demo
	$(PY) -m labservice serve --host $(HOST) --port $(PORT) --data $(DATA)

# The portal's browser tests drive Debian's Chromium (Playwright cannot download browsers here).
browser:
	test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The platform tests start their own PostgreSQL, Redis and nginx (tests/plugin/postgres.py, redis.py, nginx.py),
# and the cluster test its hosts in network namespaces (iproute2's `ip`, util-linux's `runuser`)
# from Debian's packages (Debian keeps pg_ctl in /usr/lib/postgresql/<v>/bin); `make run` needs none of them.
services:
	(command -v pg_ctl || ls /usr/lib/postgresql/*/bin/pg_ctl) >/dev/null 2>&1 && command -v redis-server >/dev/null \
	  && (command -v nginx || test -x /usr/sbin/nginx) >/dev/null \
	  && (command -v ip || test -x /usr/sbin/ip) >/dev/null && command -v runuser >/dev/null \
	  || (apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server nginx iproute2 util-linux)

# The multi-host topology of tests/cluster/ (network namespaces, so root only): builds it, prints the
# balancer's URL and a token, and tears everything down on Ctrl-C.
cluster: setup services
	PYTHONPATH=$(CURDIR) $(PY) -m tests.cluster.cluster

test: demo browser services
	LABSERVICE_DEMO_DATA=$(abspath $(DATA)) $(PY) -m pytest

bench: demo
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
