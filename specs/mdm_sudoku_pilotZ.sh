#!/usr/bin/env bash
# Pilot Z of docs/mdm-order-learning.md section 30 (exploratory, not a reading of the issue's target): one more
# reward stage after Y, at a higher price per call, on denoisers of set K, decoded on a board split no earlier
# section used (P: eval seed 13000, 3000 boards per denoiser).
#
#   bash specs/mdm_sudoku_pilotZ.sh train   # Z for each seed, two trainings at a time
#   bash specs/mdm_sudoku_pilotZ.sh decode  # the @Avg front, Y and Z on the split (P), two decodes at a time
#   bash specs/mdm_sudoku_pilotZ.sh read    # merlin-mdm aggregate over PILOT_OUT -> PILOT_OUT/report/results.md
#
# Set L of section 30 (the confirmatory set fixed after the pilot) is the same script with other seeds and split:
#   PILOT_OUT=/work/scratch/s29/setL PILOT_SEEDS="21 22 23 24 29 30 31 32" SPLIT_SEED=14000 \
#     SETK_WS="/work/scratch/s26/studies/mdm_sudoku_avg_20261205-182849 /work/scratch/setK/mdm_sudoku_avg_20261205-225609" \
#     TITLE="Set L (section 30): Z on denoisers 21-24, 29-32, split Q" READ_COMMAND="..." bash specs/mdm_sudoku_pilotZ.sh ...
#
# Z = `train_priced` of specs/mdm_sudoku_avg.yaml started from Y instead of W1, at PRICE (0.13) instead of 0.10,
# policy seed 13<TRAIN_SEED>; everything else (lr 2e-4, 32 x 16 rollouts, 300 iterations, the best validated
# iterate by return) as Y. Why: on every set the learned line falls about 6 points per call from W1 (3.75 calls)
# to Y (3.50), while EB's front falls 10-13 points per call there; if Z keeps that slope down to about 3.2 calls
# its matched margin is larger than Y's. X of section 24 (0.12 per call from a weaker start) did not show it.
#
# Inputs: the set K workspaces (SETK_WS: study workspaces holding train_denoiser/TRAIN_SEED.<s>/denoiser and
# train_priced/PRICED_SEED.4.TRAIN_SEED.<s>/policy); they live on scratch space, so the pilot can only be rerun
# where those survive or after running the spec's lineage for the same seeds again (`bash
# specs/mdm_sudoku_avg_setK.sh run 25,26,27,28` gives the same denoisers and policies on the same CPU type).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mdm="$here/.venv/bin/merlin-mdm"
out=${PILOT_OUT:-/work/scratch/s29/pilotZ}
read -r -a seeds <<< "${PILOT_SEEDS:-25 26 27 28}"
read -r -a workspaces <<< "${SETK_WS:-/work/scratch/setK/mdm_sudoku_avg_20261205-210126 /work/scratch/setK/mdm_sudoku_avg_20261205-225609}"
price=${PRICE:-0.13}
split_seed=${SPLIT_SEED:-13000}
n_boards=${PILOT_BOARDS:-3000}
front_list() {  # the lineage spec's front setting $1 (FRONT_GAMMAS or FRONT_THRESHOLDS): one truth for both
    "$here/.venv/bin/python" -c 'import sys, yaml
print(str(yaml.safe_load(open(sys.argv[1]))["env"]["variables"][sys.argv[2]]).strip())' \
        "$here/specs/mdm_sudoku_avg.yaml" "$1"
}
gammas=$(front_list FRONT_GAMMAS)
taus=$(front_list FRONT_THRESHOLDS)

die() { echo "mdm_sudoku_pilotZ: $*" >&2; exit 1; }

workspace_of() {  # the set K workspace that trained denoiser seed $1
    local ws
    for ws in "${workspaces[@]}"; do
        [[ -d $ws/train_denoiser/TRAIN_SEED.$1/denoiser ]] && { echo "$ws"; return; }
    done
    die "no workspace among [${workspaces[*]}] holds denoiser seed $1"
}

train_commands() {
    local s ws
    for s in "${seeds[@]}"; do
        ws=$(workspace_of "$s")
        echo "$mdm mdm train-order --denoiser $ws/train_denoiser/TRAIN_SEED.$s/denoiser --budget 16" \
            "--policy-kind sequential --layers 2 --eval-samples 0 --objective reward" \
            "--init-policy $ws/train_priced/PRICED_SEED.4.TRAIN_SEED.$s/policy --nfe-penalty $price --lr 2e-4" \
            "--batch-size 32 --rollouts 16 --iterations 300 --select-every 10 --select-samples 1024" \
            "--select-by return --seed 13$s --out $out/TRAIN_SEED.$s/Z > $out/TRAIN_SEED.$s/Z.log 2>&1"
    done
}

decode_commands() {
    local s ws den common
    for s in "${seeds[@]}"; do
        ws=$(workspace_of "$s")
        den=$ws/train_denoiser/TRAIN_SEED.$s/denoiser
        common="--checkpoint $den --steps 16 --seed $split_seed --n-examples $n_boards"
        [[ -d $out/TRAIN_SEED.$s/Z ]] || die "no Z policy for seed $s: run 'train' first"
        echo "$mdm mdm eval $common --sampler eb --sweep gamma=$gammas --out $out/TRAIN_SEED.$s/eb_gamma{gamma}.h5"
        echo "$mdm mdm eval $common --sampler threshold --sweep tau=$taus --out $out/TRAIN_SEED.$s/threshold_tau{tau}.h5"
        echo "$mdm mdm eval $common --sampler learned --policy $ws/train_priced/PRICED_SEED.4.TRAIN_SEED.$s/policy" \
            "--sweep decode=threshold,sample --out $out/TRAIN_SEED.$s/Y_{decode}.h5"
        echo "$mdm mdm eval $common --sampler learned --policy $out/TRAIN_SEED.$s/Z" \
            "--sweep decode=threshold,sample --out $out/TRAIN_SEED.$s/Z_{decode}.h5"
    done
}

run_two_at_a_time() {  # each line of stdin is one command, two at a time; fails if any of them failed
    tr '\n' '\0' | xargs -0 -P 2 -I{} bash -c '{}' || die "a command failed (see the logs under $out)"
}

case ${1:-} in
    train)
        for s in "${seeds[@]}"; do mkdir -p "$out/TRAIN_SEED.$s"; done
        train_commands | run_two_at_a_time ;;
    decode)
        decode_commands | run_two_at_a_time ;;
    read)
        "$mdm" aggregate "$out" --strict --out "$out/report/results.h5" --markdown "$out/report/results.md" \
            --title "${TITLE:-Pilot Z (section 30): Sudoku 4x4 @Avg, denoisers ${seeds[*]}, split P}" \
            --command "${READ_COMMAND:-bash specs/mdm_sudoku_pilotZ.sh read}" ;;
    *)
        sed -n '2,8p' "$0" >&2; exit 2 ;;
esac
