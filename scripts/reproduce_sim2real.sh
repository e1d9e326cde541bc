#!/bin/sh
# Issue 13's measurements (README, "Sim to real, measured"): the QUBE trained with
# configs/qube-dr.toml against the nominal qube preset, evaluated zero-shot on a grid of
# plants; then fine-tuning the randomised policies on a plant outside the ranges against
# training from scratch there.
#
#   scripts/reproduce_sim2real.sh                   # everything (about 6 min of CPU, 9 min wall at load 5-7)
#   ONLY="pretrain grid finetune scratch" SEEDS="0 1 2" OUT=runs/sim2real scripts/reproduce_sim2real.sh
#   DR_EVALUATE="10 40" ...                           # evaluate every 10 iterations, 40 episodes, from the start
#   FT_POLICY=last ONLY=finetune ...                    # fine-tune from the folder's last policy
#                                                       (default: best_policy.bin, as qube-finetune.toml)
#   FT_FROM=/best_policy.bin ONLY=finetune ...          # fine-tune from the file (a fresh value function)
#   UNSEEN=other-plant.toml ONLY=finetune OUT=... ...    # fine-tune on another unseen plant
#                                                       (scripts/unseen-opposite-corner.toml: the README's second)
#
# Sections reuse run folders that already hold a policy.bin, so a section can be rerun alone
# or resumed after an interruption (a fine-tuning or from-scratch run folder is continued
# with `tether resume` from the stretch it reached, so a rerun prints only the curve from
# there on: delete the folder to measure the whole curve again).
set -eu
cd "$(dirname "$0")/.."
ONLY=${ONLY:-"pretrain grid finetune scratch"}
SEEDS=${SEEDS:-"0 1 2"}
OUT=${OUT:-runs/sim2real}
# The policies the grid evaluates: the policy.bin of run folders $OUT/<kind>-<seed>, or for
# "<kind>-best" the best_policy.bin of $OUT/<kind>-<seed> (the randomised runs keep one:
# configs/qube-dr.toml has an [evaluation] table; "dr-best" is the policy it ships).
GRID_KINDS=${GRID_KINDS:-"dr-best dr nominal"}
# "EVERY EPISODES": pretrain the randomised runs with the file's [evaluation] table replaced
# by `every = EVERY, episodes = EPISODES` from the start (training is unchanged by it).
DR_EVALUATE=${DR_EVALUATE:-}
# Fine-tuning: step size, steps per iteration (one evaluation after each), budget.
FT_TARGET_KL=${FT_TARGET_KL:-0.01}
FT_EVERY=${FT_EVERY:-5000}
FT_MAX=${FT_MAX:-150000}
# Training from scratch on the same plant: evaluated every SCRATCH_EVERY steps up to SCRATCH_MAX.
SCRATCH_EVERY=${SCRATCH_EVERY:-250000}
SCRATCH_MAX=${SCRATCH_MAX:-3000000}
EVAL="--episodes 20 --seed 1000 --json"

cargo build --release -q -p tether-trainer
T=target/release/tether
mkdir -p "$OUT/grid"
wants() { case " $ONLY " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# 20 deterministic episodes of $1 on the plant of config $2 (qube): "mean successes upright",
# where an episode succeeds when it runs its full 1250 steps with a return >= 1100 (the
# README's swing-up-and-balance criterion, the issue's goals), and is upright at the end when
# it runs its full 1250 steps and its last second (250 steps) earns >= 0.95 per step (the
# pendulum still up: a swing-up that is slower on a slower plant lowers the return, not this).
evaluate() {
    $T eval --policy "$1" --plant qube --config "$2" $EVAL |
        jq -r '[.mean_return,
                ([.returns, .lengths] | transpose | map(select(.[0] >= 1100 and .[1] == 1250)) | length),
                ([.final_second_rewards, .lengths] | transpose | map(select(.[0] >= 0.95 and .[1] == 1250)) | length)] | @tsv'
}

# `tether train` with $3... into run folder $2 (skipped when it holds a policy), timed; $1 labels it.
timed_train() {
    label=$1
    dir=$2
    shift 2
    [ -f "$dir/policy.bin" ] && return 0
    load=$(cut -d' ' -f1 /proc/loadavg)
    /usr/bin/time -f "%e %U %S" -o "$dir.time" $T train "$@" --out "$dir" >"$dir.log" 2>&1
    echo "$label: wall, user, system s = $(cat "$dir.time"), load at start $load"
}

if wants pretrain; then
    dr_config=configs/qube-dr.toml
    if [ -n "$DR_EVALUATE" ]; then
        dr_config="$OUT/qube-dr-evaluated.toml"
        set -- $DR_EVALUATE
        {
            awk '/^\[/ { skip = ($0 == "[evaluation]") } !skip' configs/qube-dr.toml
            printf '\n[evaluation]\nevery = %s\nepisodes = %s\n' "$1" "$2"
        } >"$dr_config"
    fi
    for s in $SEEDS; do
        timed_train "dr seed $s" "$OUT/dr-$s" --config "$dr_config" --seed "$s"
        timed_train "nominal seed $s" "$OUT/nominal-$s" --plant qube --seed "$s"
    done
