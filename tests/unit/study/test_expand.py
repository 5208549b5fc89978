"""Expansion of a spec into step instances: tokens, parameters (zip, product groups, inheritance, funnels),
workspaces and names, sample steps and their edges."""

from __future__ import annotations

import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.study.plan import Edge, StudyPlan
from tests.unit.study.plans import OUTPUT, STAMP, WORKSPACE, plan_of

HEAD = "description: {name: study, description: d}\n"


def _by_name(plan: StudyPlan) -> dict[str, str]:
    return {inst.name: inst.cmd for inst in plan.instances}


def _names(plan: StudyPlan) -> list[str]:
    return [inst.name for inst in plan.instances]


def _step(cmd: str, name: str = "a", depends: str = "[]", extra: str = "") -> str:
    return f"  - name: {name}\n    description: x\n    run:\n      cmd: '{cmd}'\n      depends: {depends}\n{extra}"


# --- tokens ---------------------------------------------------------------------------------------------


def test_nested_variables_resolve_in_order() -> None:
    text = HEAD + """
env:
  variables:
    ROOT: /data
    SUB: $(ROOT)/sub
    FILE: $(SUB)/$(NAME).txt
    NAME: run
study:
""" + _step("cat $(FILE) $(SUB)")
    assert plan_of(text).instances[0].cmd == "cat /data/sub/run.txt /data/sub"


def test_labels_use_parameters_and_variables() -> None:
    text = HEAD + """
env:
  variables: {EXT: txt}
  labels:
    LOG: log_$(SEED.label)_$(SEED).$(EXT)
global.parameters:
  SEED: {values: [1, 2], label: seed-%%}
study:
""" + _step("echo > $(LOG)")
    assert _by_name(plan_of(text)) == {"a_seed-1": "echo > log_seed-1_1.txt", "a_seed-2": "echo > log_seed-2_2.txt"}


def test_a_parameter_value_goes_in_once_as_merlin_fills_it() -> None:
    """A value that holds tokens is not read again for them: Merlin 1.13 writes `echo "a$(X)"` for the value
    `a$(X)` (here it was `aaaaaaaa$(X)`, filled until nothing changed); variables and labels around it still
    fill in, a variable holding the parameter too."""
    text = HEAD + """
env:
  variables: {ROOT: /data, VX: $(ROOT)/$(X)}
  labels: {LX: L.$(X.label)}
global.parameters:
  X: {values: ["a$(X)", "c$(X.label)", plain], label: X.%%}
study:
""" + _step('echo "$(X)" $(VX) $(LX)')
    assert sorted(inst.cmd for inst in plan_of(text).instances) == [
        'echo "a$(X)" /data/a$(X) L.X.a$(X)',
        'echo "c$(X.label)" /data/c$(X.label) L.X.c$(X.label)',
        'echo "plain" /data/plain L.X.plain',
    ]


def test_variables_in_parameter_values_and_labels_are_filled_as_merlin_does() -> None:
    """Merlin 1.13 inlines the environment into the whole spec: `values: ["z$(V)"]` is `zvee` in commands,
    labels and folders; a value naming another parameter (`y$(X)`) stays as written."""
    text = HEAD + """
env:
  variables: {V: vee, W: $(V)w}
global.parameters:
  X: {values: [x1, x2], label: X.%%}
  Y: {values: ["y$(X)", "z$(W)"], label: $(V).%%}
study:
""" + _step('echo "$(X) $(Y) $(Y.label)"')
    by_name = _by_name(plan_of(text))
    assert by_name == {"a_X.x1.vee.y(X)": 'echo "x1 y$(X) vee.y$(X)"', "a_X.x2.vee.zveew": 'echo "x2 zveew vee.zveew"'}


