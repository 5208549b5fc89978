#!/usr/bin/env bash
# The heavy part of issue 11's full study (arith with 3 training seeds, Sudoku 9x9), as one prepared command
# for a GPU machine (written for the lent H200: 16 cores, one GPU, at most 10 minutes a command).
#
#   WORK=/tmp/heavy bash specs/mdm_heavy_part_gpu.sh "$OUT"  # the real run (the networks on the GPU: --device auto)
#   SCALE=smoke bash specs/mdm_heavy_part_gpu.sh /tmp/x        # a few minutes on a CPU: checks every stage
#
# On the lent device machine, one `run` call (the GPU tests first: 7 passed in 11.9 s on the H200, section 19):
#   timeout 120 python3 -m pytest tests/unit/mdm/test_devices_gpu.py -x -q -p no:cacheprovider -W default 2>&1 | tail -15;
#   WORK=/tmp/heavy bash specs/mdm_heavy_part_gpu.sh $OUT
# with timeout_s 600 (the script stops its streams at DEADLINE=480 s and packs in seconds). Only the archives
# and two text files land in OUT_DIR (the tool returns at most 8 files); the work tree stays in WORK.
#
# The streams run side by side: arith training seeds 0, 1 and 2 (a wider, deeper denoiser than the CPU
# pilot; the baselines on split 2 (eval seed 1000): top_prob at T = 5, 10, 15 and one character per call (47), DUS,
# and section 16's threshold and EB sweeps capped at T = 5, 10, 15; then section 16's learned orders per seed: a
# clone of threshold tau 0.99 for T = 5, 10, 15, and from it the T=5 specialist (reward at 0.002 per call, 32 x 8
# rollouts)), and Sudoku 9x9 with 40 blanks, one stream per training seed in S9_SEEDS (denoiser; baselines capped at
# 2, 3, 4 and one cell per call; section 21's order built on EB gamma 0.1 (a heuristic prior, reward at 0.002 per
# call, lr 3e-4, PRIOR_REWARD iterations, the best of its validated iterates kept, section 22); a clone of EB gamma
# 0.1 for T = 2, 3, 4, then reward at 0.002 per call from it, at section 20's gentle lr 1e-4).
# Budgets are iterations, never seconds: every stage runs under `timeout` with the time left before DEADLINE, a stage still running then is stopped,
# none starts after it, and what finished is kept (each stage leaves a line in OUT_DIR/stages.txt); nothing is
# shortened to fit. Afterwards OUT_DIR holds stages.txt, machine.txt and:
#   results_arith.tar.gz, results_sudoku9.tar.gz
#                      per task, every metrics file (eval/), the policies, the meta.json files, and all logs
#   den_arith.tar.gz   the three arith denoisers, weights only (they evaluate and train orders anywhere; without
#                      their optimiser state they cannot be resumed)
#   den_sudoku9.tar.gz the 9x9 denoisers (sudoku9/seedS/), weights only
# Aggregate on any machine (after tar -xzf results_arith.tar.gz): merlin-mdm aggregate "eval/arith/*/*.h5" --out arith.h5 --markdown arith.md
#
# Environment: WORK (the work tree: an empty or new folder, default a new one under /tmp); ARITH_TRAIN and S9_TRAIN (the denoisers' `mdm train`
# options); IMITATE, REWARD and PRIOR_REWARD (order training iterations); POLICY_KIND (default sequential-onepass: the network
# reads a step once, about 2x faster training on the CPU, docs/mdm-order-learning.md section 13; sequential
# re-reads it per pick); PYTHON (default python3: the package is found
# through PYTHONPATH=<repo root>, so only click, pyyaml, numpy, h5py, rich and torch are needed); SCALE (full or
# smoke); DEADLINE (seconds, default 480); THREADS (torch CPU threads per stream, default 3: the networks run on
# the GPU, the samplers' and rollouts' bookkeeping on the CPU); TASKS (default "arith sudoku9": the streams to run);
# S9_SEEDS (default "0": the 9x9 training seeds, a stream each); DENOISERS (a folder holding an earlier run's
# den_*.tar.gz unpacked: arith/seedS/ and sudoku9/seedS/ with denoiser.pt and meta.json; a stream whose weights
# are there copies them instead of training).
#
# Measured on the lent H200 (docs/mdm-order-learning.md section 19): the four trainings side by side took 455-467 s
# (arith 8000 steps done; Sudoku 9x9 at 7500 when the deadline came), so training fills one call. The GPU-trained
# arith denoisers decode 98.5% of split 2 in 1.3 calls (threshold tau 0.99 capped at 2): order no longer matters
# there. Sudoku 9x9 is the task for the next lent session. The seed-0 9x9 weights of section 19 did not survive the
# move to a new machine (section 21), so it takes two calls: first the three denoisers side by side (about 470 s,
# the stages after training stop at the deadline), then, with their weights carried, the orders:
#   run(timeout_s=600): TASKS=sudoku9 S9_SEEDS="0 1 2" THREADS=5 WORK=/tmp/heavy bash specs/mdm_heavy_part_gpu.sh $OUT
#   (here: mkdir -p .heavy && tar -xzf <files_at>/den_sudoku9.tar.gz -C .heavy)
#   run(carry=[".heavy"], timeout_s=600): TASKS=sudoku9 S9_SEEDS="0 1 2" DENOISERS=.heavy THREADS=5 \
#     PRIOR_REWARD=300 IMITATE=1500 REWARD=200 WORK=/tmp/heavy2 bash specs/mdm_heavy_part_gpu.sh $OUT
# (alone on the GPU, 9x9 imitation took 0.16 s and reward at 32 x 8 0.41 s per iteration, section 20; the prior
# stage comes first after the baselines because it needs no clone; three streams side by side were not measured).
# Budget as of the thirty-fourth session: 15 minutes of device time per session in all, the machine's start
# included, so the two calls above no longer fit one session. The call that matters is the first: the 9x9
# denoisers, which this CPU cannot train (measured here, 2026-12-06, Intel Xeon, nothing beside it: 6x192 at batch
# 256 on one thread, 10 steps in 82.9 s, so about 17 h for 7500), while their orders can be (section 20: 1.2-2.4 s an
# imitation iteration, 4.6-7.2 s a reward one, with 2 threads). So: run only the first call, then keep
# den_sudoku9.tar.gz where the next session finds it (weights only: 2.7 M parameters, about 11 MB a seed; the
# session's scratch does not survive), and train and evaluate the orders on the CPU with DENOISERS=<that folder>
# (the same script: with no GPU, `--device auto` runs the networks on the CPU). A denoiser training cut by the
# deadline (Sudoku 9x9 reached 7500 of 8000 steps in section 19) is kept at the step it reached and recorded so
# (stage NAME-kept): since the thirty-fifth session evaluation refuses an unfinished checkpoint otherwise.
set -u -o pipefail

