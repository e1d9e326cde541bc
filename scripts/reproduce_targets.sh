#!/usr/bin/env bash
# Reproduces every measurement of the README's "Results" section (issue 5's targets) and
# prints the tables as Markdown on stdout (progress on stderr).
#
#   scripts/reproduce_targets.sh                 # everything (about 15-25 min on 2 cores)
#   ONLY="pendulum cartpole" scripts/reproduce_targets.sh   # a subset of the sections:
#        pendulum cartpole qube sb3 links
#
# Environment: OUT (run folders, default runs/targets; wiped first), QUBE_STEPS (qube
# budget, default the preset's), QUBE_SEEDS (default "0 1 2"), SB3_SCRIPT (default
# ../shared/reference/sb3_trpo.py), PYTHON (default python3; the sb3 section needs
# `pip install torch sb3-contrib gymnasium` and is skipped with a note when missing),
# CARGO_TARGET_DIR as for cargo.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/runs/targets}
ONLY=${ONLY:-"pendulum cartpole qube sb3 links"}
PYTHON=${PYTHON:-python3}
SB3_SCRIPT=${SB3_SCRIPT:-$ROOT/../shared/reference/sb3_trpo.py}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TETHER=$TARGET_DIR/release/tether

want() { [[ " $ONLY " == *" $1 "* ]]; }
log() { echo "[reproduce] $*" >&2; }
load1() { cut -d' ' -f1 /proc/loadavg; }

log "building release"
cargo build --release -q -p tether-trainer --bin tether --example qube_upright >&2
rm -rf "$OUT"
mkdir -p "$OUT"

# train PLANT SEED DIR [extra flags...] → prints the wall seconds of the summary line.
train() {
	local plant=$1 seed=$2 dir=$3
	shift 3
	"$TETHER" train --plant "$plant" --seed "$seed" --out "$dir" "$@" 2>"$dir.log" >/dev/null ||
		{
			cat "$dir.log" >&2
			return 1
		}
	sed -n 's/.* in \([0-9.]*\) s;.*/\1/p' "$dir.log" | tail -1
}

# evaluate PLANT DIR → JSON of `tether eval` (20 deterministic episodes, seed 1000).
evaluate() {
	"$TETHER" eval --policy "$2/policy.bin" --plant "$1" --episodes 20 --seed 1000 --json
}

# row PLANT SEED STEPS WALL LOAD EVAL_JSON TARGET (a jq comparison on .mean_return / .returns)
row() {
	local verdict
	verdict=$(jq -r "if ($7) then \"met\" else \"**missed**\" end" <<<"$6")
	jq -r --arg p "$1" --arg s "$2" --arg n "$3" --arg w "$4" --arg l "$5" --arg v "$verdict" \
		'"| \($p) | \($s) | \($n) | \(.mean_return*100|round/100) ± \(.std_return*100|round/100) | \(.returns|min*100|round/100) | \($w) | \($l) | \($v) |"' <<<"$6"
}

header() {
	echo "| plant | seed | steps | eval mean ± std (20 ep.) | worst episode | wall s | load (1 min) | target |"
	echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
}

for plant in pendulum cartpole; do
	want "$plant" || continue
	case $plant in
	pendulum) target='.mean_return >= -200' ;;
	cartpole) target='.mean_return >= 475' ;;
	esac
	echo
	echo "### $plant, 100k steps, in-memory links (target: $target)"
	echo
	header
	for seed in 0 1 2; do
		log "$plant seed $seed"
		dir=$OUT/$plant-$seed
		load=$(load1)
		wall=$(train "$plant" "$seed" "$dir")
		row "$plant" "$seed" "$(jq -s 'last.env_steps' "$dir/metrics.jsonl")" "$wall" "$load" "$(evaluate "$plant" "$dir")" "$target"
	done
done

