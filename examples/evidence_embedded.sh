#!/usr/bin/env bash
# The d3 recipe in miniature, as evidence: every row trained at several seeds, every choice
# made on the validation split, the test split decoded once per row, per-sample records kept.
#
# Usage: bash examples/evidence_embedded.sh STAGE [OUT]      (OUT defaults to runs/evidence)
#   protocol  distill length against AUP on the validation split (choose EPOCHS, PROMPTS)
#   teacher-validation  the teacher's one-token point on the validation split
#   rows      every row of the table at its seeds, decoded on the test split
#   shipped   the decoding ablations of the shipped student, on the test split
#   table     the table: d3 aup --bootstrap over the records
# A finished (row, seed) leaves its records, gzip-compressed, in RECORDS (the repository's
# examples/results/evidence/), and is skipped from then on, so the work can be spread over
# several sittings: students and rollouts live in OUT only until their records are written.
# The teacher's trajectories are kept beside the records (650 KB) and reused.
# Knobs: SEEDS (headline rows, default 0-4), FEW_SEEDS (other rows, 0-2), EPOCHS, PROMPTS;
# PROTOCOL_SEEDS and SETTINGS for the protocol. Stages can run side by side on disjoint
# seeds (e.g. SEEDS=0 and SEEDS=1 in two shells, OMP_NUM_THREADS=1 each; TEACHER_ROWS=0 in
# all shells but one, so that the teacher's rows are decoded once).
set -euo pipefail

STAGE=${1:?usage: evidence_embedded.sh protocol|teacher-validation|rows|shipped|table [OUT]}
OUT=${2:-runs/evidence}
SEEDS=${SEEDS:-0 1 2 3 4}
FEW_SEEDS=${FEW_SEEDS:-0 1 2}
PROMPTS=${PROMPTS:-4000}   # the first PROMPTS of 4,000 trajectories (chosen by protocol)
EPOCHS=${EPOCHS:-6}        # chosen by the protocol stage (README)
BATCH=${BATCH:-128}
GAMMAS=${GAMMAS:-0.1 0.2 0.3}            # the d3 students' sweep (multiblock, 4 blocks)
ENTROPY_GAMMAS=${ENTROPY_GAMMAS:-0.05 0.1 0.2 0.3}  # dParallel's sweep (entropy)
TAUS=${TAUS:-0.95 0.9 0.8 0.7}           # the teacher's Fast-dLLM sweep (threshold, dual cache)
BLOCK_ADD=${BLOCK_ADD:-0.6}
TEACHER_ROWS=${TEACHER_ROWS:-1}          # 0: leave the teacher's rows to another shell
RECORDS=${RECORDS:-examples/results/evidence}
Y_MAX=${Y_MAX:-}                          # e.g. arith=98.6; default: the best point
FLOOR=${FLOOR:-}                          # e.g. arith=92.2: the loss budget

# The window curriculum per training length: the paper's shape (two epochs per size over six
# epochs, one over three) scaled to the embedded teacher's blocks of 16.
windows() { case $1 in 3) echo 8,12,16 ;; *) echo 8,8,12,12,16,16 ;; esac; }

trajectories() {  # trajectories FOLDER [options]: 4,000 training prompts rolled out
  local folder=$1
  shift
  d3 trajectories --num 4000 --out "$folder" --batch-size "$BATCH" "$@"
}

teacher_trajectories() {  # the teacher's rollout, kept beside the records once complete
  local kept="$RECORDS/trajectories"
  if [ ! -e "$kept/part-0003840-0004000.parquet" ]; then
    mkdir -p "$OUT/trajectories"  # resume from the chunks kept by an earlier sitting
    cp -n "$kept"/README.md "$kept"/part-*.parquet "$OUT/trajectories/" 2>/dev/null || true
    trajectories "$OUT/trajectories" > /dev/null
    mkdir -p "$kept"
    cp "$OUT"/trajectories/README.md "$OUT"/trajectories/part-*.parquet "$kept/"
  fi
  echo "$kept"
}

subset() {  # subset FOLDER COUNT: a folder holding the first COUNT prompts' chunks of FOLDER
  local folder=$1 count=$2 target="$OUT/$(basename "$1")-$2"
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
              --batch-size "$BATCH" --out "$results" "$@" > /dev/null
  done
}

d3_sweep() {  # d3_sweep MODEL RESULTS SPLIT [decode options]
  local model=$1 results=$2 split=$3
  shift 3
  sweep "$model" "$results" "$split" multiblock --blocks 4 --block-add-threshold "$BLOCK_ADD" "$@"
}

done_or() {  # done_or RECORD: true when RECORD (relative to RECORDS, .jsonl) is kept already
  [ -e "$RECORDS/$1.gz" ]
}

keep() {  # keep RECORD: the finished run's results, compressed into RECORDS
  mkdir -p "$(dirname "$RECORDS/$1")"
  gzip -9 -n -c "$OUT/$1" > "$RECORDS/$1.gz.tmp"
  mv "$RECORDS/$1.gz.tmp" "$RECORDS/$1.gz"
}

