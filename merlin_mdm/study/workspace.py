"""The study workspace on disk: `<OUTPUT_PATH>/<name>_<timestamp>/` with provenance in `merlin_info/`.

This is the only effectful module of the study layer. A workspace is built completely or not at all: a
failure while preparing it removes what was written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import os
import shlex
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from merlin_mdm import _shell
from merlin_mdm.errors import SpecError, SpecIssue, UsageError, WorkspaceError
from merlin_mdm.spec import LoadedSpec, Spec
from merlin_mdm.spec.checks import output_path_issue, output_path_problem
from merlin_mdm.spec.tokens import substitute
from merlin_mdm.study.expand import StudyContext, expand, resolve_variables, study_tokens
from merlin_mdm.study.layout import MAKING_FILE, PLAN_FILE, SOURCE_FILE, Workspace, study_of
from merlin_mdm.study.plan import StudyPlan
from merlin_mdm.study.samples import SAMPLE_SUFFIXES, SampleSet, checked_samples, keep_parsed

__all__ = ["PLAN_FILE", "Workspace", "create_workspace", "output_path", "studies_of"]

def output_path(spec: Spec) -> Path:
    """OUTPUT_PATH: the `env.variables.OUTPUT_PATH` value (relative to the spec's folder), else the cwd."""
    value = resolve_variables(spec, {}).get("OUTPUT_PATH")
    if not value:
        return Path.cwd()
    path = Path(value).expanduser()
    return path if path.is_absolute() else (spec.root / path).resolve()


def studies_of(spec: Spec) -> Callable[[str], bool]:
    """Whether a workspace path is one of ``spec``'s studies: named after it (:func:`~.layout.study_of`), right
    under its OUTPUT_PATH. A spec with no OUTPUT_PATH puts its studies in the folder it was run from: from
    another folder they are not recognised (the safe side for `purge --only-mine`: they stay queued). Another
    user's copy of the same spec text, elsewhere, is not this spec's."""
    try:
        base: Path | None = output_path(spec)
    except RuntimeError:  # `~nouser/x`
        base = None
    name = spec.description.folder
    return lambda workspace: Path(workspace).parent == base and study_of(name, Path(workspace).name)


_SPEC_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.EEXIST, errno.ENOENT,
                          errno.ENAMETOOLONG, errno.ELOOP})  # OUTPUT_PATH's fault, not the machine's


def _new_root(spec: Spec, base: Path, now: dt.datetime) -> tuple[Path, str]:
    """Create ``<base>/<name>_<stamp>`` exclusively: concurrent runs take the next free ``.N`` suffix.

    A base that cannot hold a workspace (a file, a kernel file system, no permission) is a spec error at the line
    of OUTPUT_PATH; validation finds most of them before, this catches the rest (and what changed since)."""
    name, stamp = spec.description.folder, now.strftime("%Y%m%d-%H%M%S")
    problem = output_path_problem(base)
    if problem:
        raise SpecError([output_path_issue(spec, problem)])
    try:
        base.mkdir(parents=True, exist_ok=True)
        for suffix in range(10_000):
            root = base / (f"{name}_{stamp}" + (f".{suffix}" if suffix else ""))
            try:
                root.mkdir()  # atomic: exactly one run creates a given name
            except FileExistsError:
                continue
            if _kept_beside(root):  # a failed run's files are kept under this name: they would seem to be ours
                root.rmdir()
                continue
            return root, stamp
    except OSError as exc:
        problem = f"cannot create a workspace under {base}: {exc.strerror or exc}"
        if exc.errno in _SPEC_ERRNOS:
            raise SpecError([output_path_issue(spec, problem)]) from None
        raise WorkspaceError(problem) from None
    raise WorkspaceError(f"cannot create a workspace under {base}: 10000 studies named {name}_{stamp} exist")


