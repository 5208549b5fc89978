"""Building plans from spec text with the pure functions (no workspace on disk, no subprocess)."""

from __future__ import annotations

from pathlib import Path

from merlin_mdm.spec import Spec, load_spec_text
from merlin_mdm.study.expand import StudyContext, expand
from merlin_mdm.study.plan import StudyPlan
from merlin_mdm.study.samples import SampleSet

WORKSPACE = "/ws/study_20260101-000000"
OUTPUT = "/ws"
STAMP = "20260101-000000"


def spec_of(text: str, path: str | Path = "/specs/study.yaml", **overrides: str) -> Spec:
    """A validated Spec from YAML text (SPECROOT is the folder of ``path``)."""
    return load_spec_text(text, path, overrides=overrides or None).spec


def plan_of(text: str, samples: int = 0, labels: tuple[str, ...] = ("X",), batch_size: int = 100,
            workspace: str = WORKSPACE, path: str | Path = "/specs/study.yaml") -> StudyPlan:
    """Expand spec text; ``samples`` > 0 attaches a SampleSet of that many rows (the file is never read)."""
    spec = spec_of(text, path)
    levels = spec.samples.level_max_dirs if spec.samples else 25
    sample_set = SampleSet(f"{workspace}/merlin_info/samples.npy", samples, labels, levels) if samples else None
    return expand(spec, StudyContext(workspace, OUTPUT, STAMP, sample_set, batch_size))
