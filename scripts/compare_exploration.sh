#!/usr/bin/env bash
# Plain Gaussian exploration against gSDE (state-dependent exploration), at the plants' preset budgets: trains
# each plant and seed both ways on simulated devices, evaluates the policy (20 deterministic
# episodes, seed 1000) and prints one Markdown row per run with the exploration's smoothness
# from metrics.jsonl (action_change_mean and action_hf_share, averaged over the run's
# iterations; both measured on the actions the plants received).
#
#   scripts/compare_exploration.sh                       # pendulum and qube, seeds 0 1 2
#   PLANTS=pendulum SEEDS="0" scripts/compare_exploration.sh
#
# gSDE settings (rl-zoo's TRPO Pendulum-v1 preset): use_sde = true, sde_sample_freq = 4,
# everything else the plant's preset; SDE_SAMPLE_FREQ overrides the frequency, LOG_STD_INIT
# sets gSDE's initial log σ (default: the preset's, 0). Environment:
# OUT (run folders, default runs/exploration; wiped first), CARGO_TARGET_DIR as for cargo.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT=${OUT:-$ROOT/runs/exploration}
PLANTS=${PLANTS:-"pendulum qube"}
SEEDS=${SEEDS:-"0 1 2"}
SDE_SAMPLE_FREQ=${SDE_SAMPLE_FREQ:-4}
LOG_STD_INIT=${LOG_STD_INIT:-}
TETHER=${CARGO_TARGET_DIR:-$ROOT/target}/release/tether

log() { echo "[exploration] $*" >&2; }

log "building release"
cargo build --release -q -p tether-trainer --bin tether >&2
rm -rf "$OUT"
mkdir -p "$OUT"
printf '[trpo]\nuse_sde = true\nsde_sample_freq = %s\n' "$SDE_SAMPLE_FREQ" >"$OUT/gsde.toml"
if [ -n "$LOG_STD_INIT" ]; then
	printf 'log_std_init = %s\n' "$LOG_STD_INIT" >>"$OUT/gsde.toml"
fi
: >"$OUT/plain.toml"

echo "| plant | exploration | seed | steps | eval mean ± std (20 ep.) | worst episode | action_change_mean | action_hf_share | wall s |"
echo "| --- | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"
for plant in $PLANTS; do
	for seed in $SEEDS; do
		for kind in plain gsde; do
			dir=$OUT/$plant-$kind-$seed
			log "$plant $kind seed $seed"
			start=$(date +%s.%N)
			"$TETHER" train --plant "$plant" --seed "$seed" --config "$OUT/$kind.toml" \
				--out "$dir" 2>"$dir.log" >/dev/null || {
				cat "$dir.log" >&2
				exit 1
			}
			wall=$(echo "$(date +%s.%N) - $start" | bc)
			eval_json=$("$TETHER" eval --policy "$dir/policy.bin" --plant "$plant" \
				--episodes 20 --seed 1000 --json)
			python3 - "$plant" "$kind" "$seed" "$dir/metrics.jsonl" "$eval_json" "$wall" <<'PY'
import json, math, sys
plant, kind, seed, metrics_path, eval_json, wall = sys.argv[1:]
rows = [json.loads(line) for line in open(metrics_path)]
def mean(key):
    values = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    return sum(values) / len(values) if values else float("nan")
ev = json.loads(eval_json)
print(f"| {plant} | {'gSDE' if kind == 'gsde' else 'plain Gaussian'} | {seed} | "
      f"{rows[-1]['env_steps']} | {ev['mean_return']:.2f} ± {ev['std_return']:.2f} | "
      f"{min(ev['returns']):.2f} | {mean('action_change_mean'):.4f} | "
      f"{mean('action_hf_share'):.4f} | {float(wall):.1f} |")
PY
		done
	done
done
