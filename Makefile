# The two commands: `make run` (a local cluster, mounted at ./mnt) and `make test`.
.PHONY: setup run stop demo test lint protos bench nemesis

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/mooseng up --dir mooseng-data --mount mnt

stop: setup
	.venv/bin/mooseng down --dir mooseng-data

demo: setup
	.venv/bin/mooseng demo

lint: setup
	.venv/bin/ruff check .

test: lint
	.venv/bin/python -m pytest

# Faults on real processes (docs/nemesis.md): make nemesis SEED=7 TIME=600
SEED ?= 1
TIME ?= 60
nemesis: setup
	.venv/bin/python -m tests.nemesis.run --seed $(SEED) --time $(TIME)

protos: setup
	.venv/bin/python scripts/gen_protos.py

bench: setup
	.venv/bin/python bench/fold.py
	.venv/bin/python bench/logstore.py
	.venv/bin/python bench/raft.py
	.venv/bin/python -m bench.metadata
	.venv/bin/python bench/chunkstore.py
	.venv/bin/python -m bench.data
	.venv/bin/python -m bench.fs
	.venv/bin/python bench/replay.py
