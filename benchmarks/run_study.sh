#!/bin/bash
# The study at the cpu preset on MNIST, table by table, into one sweep folder (tables share the
# cells whose specs agree), resumable across working sessions that lose the sweep folder:
#   - the finished runs carried from earlier sessions are restored first (benchmarks/carry_runs.py);
#   - each argument is a table, or tables joined by "+" swept together in one pool (so that the
#     second worker is not idle while the last long cell of a table runs); each is swept over 3
#     seeds, then its tables are recorded under benchmarks/results/cpu-mnist/TABLE
#     (benchmarks/record_table.py) as soon as it completes;
#   - an argument "more:TABLES" (tables joined by "+", swept already) takes each pair of theirs still
#     inconclusive at 3 seeds to 10 (`tradeoff more-seeds --tables ... --run`), then records them again;
#   - while a step runs its finished runs are carried every CARRY_EVERY seconds (default 600), and
#     once more when it ends, so a stop loses only the cells in flight and at most that much of the rest.
# One thread a process, --workers 2, under nice. Progress: SWEEP/../progress.log, each argument's
# output in SWEEP/../ARGUMENT.log.
#
#   benchmarks/run_study.sh SWEEP_FOLDER table1b supp2 table1a+table2a more:table2a ...
#
# CODE (default: this checkout) is the checkout whose src/ runs, so that a frozen copy (a git
# worktree) can run the sweep while this one changes; results are written into RESULTS (default:
# this checkout's benchmarks/results). PRESET, DATASETS, SEEDS and WORKERS (default: cpu, mnist, 3,
# 2) set the sweep's budget; a table may also be a table YAML file (absolute path), recorded under
# its file name.
set -u
HERE=$(cd "$(dirname "$0")/.." && pwd)
CODE=${CODE:-$HERE}
RESULTS=${RESULTS:-$HERE/benchmarks/results}
PY=${PY:-$HERE/.venv/bin/python}
PRESET=${PRESET:-cpu} DATASETS=${DATASETS:-mnist} SEEDS=${SEEDS:-3} WORKERS=${WORKERS:-2}
SWEEP=$1; shift
CARRIED=$RESULTS/in-progress/$PRESET-$DATASETS
LOG=$(dirname "$SWEEP")/progress.log
export PYTHONPATH=$CODE/src OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
mkdir -p "$SWEEP"
say() { echo "$(date -u +%FT%T) $*" >> "$LOG"; }
carry() { say "$($PY benchmarks/carry_runs.py save "$SWEEP" --to "$CARRIED")"; }
carry_every() {  # until TERM; a TERM during a save waits for it to finish (bash runs traps between commands)
  trap 'kill $pause 2>/dev/null; exit 0' TERM
  while :; do sleep "${CARRY_EVERY:-600}" & pause=$!; wait $pause; carry; done
}
cd "$CODE"
[ -d "$CARRIED" ] && say "$($PY benchmarks/carry_runs.py restore "$CARRIED" --to "$SWEEP")"
options="--preset $PRESET --datasets $DATASETS --seeds $SEEDS --workers $WORKERS"  # run as recorded
for group in "$@"; do
  more=${group#more:}
  tables=${more//+/ }
  name=$(for t in $tables; do basename "$t" .yaml; done | paste -sd+)
  recorded_command="tradeoff sweep $tables $options --out SWEEP"
  if [ "$more" != "$group" ]; then
    tables=${name//+/ }
    step=(more-seeds "$SWEEP" --tables $tables --run --workers "$WORKERS")
    recorded_command="$recorded_command, then tradeoff more-seeds SWEEP --tables $tables --run --workers $WORKERS"
    name=more-$name
  else
    step=(sweep $tables $options --out "$SWEEP")
  fi
  output=$(dirname "$SWEEP")/$name.log
  say "start ${step[0]} $tables"
  carry_every & carrier=$!
  nice -n 10 $PY -m tradeoff "${step[@]}" >> "$output" 2>&1
  rc=$?
  kill $carrier; wait $carrier
  say "${step[0]} $tables rc=$rc"
  carry
  if [ $rc -eq 0 ]; then
    for table in $tables; do
      table=$(basename "$table" .yaml)
      nice -n 10 $PY benchmarks/record_table.py "$table" --sweep "$SWEEP" --preset "$PRESET" \
        --out "$RESULTS/$PRESET-$DATASETS/$table" --command "$recorded_command" \
        >> "$output" 2>&1
      say "recorded $table rc=$?"
    done
  fi
done
