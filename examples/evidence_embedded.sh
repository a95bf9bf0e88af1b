#!/usr/bin/env bash
# The d3 recipe in miniature, as evidence: every row trained at several seeds, every choice
# made on the validation split, the test split decoded once per row, per-sample records kept.
#
# Usage: bash examples/evidence_embedded.sh STAGE [OUT]      (OUT defaults to runs/evidence)
#   protocol  distill length against AUP on the validation split (choose EPOCHS, PROMPTS)
#   teacher-validation  the teacher's one-token point on the validation split
#   rows      every row of the table at its seeds, decoded on the test split
#   shipped   the decoding ablations of the shipped student, on the test split
#   records   copy the records (gzip) into examples/results/evidence/, one folder per row
#   table     the table: d3 aup --bootstrap over those records
# Every step resumes when the script is run again (d3 skips finished work).
# Knobs: SEEDS (headline rows, default 0-4), FEW_SEEDS (other rows, 0-2), EPOCHS, PROMPTS;
# PROTOCOL_SEEDS and SETTINGS for the protocol. Stages can run side by side on disjoint
# seeds (e.g. SEEDS=0 and SEEDS=1 in two shells, OMP_NUM_THREADS=1 each).
set -euo pipefail

STAGE=${1:?usage: evidence_embedded.sh protocol|rows|shipped|records|table [OUT]}
OUT=${2:-runs/evidence}
SEEDS=${SEEDS:-0 1 2 3 4}
FEW_SEEDS=${FEW_SEEDS:-0 1 2}
PROMPTS=${PROMPTS:-4000}   # the first PROMPTS of 4,000 trajectories (chosen by protocol)
EPOCHS=${EPOCHS:-12}       # chosen by the protocol stage
BATCH=${BATCH:-128}
GAMMAS=${GAMMAS:-0.1 0.2 0.3}            # the d3 students' sweep (multiblock, 4 blocks)
ENTROPY_GAMMAS=${ENTROPY_GAMMAS:-0.05 0.1 0.2 0.3}  # dParallel's sweep (entropy)
TAUS=${TAUS:-0.95 0.9 0.8 0.7}           # the teacher's Fast-dLLM sweep (threshold, dual cache)
BLOCK_ADD=${BLOCK_ADD:-0.6}
RECORDS=${RECORDS:-examples/results/evidence}
Y_MAX=${Y_MAX:-}                          # e.g. arith=98.6; default: the best point
FLOOR=${FLOOR:-}                          # e.g. arith=92.2: the loss budget

# The window curriculum per training length: the paper's shape (two epochs per size over six
# epochs, one over three) scaled to the embedded teacher's blocks of 16.
windows() { case $1 in 3) echo 8,12,16 ;; *) echo 8,8,12,12,16,16 ;; esac; }

trajectories() {  # trajectories FOLDER COUNT [options]: the first COUNT training prompts
  local folder=$1 count=$2
  shift 2
  d3 trajectories --num "$count" --out "$folder" --batch-size "$BATCH" "$@"
}

subset() {  # subset FOLDER COUNT: a folder holding the first COUNT prompts' chunks of FOLDER
  local folder=$1 count=$2 target="$1-$2"
  mkdir -p "$target"
  cp "$folder/README.md" "$target/"
  for part in "$folder"/part-*.parquet; do
    local end=${part##*-}
    [ "$((10#${end%.parquet}))" -le "$count" ] && ln -sf "$(realpath "$part")" "$target/"
  done
  echo "$target"
}

student() {  # student NAME SEED TRAJECTORIES RECIPE [distill options]: train once, reuse
  local name=$1 seed=$2 traj=$3 recipe=$4 curriculum=()
  shift 4
  [ "$recipe" = d3 ] && curriculum=(--window-schedule "$(windows "$EPOCHS")")
  # A later --window-schedule in "$@" (an ablation) overrides the curriculum.
  d3 distill --trajectories "$traj" --recipe "$recipe" --seed "$seed" --epochs "$EPOCHS" \
             "${curriculum[@]}" --out "$OUT/students/$name-seed$seed" "$@" \
             >> "$OUT/logs/$name-seed$seed.log" 2>&1
  echo "$OUT/students/$name-seed$seed"
}

sweep() {  # sweep MODEL RESULTS SPLIT METHOD [decode options]: the method's sweep points
  local model=$1 results=$2 split=$3 method=$4 points
  shift 4
  case $method in
    multiblock) points=$GAMMAS ;; entropy) points=$ENTROPY_GAMMAS ;; threshold) points=$TAUS ;;
  esac
  mkdir -p "$(dirname "$results")"
  for point in $points; do
    d3 decode --model "$model" --split "$split" --method "$method" --threshold "$point" \
              --batch-size "$BATCH" --out "$results" "$@"
  done
}

d3_sweep() {  # d3_sweep MODEL RESULTS SPLIT [decode options]
  local model=$1 results=$2 split=$3
  shift 3
  sweep "$model" "$results" "$split" multiblock --blocks 4 --block-add-threshold "$BLOCK_ADD" "$@"
}

mkdir -p "$OUT/logs" "$OUT/students"
TEACHER_TRAJ="$OUT/trajectories"

