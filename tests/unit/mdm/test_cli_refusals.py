"""The MDM commands as a researcher meets them: a stopped training is saved and never taken for a finished one,
a resumed training keeps its recipe, no command writes over another kind of artefact, and bad knob values are
one-line usage errors (exit 2) before anything runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from merlin_mdm.cli.main import cli  # noqa: E402
from merlin_mdm.results.metrics import read_metrics  # noqa: E402

pytestmark = pytest.mark.torch

TINY = ["--task", "blocks", "--knob", "nb=2", "--knob", "bl=2", "--d-model", "16", "--n-layers", "1", "--n-heads",
        "2", "--d-ff", "32", "--batch-size", "8", "--warmup", "1", "--device", "cpu", "--quiet"]
EVAL = ["--sampler", "top_prob", "--steps", "2", "--n-examples", "8", "--device", "cpu"]


def _mdm(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, ["mdm", *args])


@pytest.fixture(scope="module")
def den(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("den") / "den"
    result = _mdm("train", *TINY, "--steps", "20", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out


def test_a_stopped_training_is_saved_refused_downstream_and_resumed(tmp_path: Path) -> None:
    out = tmp_path / "den"
    cmd = [sys.executable, "-m", "merlin_mdm.cli.main", "mdm", "train", *TINY, "--steps", "1000000",
           "--ckpt-every", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 120
    while not (out / "denoiser.pt").exists() and time.monotonic() < deadline:  # no periodic save: only the stop's
        time.sleep(0.5)
        if time.monotonic() > deadline - 110:  # about 10 s of training, then stop it as a batch system would
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    step = json.loads((out / "meta.json").read_text())["step"]
    assert step > 0 and f"stopped at step {step} of 1000000; saved in {out}" in err, err
    refused = _mdm("eval", "--checkpoint", str(out), *EVAL, "--out", str(tmp_path / "m.h5"))
    assert refused.exit_code == 1 and f"training stopped at step {step} of 1000000" in refused.output, refused.output
    assert not (tmp_path / "m.h5").exists()
    order = _mdm("train-order", "--denoiser", str(out), "--budget", "2", "--out", str(tmp_path / "pol"))
    assert order.exit_code == 1 and "stopped at step" in order.output, order.output
    kept = tmp_path / "kept"  # a training cut by a deadline, kept as it is on purpose
    shutil.copytree(out, kept)
    ended = _mdm("train", *TINY, "--steps", "1", "--out", str(kept), "--resume")
    assert ended.exit_code == 0 and f"stopped at step {step} of 1000000; --steps 1 ends its training there" in \
        ended.output, ended.output
    meta = json.loads((kept / "meta.json").read_text())
    assert (meta["train_summary"]["steps"], meta["train_config"]["steps"]) == (step, 1000000)
    assert _mdm("eval", "--checkpoint", str(kept), *EVAL, "--out", str(tmp_path / "k.h5")).exit_code == 0
    again, other = tmp_path / "again", tmp_path / "other"
    shutil.copytree(out, again)
    shutil.copytree(out, other)
    done = _mdm("train", *TINY, "--steps", str(step + 5), "--out", str(out), "--resume")
    assert done.exit_code == 0 and f"continuing from step {step} of {step + 5}" in done.output, done.output
    assert _mdm("eval", "--checkpoint", str(out), *EVAL, "--out", str(tmp_path / "m.h5")).exit_code == 0
    # the same command without --resume (as `restart` runs a stopped task again) continues it too, to the same
    # weights; replacing it threw the steps away
    implied = _mdm("train", *TINY, "--steps", str(step + 5), "--out", str(again))
    assert implied.exit_code == 0 and f"holds a training stopped at step {step}: continuing it" in implied.output
    assert "replacing" not in implied.output, implied.output
    ids = [json.loads((d / "meta.json").read_text())["checkpoint_id"] for d in (out, again)]
    assert ids[0] == ids[1]
    refused = _mdm("train", *TINY, "--steps", str(step + 5), "--seed", "9", "--out", str(other))
    assert refused.exit_code == 2 and "another recipe (seed 0 -> 9)" in refused.output, refused.output
    assert json.loads((other / "meta.json").read_text())["step"] == step  # kept as it was


def test_a_resumed_training_keeps_its_recipe(den: Path, tmp_path: Path) -> None:
    refused = _mdm("train", *TINY, "--steps", "40", "--seed", "7", "--lr", "1.0", "--out", str(den), "--resume")
    assert refused.exit_code == 2, refused.output
    assert "another recipe (lr 0.003 -> 1.0; seed 0 -> 7)" in refused.output, refused.output
    same = _mdm("train", *TINY, "--steps", "10", "--out", str(den), "--resume")
    assert same.exit_code == 0 and "is already at step 20 (--steps 10): nothing to train" in same.output
    assert json.loads((den / "meta.json").read_text())["train_config"]["steps"] == 20  # not rewritten


def test_resume_with_nothing_to_resume_says_so(tmp_path: Path) -> None:
    fresh = _mdm("train", *TINY, "--steps", "2", "--out", str(tmp_path / "new"), "--resume")
    assert fresh.exit_code == 0 and "nothing to resume in" in fresh.output and "training from step 0" in fresh.output


def test_no_command_writes_over_another_kind_of_artefact(den: Path, tmp_path: Path) -> None:
    meta = (den / "meta.json").read_bytes()
    over_meta = _mdm("eval", "--checkpoint", str(den), *EVAL, "--out", str(den / "meta.json"))
    assert over_meta.exit_code == 2 and "exists and is not a metrics file" in over_meta.output, over_meta.output
    policy_into_den = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--out", str(den))
    assert policy_into_den.exit_code == 2 and "holds a denoiser" in policy_into_den.output, policy_into_den.output
    assert (den / "meta.json").read_bytes() == meta
    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "policy.pt").write_bytes(b"a policy")
    den_into_pol = _mdm("train", *TINY, "--steps", "2", "--out", str(pol))
    assert den_into_pol.exit_code == 2 and "holds an order policy" in den_into_pol.output, den_into_pol.output
    assert not (pol / "denoiser.pt").exists()
    too_long = _mdm("train-order", "--denoiser", str(den), "--budget", "100", "--out", str(tmp_path / "p2"))
    assert too_long.exit_code == 2 and "exceeds the 4 answer positions" in too_long.output, too_long.output
    again = _mdm("train", *TINY, "--steps", "2", "--out", str(tmp_path / "d2"))
    assert again.exit_code == 0
    replaced = _mdm("train", *TINY, "--steps", "2", "--out", str(tmp_path / "d2"))
    assert "replacing the denoiser in" in replaced.output, replaced.output


@pytest.mark.parametrize(("args", "message"), [
    (["--knob", "tau=abc"], "knob tau expects a number (default 0.9), got 'abc'"),
    (["--sweep", "tau=0.5,abc"], "knob tau expects a number"),
    (["--knob", "blocks=1.5"], "knob blocks expects an integer >= 1"),
    (["--knob", "tau=0.5", "--knob", "tau=0.6"], "knob tau is given twice"),
    (["--knob", "tau=0.5", "--sweep", "tau=0.6,0.7"], "both fixed (--knob) and swept (--sweep)"),
    (["--steps", "2,2"], "--steps 2,2: a value is given twice"),
    (["--steps", "2,,4"], "--steps expects positive integers separated by commas, got '2,,4'"),
    (["--policy", "somewhere"], "takes no policy"),
    (["--knob", "tau=nan"], "'nan' is not a finite number"),
    (["--sweep", "tau=0.5,inf"], "'inf' is not a finite number"),
    (["--temperature", "nan"], "'nan' is not a finite number"),
])
def test_bad_knobs_are_usage_errors_before_anything_runs(den: Path, tmp_path: Path, args: list[str],
                                                         message: str) -> None:
    sampler = "top_prob" if "--policy" in args else "threshold"
    steps = [] if "--steps" in args else ["--steps", "2"]
    result = _mdm("eval", "--checkpoint", str(den), "--sampler", sampler, *steps, "--n-examples", "8", *args,
                  "--out", str(tmp_path / "m{steps}_{tau}.h5"))
    assert result.exit_code == 2 and message in result.output, result.output
    assert not list(tmp_path.glob("*.h5"))  # the good values of a sweep did not run first


def test_json_is_one_object_per_run_naming_its_file(den: Path, tmp_path: Path) -> None:
    result = _mdm("eval", "--checkpoint", str(den), "--sampler", "top_prob", "--steps", "2,3", "--n-examples",
                  "8", "--device", "cpu", "--out", str(tmp_path / "T{steps}.h5"), "--json")
    assert result.exit_code == 0, result.output
    runs = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["path"], r["steps"]) for r in runs] == [(str(tmp_path / "T2.h5"), 2), (str(tmp_path / "T3.h5"), 3)]
    assert read_metrics(tmp_path / "T3.h5").attrs["steps"] == 3


def test_a_policy_used_with_another_denoiser_is_flagged_and_recorded(den: Path, tmp_path: Path) -> None:
    pol, other = tmp_path / "pol", tmp_path / "other"
    trained = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "2", "--batch-size", "4",
                   "--rollouts", "2", "--d-model", "8", "--eval-samples", "0", "--device", "cpu", "--out", str(pol))
    assert trained.exit_code == 0 and "replacing the policy" not in trained.output, trained.output
    again = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "2", "--batch-size", "4",
                 "--rollouts", "2", "--d-model", "8", "--eval-samples", "0", "--device", "cpu", "--out", str(pol))
    assert again.exit_code == 0 and f"replacing the policy in {pol}" in again.output, again.output
    assert _mdm("train", *TINY, "--steps", "3", "--seed", "5", "--out", str(other)).exit_code == 0
    for checkpoint, warned in ((den, False), (other, True)):
        out = tmp_path / f"{checkpoint.name}.h5"
        result = _mdm("eval", "--checkpoint", str(checkpoint), "--sampler", "learned", "--policy", str(pol),
                      "--steps", "2", "--n-examples", "8", "--batch-size", "3", "--device", "cpu", "--out", str(out))
        assert result.exit_code == 0, result.output
        attrs = read_metrics(out).attrs
        assert attrs["policy_denoiser_id"] == json.loads((den / "meta.json").read_text())["checkpoint_id"]
        assert attrs["eval_batch_size"] == 3
        assert ("warning: the policy" in result.output and "was trained with denoiser" in result.output) == warned


def test_an_oracle_of_another_task_is_refused(den: Path, tmp_path: Path) -> None:
    result = _mdm("eval", "--checkpoint", str(den), "--sampler", "addition_oracle", "--steps", "2", "--n-examples",
                  "8", "--device", "cpu", "--out", str(tmp_path / "m.h5"))
    assert result.exit_code == 2 and "needs the addition task" in result.output and "trained on blocks" in \
        result.output, result.output
    assert not (tmp_path / "m.h5").exists()


def test_a_bad_knob_leaves_no_empty_checkpoint_folder(tmp_path: Path) -> None:
    out = tmp_path / "t1"
    result = _mdm("train", "--task", "blocks", "--knob", "zz=1", "--out", str(out), "--quiet")
    assert result.exit_code == 2 and "has no knob zz" in result.output, result.output
    assert not out.exists()


def test_eval_keeps_the_same_run_and_refuses_to_write_over_another(den: Path, tmp_path: Path) -> None:
    """The same command run again (a restarted task) keeps the file it already wrote; another run over it is
    refused, exit 2, unless --force (it was written over silently)."""
    out = tmp_path / "m.h5"
    assert _mdm("eval", "--checkpoint", str(den), *EVAL, "--out", str(out)).exit_code == 0
    before = out.read_bytes()
    again = _mdm("eval", "--checkpoint", str(den), *EVAL, "--out", str(out))
    assert again.exit_code == 0 and "already holds this run" in again.output, again.output
    assert out.read_bytes() == before
    other = _mdm("eval", "--checkpoint", str(den), *EVAL[:-2], "--seed", "5", "--out", str(out))
    assert other.exit_code == 2 and "holds another run (seed 0 -> 5)" in other.output, other.output
    assert out.read_bytes() == before
    forced = _mdm("eval", "--checkpoint", str(den), *EVAL[:-2], "--seed", "5", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert read_metrics(out).attrs["seed"] == 5


def test_eval_says_when_a_budget_exceeds_the_answer(den: Path, tmp_path: Path) -> None:
    long = _mdm("eval", "--checkpoint", str(den), "--sampler", "top_prob", "--steps", "9", "--n-examples", "4",
                "--out", str(tmp_path / "l.h5"))
    assert long.exit_code == 0 and "--steps 9 exceeds the 4 answer positions: at most 4 calls" in long.output
    assert read_metrics(tmp_path / "l.h5").attrs["max_nfe"] <= 4
    assert "note" not in _mdm("eval", "--checkpoint", str(den), "--sampler", "top_prob", "--steps", "2",
                              "--n-examples", "4", "--out", str(tmp_path / "s.h5")).output


def test_eval_says_the_metrics_are_hdf5_under_another_name(den: Path, tmp_path: Path) -> None:
    """`--out x.txt` wrote HDF5 without a word (an outside probe)."""
    text = _mdm("eval", "--checkpoint", str(den), "--sampler", "top_prob", "--steps", "2", "--n-examples", "4",
                "--out", str(tmp_path / "m.txt"))
    assert text.exit_code == 0 and "note: --out m.txt has no .h5 suffix, but the metrics are written as HDF5" \
        in text.output, text.output
    assert read_metrics(tmp_path / "m.txt").attrs["steps"] == 2


def test_a_diverged_training_fails_and_saves_nothing_of_it(tmp_path: Path) -> None:
    """At --lr 1000 the loss turns NaN within a few steps; the weights were saved as a finished denoiser (exit 0)
    whose answers, one token everywhere, scored 100% on `blocks`."""
    out = tmp_path / "den"
    result = _mdm("train", *TINY, "--steps", "60", "--lr", "1000", "--out", str(out))
    assert result.exit_code == 2 and "training diverged at step" in result.output and "Lower --lr (now 1000)" in \
        result.output, result.output
    refused = _mdm("eval", "--checkpoint", str(out), *EVAL, "--out", str(tmp_path / "m.h5"))
    assert refused.exit_code != 0 and not (tmp_path / "m.h5").exists(), refused.output
    for option in (["--lr", "nan"], ["--weight-decay", "inf"]):
        bad = _mdm("train", *TINY, "--steps", "2", *option, "--out", str(tmp_path / "d2"))
        assert bad.exit_code == 2 and "is not a finite number" in bad.output, bad.output


def test_order_diagnostic_writes_over_nothing_unless_forced(den: Path, tmp_path: Path) -> None:
    """It wrote its shuffled run over any --out, a baseline's metrics file or a results file included."""
    pol = tmp_path / "pol"
    assert _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "2", "--batch-size", "4",
                "--rollouts", "2", "--d-model", "8", "--eval-samples", "0", "--device", "cpu",
                "--out", str(pol)).exit_code == 0
    baseline = tmp_path / "iid_T2.h5"
    assert _mdm("eval", "--checkpoint", str(den), *EVAL, "--out", str(baseline)).exit_code == 0
    before = baseline.read_bytes()
    diag = ["order-diagnostic", "--checkpoint", str(den), "--policy", str(pol), "--steps", "2", "--n-examples", "8",
            "--device", "cpu"]
    refused = _mdm(*diag, "--out", str(baseline))
    assert refused.exit_code == 2 and "exists: it is not written over" in refused.output, refused.output
    assert baseline.read_bytes() == before
    (tmp_path / "afile").write_text("x")
    under_a_file = _mdm(*diag, "--out", str(tmp_path / "afile" / "s.h5"))
    assert under_a_file.exit_code == 2 and "is a file, not a folder" in under_a_file.output, under_a_file.output
    forced = _mdm(*diag, "--out", str(baseline), "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["path"] == str(baseline)  # named as eval's JSON names its file
    assert read_metrics(baseline).attrs["sampler"] != "top_prob"
    order_under_file = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "2",
                            "--eval-samples", "0", "--device", "cpu", "--out", str(tmp_path / "afile" / "pol"))
    assert order_under_file.exit_code == 2 and "is a file, not a folder" in order_under_file.output