fi

# The grid: one plant per file, nominal values multiplied (masses, lengths, damping, motor)
# or imperfections set (absolute), one at a time and a few combined.
grid_plant() { # name, then TOML lines of [plant_params]
    name=$1
    shift
    { echo 'plant = "qube"'; echo '[plant_params]'; printf '%s\n' "$@"; } >"$OUT/grid/$name.toml"
}
grid_plant nominal
grid_plant arm_mass-20 "arm_mass = 0.076"
grid_plant arm_mass+20 "arm_mass = 0.114"
grid_plant arm_length-20 "arm_length = 0.068"
grid_plant arm_length+20 "arm_length = 0.102"
grid_plant pendulum_mass-20 "pendulum_mass = 0.0192"
grid_plant pendulum_mass+20 "pendulum_mass = 0.0288"
grid_plant pendulum_length-20 "pendulum_length = 0.1032"
grid_plant pendulum_length+20 "pendulum_length = 0.1548"
grid_plant damping_x0.5 "arm_damping = 0.000135" "pendulum_damping = 0.000025"
grid_plant damping_x3 "arm_damping = 0.00081" "pendulum_damping = 0.00015"
grid_plant torque_constant-10 "torque_constant = 0.0378"
grid_plant torque_constant+10 "torque_constant = 0.0462"
grid_plant coulomb_2mNm "arm_coulomb_friction = 0.002"
grid_plant latency_1 "latency_steps = 1"
grid_plant latency_2 "latency_steps = 2"
grid_plant angle_noise_0.005 "angle_noise_std = 0.005"
grid_plant deadzone_0.3V "deadzone = 0.3"
grid_plant combined_heavy_slow "pendulum_mass = 0.0288" "pendulum_length = 0.1548" "arm_damping = 0.00081" \
    "torque_constant = 0.0378" "arm_coulomb_friction = 0.002" "latency_steps = 1"
grid_plant combined_light_fast "arm_mass = 0.076" "pendulum_mass = 0.0192" "pendulum_length = 0.1032" \
    "torque_constant = 0.0462" "angle_noise_std = 0.005" "deadzone = 0.3"
grid_plant combined_hardware "arm_coulomb_friction = 0.002" "latency_steps = 2" "angle_noise_std = 0.005" \
    "deadzone = 0.3"