def test_task_folders_keep_the_path_safe_characters_of_the_labels_as_maestro_does() -> None:
    """Merlin 1.13 names the folder of `X.a b` `X.a_b` and of `X.e=f:g` `X.efg`; $(X.label) stays as written, and
    a child's $(step.workspace) names the folder."""
    text = HEAD + """
global.parameters:
  X: {values: ["a b", "e=f:g", "n%o", "ok"], label: X.%%}
study:
""" + _step('echo "$(X.label)"') + _step("ls $(a.workspace)", "b", depends="[a]")
    plan = plan_of(text)
    a_steps = [inst for inst in plan.instances if inst.step == "a"]
    assert [inst.workspace for inst in a_steps] == ["a/X.a_b", "a/X.efg", "a/X.no", "a/X.ok"]
    assert [inst.name for inst in a_steps] == ["a_X.a_b", "a_X.efg", "a_X.no", "a_X.ok"]
    assert [inst.cmd for inst in a_steps][:2] == ['echo "X.a b"', 'echo "X.e=f:g"']
    assert next(inst.cmd for inst in plan.instances if inst.step == "b").endswith("/a/X.a_b")


def test_labels_that_make_one_folder_name_are_refused() -> None:
    text = HEAD + """
global.parameters:
  X: {values: ["a b", "a_b"], label: X.%%}
study:
""" + _step('echo "$(X)"')
    with pytest.raises(SpecError, match=r"the combinations \(X='a b'\) and \(X='a_b'\) both get the folder name "
                                         r"'X.a_b'"):
        plan_of(text)


def test_reserved_tokens() -> None:
    text = HEAD + "env:\n  variables: {OUTPUT_PATH: ./relative}\nstudy:\n" + _step(
        "$(SPECROOT) $(OUTPUT_PATH) $(MERLIN_WORKSPACE) $(MERLIN_INFO) $(MERLIN_TIMESTAMP) "
        "$(MERLIN_SPEC_ORIGINAL_TEMPLATE) $(MERLIN_SPEC_EXECUTED_RUN) $(MERLIN_SPEC_ARCHIVED_COPY)")
    info = f"{WORKSPACE}/merlin_info"
    # $(OUTPUT_PATH) keeps the form the user wrote, and the spec copies are named after the spec file (s.yaml),
    # not the study, as in Merlin
    assert plan_of(text, path="/specs/sub/s.yaml").instances[0].cmd == (
        f"/specs/sub ./relative {WORKSPACE} {info} {STAMP} {info}/s.orig.yaml {info}/s.partial.yaml "
        f"{info}/s.expanded.yaml")


def test_variables_keep_the_output_path_the_user_wrote() -> None:
    text = HEAD + "env:\n  variables:\n    OUTPUT_PATH: ./out\n    RESULTS: $(OUTPUT_PATH)/results\nstudy:\n" + \
        _step("ls $(RESULTS)")
    assert plan_of(text).instances[0].cmd == "ls ./out/results"  # Merlin's form


def test_task_time_tokens_are_left_for_the_executor() -> None:
    text = HEAD + "study:\n" + _step("cd $(WORKSPACE) && echo $(MERLIN_SAMPLE_ID)")
    assert plan_of(text).instances[0].cmd == "cd $(WORKSPACE) && echo $(MERLIN_SAMPLE_ID)"


def test_exit_code_tokens() -> None:
    text = HEAD + "study:\n" + _step(
        "exit $(MERLIN_SUCCESS) $(MERLIN_RESTART) $(MERLIN_SOFT_FAIL) $(MERLIN_HARD_FAIL) $(MERLIN_RETRY) "
        "$(MERLIN_STOP_WORKERS)", extra="      restart: exit $(MERLIN_RETRY)\n")
    inst = plan_of(text).instances[0]
    assert (inst.cmd, inst.restart) == ("exit 0 100 101 102 104 105", "exit 104")


def test_dependency_path_tokens() -> None:
    text = HEAD + """
env:
  dependencies:
    git: [{name: REPO, path: $(OUTPUT_PATH)/repo, url: https://example.invalid/r.git}]
study:
""" + _step("cd $(REPO)")
    assert plan_of(text).instances[0].cmd == f"cd {OUTPUT}/repo"