mkdir -p "$OUT/logs" "$OUT/students"

case $STAGE in
protocol)  # SETTINGS: "PROMPTS EPOCHS" pairs, PROMPTS a multiple of the 256-prompt chunks
  SETTINGS=${SETTINGS:-"2048 6,2048 12,4000 3,4000 6,4000 12"}
  IFS=, read -r -a settings <<< "$SETTINGS"
  for seed in ${PROTOCOL_SEEDS:-0 1}; do
    for setting in "${settings[@]}"; do
      read -r count epochs <<< "$setting"
      record="protocol/p$count-e$epochs/seed$seed.jsonl"
      done_or "$record" && continue
      traj=$(subset "$(teacher_trajectories)" "$count")
      model=$(EPOCHS=$epochs student "d3-p$count-e$epochs" "$seed" "$traj" d3)
      d3_sweep "$model" "$OUT/$record" validation
      keep "$record"
    done
  done
  ;;
teacher-validation)
  record=protocol/teacher/results.jsonl
  done_or $record || {
    d3 decode --model arith-teacher --split validation --method vanilla \
              --batch-size "$BATCH" --out "$OUT/$record" > /dev/null
    keep $record
  }
  ;;
rows)
  traj=$(subset "$(teacher_trajectories)" "$PROMPTS")
  [ "$TEACHER_ROWS" = 1 ] && { done_or rows/teacher-vanilla/results.jsonl || {
    d3 decode --model arith-teacher --method vanilla --batch-size "$BATCH" \
              --out "$OUT/rows/teacher-vanilla/results.jsonl" > /dev/null
    keep rows/teacher-vanilla/results.jsonl
  }
  done_or rows/teacher-threshold/results.jsonl || {
    sweep arith-teacher "$OUT/rows/teacher-threshold/results.jsonl" test threshold --cache dual
    keep rows/teacher-threshold/results.jsonl
  }; }
  for seed in $SEEDS; do
    for variant in "d3 d3" "d3-random-masks d3 --masks random" "dparallel dparallel"; do
      read -r name recipe switches <<< "$variant"
      done_or "rows/$name/seed$seed.jsonl" && continue
      # shellcheck disable=SC2086  # the switches are several words
      model=$(student "$name" "$seed" "$traj" "$recipe" $switches)
      if [ "$recipe" = dparallel ]; then
        sweep "$model" "$OUT/rows/$name/seed$seed.jsonl" test entropy
      else
        d3_sweep "$model" "$OUT/rows/$name/seed$seed.jsonl" test
        d3_sweep "$model" "$OUT/validation/$name/seed$seed.jsonl" validation
        keep "validation/$name/seed$seed.jsonl"
      fi
      keep "rows/$name/seed$seed.jsonl"
    done
    # Beyond the paper: the d3 student's own multi-block order, then the recipe again on it.
    done_or "rows/d3-self-trajectories/seed$seed.jsonl" || {
      model=$(student d3 "$seed" "$traj" d3)
      trajectories "$OUT/self-trajectories-seed$seed" --model "$model" --method multiblock \
        > /dev/null
      model=$(student d3-self-trajectories "$seed" "$OUT/self-trajectories-seed$seed" d3)
      d3_sweep "$model" "$OUT/rows/d3-self-trajectories/seed$seed.jsonl" test
      keep "rows/d3-self-trajectories/seed$seed.jsonl"
    }
  done
  for seed in $FEW_SEEDS; do
    for ablation in "no-noise-schedule --no-noise-schedule" \
                    "windows-of-16 --window-schedule 16" \
                    "no-complementary --no-complementary" \
                    "no-entropy --entropy-weight 0" \
                    "teacher-blocks-of-8"; do
      read -r name switch value <<< "$ablation"
      done_or "rows/d3-$name/seed$seed.jsonl" && continue
      source_traj=$traj
      if [ "$name" = teacher-blocks-of-8 ]; then  # the teacher rolled out in blocks of 8
        trajectories "$OUT/trajectories-block8" --block-size 8 > /dev/null
        source_traj=$(subset "$OUT/trajectories-block8" "$PROMPTS")
      fi
      # shellcheck disable=SC2086  # no switch, or one with its value
      model=$(student "d3-$name" "$seed" "$source_traj" d3 $switch $value)
      d3_sweep "$model" "$OUT/rows/d3-$name/seed$seed.jsonl" test
      keep "rows/d3-$name/seed$seed.jsonl"
    done
  done
  ;;
shipped)
  for ablation in "arith-d3 --blocks 4" "arith-d3-one-block --blocks 1" \
                  "arith-d3-no-early-stop --blocks 4 --no-early-stop" \
                  "arith-d3-delayed-cache --blocks 4 --cache delayed"; do
    read -r name switches <<< "$ablation"
    record="rows/$name/results.jsonl"
    done_or "$record" && continue
    # shellcheck disable=SC2086
    sweep arith-d3 "$OUT/$record" test multiblock $switches --block-add-threshold "$BLOCK_ADD"
    keep "$record"
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