if want qube; then
	steps_flag=()
	[[ -n ${QUBE_STEPS:-} ]] && steps_flag=(--steps "$QUBE_STEPS")
	echo
	echo "### qube (swing-up and balance; per-episode maximum 1250)"
	echo
	header
	for seed in ${QUBE_SEEDS:-0 1 2}; do
		log "qube seed $seed ${QUBE_STEPS:-preset budget}"
		dir=$OUT/qube-$seed
		load=$(load1)
		wall=$(train qube "$seed" "$dir" "${steps_flag[@]}")
		steps=$(jq -s 'last.env_steps' "$dir/metrics.jsonl")
		json=$(evaluate qube "$dir")
		row qube "$seed" "$steps" "$wall" "$load" "$json" '(.returns|min) >= 1100 and .mean_length == 1250'
		jq -c '{returns: [.returns[]|round], balanced_episodes: ([.returns[]|select(. >= 1100)]|length)}' <<<"$json" | sed 's/^/    /'
		# From the state: first time within 0.2 rad of upright and share of the last second
		# spent there, worst over 20 episodes (examples/qube_upright.rs), and how many of the
		# 20 spend at least 90 % of their last second there.
		"$TARGET_DIR/release/examples/qube_upright" "$dir/policy.bin" |
			jq -c '{worst_first_upright_s: (map(.first_upright_s)|max), worst_upright_fraction_last_s: (map(.upright_fraction_last_s)|min), upright_at_the_end: ([.[]|select(.upright_fraction_last_s >= 0.9)]|length)}' |
			sed 's/^/    /'
	done
fi

if want sb3; then
	echo
	echo "### wall time against SB3-contrib TRPO, Pendulum-v1 plain Gaussian, seed 0, back to back"
	echo
	if "$PYTHON" -c 'import sb3_contrib, torch, gymnasium' 2>/dev/null; then
		echo "| trainer | wall s | eval mean ± std | load (1 min) before |"
		echo "| --- | --- | --- | --- |"
		load=$(load1)
		log "SB3-contrib Pendulum-v1 seed 0"
		sb3=$("$PYTHON" "$SB3_SCRIPT" Pendulum-v1 0 --no-sde 2>/dev/null | tail -1)
		jq -r --arg l "$load" '"| SB3-contrib \(.timesteps) steps | \(.wall_s) | \(.eval_mean) ± \(.eval_std) | \($l) |"' <<<"$sb3"
		load=$(load1)
		log "tether pendulum seed 0"
		dir=$OUT/sb3-pendulum-0
		wall=$(train pendulum 0 "$dir")
		json=$(evaluate pendulum "$dir")
		jq -r --arg l "$load" --arg w "$wall" '"| tether 100000 steps | \($w) | \(.mean_return*100|round/100) ± \(.std_return*100|round/100) | \($l) |"' <<<"$json"
		ratio=$(jq -n --argjson a "$wall" --argjson b "$(jq .wall_s <<<"$sb3")" '$a/$b*1000|round/1000')
		echo
		echo "tether / SB3 wall-time ratio: $ratio (target ≤ 0.1)"
	else
		echo "skipped: $PYTHON cannot import sb3_contrib, torch and gymnasium"
	fi
fi

if want links; then
	echo
	echo "### pendulum seed 0 over other links (same data, so the same policy)"
	echo
	echo "| link | wall s | load (1 min) | eval mean ± std | policy.bin identical to in-memory run |"
	echo "| --- | --- | --- | --- | --- |"
	base=$OUT/links-memory
	for variant in memory pty baud; do
		case $variant in
		memory) flags=(--link memory) ;;
		pty) flags=(--link pty) ;;
		baud) flags=(--link memory --emulate-baud --baud 115200) ;;
		esac
		log "pendulum seed 0 ${flags[*]}"
		dir=$OUT/links-$variant
		load=$(load1)
		wall=$(train pendulum 0 "$dir" "${flags[@]}")
		json=$(evaluate pendulum "$dir")
		same=$(cmp -s "$base/policy.bin" "$dir/policy.bin" && echo yes || echo NO)
		jq -r --arg f "${flags[*]}" --arg l "$load" --arg w "$wall" --arg s "$same" \
			'"| `\($f)` | \($w) | \($l) | \(.mean_return*100|round/100) ± \(.std_return*100|round/100) | \($s) |"' <<<"$json"
	done
fi
