#!/usr/bin/env bash
# Set M of docs/mdm-order-learning.md section 31 (Sudoku 4x4 @Avg, the first set for Z on denoisers nobody has
# read: twelve new denoisers 33-44, new split M, eval seed 15000). The mechanics (run a batch, pack it, read the
# set only when all twelve are packed) are set K's script; this file holds only set M's definition:
#
#   bash specs/mdm_sudoku_avg_setM.sh run SEEDS             # one batch, e.g. 33,34 (the spec's full lineage, Z last)
#   bash specs/mdm_sudoku_avg_setM.sh pack WORKSPACE NAME   # a finished batch -> docs/data/sudoku_avg_setM/NAME.tar.xz
#   bash specs/mdm_sudoku_avg_setM.sh read OUTDIR           # only when the packs hold all twelve denoisers
#
# The reading (fixed in section 31 before any data of set M): `merlin-mdm aggregate --strict` over all packs as one
# study, then
#   primary:   the thresholded Z row (trained at 0.13 per call, decode threshold) of the report's table "matched per
#              training seed": met at 95% iff the lower end of its interval is >= 5.0 points;
#   secondary: sampled decoding, the pooled @Avg comparison, the hard-budget rows, Z minus Y, the per-denoiser
#              differences and the twelve denoiser losses.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
export SETK_PACKS=${SETK_PACKS:-$here/docs/data/sudoku_avg_setM}
export SETK_SEEDS=${SETK_SEEDS:-33 34 35 36 37 38 39 40 41 42 43 44}
export SETK_EVAL_SEED=15000
export SETK_TITLE="Set M (section 31): Sudoku 4x4 @Avg, Z on new denoisers 33-44, split M"
export SETK_PRIMARY=0.13
export SETK_READ_COMMAND="bash specs/mdm_sudoku_avg_setM.sh"
export OUTPUT_PATH=${OUTPUT_PATH:-/work/scratch/setM}
exec bash "$here/specs/mdm_sudoku_avg_setK.sh" "$@"