def test_step_workspace_plain_parameterised_and_funnel() -> None:
    text = HEAD + """
global.parameters:
  P: {values: [1, 2], label: P.%%}
study:
""" + _step("echo") + _step("echo $(P)", "b") + _step("ls $(a.workspace) $(b.workspace)", "c", "[a, b]") + \
        _step("ls $(b.workspace) $(c.workspace)", "d", "[c_*]")
    cmds = _by_name(plan_of(text))
    assert cmds["c_P.1"] == f"ls {WORKSPACE}/a {WORKSPACE}/b/P.1"
    assert cmds["c_P.2"] == f"ls {WORKSPACE}/a {WORKSPACE}/b/P.2"
    # A funnel's workspace token is the folder of all its instances; naming another step's workspace makes
    # a step use that step's parameters (Maestro), so d expands over P although it funnels c.
    assert cmds["d_P.2"] == f"ls {WORKSPACE}/b/P.2 {WORKSPACE}/c"


def test_a_step_workspace_named_through_a_variable_is_that_step_s_folder() -> None:
    text = HEAD + """
env:
  variables: {OUT: $(b.workspace)/out, WHERE: $(OUT)}
global.parameters:
  P: {values: [1, 2], label: P.%%}
study:
""" + _step("echo $(P)", "b") + _step("ls $(WHERE)", "c", "[b]")
    cmds = _by_name(plan_of(text))  # as Maestro: the variable is written out, then the token is the folder
    assert cmds["c_P.2"] == f"ls {WORKSPACE}/b/P.2/out"


LAUNCH = "      nodes: 2\n      procs: 8\n      cores per task: 4\n      gpus: 1\n"


@pytest.mark.parametrize(("batch", "launcher", "vlauncher"), [
    ("local", "", ""),
    ("slurm", "srun -n 8 -N 2 -c 4 --gpus-per-task=1",
     "srun -n ${MERLIN_PROCS:-8} -N ${MERLIN_NODES:-2} -c ${MERLIN_CORES:-4} --gpus-per-task=${MERLIN_GPUS:-1}"),
    ("lsf-srun", "srun -n 8 -N 2 -c 4 --gpus-per-task=1",
     "srun -n ${MERLIN_PROCS:-8} -N ${MERLIN_NODES:-2} -c ${MERLIN_CORES:-4} --gpus-per-task=${MERLIN_GPUS:-1}"),
    ("lsf", "jsrun --np 8 --nrs 2 -b rs -d plane:4 -X 1 -c 16 -g 4",  # -c, -g: per resource set of 4 tasks
     "jsrun --np ${MERLIN_PROCS:-8} --nrs ${MERLIN_NODES:-2} -b rs -d plane:$(( ${MERLIN_PROCS:-8} / "
     "${MERLIN_NODES:-2} )) -X 1 -c $(( ${MERLIN_CORES:-4} * ((${MERLIN_PROCS:-8} + ${MERLIN_NODES:-2} - 1) / "
     "${MERLIN_NODES:-2}) )) -g $(( ${MERLIN_GPUS:-1} * ((${MERLIN_PROCS:-8} + ${MERLIN_NODES:-2} - 1) / "
     "${MERLIN_NODES:-2}) ))"),
    ("flux", "flux run -n 8 -N 2 -c 4 -g 1",
     "flux run -n ${MERLIN_PROCS:-8} -N ${MERLIN_NODES:-2} -c ${MERLIN_CORES:-4} -g ${MERLIN_GPUS:-1}"),
])  # fmt: skip
def test_launcher_tokens_per_batch_type(batch: str, launcher: str, vlauncher: str) -> None:
    text = HEAD + f"batch: {{type: {batch}}}\nstudy:\n" + _step("[$(LAUNCHER)] [$(VLAUNCHER)]", extra=LAUNCH)
    assert plan_of(text).instances[0].cmd == f"[{launcher}] [{vlauncher}]"


@pytest.mark.parametrize("batch", ["lsf", "flux"])
def test_fewer_procs_than_nodes_is_refused_naming_the_step(batch: str) -> None:
    """`procs: 1, nodes: 2` wrote `jsrun ... -d plane:0` and `flux run -n 1 -N 2`, which cannot start."""
    from merlin_mdm.errors import MerlinMdmError

    text = HEAD + f"batch: {{type: {batch}}}\nstudy:\n" + _step("$(LAUNCHER) ./sim", name="sim",
                                                                extra="      nodes: 2\n      procs: 1\n")
    with pytest.raises(MerlinMdmError, match=r"step 'sim'.*procs must be >= nodes|procs must be >= nodes.*step 'sim'"):
        plan_of(text)


