#!/usr/bin/env bash
# The firmware's budgets on the real instruction set: runs each plant's image of the
# qemu-mps2-an386 board (built first by scripts/cross.sh) in its `bench` mode under
# `qemu-system-arm -icount shift=0` (one Thumb-2 instruction per nanosecond of virtual time;
# SysTick at 25 MHz then ticks every 40 instructions) and prints one JSON line per plant:
#
#   plant, macs, instructions_per_step (everything in a control step: policy, sampling,
#   safety, plant model, framing, CRC, UART writes, episode ends and heartbeats, averaged
#   over 2,000 steps), forward_instructions, sampling_instructions, link_instructions (per
#   transition), plant_instructions (each averaged over 1,000 repetitions), text, data, bss
#   (bytes, arm-none-eabi-size), peak_stack (bytes, stack painting), and derived figures.
#
# Budgets, checked here (the script exits 1 naming every one exceeded):
#   - the [64, 64] qube policy with its observation normaliser: forward pass (tanh
#     included) <= 2.0 instructions per multiply-accumulate; whole control step without the
#     plant model <= 2.5 per multiply-accumulate;
#   - every image: RAM (data + bss + peak stack) <= 64 KiB; no double-precision software
#     floating-point routine (__aeabi_d*, __*df*, ...) linked at all, so none on the control
#     path or in the plant models; no fused multiply-add instruction (vfma/vfms/vfnma: it
#     would break bit-exactness with the host).
set -euo pipefail
cd "$(dirname "$0")/.."

board=qemu-mps2-an386
scripts/cross.sh >&2
command -v qemu-system-arm >/dev/null || {
    echo "firmware-bench: qemu-system-arm is missing; run scripts/setup.sh" >&2
    exit 1
}

failed=0
for image in target/firmware/$board/*.elf; do
    plant=$(basename "$image" .elf)
    if ! bench=$(timeout 600 qemu-system-arm -M mps2-an386 -display none -monitor none \
        -serial null -icount shift=0 -semihosting-config enable=on,target=native \
        -kernel "$image" -append bench); then
        echo "firmware-bench: $plant: the benchmark failed" >&2
        failed=1
        continue
    fi
    read -r text data bss _ < <(arm-none-eabi-size "$image" | tail -n 1)
    doubles=$(arm-none-eabi-nm "$image" |
        awk '$3 ~ /^__aeabi_(d|f2d|l2d|ul2d|i2d|ui2d)|^__.*df[0-9]?$|^__.*df[a-z]+[0-9]?$/ {print $3}' |
        sort -u | tr '\n' ' ')
    fused=$(arm-none-eabi-objdump -d "$image" | grep -cE $'\tv(fma|fms|fnma|fnms)\\.' || true)
    if ! python3 - "$bench" "$text" "$data" "$bss" "$doubles" "$fused" <<'PY'; then
import json, sys
bench = json.loads(sys.argv[1])
text, data, bss = (int(v) for v in sys.argv[2:5])
doubles, fused = sys.argv[5].split(), int(sys.argv[6])
macs = bench["macs"]
row = {k: bench[k] for k in ("plant", "macs", "instructions_per_step", "forward_instructions",
                             "sampling_instructions", "link_instructions", "plant_instructions")}
row.update(text=text, data=data, bss=bss, peak_stack=bench["peak_stack"])
control = bench["instructions_per_step"] - bench["plant_instructions"]
row.update(
    forward_per_mac=round(bench["forward_instructions"] / macs, 3),
    control_per_mac=round(control / macs, 3),
    flash=text + data,
    ram=data + bss + bench["peak_stack"],
    double_routines=doubles,
    fused_multiply_adds=fused,
)
print(json.dumps(row), flush=True)
over = []
if row["ram"] > 64 * 1024:
    over.append(f"RAM {row['ram']} B > 64 KiB")
if doubles:
    over.append(f"double-precision software routines linked: {' '.join(doubles)}")
if fused:
    over.append(f"{fused} fused multiply-add instructions")
if row["plant"] == "qube":
    if row["forward_per_mac"] > 2.0:
        over.append(f"forward pass {row['forward_per_mac']} instructions/MAC > 2.0")
    if row["control_per_mac"] > 2.5:
        over.append(f"control step without plant {row['control_per_mac']} instructions/MAC > 2.5")
for o in over:
    print(f"firmware-bench: {row['plant']}: budget exceeded: {o}", file=sys.stderr)
sys.exit(1 if over else 0)
PY
        failed=1
    fi
done
exit $failed
