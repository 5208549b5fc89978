"""Loading valid specs: every example, every block of the Merlin spec language, --vars overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from merlin_mdm.errors import SpecError, UsageError
from merlin_mdm.spec import (
    BatchConfig,
    Dependency,
    Description,
    Parameter,
    SamplesConfig,
    Worker,
    load_spec,
    load_spec_text,
    parse_vars,
    with_samples_file,
)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "merlin_mdm" / "examples").glob("*/*.yaml"))
FULL = ROOT / "tests" / "data" / "specs" / "valid" / "full.yaml"

MINIMAL = """
description: {name: tiny, description: one step}
env:
  variables:
    N: 3
    OUTPUT_PATH: ./out
study:
  - name: hello
    description: hi
    run: {cmd: echo $(N)}
"""


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_every_example_validates(example: Path) -> None:
    loaded = load_spec(example)
    assert loaded.spec.steps
    assert loaded.warnings == () and loaded.notes == ()  # the bundled examples run under Merlin 1.13 too
    assert loaded.text == example.read_text(encoding="utf-8")
    assert loaded.spec.root == example.parent


def test_examples_exist() -> None:
    assert {e.stem for e in EXAMPLES} >= {"hello", "hello_samples", "feature_demo", "null_samples"}


def test_full_spec_description_and_batch() -> None:
    spec = load_spec(FULL).spec
    assert spec.description == Description("full_study", "Every block of the spec language.")
    assert spec.batch == BatchConfig(type="slurm", shell="/bin/bash", bank="mybank", queue="pbatch", nodes=4,
                                     walltime="08:00:00", launch_pre="module load python",
                                     launch_args="--exclusive", extra={"qos": "high"})


def test_full_spec_env() -> None:
    env = load_spec(FULL).spec.env
    assert env.variables == (("OUTPUT_PATH", "./studies"), ("DATA", "$(OUTPUT_PATH)/data"), ("N_SAMPLES", "10"))
    assert env.labels == (("LOG", "log_$(SEED.label).txt"),)
    assert env.sources == ("./setup_env.sh",)
    assert env.dependencies == (
        Dependency("paths", "DEPS_DIR", "$(SPECROOT)/deps"),
        Dependency("git", "REPO", "$(OUTPUT_PATH)/repo", "https://example.invalid/repo.git", "v1.0"),
    )


def test_full_spec_steps_with_anchors_and_merges() -> None:
    train, simulate, collect = load_spec(FULL).spec.steps
    run = train.run
    assert (train.name, train.description) == ("train", "Train one model.")
    # From the `<<: [*gpu_run, *common]` merge:
    assert (run.nodes, run.procs, run.cores_per_task, run.gpus, run.walltime) == (2, 8, 4, 1, "02:00:00")
    assert (run.task_queue, run.max_retries, run.retry_delay) == ("gpu_queue", 3, 2.5)
    assert run.restart == "$(LAUNCHER) python3 train.py --resume"
    assert run.shell == "/bin/sh"
    assert run.batch == BatchConfig(type="slurm", queue="pdebug")
    assert run.extra == {"exclusive": True}
    assert simulate.run.depends == ("train",)
    assert (simulate.run.task_queue, simulate.run.max_retries, simulate.run.retry_delay) == ("merlin", 30, 1.0)
    assert (simulate.run.nodes, simulate.run.procs, simulate.run.cores_per_task) == (None, None, None)
    assert collect.run.depends == ("simulate_*",)
    assert collect.run.task_queue == "short"


def test_full_spec_parameters() -> None:
    assert load_spec(FULL).spec.parameters == (
        Parameter("SEED", (1, 2), "SEED.%%"),
        Parameter("LR", (0.1, 0.01), "LR.%%"),
        Parameter("MODEL", ("small", "large", "xl"), "MODEL.%%", product="arch"),
    )


def test_full_spec_merlin_block() -> None:
    spec = load_spec(FULL).spec
    assert spec.resources.task_server == "celery"
    assert spec.resources.overlap is True
    assert spec.resources.workers == (
        Worker("trainers", "-l INFO --concurrency 1", ("train",), 2, BatchConfig(type="slurm", queue="pgpu"),
               ("host1", "host2")),
        Worker("others", "", ("all",)),
    )
    assert spec.samples == SamplesConfig(
        "$(MERLIN_INFO)/samples.npy", ("X", "Y"),
        "python3 make_samples.py -n $(N_SAMPLES) -o $(MERLIN_INFO)/samples.npy", 10,
    )


def test_full_spec_user_block_is_kept() -> None:
    user = load_spec(FULL).spec.user
    assert user["resources"]["cores per task"] == 4
    assert user["study"]["common"]["retry_delay"] == 2.5


def test_step_lookup() -> None:
    spec = load_spec(FULL).spec
    assert spec.step("simulate").run.depends == ("train",)
    with pytest.raises(KeyError):
        spec.step("nope")


def test_product_true_names_its_own_group() -> None:
    text = MINIMAL + "global.parameters:\n  A: {values: [1, 2], label: A.%%, product: true}\n" \
        "  B: {values: [1], label: B.%%, product: false}\n"
    params = load_spec_text(text, "x.yaml").spec.parameters
    assert [(p.name, p.product) for p in params] == [("A", "A"), ("B", "")]


def test_numbers_become_text_where_text_is_expected() -> None:
    spec = load_spec_text(MINIMAL.replace("name: tiny", "name: 42"), "x.yaml").spec
    assert spec.description.name == "42"
    assert dict(spec.env.variables)["N"] == "3"


def test_vars_override_the_spec_s_variables() -> None:
    loaded = load_spec_text(MINIMAL, "x.yaml", overrides={"N": "7"})
    assert dict(loaded.spec.env.variables) == {"N": "7", "OUTPUT_PATH": "./out"}
    assert loaded.spec.env.from_vars == ("N",) and not loaded.warnings


def test_vars_naming_no_variable_of_the_spec_is_refused() -> None:
    """Merlin: "Command line override variable 'NM' not found in spec file", exit 1; before, a warning, and the
    study ran with the file's N (a typo ran the wrong study)."""
    with pytest.raises(UsageError) as refused:
        load_spec_text(MINIMAL, "x.yaml", overrides={"N": "7", "NM": "1"})
    assert refused.value.exit_code == 2
    assert str(refused.value) == (
        "--vars NM=1: NM is no variable or label of x.yaml and no $(...) it uses (did you mean 'N'?); its "
        "env.variables and env.labels: N, OUTPUT_PATH. Add it under env.variables to set it from the command line")
    with pytest.raises(UsageError, match=r"^--vars X=1 'Y=a b': X, Y are no variables or labels of x\.yaml"):
        load_spec_text(MINIMAL, "x.yaml", overrides={"X": "1", "Y": "a b"})