MERLIN_KEYS = ("      nodes: 2\n      procs: 4\n      slurm: --exclusive\n      lsf: --smpiargs=off\n"
               "      flux: --setattr=a=b\n      gpus per task: 1\n      launch_distribution: cyclic\n"
               "      exit_on_error: 0\n      num resource set: 4\n      bind: none\n")


@pytest.mark.parametrize(("batch", "launcher"), [
    ("local", ""),
    ("slurm", "srun -n 4 -N 2 --gpus-per-task=1 --exclusive"),  # each launcher takes its own key's flags
    ("lsf-srun", "srun -n 4 -N 2 --gpus-per-task=1 --exclusive"),
    ("lsf", "jsrun --np 4 --nrs 4 -b none -d cyclic -X 0 -g 1 --smpiargs=off"),
    ("flux", "flux run -n 4 -N 2 -g 1 --setattr=a=b"),
])  # fmt: skip
def test_merlin_s_launcher_run_keys(batch: str, launcher: str) -> None:
    text = HEAD + f"batch: {{type: {batch}}}\nstudy:\n" + _step("[$(LAUNCHER)]", extra=MERLIN_KEYS)
    assert plan_of(text).instances[0].cmd == f"[{launcher}]"


def test_launcher_defaults_to_one_process() -> None:
    text = HEAD + "batch: {type: slurm}\nstudy:\n" + _step("$(LAUNCHER) python3 x.py")
    assert plan_of(text).instances[0].cmd == "srun -n 1 python3 x.py"


def test_step_batch_override_and_named_launcher() -> None:
    text = HEAD + "batch: {type: local}\nstudy:\n" + \
        _step("$(LAUNCHER) x", "a", extra="      procs: 4\n      batch: {type: slurm}\n") + \
        _step("$(LAUNCHER) y", "b", extra="      procs: 4\n      batch: {type: local, launcher: mpiexec}\n")
    assert _by_name(plan_of(text)) == {"a": "srun -n 4 x", "b": "mpiexec -n 4 y"}


def test_shell_and_sources() -> None:
    text = HEAD + "batch: {shell: /bin/zsh}\nenv:\n  variables: {V: v}\n  sources: [$(SPECROOT)/env_$(V).sh]\n" \
        "study:\n" + _step("echo") + _step("echo", "b", extra="      shell: /bin/sh\n")
    a, b = plan_of(text).instances
    assert (a.shell, b.shell) == ("/bin/zsh", "/bin/sh")
    assert a.sources == ("/specs/env_v.sh",)


def test_run_settings_are_carried() -> None:
    extra = "      task_queue: gpu\n      max_retries: 4\n      retry_delay: 0.5\n      walltime: '01:00:00'\n"
    inst = plan_of(HEAD + "study:\n" + _step("echo", extra=extra)).instances[0]
    assert (inst.task_queue, inst.max_retries, inst.retry_delay, inst.walltime) == ("gpu", 4, 0.5, "01:00:00")


# --- parameters -----------------------------------------------------------------------------------------

PARAMS = """
global.parameters:
  MODEL: {values: [small, large], label: MODEL.%%}
  WIDTH: {values: [16, 64], label: WIDTH.%%}
  SEED: {values: [1, 2, 3], label: SEED.%%, product: true}
"""


def test_zip_within_a_group_cross_across_groups() -> None:
    plan = plan_of(HEAD + PARAMS + "study:\n" + _step("echo $(MODEL) $(WIDTH) $(SEED)"))
    assert sorted(inst.cmd for inst in plan.instances) == sorted(
        f"echo {m} {w} {s}" for m, w in (("small", 16), ("large", 64)) for s in (1, 2, 3))