case $STAGE in
protocol)  # SETTINGS: "PROMPTS EPOCHS" pairs (PROMPTS a multiple of the 256-prompt chunks,
  # or 4000); those below 4000 train on the first chunks of the same rollout.
  SETTINGS=${SETTINGS:-"2048 6,2048 12,4000 3,4000 6,4000 12"}
  IFS=, read -r -a settings <<< "$SETTINGS"
  for seed in ${PROTOCOL_SEEDS:-0 1}; do
    for setting in "${settings[@]}"; do
      read -r count epochs <<< "$setting"
      last_chunk=$(printf "%s/part-%07d-%07d.parquet" "$TEACHER_TRAJ" $((count - 256)) "$count")
      [ "$count" != 4000 ] && [ -e "$last_chunk" ] || trajectories "$TEACHER_TRAJ" 4000
      traj=$(subset "$TEACHER_TRAJ" "$count")
      model=$(EPOCHS=$epochs student "d3-p$count-e$epochs" "$seed" "$traj" d3)
      d3_sweep "$model" "$OUT/protocol/p$count-e$epochs/seed$seed.jsonl" validation
    done
  done
  ;;
teacher-validation)
  d3 decode --model arith-teacher --split validation --method vanilla --batch-size "$BATCH" \
            --out "$OUT/protocol/teacher/results.jsonl"
  ;;
rows)
  trajectories "$TEACHER_TRAJ" 4000
  traj=$(subset "$TEACHER_TRAJ" "$PROMPTS")
  test_results() { echo "$OUT/rows/$1/seed$2.jsonl"; }
  d3 decode --model arith-teacher --method vanilla --batch-size "$BATCH" \
            --out "$OUT/rows/teacher-vanilla/results.jsonl"
  sweep arith-teacher "$OUT/rows/teacher-threshold/results.jsonl" test threshold --cache dual
  for seed in $SEEDS; do
    model=$(student d3 "$seed" "$traj" d3)
    d3_sweep "$model" "$(test_results d3 "$seed")" test
    d3_sweep "$model" "$OUT/validation/d3/seed$seed.jsonl" validation
    model=$(student d3-random-masks "$seed" "$traj" d3 --masks random)
    d3_sweep "$model" "$(test_results d3-random-masks "$seed")" test
    d3_sweep "$model" "$OUT/validation/d3-random-masks/seed$seed.jsonl" validation
    model=$(student dparallel "$seed" "$traj" dparallel)
    sweep "$model" "$(test_results dparallel "$seed")" test entropy
    # Beyond the paper: the d3 student's own multi-block order, then the recipe again on it.
    trajectories "$OUT/self-trajectories-seed$seed" "$PROMPTS" \
                 --model "$OUT/students/d3-seed$seed" --method multiblock
    model=$(student d3-self-trajectories "$seed" "$OUT/self-trajectories-seed$seed" d3)
    d3_sweep "$model" "$(test_results d3-self-trajectories "$seed")" test
  done
  trajectories "$OUT/trajectories-block8" "$PROMPTS" --block-size 8
  for seed in $FEW_SEEDS; do
    for ablation in "no-noise-schedule --no-noise-schedule" \
                    "windows-of-16 --window-schedule 16" \
                    "no-complementary --no-complementary" \
                    "no-entropy --entropy-weight 0"; do
      read -r name switch <<< "$ablation"
      # shellcheck disable=SC2086  # the switch is one or two words
      model=$(student "d3-$name" "$seed" "$traj" d3 $switch)
      d3_sweep "$model" "$(test_results "d3-$name" "$seed")" test
    done
    model=$(student d3-teacher-blocks-of-8 "$seed" "$OUT/trajectories-block8" d3)
    d3_sweep "$model" "$(test_results d3-teacher-blocks-of-8 "$seed")" test
  done
  ;;
shipped)
  for ablation in "one-block --blocks 1" "no-early-stop --no-early-stop" \
                  "delayed-cache --cache delayed"; do
    read -r name switch value <<< "$ablation"
    # shellcheck disable=SC2086
    sweep arith-d3 "$OUT/rows/arith-d3-$name/results.jsonl" test multiblock $switch $value \
          --block-add-threshold "$BLOCK_ADD"
  done
  sweep arith-d3 "$OUT/rows/arith-d3/results.jsonl" test multiblock --blocks 4 \
        --block-add-threshold "$BLOCK_ADD"
  ;;
records)
  for file in "$OUT"/rows/*/*.jsonl "$OUT"/validation/*/*.jsonl "$OUT"/protocol/*/*.jsonl; do
    [ -e "$file" ] || continue
    relative=${file#"$OUT"/}
    mkdir -p "$RECORDS/$(dirname "$relative")"
    gzip -9 -n -c "$file" > "$RECORDS/$relative.gz"
  done
  ;;
table)
  options=(--skip-first 0 --bootstrap 1000 --format markdown)
  [ -n "$Y_MAX" ] && options+=(--y-max "$Y_MAX")
  [ -n "$FLOOR" ] && options+=(--floor "$FLOOR")
  d3 aup "$RECORDS"/rows/*/*.jsonl.gz "${options[@]}"
  ;;
*)
  echo "unknown stage $STAGE" >&2
  exit 2
  ;;
esac