def test_vars_set_a_label_as_merlin_does() -> None:
    text = MINIMAL.replace("    OUTPUT_PATH: ./out\n", "    OUTPUT_PATH: ./out\n  labels:\n    L: lab\n")
    env = load_spec_text(text, "x.yaml", overrides={"L": "other"}).spec.env
    assert dict(env.labels) == {"L": "other"} and "L" not in dict(env.variables)


def test_vars_can_define_an_otherwise_undefined_token() -> None:
    text = MINIMAL.replace("echo $(N)", "echo $(MISSING)")
    with pytest.raises(SpecError, match=r"\$\(MISSING\) is not a defined token"):
        load_spec_text(text, "x.yaml", strict=True)
    assert [w.path for w in load_spec_text(text, "x.yaml").warnings] == ["study[0].run.cmd"]
    loaded = load_spec_text(text, "x.yaml", overrides={"MISSING": "1"})
    assert dict(loaded.spec.env.variables)["MISSING"] == "1" and not loaded.warnings  # the spec asks for it
    chained = load_spec_text(text, "x.yaml", overrides={"MISSING": "$(MORE)", "MORE": "2"})  # used by a --vars
    assert dict(chained.spec.env.variables)["MORE"] == "2"


@pytest.mark.parametrize("cmd", ["echo $(pwd)", "make -j $(nproc)", "echo $(basename $(pwd))", "x=$(date +%s)"])
def test_shell_command_substitutions_pass_without_warnings(cmd: str) -> None:
    loaded = load_spec_text(MINIMAL.replace("echo $(N)", f"'{cmd}'"), "x.yaml", strict=True)
    assert loaded.spec.steps[0].run.cmd == cmd and not loaded.warnings