def test_workspace_labels_are_sorted_by_parameter_name() -> None:
    plan = plan_of(HEAD + PARAMS + "study:\n" + _step("echo $(WIDTH) $(SEED) $(MODEL)"))
    assert plan.instances[0].workspace == "a/MODEL.small.SEED.1.WIDTH.16"
    assert plan.instances[0].name == "a_MODEL.small.SEED.1.WIDTH.16"
    assert plan.instances[0].labels == "MODEL.small.SEED.1.WIDTH.16"


def test_a_step_expands_only_over_what_it_uses() -> None:
    plan = plan_of(HEAD + PARAMS + "study:\n" + _step("echo $(SEED)") + _step("echo $(WIDTH.label)", "b") +
                   _step("echo none", "c"))
    assert _names(plan) == ["a_SEED.1", "a_SEED.2", "a_SEED.3", "b_WIDTH.16", "b_WIDTH.64", "c"]


def test_named_product_groups() -> None:
    text = HEAD + """
global.parameters:
  LR: {values: [0.1, 0.2], label: LR.%%}
  MODEL: {values: [s, l], label: M.%%, product: arch}
  DEPTH: {values: [2, 8], label: D.%%, product: arch}
  SEED: {values: [1, 2, 3], label: S.%%, product: seeds}
study:
""" + _step("echo $(LR) $(MODEL) $(DEPTH) $(SEED)")
    cmds = {inst.cmd for inst in plan_of(text).instances}
    assert len(cmds) == 2 * 2 * 3
    assert "echo 0.1 s 2 3" in cmds and "echo 0.2 l 8 1" in cmds
    assert not any(" s 8 " in c or " l 2 " in c for c in cmds)  # MODEL and DEPTH stay zipped


def test_used_parameters_are_inherited_from_non_funnel_parents() -> None:
    text = HEAD + PARAMS + "study:\n" + _step("echo $(SEED)") + _step("echo $(MODEL)", "b", "[a]") + \
        _step("echo c", "c", "[b]") + _step("echo d", "d", "[c_*]") + _step("echo $(WIDTH)", "e", "[d]")
    plan = plan_of(text)
    by_step: dict[str, list[str]] = {}
    for inst in plan.instances:
        by_step.setdefault(inst.step, []).append(inst.labels)
    assert len(by_step["b"]) == 6 and by_step["b"][0] == "MODEL.small.SEED.1"
    assert by_step["c"] == by_step["b"]  # c uses nothing itself but inherits from b
    assert by_step["d"] == [""]  # the funnel collapses
    assert by_step["e"] == ["WIDTH.16", "WIDTH.64"]  # after a funnel, only what e uses


def test_edges_follow_matching_combinations_and_funnels() -> None:
    text = HEAD + PARAMS + "study:\n" + _step("echo $(SEED)") + _step("echo $(MODEL)", "b", "[a]") + \
        _step("echo all", "c", "[b_*, a]")
    plan = plan_of(text)
    names = _names(plan)
    parents = {inst.name: sorted(names[e.parent] for e in inst.parents) for inst in plan.instances}
    assert parents["b_MODEL.large.SEED.2"] == ["a_SEED.2"]
    # c uses SEED (inherited from a) and funnels every b instance.
    assert parents["c_SEED.3"] == sorted([*(n for n in names if n.startswith("b_")), "a_SEED.3"])
    assert all(not e.aligned for inst in plan.instances for e in inst.parents)


def test_instances_are_in_dependency_order() -> None:
    text = HEAD + PARAMS + "study:\n" + _step("echo $(SEED)", "late", "[early]") + _step("echo", "early")
    plan = plan_of(text)
    assert _names(plan)[0] == "early"
    assert all(e.parent < inst.index for inst in plan.instances for e in inst.parents)
    assert [inst.index for inst in plan.instances] == list(range(len(plan.instances)))


def test_boolean_and_float_values_are_formatted_like_maestro() -> None:
    text = HEAD + "global.parameters:\n  F: {values: [true, 0.5], label: F.%%}\nstudy:\n" + _step("echo $(F)")
    assert _names(plan_of(text)) == ["a_F.True", "a_F.0.5"]


# --- samples --------------------------------------------------------------------------------------------

