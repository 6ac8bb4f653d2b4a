#!/usr/bin/env bash
# Re-run one run of each recorded headline result twice on this machine: with the code of the commit
# that recorded it, and with the code checked out here; then say whether the records agree.
#   OUT/at-recording/NAME/...  the run, made by a clone of this repository at NAME's recording commit
#   OUT/here/NAME/...          the same run, made by this checkout
#   OUT/compare.json           fedsec compare OUT/at-recording OUT/here
# NAME is the docs/results/ directory the run was recorded in, so `fedsec compare docs/results OUT/here
# --matched-only` then compares this machine's runs with the recorded ones.
# Usage: scripts/rerun_recorded.sh OUT [NAME ...]   (default: every NAME below but fda3-mnist-seeds,
#   ~45 min on 2 cores; FDA3's server first builds its SimBA test set, 15+ min a run on 2 cores)
set -euo pipefail
OUT="$(mkdir -p "${1:?usage: scripts/rerun_recorded.sh OUT [NAME ...]}" && cd "$1" && pwd)"
shift
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1

# NAME (docs/results/NAME) and the fedsec run arguments of one of its recorded runs
declare -A RUNS=(
  [quickstart]="quickstart"
  [layered-mnist-seeds]="layered-mnist --only dba/layered --seeds 42"
  [fda3-mnist-seeds]="fda3-mnist --only paper --seeds 42"
  [multiparty-single-round-seeds]="multiparty-single-round --only SAnoDC-single --seeds 42"
  [multiparty-mnist-seeds]="multiparty-mnist --only SNAL2 --seeds 42"
  [dipsen-mnist-seeds]="dipsen-mnist --only model=dipsen-paper-basic --seeds 42"
  [pdgan-mnist-port]="pdgan-mnist --only GAN-pool"
)
NAMES=("$@")
if [ ${#NAMES[@]} -eq 0 ]; then
  NAMES=(quickstart layered-mnist-seeds multiparty-single-round-seeds multiparty-mnist-seeds dipsen-mnist-seeds
         pdgan-mnist-port)
fi

for name in "${NAMES[@]}"; do
  args="${RUNS[$name]:?unknown NAME $name; known: ${!RUNS[*]}}"
  commit="$(git -C "$ROOT" log -1 --format=%H -- "docs/results/$name")"
  clone="$OUT/code/${commit:0:12}"
  if [ ! -f "$clone/.venv/.fedsec-installed" ]; then
    rm -rf "$clone"
    git clone --quiet "$ROOT" "$clone"
    git -C "$clone" checkout --quiet "$commit"
    make -C "$clone" install > "$OUT/install-${commit:0:12}.log" 2>&1
  fi
  echo "$name: at ${commit:0:12} ($args)"
  # shellcheck disable=SC2086  # args is a word list
  (cd "$clone" && .venv/bin/fedsec run $args --force --out "$OUT/at-recording/$name" > "$OUT/$name-at-recording.log" 2>&1)
  echo "$name: here"
  # shellcheck disable=SC2086
  (cd "$ROOT" && .venv/bin/fedsec run $args --force --out "$OUT/here/$name" > "$OUT/$name-here.log" 2>&1)
done
"$ROOT/.venv/bin/fedsec" compare "$OUT/at-recording" "$OUT/here" --labels "recording commits,this checkout" \
  --json "$OUT/compare.json"
