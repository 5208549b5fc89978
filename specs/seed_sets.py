"""A Maestro parameter generator that runs a spec's study on other seeds: every combination of the lists given.

    merlin-mdm run specs/mdm_sudoku_avg.yaml --local --workers 2 --pgen specs/seed_sets.py \\
        --pargs TRAIN_SEED:9,10,11,12 --pargs PRICED_SEED:4 --vars EVAL_SEED=11000

Each ``--pargs NAME:V1,V2,...`` becomes the parameter NAME, labelled ``NAME.%%``, and the study runs every
combination of the lists (what ``product: true`` on each parameter gives in the spec itself). The generator
replaces the spec's ``global.parameters``, so name every parameter its steps use. Values are passed as
written (``9``, ``0.1``).
"""

import itertools


def get_custom_generator(env, **kwargs):
    from maestrowf.datastructures.core import ParameterGenerator

    lists = {}
    for name, text in kwargs.items():
        if name == "SPECROOT":  # Maestro adds the spec's folder to the pargs
            continue
        values = [value.strip() for value in text.split(",") if value.strip()]
        if not values:
            raise ValueError(f"--pargs {name}: give its values as {name}:V1,V2,... (got {text!r})")
        lists[name] = values
    if not lists:
        raise ValueError("give at least one --pargs NAME:V1,V2,... (e.g. --pargs TRAIN_SEED:9,10,11,12)")
    combinations = list(itertools.product(*lists.values()))
    generator = ParameterGenerator()
    for index, name in enumerate(lists):
        generator.add_parameter(name, [combination[index] for combination in combinations], f"{name}.%%")
    return generator