# The files a run that failed while making its workspace keeps beside it (the workspace itself is removed):
# `<root>.rejected-samples.<suffix>` (:func:`_kept_generated`) and `<root>.generate.out/.err` (:func:`_kept_output`).
# They reserve the name: a later run in the same second takes the next `.N`, not a name whose files are not its own.
_KEPT_TAGS = ("rejected-samples", "generate")


def _kept_names(root: Path) -> list[Path]:
    """Every name a failed run's kept files can take beside ``root`` (a few lookups, never a listing of
    OUTPUT_PATH, which may hold thousands of studies on a parallel file system)."""
    samples = [root.parent / f"{root.name}.{_KEPT_TAGS[0]}{suffix}" for suffix in (*SAMPLE_SUFFIXES, "")]
    return [*samples, *(root.parent / f"{root.name}.{_KEPT_TAGS[1]}.{stream}" for stream in ("out", "err"))]


def _kept_beside(root: Path) -> bool:
    """Whether a failed run's files are kept beside ``root`` under its name (checked after ``root`` is made, so
    a run that keeps them, which it does before removing its root, is never missed)."""
    return any(os.path.lexists(path) for path in _kept_names(root))


def create_workspace(
    loaded: LoadedSpec,
    samples_file: Path | None = None,
    batch_size: int = 100,
    now: dt.datetime | None = None,
    slots: int = 1,
    watch: Callable[[int], None] | None = None,
) -> tuple[Workspace, StudyPlan]:
    """Create the workspace, its provenance and the plan; removes everything written if any step fails.

    Units hold at most ``batch_size`` samples and are sized for ``slots`` workers (:class:`UnitLayout`).
    ``watch`` is told the process group of the samples' generator (a task guard: it dies with the caller).
    """
    spec = loaded.spec
    base = output_path(spec)
    _check_utf8(base)
    made = _missing(base)
    try:
        root, stamp = _new_root(spec, base, now or dt.datetime.now())
    except BaseException:
        _remove_empty(made)  # an OUTPUT_PATH made without room for a workspace in it (a umask of 277)
        raise
    try:
        (root / "merlin_info").mkdir()
        (root / "merlin_info" / MAKING_FILE).touch()  # gone with the plan's writing: a kill in between is said so
        return _fill_workspace(Workspace(root), loaded, base, stamp, samples_file, (batch_size, slots), watch)
    except BaseException as exc:
        _remove_tree(root)
        _remove_empty(made)
        if isinstance(exc, OSError):
            raise WorkspaceError(f"cannot write the workspace {root}: {exc.strerror or exc}") from None
        raise


def _check_utf8(base: Path) -> None:
    """Refuse an OUTPUT_PATH whose name is not UTF-8 (a byte like 0xe9 of Latin-1), before anything is made.

    The workspace's path is recorded as text in the plan and the status database, and named in every task's
    script and environment: such a path failed halfway with a UnicodeEncodeError and left a workspace behind.

    Raises:
        UsageError: ``base`` holds a byte that is not UTF-8.
    """
    try:
        os.fspath(base).encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(base).decode("utf-8", "backslashreplace")
        raise UsageError(f"the workspace folder {shown} (OUTPUT_PATH, or the current folder) has a name that is not "
                         "UTF-8; merlin-mdm records workspace paths as UTF-8 text: rename it (or set OUTPUT_PATH to "
                         "another folder)") from None


def _missing(base: Path) -> list[Path]:
    """The folders of ``base`` that do not exist yet, deepest first: those a refused study must not leave behind."""
    missing = []
    for folder in [base, *base.parents]:
        if os.path.exists(folder):  # False where it cannot be seen: rmdir then fails, harmless
            break
        missing.append(folder)
    return missing


