#!/usr/bin/env bash
# The converged, tuned benchmark behind docs/results.md, one step after another; every step is resumable,
# so after an interruption the same command continues where it stopped (finished trials and runs are kept).
#
#   scripts/results-grid.sh WORK [MOVIELENS_DIR]     # WORK: a folder outside the repository, e.g. ~/grid
#
# Runs two processes at a time (one per core of a 2-core machine), each single-threaded; logs in WORK/*.log.
# Every step starts new processes that import the code as it is then: run it from a checkout nobody edits
# for the hours it runs (e.g. `git worktree add --detach ../grid-code HEAD`, then from there
# `PYTHONPATH=$PWD scripts/results-grid.sh WORK`, with the project's venv active).
# MOVIELENS_DIR holds ml-latest-small's ratings.csv and movies.csv (its label metrics are skipped without it).
# Then `dir-cloud results` writes the tables (last step). See docs/results.md for what each step measures.
# For a smoke run of the script itself on tiny data, override the sizes, e.g. (CRUM needs 2 epochs)
#   USERS=40 TRIALS=1 SEEDS_MAIN=1 SEEDS_REST=1 PAGES=5 EPOCHS=2 scripts/results-grid.sh /tmp/smoke
set -euo pipefail
users=${USERS:-3000} trials=${TRIALS:-12} seeds_main=${SEEDS_MAIN:-5} seeds_rest=${SEEDS_REST:-3}
pages=${PAGES:-1000} cap=(${EPOCHS:+--epochs "$EPOCHS"})
command -v dir-cloud > /dev/null || { echo "dir-cloud not found: run 'make venv' and '. .venv/bin/activate' first" >&2; exit 2; }
work=${1:?usage: scripts/results-grid.sh WORK [MOVIELENS_DIR]}
movielens=${2:-}
mkdir -p "$work"
work=$(cd "$work" && pwd)
synth=$work/synth tuned=$work/tuned grid=$work/grid
log() { echo "$(date -u +%FT%TZ) $*" | tee -a "$work/steps.log"; }
# `both LOG1 CMD1 -- LOG2 CMD2`: the two commands side by side (one per core); stop if either fails
both() {
  local log1=$1 i
  shift
  for ((i = 1; i <= $#; i++)); do [ "${!i}" = "--" ] && break; done
  local first=("${@:1:i-1}") rest=("${@:i+1}")
  "${first[@]}" > "$work/$log1" 2>&1 &
  local pid1=$!
  "${rest[@]:1}" > "$work/${rest[0]}" 2>&1 &
  local pid2=$! failed=0
  wait "$pid1" || { log "failed: see $work/$log1"; failed=1; }
  wait "$pid2" || { log "failed: see $work/${rest[0]}"; failed=1; }
  return "$failed"
}

# 0. data: the default synthetic world (seed 0) and, if given, MovieLens ml-latest-small
if [ ! -f "$synth/dataset.json" ]; then
  dir-cloud synth --out "$work/logs" --seed 0 --users "$users" --force
  dir-cloud prepare --logs "$work/logs" --out "$synth" --force
fi
if [ -n "$movielens" ] && [ ! -f "$work/ml/dataset.json" ]; then
  dir-cloud movielens --ratings "$movielens/ratings.csv" --movies "$movielens/movies.csv" --out "$work/ml-logs" --force
  dir-cloud prepare --logs "$work/ml-logs" --out "$work/ml" --force
fi

# 1. equal-budget tuning on the synthetic validation split: 12 trials per model, one study per model;
#    the DIR ablations keep DIR's parameters (cloud.evaluation.grids.tuned_study)
# 2. the synthetic grid, label metrics and the page's true clicks: 5 seeds for DIR and the three
#    baselines whose pages get the most true clicks over their first 3 seeds, 3 seeds for every other
#    model, the DIR ablations and dir-ca (DIR with candidate-aware history attention, an extension with
#    its own study). The runs that need no baseline's study (DIR, its ablations, dir-ca) start on the
#    first core free of tuning; then each core takes the next baseline whose study has finished from one
#    shared queue, with the seed count every baseline gets ($seeds_rest); the three strongest get the
#    rest of theirs once every baseline has those. MIR (19x DIR's FLOPs per list) leads the queue, so its long
#    runs overlap the others.
tune_queue() {
  for m in "$@"; do
    dir-cloud tune --data "$synth" --model "$m" --history device --trials "$trials" --out "$tuned" "${cap[@]}"
  done
}
bench() {
  dir-cloud benchmark --data "$synth" --histories device,cloud --tuned "$tuned" --pages "$pages" --out "$grid" \
    "${cap[@]}" "$@"
}
# `claim_each BENCH SEEDS MODEL...`: run `BENCH --models M --seeds SEEDS` for each model M no other core
# has claimed, a baseline once its study has finished (its tuned JSON exists; until then it waits); both
# cores call it with the same list, so each takes the next model the moment it is free
ablations=dir-isi,dir-lrs,dir-hrs,dir-lcm,dir-pg,dir-js
baselines="mir din setrank prm pear edgerec svr nar4rec crum hrl"
claims=$work/claims
rm -rf "$claims"
mkdir -p "$claims"
claim_each() {
  local run=$1 seeds=$2 m waiting
  shift 2
  while :; do
    waiting=0
    for m in "$@"; do
      [ -d "$claims/$run-$seeds-$m" ] && continue
      case " $baselines " in *" $m "*) [ -f "$tuned/$m.json" ] || { waiting=1; continue; } ;; esac
      mkdir "$claims/$run-$seeds-$m" 2> /dev/null || continue
      "$run" --models "$m" --seeds "$seeds" || return 1
    done
    [ "$waiting" = 0 ] && return 0
    sleep 60
  done
}
queue_1() {
  tune_queue dir pear prm din setrank svr nar4rec dir-ca
  bench --models dir --seeds "$seeds_main" && bench --models "$ablations,dir-ca" --seeds "$seeds_rest" &&
    claim_each bench "$seeds_rest" $baselines
}
queue_2() {
  tune_queue edgerec hrl crum mir && claim_each bench "$seeds_rest" $baselines
}
log "tuning, then the grid: $seeds_main seeds for dir, $seeds_rest for $ablations,dir-ca and every baseline"
both grid-1.log queue_1 -- grid-2.log queue_2

# the three strongest baselines by the page's true clicks (device history, mean over the seed numbers every
# baseline has): label metrics on logged lists reward reading the logging policy (docs/results.md)
strongest=$(python - "$grid/runs" "$seeds_rest" $baselines <<'EOF'
import json, sys
from pathlib import Path
runs, seeds, names = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def clicks(m):
    pages = [json.loads((runs / f"{m}-device-s{s}" / "pages.json").read_text()) for s in range(seeds)]
    return sum(p["clicks_per_page"] for p in pages) / len(pages)
print(" ".join(sorted(names, key=clicks, reverse=True)[:3]))
EOF
)
log "grid: $seeds_main seeds for the strongest baselines: $strongest"
both grid-3.log claim_each bench "$seeds_main" $strongest -- grid-4.log claim_each bench "$seeds_main" $strongest
log "grid done"

# 3. MovieLens: label metrics only, with the synthetic studies' parameters
if [ -n "$movielens" ]; then
  mlbench() {
    dir-cloud benchmark --data "$work/ml" --histories device,cloud --tuned "$tuned" --out "$work/mlgrid" "${cap[@]}" "$@"
  }
  all_models="$baselines dir ${ablations//,/ } dir-ca"
  both mlgrid-1.log claim_each mlbench "$seeds_rest" $all_models -- mlgrid-2.log claim_each mlbench "$seeds_rest" $all_models
  log "movielens grid done"
fi

# 4. the utility-fairness trade-off, 3 seeds per point, DIR's tuned parameters except the swept beta, each
#    run also judged by its pages' true clicks (what the exposure target costs the user)
dir-cloud tradeoff --data "$synth" --betas 0.1,0.5,0.9,1.0 --targets "0.33/0.33/0.34;0.7/0.2/0.1" \
  --seeds "$seeds_rest" --tuned "$tuned" --pages "$pages" --out "$work/tradeoff" "${cap[@]}" > "$work/tradeoff.log" 2>&1
log "trade-off done"

# 5. the tables, from the finished runs (nothing is trained)
dir-cloud results --grid "$grid" --tuned "$tuned" --out "$work/synthetic.md"
if [ -n "$movielens" ]; then dir-cloud results --grid "$work/mlgrid" --out "$work/movielens.md"; fi
log "tables written: $work/synthetic.md ${movielens:+$work/movielens.md}"
