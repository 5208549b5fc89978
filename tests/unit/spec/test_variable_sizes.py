"""Variables that grow without bound once filled in are refused at their line, before anything is written out.

An outside probe's spec (V1 uses V0 ten times, V2 uses V1 ten times, ... V11) took 13 GB and ended in a
MemoryError traceback after 30-49 s, even with V11 unused.
"""

from __future__ import annotations

import pytest

from merlin_mdm.errors import SpecError
from merlin_mdm.spec import load_spec_text


def _bomb(cmd: str) -> str:
    lines = ["description: {name: bomb, description: x}", "env:", "  variables:", "    OUTPUT_PATH: ./out",
             "    V0: lollollollol"]
    lines += [f"    V{i}: {f'$(V{i - 1})' * 10}" for i in range(1, 12)]
    lines += ["study:", f"  - {{name: s, run: {{cmd: '{cmd}'}}}}"]
    return "\n".join(lines) + "\n"


@pytest.mark.timeout(120)  # the old code did not end: fail rather than hold CI for 10 minutes
@pytest.mark.parametrize("cmd", ["echo hi", "echo $(V11) | wc -c"])
def test_a_variable_that_grows_past_the_limit_is_named_where_it_starts(cmd: str) -> None:
    with pytest.raises(SpecError) as error:
        load_spec_text(_bomb(cmd), "/s/bomb.yaml")
    message = str(error.value)
    assert ("/s/bomb.yaml:12:5: env.variables.V7: grows to 120,000,000 characters once the variables it uses are "
            "filled in (more than 16,777,216): use each of them fewer times") in message
    assert "V8" not in message and "1 problem" in message  # the cause, once, not every variable built on it


def test_a_command_that_grows_past_the_limit_is_named() -> None:
    big = "x" * (1 << 20)
    text = f"""
description: {{name: big, description: x}}
env: {{variables: {{OUTPUT_PATH: ./out, BIG: {big}}}}}
study:
  - {{name: once, run: {{cmd: echo $(BIG)}}}}
  - {{name: many, run: {{cmd: '{"$(BIG)" * 20}'}}}}
"""
    with pytest.raises(SpecError) as error:
        load_spec_text(text, "/s/big.yaml")
    message = str(error.value)
    assert "/s/big.yaml:6:" in message and "study[1].run.cmd: grows to 20,971,520 characters" in message
    assert "1 problem" in message  # a 1 MiB variable used once is fine
