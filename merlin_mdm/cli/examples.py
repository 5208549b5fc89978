"""`example list` and `example NAME`: copy a ready-to-run study out of the package."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import click
import yaml

from merlin_mdm.cli.paths import GivenPath
from merlin_mdm.errors import UsageError

__all__ = ["example", "list_examples"]


def _root() -> Path:
    return Path(str(resources.files("merlin_mdm") / "examples"))


def list_examples() -> dict[str, str]:
    """Example name -> its one-line description."""
    out = {}
    for folder in sorted(_root().iterdir()):
        spec = folder / f"{folder.name}.yaml"
        if spec.exists():
            doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
            out[folder.name] = " ".join(str(doc["description"]["description"]).split())
    return out


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("name")
@click.option("-o", "--output", type=GivenPath(file_okay=False, path_type=Path),
              help="Where to copy it [default: ./NAME].")
def example(name: str, output: Path | None) -> None:
    """Copy the example study NAME into ./NAME (`merlin-mdm example list` shows them).

    \b
    Examples:
      merlin-mdm example list                       the bundled examples
      merlin-mdm example hello                      copy ./hello/hello.yaml
      merlin-mdm example hello -o ~/studies/hello   copy it elsewhere
    """
    examples = list_examples()
    if name == "list":
        width = max(len(n) for n in examples)
        for key, text in examples.items():
            click.echo(f"{key:<{width}}  {text}")
        return
    if name not in examples:
        raise UsageError(f"no example '{name}' (known: {', '.join(examples)})")
    target = output or Path(name)
    if target.exists():
        raise UsageError(f"{target} already exists; pass -o DIR to copy elsewhere")
    shutil.copytree(_root() / name, target, ignore=shutil.ignore_patterns("__pycache__"))
    click.echo(f"copied to {target}/; run it with: merlin-mdm run {target}/{name}.yaml --local")
