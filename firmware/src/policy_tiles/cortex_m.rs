//! The Cortex-M4F/M7 kernels of the tiled forward pass, in Thumb-2 assembly.
//!
//! A single-precision FPU has thirty-two registers: a 16-row tile keeps its sixteen
//! accumulators in `s16`–`s31` for the whole tile, loads a column of weights eight at a
//! time with one `vldmia` into `s0`–`s7` and four inputs at a time into `s8`–`s11`, and adds
//! each product with `vmla.f32`. That is about 1.17 instructions per multiply-accumulate
//! (per four columns: eight 8-register loads, one 4-register load, 64 `vmla`, a count and a
//! branch), where LLVM's code for the portable kernel needs two (a load and a `vmla` per
//! product). A hidden tile then applies `tanh` to its accumulators in place, 19
//! instructions each, before storing them.
//!
//! `vmla.f32` is the *non-fused* multiply-accumulate: it rounds the product to f32, then the
//! sum — exactly `acc + w * x` in Rust, which never fuses — so each accumulator adds the
//! same rounded products in the same order (bias first, then input order) as the shared
//! definition (`tether_shared::policy`), and the results are the same bits as the host's.
//! (`vfma.f32`, the fused one, would round once and break that.) The FPU must not flush
//! subnormals to zero (FPSCR.FZ = 0, its reset value), as the host does not.
//!
//! The host cannot run this code. Its arithmetic is pinned to the shared reference by the
//! QEMU test that compares a Cortex-M device's transitions with the host build's, bit for
//! bit, over policies whose shapes reach every path here
//! (`hil-tests/tests/qemu_bit_exact.rs`); the layout it reads is tested on the host with the
//! portable kernels (`TileLayout::NARROW`).

use core::arch::asm;

use tether_shared::policy::{TANH_P, TANH_Q, tanh};

use super::{TileLayout, tile_rows, tiles};

/// The activation's coefficients in the order the tanh code loads them into `s0`–`s8`.
static TANH_COEFFICIENTS: [f32; 9] = [
    TANH_P[0], TANH_P[1], TANH_P[2], TANH_P[3], TANH_Q[0], TANH_Q[1], TANH_Q[2], TANH_Q[3],
    TANH_Q[4],
];

const _: () = assert!(
    TileLayout::TARGET.heights.len() == 4
        && TileLayout::TARGET.heights[0] == 16
        && TileLayout::TARGET.heights[1] == 8
        && TileLayout::TARGET.heights[2] == 4
        && TileLayout::TARGET.heights[3] == 1,
    "the Cortex-M kernels are written for TileLayout::NARROW"
);

/// One layer in [`TileLayout::NARROW`]: 16-row tiles (with their `tanh`) and single rows in
/// assembly, the rare 8- and 4-row tiles with the portable kernel.
#[inline]
pub(super) fn layer(region: &[f32], x: &[f32], y: &mut [f32], hidden: bool) {
    let (region, y) = tiles::<16>(region, x, y, hidden, tile16);
    let (region, y) = tiles::<8>(region, x, y, hidden, tile_rows::<8>);
    let (region, y) = tiles::<4>(region, x, y, hidden, tile_rows::<4>);
    tiles::<1>(region, x, y, hidden, row);
}

