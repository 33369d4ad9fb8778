# The two commands: `make run` (the demo) and `make test` (lint and every test).
.PHONY: setup run test lint protos bench

setup:
	@scripts/setup.sh

run: setup
	.venv/bin/mooseng demo

lint: setup
	.venv/bin/ruff check .

test: lint
	.venv/bin/python -m pytest

protos: setup
	.venv/bin/python scripts/gen_protos.py

bench: setup
	.venv/bin/python bench/fold.py
	.venv/bin/python bench/logstore.py
	.venv/bin/python bench/raft.py
	.venv/bin/python -m bench.metadata
	.venv/bin/python bench/chunkstore.py
