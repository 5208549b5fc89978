"""`dag`: draw a spec's step graph as DOT and Mermaid text, or as an SVG/PNG through Graphviz."""

from __future__ import annotations

import shutil
from pathlib import Path

import click

from merlin_mdm.cli.paths import GivenPath
from merlin_mdm.errors import BackendError, UsageError

__all__ = ["dag"]


@click.command()
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["both", "dot", "mermaid"]), default="both", show_default=True,
              help="Which text to print.")
@click.option("-o", "--output", type=GivenPath(dir_okay=False, path_type=Path),
              help="Write the graph here instead: .dot, .mmd, or .svg/.png (needs Graphviz's `dot`).")
def dag(spec: Path, fmt: str, output: Path | None) -> None:
    """Draw the step graph of SPEC: DOT (Graphviz) and Mermaid text; funnels (`step_*`) are dashed.

    \b
    Examples:
      merlin-mdm dag study.yaml                   DOT, then Mermaid (paste into a Markdown file)
      merlin-mdm dag study.yaml -o study.svg      an image, where Graphviz is installed
    """
    from merlin_mdm import _shell
    from merlin_mdm.spec import load_spec
    from merlin_mdm.study.graph import to_dot, to_mermaid

    loaded = load_spec(spec)
    dot, mermaid = to_dot(loaded.spec), to_mermaid(loaded.spec)
    if output is None:
        click.echo({"dot": dot, "mermaid": mermaid, "both": f"{dot}\n{mermaid}"}[fmt], nl=False)
        return
    suffix = output.suffix.lower()
    if suffix in (".dot", ".gv", ".mmd"):
        output.write_text(mermaid if suffix == ".mmd" else dot, encoding="utf-8")
    elif suffix in (".svg", ".png", ".pdf"):
        if shutil.which("dot") is None:
            raise BackendError(f"cannot write {output}: Graphviz's `dot` is not installed (apt-get install "
                               "graphviz); `merlin-mdm dag SPEC -o graph.dot` writes the text instead")
        result = _shell.run(["dot", f"-T{suffix[1:]}", "-o", str(output)], stdin=dot, timeout=60)
        if result.rc != 0:
            raise BackendError(f"dot failed ({result.rc}): {result.stderr.strip()}")
    else:
        raise UsageError(f"-o {output}: use .dot, .mmd, .svg, .png or .pdf")
    click.echo(f"wrote {output}")
