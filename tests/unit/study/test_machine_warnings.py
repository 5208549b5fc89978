"""What `validate` says about the machine it runs on: a shell this machine lacks (a warning, never an error)."""

from __future__ import annotations

from pathlib import Path

from merlin_mdm.studies import validate_study


def test_a_shell_this_machine_lacks_is_a_warning_where_that_shell_is_given(tmp_path: Path) -> None:
    """`validate` said nothing of `shell: /usr/bin/nope`, and every task of the step failed with ENOENT."""
    script = tmp_path / "not_executable.sh"
    script.write_text("echo\n", encoding="utf-8")
    spec = tmp_path / "shells.yaml"
    spec.write_text(f"""
description: {{name: shells, description: x}}
batch: {{type: local, shell: /bin/nosuchshell}}
study:
  - {{name: a, description: a, run: {{cmd: echo, shell: /usr/bin/nope}}}}
  - {{name: b, description: b, run: {{cmd: "print(1)", shell: "'/usr/bin/env' python3"}}}}
  - {{name: c, description: c, run: {{cmd: echo, shell: {script}}}}}
  - {{name: d, description: d, run: {{cmd: echo, shell: sh}}}}
  - {{name: e, description: e, run: {{cmd: echo}}}}
  - {{name: f, description: f, run: {{cmd: echo, batch: {{type: local, shell: nosuchshell2}}}}}}
  - {{name: g, description: g, run: {{cmd: echo, shell: ./venv/bin/python}}}}
""", encoding="utf-8")
    loaded, _ = validate_study(spec, {}, strict=True)  # a machine's warning never fails --strict
    found = {w.path: w for w in loaded.warnings}
    assert sorted(found) == ["batch.shell", "study[0].run.shell", "study[2].run.shell", "study[5].run.batch.shell"]
    assert str(found["study[0].run.shell"]).endswith("shell /usr/bin/nope is not found on this machine: tasks that "
                                                     "use it fail where it is missing (it may exist where the "
                                                     "workers run)")
    assert f"shell {script} is not an executable file on this machine" in str(found["study[2].run.shell"])
    assert "shell nosuchshell2 is not found on PATH" in str(found["study[5].run.batch.shell"])
    assert (found["batch.shell"].line, found["study[0].run.shell"].line) == (3, 5)
    spec.write_text(spec.read_text(encoding="utf-8").replace("  - {name: e, description: e, run: {cmd: echo}}\n", ""),
                    encoding="utf-8")
    assert "batch.shell" not in {w.path for w in validate_study(spec, {})[0].warnings}  # no step uses it
