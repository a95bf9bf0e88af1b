#!/usr/bin/env bash
# The embedded pipeline's students at several training seeds: same trajectories, budget and
# sweeps as examples/reproduce_embedded.sh, one results file per seed, AUP under both TPF
# conventions. Run after that script (it reuses its trajectories and its teacher runs).
# Usage: bash examples/seeds_embedded.sh [OUT]   (OUT defaults to runs/embedded)
#        SEEDS="0 1 2" RECIPES="d3 dparallel" choose what runs (those are the defaults);
#        a recipe variant: TAG=-random DISTILL_ARGS="--masks random" (extra d3 distill switches,
#        TAG names its students and results); D3_GAMMAS and BLOCK_ADDS set the d3 sweep.
set -euo pipefail

OUT=${1:-runs/embedded}
EVAL=${EVAL:-500}
BATCH=${BATCH:-128}
SEEDS=${SEEDS:-0 1 2}
RECIPES=${RECIPES:-d3 dparallel}
TAG=${TAG:-}
DISTILL_ARGS=${DISTILL_ARGS:-}
D3_GAMMAS=${D3_GAMMAS:-0.1 0.2 0.3}
BLOCK_ADDS=${BLOCK_ADDS:-0.6}

for seed in $SEEDS; do
  results="$OUT/seed$seed$TAG.jsonl"
  decode() { d3 decode --limit "$EVAL" --batch-size "$BATCH" --out "$results" "$@"; }
  for recipe in $RECIPES; do
    student="$OUT/seed$seed$TAG-$recipe"
    # shellcheck disable=SC2086  # DISTILL_ARGS holds several switches
    d3 distill --trajectories "$OUT/trajectories" --recipe "$recipe" --seed "$seed" \
               --out "$student" $DISTILL_ARGS
    if [ "$recipe" = d3 ]; then
      for block_add in $BLOCK_ADDS; do
        for gamma in $D3_GAMMAS; do
          decode --model "$student" --method multiblock --blocks 4 --threshold "$gamma" \
                 --block-add-threshold "$block_add"
        done
      done
    else
      for gamma in 0.05 0.1 0.2 0.3; do
        decode --model "$student" --method entropy --threshold "$gamma"
      done
    fi
  done
  # The teacher's points do not depend on the students' seed: copy them from the pipeline.
  if ! grep -q '"model": "arith-teacher"' "$results"; then
    grep '"model": "arith-teacher"' "$OUT/results.jsonl" >> "$results"
  fi
  for convention in measured nominal; do
    d3 aup "$results" --skip-first 0 --one-token-tpf "$convention" || true  # a curve may
  done  # fall more than 5 points below its first point: aup says so and exits 1
done