OUT=${1:?usage: mdm_heavy_part_gpu.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
SCALE=${SCALE:-full}
DEADLINE=${DEADLINE:-480}
TASKS=${TASKS:-"arith sudoku9"}
S9_SEEDS=${S9_SEEDS:-0}
EVAL_SEED=${EVAL_SEED:-1000}  # split 2 of docs/mdm-order-learning.md section 17: prompts no training seed draws
THREADS=${THREADS:-3}
POLICY_KIND=${POLICY_KIND:-sequential-onepass}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=$THREADS

if [ "$SCALE" = smoke ]; then  # every stage, at sizes that finish on a CPU in minutes
  ARITH_TRAIN=${ARITH_TRAIN:-"--steps 30 --batch-size 16 --d-model 32 --n-layers 1 --d-ff 64"}
  S9_TRAIN=${S9_TRAIN:-"--steps 30 --batch-size 16 --d-model 32 --n-layers 1 --d-ff 64"}
  N=32; IMITATE=2; REWARD=2; PRIOR_REWARD=2; ROLLOUTS="--batch-size 4 --rollouts 2"
  PRIOR_SELECT="--select-every 1 --select-samples 8"
  GAMMAS=0.1,1; TAUS=0.9,0.99; S9_GAMMAS=0.1; S9_TAUS=0.9
elif [ "$SCALE" = full ]; then
  # measured on the H200 with the four side by side: the arith trainings 454-457 s, the 9x9 one 7500 steps in 467 s
  ARITH_TRAIN=${ARITH_TRAIN:-"--steps 8000 --batch-size 256 --d-model 128 --n-layers 4 --d-ff 512 --warmup 500"}
  S9_TRAIN=${S9_TRAIN:-"--steps 8000 --batch-size 256 --d-model 192 --n-layers 6 --d-ff 768 --warmup 500"}
  N=${N:-2000}; IMITATE=${IMITATE:-250}; REWARD=${REWARD:-80}; PRIOR_REWARD=${PRIOR_REWARD:-300}
  ROLLOUTS="--batch-size 32 --rollouts 8"
  PRIOR_SELECT="--select-every 10 --select-samples 1024"  # section 22: keep the best validated iterate
  GAMMAS=3,1,0.5,0.3,0.2,0.1,0.05,0.01  # section 16's sweeps, capped at every budget
  TAUS=0.5,0.7,0.8,0.85,0.9,0.95,0.99,0.995
  S9_GAMMAS=0.01,0.03,0.1,0.3,1,3; S9_TAUS=0.7,0.9,0.95,0.99,0.995
else
  echo "SCALE must be full or smoke, got $SCALE" >&2; exit 2
fi

WORK=${WORK:-$(mktemp -d /tmp/heavy.XXXXXX)}
if [ -n "$(ls -A "$WORK" 2>/dev/null)" ]; then
  echo "WORK=$WORK is not empty: pass a fresh folder (a rerun must not pack an earlier run's files)" >&2; exit 2
fi
mkdir -p "$OUT" "$WORK/logs" || exit 1
OUT=$(cd "$OUT" && pwd)
W=$(cd "$WORK" && pwd)
STAGES=$OUT/stages.txt
END=$((SECONDS + DEADLINE))

# stage NAME MDM_ARGS...: run `merlin-mdm mdm MDM_ARGS` with the time left before the deadline (TERM, then KILL
# 10 s later), log it, and record its outcome and seconds in stages.txt; past the deadline it starts nothing
stage() {
  local name=$1 start=$SECONDS left=$((END - SECONDS)) rc; shift
  if [ "$left" -le 0 ]; then echo "$name rc=skipped (deadline)" >> "$STAGES"; return 124; fi
  timeout -k 10 "$left" "$PY" -m merlin_mdm.cli.main mdm "$@" > "$W/logs/$name.out" 2> "$W/logs/$name.err"; rc=$?
  echo "$name rc=$rc seconds=$((SECONDS - start))" >> "$STAGES"
  return $rc
}

# denoiser NAME TASK_DIR OUT_DIR MDM_TRAIN_ARGS...: copy DENOISERS/TASK_DIR when it holds carried weights (a
# den_*.tar.gz of an earlier run, unpacked), else train under `stage`
denoiser() {
  local name=$1 task_dir=$2 out=$3; shift 3
  if [ -n "${DENOISERS:-}" ] && [ -f "$DENOISERS/$task_dir/denoiser.pt" ]; then
    cp -r "$DENOISERS/$task_dir" "$out" && echo "$name rc=0 seconds=0 copied from $DENOISERS/$task_dir" >> "$STAGES"
    return
  fi
  stage "$name" train "$@" --out "$out"; local rc=$?
  if [ "$rc" -ne 0 ] && [ -f "$out/denoiser.pt" ]; then
    # cut by the deadline: `mdm train` saved the step it reached on SIGTERM, and evaluation refuses an unfinished
    # checkpoint; end its training there, recorded (train_summary at that step), so that the weights carried to
    # the next session (den_*.tar.gz) are usable as they are
    "$PY" -m merlin_mdm.cli.main mdm train "$@" --out "$out" --resume --steps 1 >> "$W/logs/$name.out" \
      2>> "$W/logs/$name.err"
    echo "$name-kept rc=$? (ended at the step reached)" >> "$STAGES"
  fi
  return $rc
}

arith_stream() {  # arith, one training seed: denoiser, capped baselines, the clone, the T=5 specialist
  local s=$1 d=$W/arith/seed$1 e=$W/eval/arith/seed$1
  mkdir -p "$d" "$e"
  local den=(--checkpoint "$d/den" --seed "$EVAL_SEED" --n-examples $N --json)
  local order=(--denoiser "$d/den" --policy-kind "$POLICY_KIND" --layers 2 --eval-samples 0 --threads "$THREADS" --json)
  denoiser "arith$s-train" "arith/seed$s" "$d/den" --task arith --knob n_ops=4 --knob max_value=9 $ARITH_TRAIN \
    --seed "$s" --threads "$THREADS" --quiet --json || return
  stage "arith$s-fixed" eval "${den[@]}" --sampler top_prob --steps 5,10,15,47 --out "$e/top_prob_T{steps}.h5"
  stage "arith$s-thr" eval "${den[@]}" --sampler threshold --sweep tau=$TAUS --steps 5,10,15 \
    --out "$e/thr_t{tau}_T{steps}.h5"
  stage "arith$s-eb" eval "${den[@]}" --sampler eb --sweep gamma=$GAMMAS --steps 5,10,15 --out "$e/eb_g{gamma}_T{steps}.h5"
  stage "arith$s-dus" eval "${den[@]}" --sampler dus --steps 5,10,15 --out "$e/dus_T{steps}.h5"
  # section 16's clone of threshold tau 0.99 (one policy for T = 5, 10, 15), then its T=5 reward specialist
  stage "arith$s-imitate" train-order "${order[@]}" --budget 10 --budgets 5,10,15 --objective imitate \
    --teacher threshold --teacher-knob tau=0.99 --iterations $IMITATE --seed "1$s" --out "$d/clone" || return
  stage "arith$s-clone" eval "${den[@]}" --sampler learned --policy "$d/clone" --steps 5,10,15 --out "$e/clone_T{steps}.h5"
  stage "arith$s-reward" train-order "${order[@]}" --budget 5 --objective reward --nfe-penalty 0.002 --lr 3e-4 \
    --init-policy "$d/clone" --iterations $REWARD $ROLLOUTS --seed "2$s" --out "$d/specialist" || return
  stage "arith$s-specialist" eval "${den[@]}" --sampler learned --policy "$d/specialist" --steps 5 \
    --out "$e/specialist_T{steps}.h5"
}

sudoku9_stream() {  # Sudoku 9x9, 40 blanks, one training seed: denoiser; baselines capped at 2, 3, 4 (where its
  # front is) and one cell per call; a clone of EB gamma 0.1 for T = 2, 3, 4, then reward at 0.002 per call from it
  local s=$1 d=$W/sudoku9/seed$1 e=$W/eval/sudoku9/seed$1
  mkdir -p "$d" "$e"
  local den=(--checkpoint "$d/den" --seed "$EVAL_SEED" --n-examples $N --json)
  local order=(--denoiser "$d/den" --policy-kind "$POLICY_KIND" --layers 2 --eval-samples 0 --threads "$THREADS" --json
               --budget 4 --budgets 2,3,4)
  denoiser "sudoku9$s-train" "sudoku9/seed$s" "$d/den" --task sudoku --knob n=9 --knob blanks=40 $S9_TRAIN \
    --seed "$s" --threads "$THREADS" --quiet --json || return
  stage "sudoku9$s-eb" eval "${den[@]}" --sampler eb --sweep gamma=$S9_GAMMAS --steps 2,3,4 \
    --out "$e/eb_g{gamma}_T{steps}.h5"
  stage "sudoku9$s-thr" eval "${den[@]}" --sampler threshold --sweep tau=$S9_TAUS --steps 2,3,4 \
    --out "$e/thr_t{tau}_T{steps}.h5"
  stage "sudoku9$s-fixed" eval "${den[@]}" --sampler top_prob --steps 2,3,4,40 --out "$e/top_prob_T{steps}.h5"
  stage "sudoku9$s-dus" eval "${den[@]}" --sampler dus --steps 2,3,4 --out "$e/dus_T{steps}.h5"
  # section 21: the order built on EB gamma 0.1 (a heuristic prior; decodes exactly as EB before training)
  stage "sudoku9$s-prior" train-order "${order[@]}" --objective reward --nfe-penalty 0.002 --lr 3e-4 \
    --prior eb --prior-knob gamma=0.1 --iterations $PRIOR_REWARD $ROLLOUTS $PRIOR_SELECT --seed "3$s" \
    --out "$d/prior" &&
  stage "sudoku9$s-prior-eval" eval "${den[@]}" --sampler learned --policy "$d/prior" --steps 2,3,4 \
    --out "$e/prior_T{steps}.h5"
  stage "sudoku9$s-imitate" train-order "${order[@]}" --objective imitate --teacher eb --teacher-knob gamma=0.1 \
    --iterations $IMITATE --seed "1$s" --out "$d/clone" || return
  stage "sudoku9$s-clone" eval "${den[@]}" --sampler learned --policy "$d/clone" --steps 2,3,4 \
    --out "$e/clone_T{steps}.h5"
  stage "sudoku9$s-reward" train-order "${order[@]}" --objective reward --nfe-penalty 0.002 --lr 1e-4 \
    --init-policy "$d/clone" --iterations $REWARD $ROLLOUTS --seed "2$s" --out "$d/reward" || return
  stage "sudoku9$s-learned" eval "${den[@]}" --sampler learned --policy "$d/reward" --steps 2,3,4 \
    --out "$e/reward_T{steps}.h5"
}

weights_only() {  # DEN_DIR OUT_DIR: a copy of a denoiser checkpoint without its optimiser state
  mkdir -p "$2" && cp "$1/meta.json" "$2/" && "$PY" - "$1/denoiser.pt" "$2/denoiser.pt" <<'EOF'
import sys, torch
payload = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
payload.pop("optimizer", None)
torch.save(payload, sys.argv[2])
EOF
}

{ echo "scale=$SCALE deadline=$DEADLINE threads=$THREADS start=$(date -u +%FT%TZ)"
  "$PY" -c 'import torch; print("torch", torch.__version__, "gpu", torch.cuda.is_available() and torch.cuda.get_device_name(0))'
  echo "cores $(nproc --all)"; } > "$OUT/machine.txt" 2>&1
: > "$STAGES"
case " $TASKS " in *" arith "*) for s in 0 1 2; do arith_stream "$s" & done ;; esac
case " $TASKS " in *" sudoku9 "*) for s in $S9_SEEDS; do sudoku9_stream "$s" & done ;; esac
wait
[ "$SECONDS" -ge "$END" ] && echo "deadline reached at $DEADLINE s" >> "$STAGES"
echo "end=$(date -u +%FT%TZ) seconds=$SECONDS" >> "$OUT/machine.txt"

