"""The checked-in generated modules must match schemas/*.proto."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_modules_are_fresh(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_protos.py"), str(tmp_path)],
                   check=True)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "schemas").iterdir())
    assert generated, "protoc generated nothing"
    for rel in generated:
        fresh = (tmp_path / rel).read_text()
        checked_in = ROOT / rel
        assert checked_in.exists(), f"{rel} is not checked in: run `make protos`"
        assert checked_in.read_text() == fresh, f"{rel} is stale: run `make protos`"