/// One column of a 16-row tile: sixteen weights, in two loads of eight, times the input in
/// the named register, added to `s16`–`s31`.
macro_rules! column16 {
    ($x:literal) => {
        concat!(
            "vldmia {w}!, {{s0-s7}}\n",
            "vmla.f32 s16, s0, ",
            $x,
            "\n",
            "vmla.f32 s17, s1, ",
            $x,
            "\n",
            "vmla.f32 s18, s2, ",
            $x,
            "\n",
            "vmla.f32 s19, s3, ",
            $x,
            "\n",
            "vmla.f32 s20, s4, ",
            $x,
            "\n",
            "vmla.f32 s21, s5, ",
            $x,
            "\n",
            "vmla.f32 s22, s6, ",
            $x,
            "\n",
            "vmla.f32 s23, s7, ",
            $x,
            "\n",
            "vldmia {w}!, {{s0-s7}}\n",
            "vmla.f32 s24, s0, ",
            $x,
            "\n",
            "vmla.f32 s25, s1, ",
            $x,
            "\n",
            "vmla.f32 s26, s2, ",
            $x,
            "\n",
            "vmla.f32 s27, s3, ",
            $x,
            "\n",
            "vmla.f32 s28, s4, ",
            $x,
            "\n",
            "vmla.f32 s29, s5, ",
            $x,
            "\n",
            "vmla.f32 s30, s6, ",
            $x,
            "\n",
            "vmla.f32 s31, s7, ",
            $x,
            "\n",
        )
    };
}

/// `tether_shared::policy::tanh` of the named accumulator, in place, with the coefficients in
/// `s0`–`s8` (P₀..P₃, Q₀..Q₄) and `s9`–`s13` as scratch: the fixed-point clamp (two
/// `vcvt`), `s = x²`, both Horner chains (`vmla` adds the rounded product to the
/// coefficient, as `c + p·s` rounds in Rust), `x·p`, and the division. 19 instructions.
macro_rules! tanh_in_place {
    ($a:literal) => {
        concat!(
            "vcvt.s32.f32 ",
            $a,
            ", ",
            $a,
            ", #28\n",
            "vcvt.f32.s32 ",
            $a,
            ", ",
            $a,
            ", #28\n",
            "vmul.f32 s9, ",
            $a,
            ", ",
            $a,
            "\n",
            "vmov.f32 s10, s2\n",
            "vmla.f32 s10, s3, s9\n",
            "vmov.f32 s11, s1\n",
            "vmla.f32 s11, s10, s9\n",
            "vmov.f32 s10, s0\n",
            "vmla.f32 s10, s11, s9\n",
            "vmov.f32 s12, s7\n",
            "vmla.f32 s12, s8, s9\n",
            "vmov.f32 s13, s6\n",
            "vmla.f32 s13, s12, s9\n",
            "vmov.f32 s12, s5\n",
            "vmla.f32 s12, s13, s9\n",
            "vmov.f32 s13, s4\n",
            "vmla.f32 s13, s12, s9\n",
            "vmul.f32 ",
            $a,
            ", ",
            $a,
            ", s10\n",
            "vdiv.f32 ",
            $a,
            ", ",
            $a,
            ", s13\n",
        )
    };
}

