#!/usr/bin/env bash
# The d3LLM paper in miniature on the embedded teacher and task:
# trajectories -> two students (d3, dParallel) -> decode the held-out set -> AUP.
# Every step resumes when the script is run again after an interrupt.
# Usage: bash examples/reproduce_embedded.sh [OUT]   (OUT defaults to runs/embedded)
set -euo pipefail

OUT=${1:-runs/embedded}
PROMPTS=${PROMPTS:-4000}          # training prompts the teacher rolls out
EVAL=${EVAL:-500}                 # held-out prompts decoded per setting
BATCH=${BATCH:-128}
RESULTS="$OUT/results.jsonl"

d3 trajectories --num "$PROMPTS" --out "$OUT/trajectories" --batch-size "$BATCH"
d3 distill --trajectories "$OUT/trajectories" --recipe d3 --out "$OUT/d3-student"
d3 distill --trajectories "$OUT/trajectories" --recipe dparallel --out "$OUT/dparallel-student"

decode() { d3 decode --limit "$EVAL" --batch-size "$BATCH" --out "$RESULTS" "$@"; }
decode --model arith-teacher --method vanilla
# AUP keeps a curve only while accuracy stays within 5 points of its first point (docs/algorithms.md),
# so each sweep covers the near-lossless range of its method.
for tau in 0.95 0.9 0.8 0.7; do
  decode --model arith-teacher --method threshold --cache dual --threshold "$tau"
done
for gamma in 0.05 0.1 0.2 0.3; do
  decode --model "$OUT/dparallel-student" --method entropy --threshold "$gamma"
done
# The d3 student runs at the block-add threshold that arith-d3 ships (its generation_config).
for gamma in 0.1 0.2 0.3; do
  decode --model "$OUT/d3-student" --method multiblock --blocks 4 --threshold "$gamma" \
         --block-add-threshold 0.6
  decode --model "$OUT/d3-student" --method multiblock --blocks 4 --threshold "$gamma" \
         --block-add-threshold 0.6 --cache delayed
done

d3 aup "$RESULTS" --skip-first 0 --plot "$OUT/aup.png"