SAMPLES = """
merlin:
  samples:
    generate: {cmd: make}
    file: samples.npy
    column_labels: [X, Y]
    level_max_dirs: 5
"""


def test_sample_steps_are_detected_by_column_or_sample_token() -> None:
    text = HEAD + SAMPLES + "env:\n  variables: {ARGS: --x $(X)}\nstudy:\n" + _step("echo $(X)", "a") + \
        _step("echo $(MERLIN_SAMPLE_PATH)", "b") + _step("echo $(MERLIN_SAMPLE_ID)", "c") + \
        _step("echo $(ARGS)", "d") + _step("echo $(MERLIN_SAMPLE_NAMES) $(MERLIN_GLOB_PATH)", "e")
    plan = plan_of(text, samples=20, labels=("X", "Y"))
    assert [inst.uses_samples for inst in plan.instances] == [True, True, True, True, False]
    assert plan.instances[4].cmd == "echo X Y */*/"


def test_sample_edges_are_aligned_only_between_two_sample_steps() -> None:
    text = HEAD + SAMPLES + "study:\n" + _step("echo setup", "setup") + \
        _step("echo $(X)", "sim", "[setup]") + _step("echo $(Y)", "post", "[sim]") + \
        _step("echo $(X)", "again", "[sim_*]") + _step("echo done", "done", "[post]")
    plan = plan_of(text, samples=20, labels=("X", "Y"))
    edges = {inst.step: inst.parents for inst in plan.instances}
    assert edges["sim"] == (Edge(0, False),)
    assert edges["post"] == (Edge(1, True),)
    assert edges["again"] == (Edge(1, False, funnel=True),)  # a funnel waits for every unit
    assert edges["done"] == (Edge(2, False),)


def test_merlin_paths_all_and_glob_path() -> None:
    text = HEAD + SAMPLES + "study:\n" + _step("echo $(X)", "sim") + \
        _step("ls $(MERLIN_PATHS_ALL) $(sim.workspace)/$(MERLIN_GLOB_PATH)", "all", "[sim_*]")
    text = text.replace("depends: [sim_*]\n", "depends: [sim_*]\n      restart: 'ls $(MERLIN_PATHS_ALL)'\n")
    plan = plan_of(text, samples=7, labels=("X", "Y"))
    assert plan.instances[1].cmd == f"ls 0/0 0/1 0/2 0/3 0/4 1/0 1/1 {WORKSPACE}/sim/*/*/"
    assert plan.instances[1].restart == "ls 0/0 0/1 0/2 0/3 0/4 1/0 1/1"


def test_samples_combine_with_parameters() -> None:
    text = HEAD + SAMPLES + "global.parameters:\n  P: {values: [1, 2], label: P.%%}\nstudy:\n" + \
        _step("echo $(P) $(X)", "sim")
    plan = plan_of(text, samples=30, labels=("X", "Y"))
    assert [(i.workspace, i.uses_samples) for i in plan.instances] == [("sim/P.1", True), ("sim/P.2", True)]
    assert plan.total_tasks() == 60


def test_sample_tokens_without_samples_block_are_not_sample_steps() -> None:
    plan = plan_of(HEAD + "study:\n" + _step("echo $(MERLIN_SAMPLE_ID)"))
    assert not plan.instances[0].uses_samples


@pytest.mark.parametrize("depends", ["[a, a_*]", '["a*", a]'])
def test_a_parent_named_and_funnelled_passes_its_parameters_and_is_waited_for_whole(depends: str) -> None:
    """`depends: [a, a_*]` raised KeyError '' (a traceback, exit 1); Merlin splits h over a's K (an outside probe)."""
    text = HEAD + "global.parameters: {K: {values: [1, 2], label: K.%%}}\nstudy:\n" + _step("echo $(K)") + \
        _step("echo h", "h", depends)
    plan = plan_of(text)
    assert _names(plan) == ["a_K.1", "a_K.2", "h_K.1", "h_K.2"]
    for inst in plan.instances[2:]:
        whole = [Edge(0, False, funnel=True), Edge(1, False, funnel=True)]
        assert sorted(inst.parents, key=lambda e: e.parent) == whole, inst.parents