if wants grid; then
    for kind in $GRID_KINDS; do
        printf 'plant\tpolicy\tseed\tmean return\tepisodes swung up and balanced (of 20)\tupright at the end (of 20)\n' >"$OUT/grid-$kind.tsv"
        for plant in "$OUT"/grid/*.toml; do
            for s in $SEEDS; do
                case $kind in
                *-best) policy="$OUT/${kind%-best}-$s/best_policy.bin" ;;
                *) policy="$OUT/$kind-$s/policy.bin" ;;
                esac
                row=$(evaluate "$policy" "$plant")
                printf '%s\t%s\t%s\t%s\n' "$(basename "$plant" .toml)" "$kind" "$s" "$row" | tee -a "$OUT/grid-$kind.tsv"
            done
        done
        awk -F'\t' 'NR > 1 { ok += $5; up += $6; n += 20; kind = $2 } END { printf "%s: %d / %d grid episodes swung up and balanced (%.1f %%); upright at the end %d (%.1f %%)\n", kind, ok, n, 100 * ok / n, up, 100 * up / n }' \
            "$OUT/grid-$kind.tsv"
    done
fi

# The plant the trainer is not told about: each physical parameter about 10 % beyond its
# randomisation range, in directions that change the dynamics without making the motor too
# weak to swing up; imperfections likewise (latency at the range's top, it is whole).
# UNSEEN=FILE: another unseen plant (a config file with its [plant_params]) instead.
if [ -n "${UNSEEN:-}" ]; then
    cp "$UNSEEN" "$OUT/unseen.toml"
else
cat >"$OUT/unseen.toml" <<'EOF'
plant = "qube"
[plant_params]
arm_mass = 0.0684            # 0.72 x nominal (range 0.8-1.2)
arm_length = 0.1122          # 1.32 x
pendulum_mass = 0.03168      # 1.32 x
pendulum_length = 0.09288    # 0.72 x
arm_damping = 0.000891       # 3.3 x (range 0.5-3)
pendulum_damping = 0.0000225 # 0.45 x
arm_coulomb_friction = 0.0022  # N·m (range 0-2 mN·m)
motor_resistance = 6.804     # 0.81 x (range 0.9-1.25)
torque_constant = 0.03402    # 0.81 x (range 0.9-1.1): with the resistance, the same torque per volt
back_emf_constant = 0.05082  # 1.21 x: more electrical damping
latency_steps = 1
angle_noise_std = 0.0033
velocity_noise_std = 0.22
deadzone = 0.33              # V
EOF
fi

# One continuous run, evaluated along the way: `tether train` for the first $3 steps, then
# `tether resume --steps` adds $3 at a time (the run's policy after every stretch is
# evaluated; a resumed run is bit for bit the run that was never stopped). Arguments: run
# folder, config, evaluation stretch, budget, seed, then `tether train` extras (--init).
# Prints "steps done, mean, successes, upright at the end" lines and stops at the budget or when the mean is >= 1100.
evaluated_run() {
    dir=$1
    config=$2
    every=$3
    max=$4
    seed=$5
    shift 5
    steps=$every
    if [ -f "$dir/policy.bin" ]; then
        # A folder from an earlier invocation: carry on from the stretch it reached.
        done_steps=$(tail -n 1 "$dir/metrics.jsonl" | jq .env_steps)
        steps=$((done_steps / every * every))
    else
        $T train --config "$config" --steps "$steps" --seed "$seed" --out "$dir" "$@" >"$dir.log" 2>&1
    fi
    while :; do
        # Steps done: the last iteration's count (a stretch ends on a whole iteration).
        done_steps=$(tail -n 1 "$dir/metrics.jsonl" | jq .env_steps)
        [ "$done_steps" -ge "$steps" ] || $T resume "$dir" --steps "$steps" >>"$dir.log" 2>&1
        done_steps=$(tail -n 1 "$dir/metrics.jsonl" | jq .env_steps)
        row=$(evaluate "$dir/policy.bin" "$OUT/unseen.toml")
        printf '%s\t%s\n' "$done_steps" "$row"
        mean=${row%%	*}
        if awk -v m="$mean" 'BEGIN { exit !(m >= 1100) }' || [ "$steps" -ge "$max" ]; then break; fi
        steps=$((steps + every))
    done
}

if wants finetune; then
    # FT_FROM=/best_policy.bin: start from the runs' best evaluated policy as a file (a fresh
    # value function); otherwise from the run folder with --init-policy FT_POLICY: best (the
    # default, as configs/qube-finetune.toml: best_policy.bin with the run's value function)
    # or last (the checkpoint's policy).
    if [ -n "${FT_FROM:-}" ]; then FT_POLICY=${FT_POLICY:-last}; else FT_POLICY=${FT_POLICY:-best}; fi
    tag="kl$FT_TARGET_KL-every$FT_EVERY${FT_FROM:+-best}"
    start_policy="$OUT/dr-SEED${FT_FROM:-/policy.bin}"
    if [ "$FT_POLICY" = best ]; then
        tag="$tag-initbest"
        start_policy="$OUT/dr-SEED/best_policy.bin"
    fi
    # The unseen plant with the shipped fine-tuning settings (configs/qube-finetune.toml: its
    # top-level keys, the plant, then its tables), FT_EVERY and FT_TARGET_KL in place of its
    # own (evaluation reads only [plant_params]).
    {
        awk '/^\[/ { table = 1 } !table' configs/qube-finetune.toml |
            sed "s/^steps_per_iteration = .*/steps_per_iteration = $FT_EVERY/"
        cat "$OUT/unseen.toml"
        awk '/^\[/ { table = 1 } table' configs/qube-finetune.toml |
            sed "s/^target_kl = .*/target_kl = $FT_TARGET_KL/"
    } >"$OUT/unseen-$tag.toml"
    printf 'seed\tsteps\tmean return\tbalanced (of 20)\tupright at the end (of 20)\n' | tee "$OUT/finetune-$tag.tsv"
    for s in $SEEDS; do
        start=$(echo "$start_policy" | sed "s/SEED/$s/")
        printf '%s\t0\t%s\n' "$s" "$(evaluate "$start" "$OUT/unseen.toml")" | tee -a "$OUT/finetune-$tag.tsv"
        evaluated_run "$OUT/ft-$tag-$s" "$OUT/unseen-$tag.toml" "$FT_EVERY" "$FT_MAX" "$((s * 1000 + 7))" \
            --init "$OUT/dr-$s${FT_FROM:-}" --init-policy "$FT_POLICY" | sed "s/^/$s\t/" | tee -a "$OUT/finetune-$tag.tsv"
    done
fi

if wants scratch; then
    printf 'seed\tsteps\tmean return\tbalanced (of 20)\tupright at the end (of 20)\n' | tee "$OUT/scratch.tsv"
    for s in $SEEDS; do
        evaluated_run "$OUT/scratch-$s" "$OUT/unseen.toml" "$SCRATCH_EVERY" "$SCRATCH_MAX" "$s" |
            sed "s/^/$s\t/" | tee -a "$OUT/scratch.tsv"
    done
fi
