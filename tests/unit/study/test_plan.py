"""The plan: work units over samples, unit dependencies, JSON round trip, and O(instances) size."""

from __future__ import annotations

import dataclasses
import json
import time
import tracemalloc

import pytest

from merlin_mdm.study.plan import StudyPlan, UnitKey, UnitLayout
from tests.unit.study.plans import plan_of

HEAD = """
description: {name: plan, description: d}
merlin:
  samples:
    generate: {cmd: make}
    file: samples.npy
    column_labels: [X]
global.parameters:
  P: {values: [1, 2], label: P.%%}
study:
  - {name: setup, description: s, run: {cmd: echo setup}}
  - {name: sim, description: s, run: {cmd: echo $(X) $(P), depends: [setup]}}
  - {name: post, description: p, run: {cmd: echo $(X), depends: [sim]}}
  - {name: collect, description: c, run: {cmd: echo all, depends: [post_*]}}
"""


def _plan(samples: int = 250, batch_size: int = 100) -> StudyPlan:
    return plan_of(HEAD, samples=samples, batch_size=batch_size)


def _index(plan: StudyPlan, name: str) -> int:
    return next(inst.index for inst in plan.instances if inst.name == name)


def test_units_cover_samples_in_batches() -> None:
    plan = _plan(250, 100)
    sim = _index(plan, "sim_P.1")
    assert plan.n_units(sim) == 3
    assert [plan.unit_samples(UnitKey(sim, u)) for u in range(3)] == [range(0, 100), range(100, 200),
                                                                       range(200, 250)]
    assert plan.n_tasks(sim) == 250
    setup = _index(plan, "setup")
    assert (plan.n_units(setup), plan.n_tasks(setup)) == (1, 1)
    assert plan.unit_samples(UnitKey(setup, 0)) == range(-1, 0)  # one task, no sample


def test_unit_counts_and_total_tasks() -> None:
    plan = _plan(250, 100)
    assert [inst.name for inst in plan.instances] == ["setup", "sim_P.1", "sim_P.2", "post_P.1", "post_P.2",
                                                      "collect"]
    assert len(list(plan.units())) == 1 + 4 * 3 + 1
    assert plan.total_tasks() == 1 + 4 * 250 + 1
    assert list(plan.units()) == sorted(plan.units())


def test_exact_multiple_of_batch_size() -> None:
    plan = _plan(200, 100)
    assert plan.n_units(_index(plan, "sim_P.1")) == 2
    plan = _plan(5, 100)
    assert plan.n_units(_index(plan, "sim_P.1")) == 1


def test_unit_parents_aligned_non_aligned_and_funnel() -> None:
    plan = _plan(250, 100)
    setup, sim1, post1 = _index(plan, "setup"), _index(plan, "sim_P.1"), _index(plan, "post_P.1")
    collect = _index(plan, "collect")
    # sim waits for the single setup unit (a non-sample parent).
    assert list(plan.unit_parents(UnitKey(sim1, 2))) == [UnitKey(setup, 0)]
    # post's unit b waits only for sim's unit b (both sample steps: aligned).
    assert list(plan.unit_parents(UnitKey(post1, 1))) == [UnitKey(sim1, 1)]
    # The funnel waits for every unit of every post instance.
    parents = list(plan.unit_parents(UnitKey(collect, 0)))
    assert len(parents) == 2 * 3 and {p.instance for p in parents} == {post1, _index(plan, "post_P.2")}


def test_children_mirror_parents() -> None:
    plan = _plan()
    children = plan.children()
    for inst in plan.instances:
        for edge in inst.parents:
            assert any(c.parent == inst.index and c.aligned == edge.aligned for c in children[edge.parent])
    assert sum(map(len, children)) == sum(len(i.parents) for i in plan.instances)


def test_unit_key_ids() -> None:
    assert UnitKey(3, 14).to_id() == "3:14"
    assert UnitKey.from_id("3:14") == UnitKey(3, 14)


def test_json_round_trip() -> None:
    plan = _plan(250, 100)
    again = StudyPlan.from_json(plan.to_json())
    assert again == plan
    assert again.samples is not None and plan.samples is not None
    assert again.samples.path(249) == plan.samples.path(249)
    no_samples = plan_of("description: {name: x, description: d}\nstudy:\n  - {name: a, description: a, "
                         "run: {cmd: echo, restart: again}}\n")
    assert StudyPlan.from_json(no_samples.to_json()) == no_samples


def test_a_million_samples_expand_in_instances_not_samples() -> None:
    tracemalloc.start()
    start = time.perf_counter()
    plan = _plan(1_000_000, 100)
    units = sum(plan.n_units(i) for i in range(len(plan.instances)))
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(plan.instances) == 6
    assert plan.total_tasks() == 4 * 1_000_000 + 2
    assert units == 4 * 10_000 + 2
    assert peak < 5_000_000, f"expansion peaked at {peak} bytes: per-sample objects?"
    assert elapsed < 2.0
    assert len(plan.to_json()) < 20_000  # the plan does not list samples