def test_policy_and_a_policy_dir_knob_together_are_refused(den: Path, tmp_path: Path) -> None:
    result = _mdm("eval", "--checkpoint", str(den), "--sampler", "learned", "--policy", "a", "--knob",
                  "policy_dir=b", "--steps", "2", "--out", str(tmp_path / "m.h5"))
    assert result.exit_code == 2 and "both name the policy" in result.output, result.output


@pytest.mark.parametrize("kind", [[], ["--objective", "reward", "--policy-kind", "sequential"]])
def test_a_diverged_order_training_fails_and_saves_no_policy(den: Path, tmp_path: Path, kind: list[str]) -> None:
    """At --lr 1e12 the ELBO turned NaN and the policy was saved (exit 0, 44 tensors not finite) and evaluated;
    the reward objective ended in a traceback from torch.multinomial."""
    out = tmp_path / "pol"
    result = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "20", "--batch-size", "8",
                  "--rollouts", "2", "--d-model", "8", "--eval-samples", "0", "--device", "cpu", "--lr", "1e12",
                  *kind, "--out", str(out))
    assert result.exit_code == 2 and "train-order diverged" in result.output, (result.output, result.exception)
    assert not (out / "policy.pt").exists()


def test_a_learning_rate_past_any_sense_and_an_empty_budget_are_usage_errors(den: Path, tmp_path: Path) -> None:
    """`--lr 1e300` (past float32) ended in torch's overflow traceback; `--budgets 2,,4` read as 2,4 (an outside
    probe). A large learning rate that float32 holds is a divergence, said as one (the tests above)."""
    train = _mdm("train", *TINY, "--steps", "2", "--lr", "1e300", "--out", str(tmp_path / "d"))
    assert train.exit_code == 2 and "1e+300 is not in the range 0<x<=1e+30" in train.output, train.output
    order = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--budgets", "2,,4", "--out",
                 str(tmp_path / "p"))
    assert order.exit_code == 2 and "expected integers separated by commas, got '2,,4'" in order.output, order.output
    assert not (tmp_path / "d").exists() and not (tmp_path / "p").exists()


