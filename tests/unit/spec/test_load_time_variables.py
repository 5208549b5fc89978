"""Variables in worker names, args, steps and task queues are filled in when the spec loads, as Merlin 1.13 does.

Merlin expands `env.variables` and `env.labels` (after --vars) through the whole spec text for `run-workers`,
`queue-info`, `purge` and `run`; its null_spec and feature_demo examples name their workers and queues so.
"""

from __future__ import annotations

import pytest

from merlin_mdm.backends.celery.allocations import batch_origin
from merlin_mdm.backends.celery.workers import spec_queues, worker_commands
from merlin_mdm.errors import SpecError
from merlin_mdm.spec import load_spec_text
from merlin_mdm.spec.variables import fill_load_time_variables, load_time_values

# Merlin's null_spec example, cut down: the worker, its args and both queues come from variables.
NULL_SPEC = """
description: {name: null_spec, description: null steps}
batch: {type: slurm}
env:
  variables:
    OUTPUT_PATH: ./
    N_SAMPLES: 10
    CONC: 1
    RUN_ID: 0
    N_WORK: 0
    QUEUE: queue_s$(N_SAMPLES)_c$(N_WORK)_r$(RUN_ID)
    WORKER: worker_s$(N_SAMPLES)_c$(N_WORK)_r$(RUN_ID)
study:
  - name: null_step
    run: {cmd: "sleep 1", task_queue: $(QUEUE)}
  - name: verify
    run: {cmd: echo Done, depends: [null_step], task_queue: $(QUEUE)}
merlin:
  resources:
    workers:
      $(WORKER):
        args: -O fair --prefetch-multiplier 1 -E -l info --concurrency $(CONC) --logfile=%%p.log
        batch: {type: slurm, walltime: "01:00:00"}
"""


