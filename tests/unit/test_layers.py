"""Architecture rules that a machine can check: the core never imports torch, layers import downwards."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import merlin_mdm

PACKAGE = Path(merlin_mdm.__file__).parent


def test_importing_the_cli_and_core_does_not_import_torch() -> None:
    code = (
        "import sys, merlin_mdm.cli.main, merlin_mdm.backends, merlin_mdm.studies, merlin_mdm.status.render;"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_torch_only_inside_mdm() -> None:
    offenders = [str(p) for p in PACKAGE.rglob("*.py")
                 if "mdm" not in p.relative_to(PACKAGE).parts[:1]
                 and any(n == "torch" or n.startswith("torch.") for n in _imports(p))]
    assert offenders == []


def test_spec_and_launchers_are_pure_of_upper_layers() -> None:
    forbidden = ("merlin_mdm.backends", "merlin_mdm.status", "merlin_mdm.cli", "merlin_mdm.study",
                 "merlin_mdm.batch", "celery", "redis", "subprocess")
    for layer in ("spec", "launchers"):
        for path in (PACKAGE / layer).rglob("*.py"):
            bad = [n for n in _imports(path) if n.startswith(forbidden)]
            assert bad == [], f"{path} imports {bad}"


def test_batch_systems_never_name_a_launcher() -> None:
    for path in (PACKAGE / "batch").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "srun" not in text and "jsrun" not in text, path


def test_the_status_path_loads_no_parser_broker_or_executor() -> None:
    # `status` must be quick: opening a local study's store and drawing its table loads no spec model or YAML
    # parser, no Celery or Redis client, no rich, no numpy and no executor (they load when a study starts).
    code = (
        "import io, sys, merlin_mdm.cli.main, merlin_mdm.cli.status, merlin_mdm.studies, merlin_mdm.status.render;"
        "from merlin_mdm.backends import get_backend; get_backend('local');"
        "from merlin_mdm.status.model import StudySnapshot, StudyState;"
        "merlin_mdm.status.render.render_table(StudySnapshot('s', '/w', StudyState.RUNNING, ''), io.StringIO());"
        "print(sorted(m for m in ('yaml', 'celery', 'redis', 'rich', 'numpy', 'multiprocessing', 'socket', 'csv',"
        " 'merlin_mdm.spec.model', 'merlin_mdm.backends.execution', 'merlin_mdm.batch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
