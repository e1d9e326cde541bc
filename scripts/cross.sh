#!/usr/bin/env bash
# Builds every board image (firmware/boards/<board>/, one binary per plant) in release for
# its Cortex-M target and prints one line per image:
#
#   image <path> text=<bytes> data=<bytes> bss=<bytes>
#
# Images are written to target/firmware/<board>/<name>.elf, with a raw `<name>.bin` beside
# it for ROM DFU (`dfu-util -a 0 -s 0x08000000:leave -D <name>.bin`); the board crates' own
# build folder is target/boards/<board>/. A board folder may hold `cross-variants`: one
# feature list per line, each built again as `<name>-<features>.elf` (the Black Pill's
# AS5600 pendulum sensor). Any build error fails the script, and so does an image that
# links a double-precision software floating-point routine (arm-none-eabi-nm): a
# Cortex-M4F has a single-precision FPU only.
#
# Offline toolchain (see the README, "Running on a microcontroller"): Debian's Rust
# (rustc-web, cargo-web) builds `core` for the target from rust-web-src with
# -Zbuild-std=core (RUSTC_BOOTSTRAP=1: build-std is an unstable cargo feature), and
# lld-22's ld.lld links. Host builds keep the rustup toolchain; scripts/setup.sh installs
# the Debian packages.
#
# Deploy images (a trained policy built in, run with no host; see the README's "Deploy"):
# every run also builds target/firmware/qemu-mps2-an386/pendulum-deploy.elf from the policy
# in hil-tests/fixtures/deploy-pendulum/ (its QEMU test compares its returns with
# `tether eval`), and
#
#   scripts/cross.sh --deploy runs/<run>
#
# exports that run's policy (`tether export --format rust`) and builds
# target/firmware/qemu-mps2-an386/<plant>-deploy.elf and, for a qube-layout policy, the
# Black Pill's target/firmware/stm32f411-blackpill/rotary-deploy.{elf,bin}.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

deploy_run=""
if [ "${1:-}" = "--deploy" ]; then
    deploy_run=${2:?"usage: scripts/cross.sh [--deploy RUN_FOLDER]"}
    [ -f "$deploy_run/policy.bin" ] && [ -f "$deploy_run/plant.json" ] || {
        echo "cross: $deploy_run holds no policy.bin and plant.json (a tether run folder)" >&2
        exit 1
    }
    mkdir -p "$root/target/deploy"
    # With the host toolchain (the test build's profile: no release build of the trainer
    # for an export), before this script switches to Debian's.
    cargo run --quiet -p tether-trainer --bin tether -- export --run "$deploy_run" --format rust \
        --out "$root/target/deploy/policy.rs"
fi

deb_cargo=/usr/bin/cargo
deb_rustc=/usr/bin/rustc
linker=/usr/lib/llvm-22/bin/ld.lld
for tool in "$deb_cargo" "$deb_rustc" "$linker" arm-none-eabi-size arm-none-eabi-objcopy arm-none-eabi-nm; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "cross: $tool is missing; run scripts/setup.sh" >&2
        exit 1
    fi
done

# Flags from the environment would replace the boards' .cargo/config.toml rustflags
# (-Tlink.x) and rebuild core; builds go to their own folder.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS CARGO_TARGET_DIR \
    CARGO_BUILD_TARGET_DIR CARGO_BUILD_TARGET RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER
export PATH="/usr/bin:$PATH" RUSTC="$deb_rustc" RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1
export CARGO_TARGET_THUMBV7EM_NONE_EABIHF_LINKER="$linker"

# Crate versions the host workspace also uses must be the host's: the board build starts
# from a copy of the host's lock file, and cargo only adds the board's own crates to it. A
# crate may appear in a second, semver-incompatible line (cortex-m's build scripts want
# rustc_version 0.2 where the host has 0.4); a compatible line must be the host's version.
check_lock() {
    python3 - "$root/Cargo.lock" "$1/Cargo.lock" <<'PY'
import sys, tomllib
def lines(path):
    with open(path, "rb") as f:
        lock = tomllib.load(f)
    out = {}
    for p in lock.get("package", []):
        v = p["version"].split("+")[0].split("-")[0].split(".")
        major, minor = int(v[0]), int(v[1])
        line = (major,) if major else (0, minor) if minor else (0, 0, int(v[2]))
        out.setdefault(p["name"], {})[line] = p["version"]
    return out
host, board = lines(sys.argv[1]), lines(sys.argv[2])
bad = [f"{name} {version} (host: {host[name][line]})"
       for name, found in sorted(board.items()) if name in host
       for line, version in found.items()
       if line in host[name] and host[name][line] != version]
if bad:
    sys.exit("cross: the board resolved other versions than the host's Cargo.lock: " + "; ".join(bad))
PY
}