def _load(text: str, overrides: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return load_spec_text(text, "/s/null_spec.yaml", overrides).spec


def test_null_spec_worker_name_args_and_queues_are_expanded_as_merlin() -> None:
    spec = _load(NULL_SPEC)
    assert [s.run.task_queue for s in spec.steps] == ["queue_s10_c0_r0", "queue_s10_c0_r0"]
    (worker,) = spec.resources.workers
    assert worker.name == "worker_s10_c0_r0" and worker.spec_key == "$(WORKER)"
    assert "--concurrency 1 " in worker.args and "%%p.log" in worker.args
    (cmd,) = worker_commands(spec)
    # Merlin 1.13's `run-workers --echo`: --concurrency 1 -n worker_s10_c0_r0.%%h -Q '[merlin]_queue_s10_c0_r0'
    assert cmd.name == "worker_s10_c0_r0" and cmd.queues == ("queue_s10_c0_r0",)
    assert cmd.argv[cmd.argv.index("-n") + 1] == "worker_s10_c0_r0@%h"
    assert cmd.argv[cmd.argv.index("--concurrency") + 1] == "1"


def test_vars_change_worker_queue_and_args_as_they_change_the_plan() -> None:
    spec = _load(NULL_SPEC, {"N_SAMPLES": "5", "CONC": "4"})
    assert set(spec_queues(spec).values()) == {"queue_s5_c0_r0"}  # Merlin: -Q '[merlin]_queue_s5_c0_r0'
    (cmd,) = worker_commands(spec)
    assert cmd.name == "worker_s5_c0_r0" and "--concurrency 4" in cmd.shell()


def test_worker_steps_machines_labels_and_specroot_are_filled_in() -> None:
    spec = _load("""
description: {name: $(NAME), description: d}
env:
  variables: {NAME: study_$(KIND), KIND: w, FIRST: a}
  labels: {HOSTS: host_$(KIND)}
study:
  - name: a
    run: {cmd: echo a, task_queue: $(KIND)_$(FIRST)}
  - name: b
    run: {cmd: echo b, task_queue: "$(SPECROOT)"}
merlin:
  resources:
    workers:
      $(KIND)_one: {steps: [$(FIRST)], machines: [$(HOSTS)]}
      two: {steps: [b], args: --logfile $(SPECROOT)/w.log}
""")
    assert spec.description.name == "study_w"
    assert [s.run.task_queue for s in spec.steps] == ["w_a", "/s"]
    one, two = spec.resources.workers
    assert (one.name, one.steps, one.machines) == ("w_one", ("a",), ("host_w",))
    assert two.args == "--logfile /s/w.log" and two.spec_key == "two"


def test_the_fill_is_one_pure_function_of_the_spec() -> None:
    built = _load(NULL_SPEC)
    assert fill_load_time_variables(built) == built  # a second fill changes nothing
    assert load_time_values(built)["QUEUE"] == "queue_s10_c0_r0"


def test_checks_and_batch_origin_find_an_expanded_worker_under_its_written_key() -> None:
    text = NULL_SPEC.replace("--logfile=%%p.log", "--logfile=%%p.log\n        steps: [verfy]")
    with pytest.raises(SpecError) as info:
        _load(text)
    (issue,) = info.value.issues
    assert issue.path == "merlin.resources.workers.$(WORKER).steps" and issue.line == 23
    assert "unknown step 'verfy' (did you mean 'verify'?)" in issue.message
    origin = batch_origin(_load(NULL_SPEC), ["worker_s10_c0_r0"])
    assert origin == "/s/null_spec.yaml:3: batch and /s/null_spec.yaml:23: merlin.resources.workers.$(WORKER).batch"


def test_unknown_tokens_in_workers_and_queues_are_errors_at_their_line() -> None:
    text = NULL_SPEC.replace("task_queue: $(QUEUE)}", "task_queue: $(QUEU)}", 1).replace("$(CONC)", "$(CONCC)")
    with pytest.raises(SpecError) as info:
        _load(text)
    shown = [(i.line, i.path, i.message) for i in info.value.issues]
    assert shown == [
        (15, "study[0].run.task_queue",
         "undefined token $(QUEU) (did you mean 'QUEUE'?): define it under env.variables or pass --vars"),
        (22, "merlin.resources.workers.$(WORKER).args",
         "undefined token $(CONCC) (did you mean 'CONC'?): define it under env.variables or pass --vars"),
    ]


def test_a_worker_name_left_unknown_or_made_of_a_parameter_is_refused() -> None:
    text = """
description: {name: p, description: d}
global.parameters: {X: {values: [1, 2], label: X.%%}}
study:
  - name: a
    run: {cmd: echo $(X), task_queue: q_$(X)}
merlin: {resources: {workers: {$(WHO): {steps: [a]}, w: {steps: [a]}}}}
"""
    with pytest.raises(SpecError) as info:
        _load(text)
    shown = [(i.path, i.message.split(":")[0]) for i in info.value.issues]
    assert shown == [("study[0].run.task_queue", "$(X) has no value yet when workers and queues are set up"),
                     ("merlin.resources.workers.$(WHO)", "undefined token $(WHO)")]


def test_two_workers_named_alike_once_filled_in_are_refused() -> None:
    text = NULL_SPEC.replace("      $(WORKER):\n", "      worker_s10_c0_r0: {steps: [verify]}\n      $(WORKER):\n")
    with pytest.raises(SpecError) as info:
        _load(text)
    messages = [i.message for i in info.value.issues]
    assert any("workers worker_s10_c0_r0 and $(WORKER) are both named 'worker_s10_c0_r0'" in m for m in messages)


NUMBERS_SPEC = """
description: {name: vartest, description: variables in numbers and batch blocks}
batch: {type: slurm, bank: $(BANK), queue: $(Q), walltime: $(WT), nodes: $(N)}
env:
  variables: {OUTPUT_PATH: ./out, P: 2, N: 1, WT: "00:10:00", R: 3, BANK: mybank, Q: pdebug, SH: /bin/sh}
study:
  - name: a
    run:
      cmd: echo $(P)
      procs: $(P)
      nodes: $(N)
      max_retries: $(R)
      walltime: $(WT)
      shell: $(SH)
      batch: {walltime: $(WT)}
merlin:
  resources:
    workers:
      w: {args: --concurrency $(P), steps: [all], nodes: $(N), batch: {type: slurm, queue: $(Q)}}
  samples: {file: s.npy, column_labels: [X], level_max_dirs: $(P), generate: {cmd: touch s.npy}}
"""


def test_numbers_and_batch_blocks_take_variables_as_merlin() -> None:
    """Merlin fills the spec's text and parses it again: `procs: $(P)` is the number 2 (its `run --dry`
    writes `procs: 2`, `bank: mybank`, `walltime: 00:10:00` in the expanded spec)."""
    spec = _load(NUMBERS_SPEC)
    run = spec.steps[0].run
    assert (run.procs, run.nodes, run.max_retries, run.walltime, run.shell) == (2, 1, 3, "00:10:00", "/bin/sh")
    assert run.cmd == "echo $(P)"  # commands are filled with the study's tokens later, not here
    assert run.batch is not None and run.batch.walltime == "00:10:00"
    assert (spec.batch.bank, spec.batch.queue, spec.batch.walltime, spec.batch.nodes) == ("mybank", "pdebug",
                                                                                          "00:10:00", 1)
    (worker,) = spec.resources.workers
    assert worker.nodes == 1 and worker.batch is not None and worker.batch.queue == "pdebug"
    assert spec.samples is not None and spec.samples.level_max_dirs == 2


def test_vars_reach_numbers_and_batch_blocks() -> None:
    spec = _load(NUMBERS_SPEC, {"P": "8", "WT": "2:00:00"})
    assert spec.steps[0].run.procs == 8 and spec.batch.walltime == "2:00:00"


def test_an_undefined_variable_in_a_number_names_what_it_had_to_be() -> None:
    text = NUMBERS_SPEC.replace("procs: $(P)", "procs: $(NOPE)")
    text = text.replace("walltime: $(WT), nodes", "walltime: $(WTX), nodes")
    with pytest.raises(SpecError) as error:
        _load(text)
    message = str(error.value)
    assert ":10:" in message and "study[0].run.procs: must be a whole number, not the string '$(NOPE)'" in message
    assert "NOPE: no variable of env.variables or env.labels" in message
    assert "batch.walltime: walltime '$(WTX)'" in message and "WTX: no variable" in message
    assert message.count("problem") == 1 and "2 problems" in message  # nothing else: the rest was filled in


def test_depends_takes_variables_as_merlin() -> None:
    """Merlin 1.13 runs `depends: [$(PREV)]` with `PREV: first` after step first."""
    spec = _load("""
description: {name: dep, description: x}
env: {variables: {OUTPUT_PATH: ./out, PREV: first}}
study:
  - {name: first, run: {cmd: echo 1}}
  - {name: second, run: {cmd: echo 2, depends: [$(PREV)]}}
""")
    assert spec.steps[1].run.depends == ("first",)
