"""The packages depend on each other in one direction (docs/architecture.md): a
forbidden import, also one inside a function, fails here with where it is."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# What each layer may import of ours, besides itself.
ALLOWED = {
    "schemas": set(),
    "services.common": {"schemas"},
    "services.chunk": {"schemas", "services.common"},
    "services.metadata": {"schemas", "services.common", "services.chunk"},
    "services.logship": {"schemas", "services.common", "services.chunk",
                         "services.metadata"},
    "fuse_client": {"schemas", "services.common", "services.chunk"},
    "mooseng": {"schemas", "services.common", "services.chunk", "services.metadata",
                "services.logship", "fuse_client"},
}
OURS = {"schemas", "services", "fuse_client", "mooseng", "bench", "tests", "scripts"}


def layer(module: str) -> str:
    """The layer a dotted module name belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "services" and len(parts) > 1 else parts[0]


def imported(path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import of ours in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "services":   # `from services import metadata`
                names = [f"services.{alias.name}" for alias in node.names]
        else:
            continue
        found += [(node.lineno, name) for name in names if name.split(".")[0] in OURS]
    return found


def violations(root: pathlib.Path) -> list[str]:
    found = []
    for source in ALLOWED:
        for path in sorted((root / source.replace(".", "/")).rglob("*.py")):
            if source == "schemas" and path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
                continue          # generated: imports its sibling schemas only
            for line, module in imported(path):
                target = layer(module)
                if target != source and target not in ALLOWED[source]:
                    found.append(f"{path.relative_to(root)}:{line} imports {module} "
                                 f"({source} may import {sorted(ALLOWED[source]) or 'nothing'})")
    return found


def test_every_import_follows_the_layers():
    assert violations(ROOT) == []


@pytest.mark.parametrize("source, line, message", [
    ("fuse_client/x.py", "from services.metadata.namespace import reads\n",
     "fuse_client/x.py:1 imports services.metadata.namespace"),
    ("services/metadata/y.py", "def f():\n    import fuse_client.mount\n",
     "services/metadata/y.py:2 imports fuse_client.mount"),
    ("services/common/z.py", "from services import logship\n",
     "services/common/z.py:1 imports services.logship"),
])
def test_a_forbidden_import_is_found(tmp_path, source, line, message):
    for package in ALLOWED:
        (tmp_path / package.replace(".", "/")).mkdir(parents=True, exist_ok=True)
    (tmp_path / source).write_text(line)
    assert [v for v in violations(tmp_path) if v.startswith(message)]