def test_study_name_from_a_variable_and_from_vars() -> None:
    text = MINIMAL.replace("name: tiny", "name: $(NAME)").replace("N: 3", "N: 3\n    NAME: demo")
    assert load_spec_text(text, "x.yaml").spec.description.name == "demo"
    assert load_spec_text(text, "x.yaml", overrides={"NAME": "other"}).spec.description.name == "other"
    assert load_spec_text(text, "x.yaml", overrides={"NAME": "a b"}).spec.description.folder == "a_b"  # as Merlin
    with pytest.raises(SpecError, match=r"description.name: 'a/b': a '/' or a control character cannot be"):
        load_spec_text(text, "x.yaml", overrides={"NAME": "a/b"})
    for name in ('a"b', "a$b", "a`b`", "a'b", "a\\b"):  # a batch script's `exec >>DIR/"NAME.$JOB.out"` broke
        with pytest.raises(SpecError, match=r"quotes, backquotes, '\$' and '\\' in the name would break the shell"):
            load_spec_text(text, "x.yaml", overrides={"NAME": name})


def test_parse_vars() -> None:
    assert parse_vars(["A=1", "B=x=y", " C =", ]) == {"A": "1", "B": "x=y", "C": ""}
    for bad in ("A", "=1", " =1"):
        with pytest.raises(UsageError, match="KEY=VALUE"):
            parse_vars([bad])


def test_unknown_batch_type_is_accepted_when_registered() -> None:
    text = MINIMAL + "batch: {type: sge}\n"
    with pytest.raises(SpecError, match="unknown batch type 'sge'"):
        load_spec_text(text, "x.yaml")
    assert load_spec_text(text, "x.yaml", batch_types=("local", "sge")).spec.batch.type == "sge"


def test_specroot_is_the_spec_folder(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "s.yaml"
    path.parent.mkdir()
    path.write_text(MINIMAL, encoding="utf-8")
    assert load_spec(path).spec.root == path.parent.resolve()


SAMPLES = """
description: {name: s, description: d}
merlin:
  samples: {file: missing.npy, column_labels: [X]}
study:
  - {name: a, description: a, run: {cmd: echo $(X)}}
"""


def test_samplesfile_override_is_validated_instead_of_the_specs_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="samples file not found"):
        load_spec_text(SAMPLES, tmp_path / "s.yaml")
    given = tmp_path / "given.npy"
    given.write_bytes(b"")
    spec = load_spec_text(SAMPLES, tmp_path / "s.yaml", transform=lambda s: with_samples_file(s, given)).spec
    assert spec.samples is not None and spec.samples.file == str(given)
    with pytest.raises(SpecError, match="samples file not found"):
        load_spec_text(SAMPLES, tmp_path / "s.yaml",
                       transform=lambda s: with_samples_file(s, tmp_path / "nope.npy"))


def test_samplesfile_without_samples_block() -> None:
    with pytest.raises(UsageError, match=r"no merlin\.samples block"):
        load_spec_text(MINIMAL, "x.yaml", transform=lambda s: with_samples_file(s, "x.npy"))


def test_unquoted_walltimes_stay_text() -> None:
    # YAML 1.1 would read 10:00:00 as 36000 (base 60), which Slurm would take as 36000 minutes.
    text = MINIMAL.replace("run: {cmd: echo $(N)}", "run: {cmd: echo $(N), walltime: 10:00:00}") + \
        "batch: {walltime: 1:30}\n"
    spec = load_spec_text(text.replace("N: 3", "N: 2:00:00"), "x.yaml").spec
    assert spec.steps[0].run.walltime == "10:00:00"
    assert spec.batch.walltime == "1:30"
    assert dict(spec.env.variables)["N"] == "2:00:00"