# pack (each archive stays well under the device tool's 16 MiB a file): per task, its metrics files, policies,
# meta.json files and logs; the denoisers' weights in two more
pack() {  # TASK: OUT/results_TASK.tar.gz from WORK/TASK and WORK/eval/TASK
  ( cd "$W" && find "./$1" "./eval/$1" \( -name '*.h5' -o -name 'meta.json' -o -name 'policy.pt' \) 2>/dev/null ) \
    > "$W/files_$1.txt"
  tar -czf "$OUT/results_$1.tar.gz" -C "$W" -T "$W/files_$1.txt" logs -C "$OUT" stages.txt machine.txt
}
pack arith
pack sudoku9
for s in 0 1 2; do
  [ -f "$W/arith/seed$s/den/denoiser.pt" ] && weights_only "$W/arith/seed$s/den" "$W/weights/arith/seed$s"
done
for s in $S9_SEEDS; do
  [ -f "$W/sudoku9/seed$s/den/denoiser.pt" ] && weights_only "$W/sudoku9/seed$s/den" "$W/weights/sudoku9/seed$s"
done
[ -d "$W/weights/arith" ] && tar -czf "$OUT/den_arith.tar.gz" -C "$W/weights" arith
[ -d "$W/weights/sudoku9" ] && tar -czf "$OUT/den_sudoku9.tar.gz" -C "$W/weights" sudoku9
cat "$STAGES"
ls -l "$OUT"/*.tar.gz
