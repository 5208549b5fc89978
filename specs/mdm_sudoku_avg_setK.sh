#!/usr/bin/env bash
# Set K of docs/mdm-order-learning.md section 29 (Sudoku 4x4 @Avg, twelve new denoisers 21-32, split K): keep each
# finished batch's data in the repository, and take the one reading fixed before any of the data.
#
#   bash specs/mdm_sudoku_avg_setK.sh run SEEDS             # one batch, e.g. SEEDS=25,26 (the spec's full lineage)
#   bash specs/mdm_sudoku_avg_setK.sh pack WORKSPACE NAME   # a finished batch -> docs/data/sudoku_avg_setK/NAME.tar.xz
#   bash specs/mdm_sudoku_avg_setK.sh read OUTDIR           # only when the packs hold all twelve denoisers
#
# Why packs: a study's workspace lives on scratch space that is not kept between sessions (as a cluster's purged
# scratch file system is not), and set K takes longer than a session. A pack holds, for every denoiser of the batch,
# every metrics file (*.h5 under the workspace: the fronts, every stage's decodes) and the denoiser's meta.json
# (its loss); no weights, no policy, no log, no report. `pack` refuses a workspace that is not finished and lists
# nothing it read: it does not open the metrics, so packing is not a look at the data.
#
# The reading (fixed in section 29 before any data of set K): `merlin-mdm aggregate --strict` over all packs as one
# study (each pack a workspace; lines and seeds matched by the runs' attributes), then
#   primary:   the thresholded Y row (trained at 0.10 per call, decode threshold) of the report's table "matched per
#              training seed": met at 95% iff the lower end of its interval is >= 5.0 points;
#   secondary: the pooled @Avg comparison (section 27's primary), sampled decoding, the per-denoiser differences
#              (that table's "per seed" column), the hard-budget rows, and the twelve denoiser losses.
# The whole report is written to OUTDIR/results.md; the rows above are printed.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
mdm="$here/.venv/bin/merlin-mdm"
# SETK_PACKS, SETK_SEEDS and SETK_VARS (extra --vars, e.g. a smoke run's small budgets) exist for checking this
# script on a smoke study; set K's reading uses none of them. SETK_EVAL_SEED, SETK_TITLE, SETK_PRIMARY (the
# nfe_penalty of the primary row's stage) and SETK_READ_COMMAND let a later set reuse these mechanics with its own
# definition (specs/mdm_sudoku_avg_setM.sh); their defaults are set K's.
packs=${SETK_PACKS:-$here/docs/data/sudoku_avg_setK}
read -r -a seeds_all <<< "${SETK_SEEDS:-21 22 23 24 25 26 27 28 29 30 31 32}"

die() { echo "mdm_sudoku_avg_setK: $*" >&2; exit 1; }

run_batch() {
    local seeds=$1 out=${OUTPUT_PATH:-/work/scratch/setK}
    mkdir -p "$out"
    cd "$here"
    exec "$mdm" run specs/mdm_sudoku_avg.yaml --local --workers 2 --no-progress --pgen specs/seed_sets.py \
        --pargs "TRAIN_SEED:$seeds" --pargs PRICED_SEED:4 --vars EVAL_SEED="${SETK_EVAL_SEED:-12000}" --vars OUTPUT_PATH="$out" ${SETK_VARS:-}
}

pack_batch() {
    local ws=$1 name=$2
    [[ -d $ws ]] || die "no workspace $ws"
    local state
    state=$("$mdm" status "$ws" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
    [[ $state == finished ]] || die "$ws is '$state', not finished: restart it first"
    mkdir -p "$packs"
    [[ -e $packs/$name.tar.xz ]] && die "$packs/$name.tar.xz exists; packs are never replaced"
    local list
    list=$(mktemp)
    (cd "$ws" && find . \( -name '*.h5' -not -path './aggregate/*' -o -path './train_denoiser/*/denoiser/meta.json' \) \
        -type f | LC_ALL=C sort) > "$list"
    [[ -s $list ]] || die "no metrics files under $ws"
    tar -C "$ws" -cJf "$packs/$name.tar.xz" --owner=0 --group=0 --mtime='2026-12-05 00:00Z' -T "$list"
    echo "$packs/$name.tar.xz: $(wc -l < "$list") files, $(du -h "$packs/$name.tar.xz" | cut -f1)"
    rm -f "$list"
}

read_set() {
    local outdir=$1
    mkdir -p "$outdir"
    local found=() ws=()
    for pack in "$packs"/*.tar.xz; do
        [[ -e $pack ]] || die "no packs in $packs"
        local dir="$outdir/$(basename "$pack" .tar.xz)"
        rm -rf "$dir" && mkdir -p "$dir" && tar -C "$dir" -xJf "$pack"
        ws+=("$dir")
        for seed_dir in "$dir"/train_denoiser/TRAIN_SEED.*; do found+=("${seed_dir##*.}"); done
    done
    local have
    have=$(printf '%s\n' "${found[@]}" | sort -n | tr '\n' ' ')
    [[ $have == "$(printf '%s\n' "${seeds_all[@]}" | tr '\n' ' ')" ]] \
        || die "the packs hold denoisers [$have], not exactly [${seeds_all[*]}]: the reading waits for all of them"
    "$mdm" aggregate "${ws[@]}" --strict --out "$outdir/results.h5" --markdown "$outdir/results.md" \
        --title "${SETK_TITLE:-Set K (section 29): Sudoku 4x4 @Avg, denoisers 21-32, split K}" \
        --command "${SETK_READ_COMMAND:-bash specs/mdm_sudoku_avg_setK.sh} read $outdir"
    local penalty=${SETK_PRIMARY:-0.1}
    echo "== rows of the report for nfe_penalty=$penalty; primary: the thresholded row of the matched table"
    grep -n "nfe_penalty=$penalty[,)]" "$outdir/results.md" || die "no nfe_penalty=$penalty row in the report"
    echo "== denoiser losses (final: the mean of the last 50 steps), seeds ${seeds_all[*]}"
    for seed in "${seeds_all[@]}"; do
        python3 - "$outdir" "$seed" <<'PY'
import glob, json, sys
outdir, seed = sys.argv[1], sys.argv[2]
(path,) = glob.glob(f"{outdir}/*/train_denoiser/TRAIN_SEED.{seed}/denoiser/meta.json")
meta = json.load(open(path))
losses = meta["losses"]  # one per step; the train command's "final loss" is the mean of the last 50
print(seed, f"{sum(losses[-50:]) / len(losses[-50:]):.4f}", f"(step {meta['step']})")
PY
    done
}

case ${1:-} in
    run) [[ $# -eq 2 ]] || die "usage: run SEEDS (e.g. 25,26)"; run_batch "$2" ;;
    pack) [[ $# -eq 3 ]] || die "usage: pack WORKSPACE NAME"; pack_batch "$2" "$3" ;;
    read) [[ $# -eq 2 ]] || die "usage: read OUTDIR"; read_set "$2" ;;
    *) die "usage: run SEEDS | pack WORKSPACE NAME | read OUTDIR (see the comment at the top)" ;;
esac