/// The sixteen outputs of a 16-row `tile` (16 biases, then 16 weights per input) over `x`,
/// through `tanh` if `hidden`. Does nothing if `tile` is not `16 · (x.len() + 1)` long (the
/// caller cuts it to that).
#[inline(never)]
fn tile16(tile: &[f32], x: &[f32], out: &mut [f32; 16], hidden: bool) {
    let n = x.len();
    if tile.len() != 16 * (n + 1) {
        return;
    }
    // SAFETY: the code reads 16 + 16·n floats from `tile` and n from `x` (checked above) and
    // the nine coefficients, writes 16 floats to `out`, and changes only the registers
    // declared here (the callee-saved s16–s31 among them, which the compiler saves and
    // restores around the block).
    unsafe {
        asm!(
            "vldmia {w}!, {{s16-s31}}",
            "cmp {quads}, #0",
            "beq 2f",
            "1:",
            "vldmia {x}!, {{s8-s11}}",
            column16!("s8"),
            column16!("s9"),
            column16!("s10"),
            column16!("s11"),
            "subs {quads}, {quads}, #1",
            "bne 1b",
            "2:",
            "cmp {rest}, #0",
            "beq 4f",
            "3:",
            "vldmia {x}!, {{s8}}",
            column16!("s8"),
            "subs {rest}, {rest}, #1",
            "bne 3b",
            "4:",
            "cmp {hidden}, #0",
            "beq 5f",
            "vldmia {coefficients}, {{s0-s8}}",
            tanh_in_place!("s16"),
            tanh_in_place!("s17"),
            tanh_in_place!("s18"),
            tanh_in_place!("s19"),
            tanh_in_place!("s20"),
            tanh_in_place!("s21"),
            tanh_in_place!("s22"),
            tanh_in_place!("s23"),
            tanh_in_place!("s24"),
            tanh_in_place!("s25"),
            tanh_in_place!("s26"),
            tanh_in_place!("s27"),
            tanh_in_place!("s28"),
            tanh_in_place!("s29"),
            tanh_in_place!("s30"),
            tanh_in_place!("s31"),
            "5:",
            "vstmia {out}, {{s16-s31}}",
            w = inout(reg) tile.as_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            quads = inout(reg) n / 4 => _,
            rest = inout(reg) n % 4 => _,
            out = in(reg) out.as_mut_ptr(),
            hidden = in(reg) u32::from(hidden),
            coefficients = in(reg) TANH_COEFFICIENTS.as_ptr(),
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _,
            out("s16") _, out("s17") _, out("s18") _, out("s19") _,
            out("s20") _, out("s21") _, out("s22") _, out("s23") _,
            out("s24") _, out("s25") _, out("s26") _, out("s27") _,
            out("s28") _, out("s29") _, out("s30") _, out("s31") _,
            options(nostack),
        );
    }
}

/// The output of a single-row `tile` (its bias, then one weight per input) over `x`, through
/// `tanh` if `hidden`; eight products per loop: weights to `s0`–`s7`, inputs to `s8`–`s15`,
/// the sum in `s16`. Does nothing if `tile` is not `x.len() + 1` long (the caller cuts it to
/// that).
#[inline(never)]
fn row(tile: &[f32], x: &[f32], out: &mut [f32; 1], hidden: bool) {
    let n = x.len();
    if tile.len() != n + 1 {
        return;
    }
    // SAFETY: the code reads 1 + n floats from `tile` and n from `x` (checked above),
    // writes one to `out`, and changes only the registers declared here (the callee-saved
    // s16 among them).
    unsafe {
        asm!(
            "vldmia {w}!, {{s16}}",
            "cmp {octets}, #0",
            "beq 2f",
            "1:",
            "vldmia {w}!, {{s0-s7}}",
            "vldmia {x}!, {{s8-s15}}",
            "vmla.f32 s16, s0, s8",
            "vmla.f32 s16, s1, s9",
            "vmla.f32 s16, s2, s10",
            "vmla.f32 s16, s3, s11",
            "vmla.f32 s16, s4, s12",
            "vmla.f32 s16, s5, s13",
            "vmla.f32 s16, s6, s14",
            "vmla.f32 s16, s7, s15",
            "subs {octets}, {octets}, #1",
            "bne 1b",
            "2:",
            "cmp {rest}, #0",
            "beq 4f",
            "3:",
            "vldmia {w}!, {{s0}}",
            "vldmia {x}!, {{s8}}",
            "vmla.f32 s16, s0, s8",
            "subs {rest}, {rest}, #1",
            "bne 3b",
            "4:",
            "vstr s16, [{out}]",
            w = inout(reg) tile.as_ptr() => _,
            x = inout(reg) x.as_ptr() => _,
            octets = inout(reg) n / 8 => _,
            rest = inout(reg) n % 8 => _,
            out = in(reg) out.as_mut_ptr(),
            out("s16") _,
            out("s0") _, out("s1") _, out("s2") _, out("s3") _,
            out("s4") _, out("s5") _, out("s6") _, out("s7") _,
            out("s8") _, out("s9") _, out("s10") _, out("s11") _,
            out("s12") _, out("s13") _, out("s14") _, out("s15") _,
            options(nostack),
        );
    }
    if hidden {
        out[0] = tanh(out[0]);
    }
}
