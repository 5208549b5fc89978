"""Merlin 1.13 as a test oracle: install it in its own virtual environment, run one of its shipped examples
with it and with merlin-mdm, and compare the two workspaces file by file.

Only the task folders are compared (every file's relative path and its text, with each tool's workspace and
spec folder written as <WS> and <SPEC>); merlin_info/ (provenance) and Merlin's own bookkeeping files
(MERLIN_STATUS.json, status.lock) differ on purpose, see docs/merlin-compat.md.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["EXTRA_PACKAGES", "MERLIN_PINS", "ExamplePair", "compare_workspaces", "ensure_merlin", "run_pair"]

MERLIN_PINS = ("merlin==1.13.0", "celery==5.5.3")  # Celery 5.7 makes Merlin 1.13 drop chained steps
EXTRA_PACKAGES = ("names", "merlin-spellbook", "faker")  # what the examples' own scripts import
CLI = [sys.executable, "-m", "merlin_mdm.cli.main"]
IGNORED = {"MERLIN_STATUS.json", "status.lock", "__pycache__"}
_STAMP = re.compile(r"_(\d{8}-\d{6})(\.\d+)?$")
_CLOCK = re.compile(r"\b\d\d:\d\d:\d\d( [AP]M)?\b")  # `date` output in the examples' files (restart_delay)


def ensure_merlin(venv: Path, timeout: float = 900) -> Path:
    """The `merlin` of ``venv``, installing Merlin 1.13 and the examples' packages there first if needed."""
    merlin = venv / "bin" / "merlin"
    if merlin.exists() and (venv / ".complete").exists():
        return merlin
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=timeout)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *MERLIN_PINS, *EXTRA_PACKAGES], check=True, timeout=timeout, capture_output=True)
    (venv / ".complete").write_text("merlin 1.13.0\n")
    return merlin


@dataclass(frozen=True)
class ExamplePair:
    """One example run by both tools."""

    merlin_ws: Path
    mdm_ws: Path
    merlin_root: Path  # the folder the example was copied to and run in (SPECROOT)
    mdm_root: Path
    merlin_rc: int
    mdm_rc: int
    mdm_log: str


_SEEDED = """\
# Written by merlin-mdm's oracle tests: every Python process starts with seeded random generators, so the
# examples' sample generators draw the same samples under Merlin and under merlin-mdm.
import random
random.seed(0)
try:
    import numpy
except ImportError:
    numpy = None
if numpy is not None:
    numpy.random.seed(0)
    _seed, _rng = numpy.random.seed, numpy.random.default_rng
    numpy.random.seed = lambda seed=None: _seed(0 if seed is None else seed)  # `seed(None)` would draw entropy
    numpy.random.default_rng = lambda seed=None: _rng(0 if seed is None else seed)
"""


def _env(venv: Path, home: Path) -> dict[str, str]:
    # The user's environment: Merlin's virtual environment first on PATH, as for someone who activated it.
    seeded = home / "seeded"
    seeded.mkdir(exist_ok=True)
    (seeded / "sitecustomize.py").write_text(_SEEDED)
    path = f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
    pythonpath = os.pathsep.join(p for p in (str(seeded), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "HOME": str(home), "PATH": path, "OMP_NUM_THREADS": "1", "PYTHONPATH": pythonpath}


def _newest_workspace(root: Path, name: str) -> Path:
    found = [p for p in root.rglob(f"{name}_*") if p.is_dir() and _STAMP.search(p.name)
             and (p / "merlin_info").is_dir()]
    if not found:
        raise AssertionError(f"no workspace of {name} under {root}")
    return max(found, key=lambda p: p.stat().st_mtime)


def _run_merlin(argv: list[str], cwd: Path, env: dict[str, str], timeout: float, done_glob: str | None) -> int:
    """Merlin's exit code. With ``done_glob``, Merlin is stopped (rc 124) once a file matching it exists under
    ``cwd``: its last task has ended, and Merlin is known to stay up long after that."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if done_glob and any(cwd.glob(done_glob)):
            time.sleep(2)  # let it finish writing
            break
        time.sleep(0.5)
    if proc.poll() is None:
        proc.kill()
        proc.wait()
        return 124
    return proc.returncode


def run_pair(venv: Path, example: str, spec_name: str, study_name: str, tmp: Path,
             mdm_args: tuple[str, ...] = (), merlin_args: tuple[str, ...] = (), timeout: float = 600,
             merlin_done: str | None = None) -> ExamplePair:
    """Copy ``example`` out of Merlin, run ``spec_name`` in it with Merlin and with merlin-mdm (--local).

    ``merlin_done``: a glob (under the example's folder) whose first match means Merlin's work is over.
    """
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    env = _env(venv, home)
    merlin = str(venv / "bin" / "merlin")
    subprocess.run([merlin, "example", example], cwd=tmp, env=env, check=True, capture_output=True, timeout=120)
    source = next(p for p in tmp.iterdir() if p.name not in ("home",))
    ref_dir, mdm_dir = tmp / "ref", tmp / "mdm"
    for target in (ref_dir, mdm_dir):
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.mkdir()
            shutil.copy(source, target / source.name)
    merlin_rc = _run_merlin([merlin, "run", "--local", spec_name, *merlin_args], ref_dir, env, timeout,
                            merlin_done)
    merlin_ws = _newest_workspace(ref_dir, study_name)
    mdm = subprocess.run([*CLI, "run", spec_name, "--local", "--no-progress", *mdm_args], cwd=mdm_dir,
                         env=env, capture_output=True, text=True, timeout=timeout)
    return ExamplePair(merlin_ws, _newest_workspace(mdm_dir, study_name), ref_dir, mdm_dir, merlin_rc,
                       mdm.returncode, mdm.stderr + mdm.stdout)


def _files(ws: Path) -> dict[str, Path]:
    out = {}
    for path in ws.rglob("*"):
        rel = path.relative_to(ws)
        if path.is_file() and rel.parts[0] != "merlin_info" and not IGNORED & set(rel.parts):
            out[str(rel)] = path
    return out


def _normalized(path: Path, ws: Path, root: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return f"<binary {path.stat().st_size} bytes>"
    stamp = _STAMP.search(ws.name)
    text = text.replace(str(ws), "<WS>").replace(str(root), "<SPEC>")
    # a listing of a task folder (`ls`) names Merlin's bookkeeping files, which merlin-mdm does not write
    text = "".join(line for line in text.splitlines(keepends=True) if line.strip() not in IGNORED)
    text = _CLOCK.sub("<TIME>", text)
    return text.replace(stamp.group(1), "<TS>") if stamp else text


def compare_workspaces(pair: ExamplePair) -> list[str]:
    """Every difference between the two workspaces' task folders, one line each (empty when they match)."""
    merlin_ws, mdm_ws = pair.merlin_ws, pair.mdm_ws
    ref, ours = _files(merlin_ws), _files(mdm_ws)
    problems = [f"only in Merlin's: {rel}" for rel in sorted(set(ref) - set(ours))]
    problems += [f"only in merlin-mdm's: {rel}" for rel in sorted(set(ours) - set(ref))]
    for rel in sorted(set(ref) & set(ours)):
        a, b = _normalized(ref[rel], merlin_ws, pair.merlin_root), _normalized(ours[rel], mdm_ws, pair.mdm_root)
        if a != b:
            problems.append(f"differs: {rel}\n  Merlin:     {a[:300]!r}\n  merlin-mdm: {b[:300]!r}")
    return problems
