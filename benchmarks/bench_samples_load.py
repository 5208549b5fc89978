"""How long a task process takes to read its sample from a large text samples file, and the memory it takes.

Usage::

    python3 benchmarks/bench_samples_load.py [--rows 1000000] [--columns 3] [--repeat 3]

Writes a CSV of random floats (17 significant digits), makes a study workspace from it (``create_workspace``:
the samples are checked, copied to merlin_info/ and, from 10,000 rows, kept parsed beside the copy), then, in a
fresh interpreter each time (as a worker process starts), loads the plan and reads the last sample's values:
once with the kept rows (memory-mapped) and once with them removed (the CSV parsed, as before the forty-second
session). Prints the seconds to the values (best of ``--repeat``), the process's peak RSS, and the sizes on disk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SPEC = """\
description: {{name: big, description: load}}
env: {{variables: {{OUTPUT_PATH: ./out}}}}
study:
  - name: a
    description: a
    run: {{cmd: echo $(C0)}}
merlin:
  samples:
    column_labels: [{labels}]
    file: big.csv
"""
READ = """
import json, sys, time
t = time.perf_counter()
from merlin_mdm.study.layout import Workspace
plan = Workspace(__import__("pathlib").Path(sys.argv[1])).load_plan()
values = plan.samples.values(plan.samples.count - 1)
seconds = time.perf_counter() - t
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (this benchmark, 500 MB)
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"seconds": seconds, "rss_mb": peak / 1024, "values": values}))
"""


def _read(root: Path) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", READ, str(root)], capture_output=True, text=True, check=True,
                         cwd=REPO)
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--columns", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from merlin_mdm.spec import load_spec_text
    from merlin_mdm.study.samples import parsed_path
    from merlin_mdm.study.workspace import create_workspace

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        np.savetxt(base / "big.csv", np.random.default_rng(0).random((args.rows, args.columns)), delimiter=",",
                   fmt="%.17g")
        labels = ", ".join(f"C{i}" for i in range(args.columns))
        start = time.perf_counter()
        ws, plan = create_workspace(load_spec_text(SPEC.format(labels=labels), base / "spec.yaml"))
        made = time.perf_counter() - start
        assert plan.samples is not None
        copy = Path(plan.samples.file)
        kept = parsed_path(copy)
        print(f"{args.rows:,} rows x {args.columns} columns; CSV {copy.stat().st_size / 1e6:.1f} MB, kept rows "
              f"{kept.stat().st_size / 1e6:.1f} MB; workspace made in {made:.2f} s")
        for label in ("kept rows (memory-mapped)", "CSV parsed"):
            if label == "CSV parsed":
                kept.unlink()
            runs = [_read(ws.root) for _ in range(args.repeat)]
            best = min(runs, key=lambda r: float(r["seconds"]))  # type: ignore[arg-type]
            print(f"  {label}: {best['seconds']:.2f} s to the last sample's values, peak RSS "
                  f"{max(float(r['rss_mb']) for r in runs):.0f} MB")  # type: ignore[arg-type]
        assert runs[0]["values"] == _read(ws.root)["values"]


if __name__ == "__main__":
    main()