@pytest.mark.parametrize(("n", "batch", "slots", "sizes"), [
    (8, 100, 4, [2, 2, 1, 1, 1, 1]),  # 8 costly samples on 4 workers: every worker busy, none waits long
    (250, 100, 1, [100, 100, 50]),  # one slot: fixed units of batch_size
    (10, 3, 2, [3, 3, 2, 1, 1]),
    (0, 100, 4, [0]),  # no samples: one empty unit
])
def test_guided_units_shrink_towards_the_end(n: int, batch: int, slots: int, sizes: list[int]) -> None:
    layout = UnitLayout(n, batch, slots)
    assert [len(layout.samples(u)) for u in range(layout.count)] == sizes
    assert [s for u in range(layout.count) for s in layout.samples(u)] == list(range(n))


def test_guided_units_keep_full_batches_for_long_studies() -> None:
    layout = UnitLayout(10_000, 100, 2)
    sizes = [len(layout.samples(u)) for u in range(layout.count)]
    assert sizes[:99] == [100] * 99 and sizes[99:] == [50, 25, 13, 6, 3, 2, 1] and sum(sizes) == 10_000
    assert layout.count == 106  # 6 more units than fixed batches of 100


def test_a_plan_sized_for_workers_round_trips_and_aligns_units() -> None:
    plan = dataclasses.replace(_plan(30, 10), slots=4)
    sim = _index(plan, "sim_P.1")
    assert [len(plan.unit_samples(UnitKey(sim, u))) for u in range(plan.n_units(sim))] == [8, 6, 4, 3, 3, 2, 1, 1, 1, 1]
    again = StudyPlan.from_json(plan.to_json())
    assert again == plan and again.n_units(sim) == 10
    aligned = [i for i in plan.instances if any(e.aligned for e in i.parents)]
    assert aligned and all(plan.n_units(i.index) == plan.n_units(sim) for i in aligned)


WIDE = """
description: {name: wide, description: d}
merlin:
  samples: {generate: {cmd: make}, file: samples.npy, column_labels: [X]}
study:
  - {name: sim, description: s, run: {cmd: echo $(X), procs: 2}}
  - {name: post, description: p, run: {cmd: echo $(X), depends: [sim]}}
"""


def test_units_of_a_wide_step_are_sized_for_its_tasks_that_run_at_once() -> None:
    plan = dataclasses.replace(plan_of(WIDE, samples=8), slots=4)
    sim, post = _index(plan, "sim"), _index(plan, "post")
    assert plan.instances[sim].cores == 2 and plan.concurrency(sim) == 2 and plan.concurrency(post) == 4
    # 2 of sim's 2-core tasks fit on 4 slots: units for 2 workers, each of the 2 busy until the end
    assert [len(plan.unit_samples(UnitKey(sim, u))) for u in range(plan.n_units(sim))] == [4, 2, 1, 1]
    assert [len(plan.unit_samples(UnitKey(post, u))) for u in range(plan.n_units(post))] == [2, 2, 1, 1, 1, 1]
    # post's units wait for the sim units holding their samples, and only for those
    assert [list(plan.unit_parents(UnitKey(post, u))) for u in (0, 1, 2, 5)] == [
        [UnitKey(sim, 0)], [UnitKey(sim, 0)], [UnitKey(sim, 1)], [UnitKey(sim, 3)]]
    assert [plan.n_parent_units(UnitKey(post, u)) for u in range(6)] == [1] * 6
    again = StudyPlan.from_json(plan.to_json())
    assert again == plan and again.n_units(sim) == 4


def test_a_plan_written_before_per_step_units_keeps_its_units() -> None:
    """A restart loads the workspace's plan.json: one written before sized every step for all slots."""
    plan = dataclasses.replace(plan_of(WIDE, samples=8), slots=4)
    old = json.loads(plan.to_json())
    del old["per_step_units"]
    restored = StudyPlan.from_json(json.dumps(old))
    sim = _index(restored, "sim")
    assert not restored.per_step_units and restored.concurrency(sim) == 4
    assert [len(restored.unit_samples(UnitKey(sim, u))) for u in range(restored.n_units(sim))] == [2, 2, 1, 1, 1, 1]


@pytest.mark.parametrize(("slots_a", "slots_b"), [(4, 2), (2, 4), (3, 1), (4, 4)])
def test_units_over_maps_samples_between_layouts(slots_a: int, slots_b: int) -> None:
    a, b = UnitLayout(37, 5, slots_a), UnitLayout(37, 5, slots_b)
    for unit in range(a.count):
        samples = a.samples(unit)
        expected = [u for u in range(b.count) if set(b.samples(u)) & set(samples)]
        assert list(b.units_over(samples)) == expected
    assert UnitLayout(0, 5, 2).units_over(range(0)) == range(1)
