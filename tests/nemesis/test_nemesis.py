"""A short seeded nemesis run (docs/nemesis.md): real metadata nodes in network
namespaces, four clients, every fault kind the seed picks, then the checks. A seed
that once failed is kept here as a regression test."""

import json
import os

import pytest

from tests.nemesis import netlab
from tests.nemesis.run import passed, run

SECONDS = float(os.environ.get("NEMESIS_TIME", "45"))
SEEDS = [int(s) for s in os.environ.get("NEMESIS_SEEDS", "1").split(",")]


@pytest.fixture
def root(tmp_path):
    if (why := netlab.available()) is not None:
        pytest.skip(why)
    return str(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("seed", SEEDS)
def test_faults_lose_nothing_and_every_history_is_linearizable(root, seed):
    report = run(seed, SECONDS, root)
    print(json.dumps(report, indent=1))
    assert sum(report["faults"].values()) >= 3, "too few faults to mean anything"
    assert report["operations"] > 500, "the clients did almost nothing"
    assert passed(report), json.dumps(report, indent=1)
