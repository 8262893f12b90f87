#!/usr/bin/env bash
# Run every recipe in a folder, one after the other, with one shared stage folder (OUT/shared): each
# seed's SFT policy, pair set and reference cache are computed once for all the recipes that read the
# same parameters. Prints each recipe's wall time (also appended to OUT/wall_times.txt). Resumable:
# rerun the same command and finished runs are kept.
#   recipes/run_all.sh recipes runs                # every full-size recipe (make results)
#   recipes/run_all.sh recipes/quick runs/quick    # every quick variant (make results-quick)
# Environment: JOBS (parallel runs, default 2), ALPHAPO (the command, default alphapo).
set -euo pipefail
if [ $# -ne 2 ] || [ ! -d "$1" ]; then
    echo "usage: recipes/run_all.sh RECIPE_FOLDER OUT (e.g. recipes runs, or recipes/quick runs/quick)" >&2
    exit 2
fi
dir=$1
out=$2
jobs=${JOBS:-2}
alphapo=${ALPHAPO:-alphapo}
mkdir -p "$out"
shopt -s nullglob
recipes=("$dir"/*.yaml)
if [ ${#recipes[@]} -eq 0 ]; then
    echo "recipes/run_all.sh: no *.yaml recipe in $dir" >&2
    exit 2
fi
all_start=$(date +%s)
for recipe in "${recipes[@]}"; do
    name=$(basename "$recipe" .yaml)
    if grep -q '^sweep:' "$recipe"; then command=sweep; else command=experiment; fi
    start=$(date +%s)
    # shellcheck disable=SC2086  # ALPHAPO may be a command with arguments
    $alphapo "$command" "$recipe" --out "$out/$name" --shared-dir "$out/shared" --jobs "$jobs"
    line="$name: $(( $(date +%s) - start )) s (alphapo $command $recipe, --jobs $jobs)"
    echo "$line"
    echo "$line" >> "$out/wall_times.txt"
done
echo "all ${#recipes[@]} recipes: $(( $(date +%s) - all_start )) s" | tee -a "$out/wall_times.txt"