def test_an_empty_path_is_refused_not_read_as_the_current_folder(den: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`--out ''` (a shell variable unset) trained a denoiser or a policy into the current folder (a probe)."""
    monkeypatch.chdir(tmp_path)
    for args in (["train", *TINY, "--steps", "2", "--out", ""],
                 ["train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "1", "--out", " "],
                 ["eval", "--checkpoint", str(den), *EVAL, "--out", ""],
                 ["eval", "--checkpoint", "", *EVAL, "--out", "m.h5"]):
        result = _mdm(*args)
        folder = args[0] != "eval" or "--checkpoint" in args[args.index("") - 1:]  # a folder option offers '.'
        said = "is empty: name a path ('.' for the current folder; " if folder else "is empty: name a path (is a "
        assert result.exit_code == 2 and said in result.output, (args, result.output)
    assert list(tmp_path.iterdir()) == []


def test_a_model_shape_error_comes_before_any_word_of_replacing(den: Path, tmp_path: Path) -> None:
    """`replacing the denoiser in D` was said before a bad shape ended the command (nothing was replaced)."""
    out = tmp_path / "den"
    shutil.copytree(den, out)
    before = (out / "denoiser.pt").read_bytes()
    args = [*TINY, "--steps", "2", "--d-model", "10", "--n-heads", "4", "--out", str(out)]
    result = _mdm("train", *args)
    assert result.exit_code == 2 and "n_heads 4 must divide d_model 10" in result.output, result.output
    assert "replacing" not in result.output and (out / "denoiser.pt").read_bytes() == before


def test_a_stopped_order_training_of_another_recipe_is_refused_not_thrown_away(den: Path, tmp_path: Path) -> None:
    """A saved state of another recipe was dropped with a note and overwritten (`train` refuses the same)."""
    from merlin_mdm.mdm.order.resume import STATE_FILE, TrainingStateFile

    out = tmp_path / "pol"
    TrainingStateFile(out, "0123456789abcdef", every=0).save({"iteration": 7})
    before = (out / STATE_FILE).read_bytes()
    result = _mdm("train-order", "--denoiser", str(den), "--budget", "2", "--iterations", "2", "--out", str(out))
    assert result.exit_code == 2 and "stopped at iteration 7 under another recipe" in result.output, result.output
    assert (out / STATE_FILE).read_bytes() == before and not (out / "policy.pt").exists()


def test_combinations_that_run_but_surprise_are_noted(den: Path, tmp_path: Path) -> None:
    """Each ran without a word (an outside probe): a warm-up longer than the training, a quick check at a budget
    the policy is not trained for, a policy evaluated at a budget it was not trained for."""
    short = _mdm("train", *TINY, "--steps", "3", "--warmup", "10", "--out", str(tmp_path / "d"))
    assert short.exit_code == 0 and "note: --warmup 10 is longer than the 3 steps" in short.output, short.output
    order = _mdm("train-order", "--denoiser", str(den), "--budget", "3", "--budgets", "2,4", "--iterations", "1",
                 "--eval-samples", "4", "--out", str(tmp_path / "p"))
    assert order.exit_code == 0 and "quick check runs at --budget 3, which is not one of --budgets 2,4" in \
        order.output, order.output
    evaluated = _mdm("eval", "--checkpoint", str(den), "--sampler", "learned", "--policy", str(tmp_path / "p"),
                     "--steps", "2,3", "--n-examples", "8", "--device", "cpu", "--out", str(tmp_path / "m{steps}.h5"))
    assert evaluated.exit_code == 0, evaluated.output
    assert f"the policy {tmp_path / 'p'} was trained for budget 2,4; --steps 3 is evaluated" in evaluated.output
    trained = _mdm("eval", "--checkpoint", str(den), "--sampler", "learned", "--policy", str(tmp_path / "p"),
                   "--steps", "4", "--n-examples", "8", "--device", "cpu", "--out", str(tmp_path / "m4.h5"))
    assert trained.exit_code == 0 and "note" not in trained.output, trained.output


def test_sweep_values_knobs_and_run_lines_say_what_they_are(den: Path, tmp_path: Path) -> None:
    """From an outside probe: `--sweep tau=0.9,0.90` was said to lack {tau} in the pattern; a knob error listed
    "(none)" though every sampler takes blocks=N; two swept runs printed the same summary line."""
    twice = _mdm("eval", "--checkpoint", str(den), "--sampler", "threshold", "--sweep", "tau=0.9,0.90", "--steps", "4",
                 "--n-examples", "8", "--device", "cpu", "--out", str(tmp_path / "t{tau}.h5"))
    assert twice.exit_code == 2 and "--sweep tau=0.9,0.90: a value is given twice" in twice.output, twice.output
    typo = _mdm("eval", "--checkpoint", str(den), *EVAL, "--knob", "blockz=2", "--out", str(tmp_path / "b.h5"))
    assert typo.exit_code == 2 and "valid knobs: (none) (and blocks=N, semi-autoregressive" in typo.output, typo.output
    swept = _mdm("eval", "--checkpoint", str(den), "--sampler", "threshold", "--sweep", "tau=0.5,0.9", "--steps", "4",
                 "--n-examples", "8", "--device", "cpu", "--out", str(tmp_path / "t{tau}.h5"))
    assert swept.exit_code == 0 and "threshold (tau=0.5) T=4: accuracy" in swept.output and \
        "threshold (tau=0.9) T=4: accuracy" in swept.output, swept.output
    import merlin_mdm.results
    from merlin_mdm.results.results_file import ResultsFileError

    with pytest.raises(ResultsFileError, match="it is one run's metrics file; aggregate it first"):
        merlin_mdm.results.load(tmp_path / "t0.5.h5")