def test_a_spec_that_is_no_regular_file_is_refused_before_it_is_read(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.yaml")  # as `cat spec | merlin-mdm run /dev/stdin`: reading it twice would block
    with pytest.raises(SpecError, match=r"not a regular file \(a pipe or a device.*save it to a file"):
        load_spec(tmp_path / "pipe.yaml")


def test_specroot_of_a_spec_named_through_a_symlink_is_the_link_s_folder(tmp_path: Path) -> None:
    (tmp_path / "library").mkdir()
    (tmp_path / "run").mkdir()
    real = tmp_path / "library" / "s.yaml"
    real.write_text("description: {name: s, description: d}\nstudy:\n  - {name: a, run: {cmd: 'ls $(SPECROOT)'}}\n")
    (tmp_path / "run" / "s.yaml").symlink_to(real)
    assert load_spec(tmp_path / "run" / "s.yaml").spec.root == tmp_path / "run"  # as Merlin


def test_sample_tokens_without_samples_warn_and_merlin_info_is_no_step_name(tmp_path: Path) -> None:
    text = ("description: {name: s, description: d}\nstudy:\n"
            "  - {name: a, run: {cmd: 'echo $(MERLIN_SAMPLE_ID)'}}\n")
    loaded = load_spec_text(text, tmp_path / "s.yaml")
    assert [str(w) for w in loaded.warnings] == [
        f"{tmp_path / 's.yaml'}:3:26: study[0].run.cmd: warning: $(MERLIN_SAMPLE_ID) is empty: the study has no "
        "merlin.samples (add the block, or remove the token)"]
    with pytest.raises(SpecError, match="'merlin_info' is the study's own folder"):
        load_spec_text(text.replace("name: a,", "name: merlin_info,"), tmp_path / "s.yaml")


def test_two_worker_groups_on_one_queue_warn_at_validation(tmp_path: Path) -> None:
    text = ("description: {name: s, description: d}\nstudy:\n  - {name: a, run: {cmd: 'true'}}\n"
            "  - {name: b, run: {cmd: 'true'}}\n"
            "merlin:\n  resources:\n    workers:\n      aw: {steps: [a]}\n      bw: {steps: [b]}\n")
    loaded = load_spec_text(text, tmp_path / "s.yaml")
    assert any("workers aw and bw both consume queue 'merlin'" in str(w) for w in loaded.warnings), loaded.warnings
    assert not load_spec_text(text.replace("resources:\n", "resources:\n    overlap: true\n"),
                              tmp_path / "s.yaml").warnings


def test_what_merlin_refuses_is_a_note_that_never_fails(tmp_path: Path) -> None:
    """A step without a description, and a 1-D .npy of samples, run here; Merlin 1.13 refuses both ("Key
    'description' is missing from study step", "fewer than the required minimum dimensions"). `validate` names
    them as notes, --strict or not; `run` says nothing of them."""
    import numpy as np

    from merlin_mdm.studies import validate_study

    np.save(tmp_path / "one.npy", np.arange(3))
    spec = tmp_path / "s.yaml"
    spec.write_text("description: {name: s, description: d}\nmerlin:\n  samples: {file: one.npy, column_labels: [X]}\n"
                    "study:\n  - {name: a, run: {cmd: 'echo $(X)'}}\n"
                    "  - {name: b, description: '', run: {cmd: 'true'}}\n"
                    "  - {name: c, description: c, run: {cmd: 'true'}}\n")
    for strict in (False, True):
        loaded, _ = validate_study(spec, {}, strict)
        assert loaded.warnings == ()
        assert [(n.line, n.path, n.severity) for n in loaded.notes] == [
            (5, "study[0].description", "note"), (6, "study[1].description", "note"),
            (3, "merlin.samples.file", "note")]
    assert "step 'a' has no description" in str(loaded.notes[0]) and ": note: " in str(loaded.notes[0])
    assert "1-D array" in loaded.notes[2].message and "reshape(-1, 1)" in loaded.notes[2].message
    np.save(tmp_path / "one.npy", np.arange(3).reshape(-1, 1))
    text = spec.read_text().replace("run: {cmd: 'echo", "description: a, run: {cmd: 'echo").replace("''", "b")
    spec.write_text(text)
    assert validate_study(spec, {})[0].notes == ()


def test_run_values_merlin_refuses_are_errors_when_empty_and_notes_otherwise(tmp_path: Path) -> None:
    """Each checked against Merlin 1.13's `run --dry --local` of the same spec (it refuses all five)."""
    def load(run: str):  # type: ignore[no-untyped-def]
        return load_spec_text("description: {name: s, description: d}\nstudy:\n"
                              f"  - {{name: a, description: a, run: {{cmd: 'true', {run}}}}}\n"
                              "  - {name: b, description: b, run: {cmd: 'true'}}\n", tmp_path / "s.yaml")

    for run, key in (("task_queue: ''", "task_queue"), ("shell: ' '", "shell")):
        with pytest.raises(SpecError, match=rf"study\[0\]\.run\.{key}: is empty: name .*Merlin refuses it too"):
            load(run)
    notes = {"max_retries: 0": "0 runs here (no retry); Merlin 1.13 refuses a max_retries below 1",
             "depends: [b, b]": "a step named twice runs here; Merlin 1.13 refuses it",
             "priority: urgent": "'urgent' runs here; Merlin 1.13 refuses it: use one of held, minimal"}
    for run, message in notes.items():
        loaded = load(run)
        assert loaded.warnings == () and len(loaded.notes) == 1 and message in loaded.notes[0].message, loaded.notes
    for fine in ("max_retries: 1", "depends: [b]", "priority: High", "priority: 0.5", "task_queue: q", "shell: sh"):
        assert load(fine).notes == (), fine


def test_vars_naming_a_parameter_says_so() -> None:
    """It said `K is no variable or label ... and no $(...) it uses`, of a spec that uses $(K) (a probe)."""
    text = MINIMAL.replace("study:", "global.parameters:\n  K: {values: [1, 2], label: K.%%}\nstudy:").replace(
        "echo $(N)", "echo $(N) $(K)")
    with pytest.raises(UsageError) as refused:
        load_spec_text(text, "x.yaml", overrides={"K": "ok"})
    assert str(refused.value) == ("--vars K=ok: K is a parameter of global.parameters in x.yaml, and --vars sets "
                                  "env.variables and env.labels only: edit the parameter's values, or give them "
                                  "with --pgen")


@pytest.mark.parametrize("procs", ["2", "$(N)"])
def test_a_run_key_at_the_steps_level_is_refused_however_the_spec_is_built(procs: str) -> None:
    """`depends:` beside `name:` was said to belong under `run:`, but where a variable filled a run field (a second
    build of the spec) the key had been deleted by the first, and the step ran without its dependency (a review)."""
    text = f"""
description: {{name: s, description: d}}
env: {{variables: {{N: 2}}}}
study:
  - name: b
    description: b
    run: {{cmd: echo b}}
  - name: a
    description: a
    depends: [b]
    run: {{cmd: echo a, procs: {procs}}}
"""
    with pytest.raises(SpecError, match="`depends` belongs in the step's run block"):
        load_spec_text(text, "x.yaml")



def test_reserved_tokens_cannot_be_set_in_the_spec_or_by_vars() -> None:
    """`WORKSPACE: /tmp/ws`, `MERLIN_SUCCESS: 5` or `--vars MERLIN_SOFT_FAIL=0` took the token over silently (every
    task failed with exit 5; a soft failure counted done); Merlin refuses them (an outside probe)."""
    text = MINIMAL.replace("variables:", "labels: {SPECROOT: /tmp/sr}\n  variables:\n    MERLIN_SUCCESS: 5")
    with pytest.raises(SpecError) as err:
        load_spec_text(text, "x.yaml")
    assert "env.variables.MERLIN_SUCCESS: MERLIN_SUCCESS is a reserved token" in str(err.value)
    assert "env.labels.SPECROOT: SPECROOT is a reserved token" in str(err.value) and "name the label" in str(err.value)
    with pytest.raises(UsageError, match=r"--vars WORKSPACE: a reserved token cannot be overridden"):
        parse_vars(["WORKSPACE=/tmp"])
    assert parse_vars(["OUTPUT_PATH=/tmp"]) == {"OUTPUT_PATH": "/tmp"}  # a token set on purpose, as in Merlin