# Prints the double-precision software routines (__aeabi_d*, __*df*) image $1 links.
double_routines() {
    arm-none-eabi-nm "$1" |
        awk '$3 ~ /^__aeabi_(d|f2d|l2d|ul2d|i2d|ui2d)|^__.*df[0-9]?$|^__.*df[a-z]+[0-9]?$/ {print $3}' |
        sort -u | tr '\n' ' '
}

# Builds board folder $1 with cargo features $2 (may be empty); images get suffix $3; with
# $4, only the binary of that name is kept.
build_board() {
    local dir=$1 features=$2 suffix=$3 only=${4:-}
    local board target_dir out_dir
    board=$(basename "$dir")
    target_dir="$root/target/boards/$board"
    out_dir="$root/target/firmware/$board"
    mkdir -p "$out_dir" "$target_dir"
    cp Cargo.lock "$dir/Cargo.lock"
    echo "cross: building $board${features:+ (features: $features)}" >&2
    if ! (cd "$dir" && "$deb_cargo" build --release --quiet -Zbuild-std=core \
        ${features:+--features "$features"} \
        --target-dir "$target_dir" --message-format=json-render-diagnostics \
        >"$target_dir/messages.json"); then
        echo "cross: $board failed to build" >&2
        return 1
    fi
    check_lock "$dir"
    # The executables cargo reports, copied to their documented place.
    python3 - "$target_dir/messages.json" <<'PY' |
import json, sys
for line in open(sys.argv[1]):
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])
PY
    while read -r name exe; do
        if [ -n "$only" ] && [ "$name" != "$only" ]; then
            continue
        fi
        image="$out_dir/$name$suffix.elf"
        cp "$exe" "$image"
        arm-none-eabi-objcopy -O binary "$image" "${image%.elf}.bin"
        read -r text data bss _ < <(arm-none-eabi-size "$image" | tail -n 1)
        echo "image ${image#"$root"/} text=$text data=$data bss=$bss"
        doubles=$(double_routines "$image")
        if [ -n "$doubles" ]; then
            echo "cross: ${image#"$root"/} links double-precision routines: $doubles" >&2
            return 1
        fi
    done
}

# Writes target/deploy/<label>/deployed.rs, the wrapper a deploy image includes: the
# exported items of policy file $2 under the fixed names SPEC_POSTCARD and PARAMS.
deploy_wrapper() {
    local label=$1 policy=$2 prefix wrapper
    prefix=$(sed -n 's/^pub static \([A-Z0-9_]*\)_PARAMS:.*/\1/p' "$policy" | head -n 1)
    [ -n "$prefix" ] || { echo "cross: $policy is not a tether export" >&2; return 1; }
    mkdir -p "$root/target/deploy/$label"
    wrapper="$root/target/deploy/$label/deployed.rs"
    cp "$policy" "$root/target/deploy/$label/policy.rs"
    printf '%s\n' "// Generated by scripts/cross.sh: the policy of $policy." \
        "mod exported {" "    include!(\"$root/target/deploy/$label/policy.rs\");" "}" \
        "pub use exported::${prefix}_SPEC_POSTCARD as SPEC_POSTCARD;" \
        "pub use exported::${prefix}_PARAMS as PARAMS;" >"$wrapper"
    echo "$wrapper"
}

# Builds board $1's binary $2 with a built-in policy (wrapper $3) as <binary>-deploy.
build_deploy() {
    local dir=firmware/boards/$1 bin=$2 wrapper=$3
    TETHER_DEPLOY_POLICY="$wrapper" build_board "$dir" "deploy" "-deploy" "$bin" || return 1
}

status=0
for dir in firmware/boards/*/; do
    dir=${dir%/}
    build_board "$dir" "" "" || status=1
    if [ -f "$dir/cross-variants" ]; then
        while read -r features; do
            [ -z "$features" ] || [ "${features#\#}" != "$features" ] && continue
            build_board "$dir" "$features" "-${features//[ ,]/-}" || status=1
        done <"$dir/cross-variants"
    fi
done
# The fixture's deploy image (tested in QEMU), and the requested run's.
export TETHER_DEPLOY_POLICY
if wrapper=$(deploy_wrapper fixture-pendulum hil-tests/fixtures/deploy-pendulum/policy.rs); then
    build_deploy qemu-mps2-an386 pendulum "$wrapper" || status=1
else
    status=1
fi
if [ -n "$deploy_run" ]; then
    plant=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["name"])' "$deploy_run/plant.json")
    wrapper=$(deploy_wrapper run "$root/target/deploy/policy.rs") || exit 1
    case $plant in
        pendulum | cartpole | qube) build_deploy qemu-mps2-an386 "$plant" "$wrapper" || status=1 ;;
        *) echo "cross: no QEMU image for plant $plant" >&2 ;;
    esac
    if [ "$plant" = qube ]; then
        build_deploy stm32f411-blackpill rotary "$wrapper" || status=1
    fi
fi
exit $status