def _remove_tree(root: Path) -> None:
    """Remove the workspace ``root`` being made, even where a umask (277, 777) left its folders without read, write
    or search permission for their owner: rmtree alone could not open or empty them and left them behind."""
    def unlock(folder: str) -> None:
        with contextlib.suppress(OSError):
            os.chmod(folder, 0o700)
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        unlock(entry.path)

    unlock(os.fspath(root))
    shutil.rmtree(root, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    """Remove ``folders`` (deepest first) while they are empty: another run's study in one of them keeps it."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def _given_vars(spec: Spec) -> str:
    """A comment naming the variables the command line gave (``--vars``): the copy's `env.variables` lines show
    the file's values, its fields the given ones, and `launch`, `run-workers` and `restart` need them again."""
    given = {**dict(spec.env.labels), **dict(spec.env.variables)}  # --vars may set a label (as Merlin's)
    if not spec.env.from_vars:
        return ""
    listed = " ".join(shlex.quote(f"{k}={given[k]}") for k in spec.env.from_vars)
    return f"# run with --vars {listed} (filled in below; the env.variables lines show the file's values)\n"


def _fill_workspace(ws: Workspace, loaded: LoadedSpec, base: Path, stamp: str, samples_file: Path | None,
                    units: tuple[int, int], watch: Callable[[int], None] | None) -> tuple[Workspace, StudyPlan]:
    spec = loaded.spec
    batch_size, slots = units
    ctx = StudyContext(str(ws.root), str(base), stamp, None, batch_size)
    name = spec.copy_name
    (ws.info / f"{name}.orig.yaml").write_text(loaded.text, encoding="utf-8")
    if os.path.isfile(spec.path):  # not a spec made from text (its path is only a name)
        (ws.info / SOURCE_FILE).write_text(os.path.abspath(spec.path) + "\n", encoding="utf-8",
                                           errors="surrogateescape")
    tokens = study_tokens(spec, ctx)
    filled = substitute(loaded.text, tokens)
    (ws.info / f"{name}.partial.yaml").write_text(_given_vars(spec) + filled,
                                                   encoding="utf-8", errors="surrogateescape")  # paths: their bytes
    samples = _stage_samples(spec, ws, tokens, samples_file, watch)
    ctx = StudyContext(str(ws.root), str(base), stamp, samples, max(1, batch_size), max(1, slots))
    plan = expand(spec, ctx)
    _write_atomic(ws.plan_path, plan.to_json())
    _write_atomic(ws.info / f"{name}.expanded.yaml", _expanded_spec(filled, spec, tokens, base), "surrogateescape")
    _write_atomic(ws.info / f"{name}.instances.yaml", _instances_yaml(plan))
    (ws.info / MAKING_FILE).unlink()
    return ws, plan


def _stage_samples(spec: Spec, ws: Workspace, tokens: dict[str, str], override: Path | None,
                   watch: Callable[[int], None] | None = None) -> SampleSet | None:
    """Copy the samples file (the spec's, or ``override`` from --samplesfile) into merlin_info/ under its own name
    and lay it out. The plan records the copy's path, so a workspace of before (``merlin_info/samples.csv``) still
    finds its samples."""
    cfg = spec.samples
    if cfg is None:
        return None
    if override is None:
        source = Path(substitute(cfg.file, tokens)).expanduser()
        source = source if source.is_absolute() else spec.root / source
        if cfg.generate_cmd:
            _generate_samples(spec, ws, substitute(cfg.generate_cmd, tokens), watch)
    else:
        source = override.absolute()  # relative to where the command ran, as the shell completed it
    given = f"--samplesfile {override}" if override is not None else ""
    try:
        data = checked_samples(spec, source, given)  # the user's file is named, not the copy
    except SpecError as exc:
        if override is not None or not cfg.generate_cmd or ws.root not in source.resolve().parents:
            raise
        raise SpecError([*exc.issues, _kept_generated(spec, ws, source)]) from None
    target = ws.info / source.name  # its own name, as Merlin copies --samplesfile (before: samples.<suffix>)
    try:
        if source.resolve() != target.resolve():
            shutil.copyfile(source, target)
    except OSError as exc:
        problem = f"cannot copy samples file {source}: {exc.strerror or exc}"
        if given:
            raise UsageError(f"{given}: {problem}") from None
        raise SpecError([SpecIssue(str(spec.path), 0, 0, "merlin.samples.file", problem)]) from None
    keep_parsed(target, data[:, :len(cfg.column_labels)])  # after the copy: named after the copy's mtime
    return SampleSet(str(target), int(data.shape[0]), cfg.column_labels, cfg.level_max_dirs)


def _kept_generated(spec: Spec, ws: Workspace, source: Path) -> SpecIssue:
    """A generated samples file that does not fit is copied beside the workspace, which is removed: the error
    named a file that no longer existed."""
    suffix = source.suffix.lower() if source.suffix.lower() in SAMPLE_SUFFIXES else ""  # one of _kept_names
    kept = ws.root.parent / f"{ws.root.name}.{_KEPT_TAGS[0]}{suffix}"
    try:
        shutil.copyfile(source, kept)
        what = f"the generated file is kept as {kept} to look at"
    except OSError as exc:
        what = f"the generated file could not be kept ({exc.strerror or exc})"
    return SpecIssue(str(spec.path), 0, 0, "merlin.samples.generate", what)


def _generate_samples(spec: Spec, ws: Workspace, cmd: str, watch: Callable[[int], None] | None) -> None:
    result = _shell.run([spec.batch.shell, "-c", cmd], timeout=3600, cwd=str(ws.info), watch=watch)
    # as Merlin: the command as written (a one-line one has no newline); its paths' own bytes
    (ws.info / "cmd.sh").write_text(cmd, encoding="utf-8", errors="surrogateescape")
    (ws.info / "cmd.out").write_text(result.stdout, encoding="utf-8", errors="surrogateescape")
    (ws.info / "cmd.err").write_text(result.stderr, encoding="utf-8", errors="surrogateescape")
    if result.rc != 0:
        tail = result.stderr.strip().splitlines()[-3:]
        line, column = _generate_mark(spec)
        raise SpecError([SpecIssue(str(spec.path), line, column, "merlin.samples.generate.cmd",
                                   f"exited with {result.rc}: {' | '.join(tail) or 'no output'}"
                                   f"{_kept_output(ws, result)}")])


def _kept_output(ws: Workspace, result: _shell.ShellResult) -> str:
    """A failed generator's whole output, copied beside the workspace (which is removed with its cmd.out and
    cmd.err): the message shows the last three lines of its errors only. '' when that was all, else where it is."""
    if not result.stdout and len(result.stderr.strip().splitlines()) <= 3:
        return ""
    kept = []
    for suffix, text in (("out", result.stdout), ("err", result.stderr)):
        path = ws.root.parent / f"{ws.root.name}.{_KEPT_TAGS[1]}.{suffix}"
        if text:
            with contextlib.suppress(OSError):
                path.write_text(text, encoding="utf-8", errors="surrogateescape")
                kept.append(str(path))
    return f" (its whole output is kept in {' and '.join(kept)})" if kept else ""


def _generate_mark(spec: Spec) -> tuple[int, int]:
    """Where merlin.samples.generate.cmd is in the spec file ((0, 0) when unknown)."""
    from merlin_mdm.spec.issues import value_mark

    node: Any = spec.raw
    for key in ("merlin", "samples", "generate"):
        node = node.get(key) if isinstance(node, Mapping) else None
    line, column = value_mark(node, "cmd")
    return int(line), int(column)


EXPANDED_HEAD = ("# the spec as this study ran it (Merlin's expanded spec): tokens and --vars filled in, OUTPUT_PATH "
                 "absolute; run-workers, status, queue-info and stop-workers --spec take it as they take the spec\n")
UNPARSED_HEAD = ("# the spec's text with its tokens filled in, which YAML cannot read back (a value filled in broke "
                 "it, or a path is no UTF-8): not a spec that runs; the study's own plan is plan.json\n")


def _expanded_spec(filled: str, spec: Spec, tokens: Mapping[str, str], base: Path) -> str:
    """Merlin's ``<name>.expanded.yaml``: a spec that runs from merlin_info/ as the original did from its folder
    (`merlin run-workers WORKSPACE/merlin_info/NAME.expanded.yaml` is how Merlin's users start workers for a
    study). ``filled`` is the spec's text with its tokens filled in (as Merlin fills them: in the text, then
    parsed again); its variables get the values the study ran with (--vars included), and OUTPUT_PATH and the
    samples file the study read (--samplesfile included) are absolute. A text that is no YAML mapping once filled
    in is written as it is, under a first line that says so."""
    from merlin_mdm.spec.loader import load_plain

    try:
        doc = load_plain(filled)
    except (yaml.YAMLError, UnicodeError):  # UnicodeError: a path's bytes that are no UTF-8 (kept as surrogates)
        doc = None
    if not isinstance(doc, dict):
        return UNPARSED_HEAD + filled
    variables = _mapping_at(_mapping_at(doc, "env"), "variables")
    variables.update({name: tokens.get(name, value) for name, value in spec.env.variables})
    variables["OUTPUT_PATH"] = str(base)
    _generated_parameters(doc, spec)
    merlin = doc.get("merlin")
    if spec.samples is not None and isinstance(merlin, dict) and isinstance(merlin.get("samples"), dict):
        given = Path(substitute(spec.samples.file, dict(tokens))).expanduser()
        merlin["samples"]["file"] = str(given if given.is_absolute() else spec.root / given)
    try:
        return EXPANDED_HEAD + yaml.safe_dump(doc, sort_keys=False, width=120, allow_unicode=True)
    except (yaml.YAMLError, UnicodeError):
        return UNPARSED_HEAD + filled


def _generated_parameters(doc: dict[Any, Any], spec: Spec) -> None:
    """Parameters the study took from a generator (``--pgen``) replace the text's, as in Merlin's expanded spec:
    started from it, `run` makes the same instances without the generator."""
    made = {p.name: {"values": list(p.values), "label": p.label} for p in spec.parameters}
    if any(p.product for p in spec.parameters) or _written_parameters(doc.get("global.parameters")) == made:
        return  # the spec's own (a generator's are one zipped group, and replace them all)
    doc["global.parameters"] = made


def _written_parameters(node: Any) -> dict[Any, Any]:
    """The text's `global.parameters` in the shape of :func:`_generated_parameters`' (a lone value as a list)."""
    if not isinstance(node, dict):
        return {}
    return {name: {"values": values if isinstance(values := entry.get("values"), list) else [values],
                   "label": entry.get("label")} for name, entry in node.items() if isinstance(entry, dict)}


def _mapping_at(doc: dict[Any, Any], key: str) -> dict[Any, Any]:
    """``doc[key]``, made an empty mapping where it is missing or empty."""
    if not isinstance(doc.get(key), dict):
        doc[key] = {}
    value: dict[Any, Any] = doc[key]
    return value


def _instances_yaml(plan: StudyPlan) -> str:
    steps = [{"name": i.name, "step": i.step, "workspace": i.workspace, "cmd": i.cmd, "restart": i.restart,
              "samples": i.uses_samples, "depends": [plan.instances[e.parent].name for e in i.parents]}
             for i in plan.instances]
    doc = {"study": plan.name, "workspace": plan.workspace, "batch_size": plan.batch_size, "slots": plan.slots,
           "samples": plan.samples.count if plan.samples else 0, "steps": steps}
    return yaml.safe_dump(doc, sort_keys=False, width=120)


def _write_atomic(path: Path, text: str, errors: str = "strict") -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8", errors=errors)  # surrogateescape: a path's bytes as they are
    os.replace(tmp, path)
