//! The device's layout of a policy's parameters — row tiles — and the forward pass over it.
//!
//! # Why
//!
//! The wire order (see `tether_shared::policy`) stores a layer's weights row-major, one row
//! per output unit. Evaluated as it stands, each output is a dot product whose vector lanes
//! must be summed horizontally at the end, plus a scalar tail when the row length is not a
//! multiple of the vector width; with the shared definition's strictly sequential sums
//! (bias first, then products in input order) a row-major dot product would not even
//! vectorise. Stored *column-major within groups of rows* instead, one input column of a
//! group is a contiguous run of weights: the kernel broadcasts `x[j]` once and does one
//! vertical multiply-add per row into per-row accumulators. Each accumulator still adds its
//! products in input order, so the result is bit-identical to the shared reference.
//!
//! # Layout
//!
//! The layout is a permutation of the wire order, the same length ([`PolicySpec::
//! param_count`]): the normaliser (mean, scale) and the Gaussian `log_std` keep their wire
//! positions; each layer keeps its region (`inputs · outputs + outputs` values, same start),
//! inside which its rows are split greedily into *tiles* of [`TileLayout`] heights — as many
//! tiles of the widest height as fit, then at most one of each narrower height down to 4,
//! then single rows (70 rows on x86-64: two tiles of 32, one of 4, two of 1). A tile of `H`
//! rows starting at row `r0` holds `H · (inputs + 1)` values:
//!
//! ```text
//! b[r0 .. r0+H] | w[r0 .. r0+H][0] | w[r0 .. r0+H][1] | … | w[r0 .. r0+H][inputs−1]
//! ```
//!
//! so the kernel loads the biases as the accumulators, streams the weights once in order,
//! and stores the tile's sums, which then go through `tanh` (hidden layers).
//!
//! The widest tile is as tall as the target's registers allow without spilling
//! ([`TileLayout`]): 32 rows (eight 4-wide accumulators of SSE's or NEON's sixteen-plus
//! vector registers) on x86-64 and AArch64, 16 rows elsewhere (sixteen of a Cortex-M4F/M7's
//! thirty-two single-precision registers, or four of Helium's eight vector registers). The
//! layout is private to the device, so it may differ between targets; the results do not.
//! The host tests every layout with the portable kernels.
//!
//! # Kernels
//!
//! The portable kernel ([`tile_rows`]) is written lane-wise on arrays for LLVM to
//! vectorise. On Cortex-M4F/M7 (`arm` with a hardware-float ABI) the 16-row tiles and single
//! rows run hand-scheduled Thumb-2 assembly (`cortex_m`): multi-register loads of eight
//! weights and non-fused `vmla.f32` multiply-adds, the same operations in the same order,
//! so the results are the same bits.
//!
//! # Upload
//!
//! Uploaded chunks go straight to their tiled positions ([`TileLayout::scatter`]), value by
//! value, so a resent chunk rewrites the same positions (idempotent), and no second buffer
//! is needed. The commit reads the buffer back in wire order ([`TileLayout::wire_order`]) to
//! check the CRC.

use tether_shared::PolicySpec;
use tether_shared::policy::{ForwardError, LayeredParams, tanh};

#[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
mod cortex_m;

/// How a layer's rows are split into tiles: the tile heights, widest first, ending in 1 so
/// that every row count splits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileLayout {
    heights: &'static [usize],
}

impl TileLayout {
    /// Tiles of 32, 16, 8, 4 and 1 rows: for targets with sixteen or more 128-bit vector
    /// registers (x86-64's SSE, AArch64's NEON), where 32 rows are eight 4-wide accumulators.
    pub const WIDE: TileLayout = TileLayout {
        heights: &[32, 16, 8, 4, 1],
    };

    /// Tiles of 16, 8, 4 and 1 rows: for Cortex-M FPUs (sixteen of a Cortex-M4F/M7's
    /// thirty-two single-precision registers hold the accumulators, the rest a column of
    /// weights and four inputs), Helium, and every other target.
    pub const NARROW: TileLayout = TileLayout {
        heights: &[16, 8, 4, 1],
    };

    /// This build's layout.
    pub const TARGET: TileLayout = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
        TileLayout::WIDE
    } else {
        TileLayout::NARROW
    };

    /// The tile heights, widest first.
    pub fn heights(self) -> &'static [usize] {
        self.heights
    }

    /// The tile holding `row` of a layer of `rows` rows: `(first row of the tile, height)`.
    fn tile_of(self, row: usize, rows: usize) -> Option<(usize, usize)> {
        let mut start = 0;
        for &height in self.heights {
            let end = start + (rows - start) / height * height;
            if row < end {
                return Some((row - (row - start) % height, height));
            }
            start = end;
        }
        None
    }

    /// Position in this layout of the value at position `wire` of the wire order, or
    /// `None` if `wire` is not below [`PolicySpec::param_count`].
    pub fn tiled_index(self, spec: &PolicySpec, wire: usize) -> Option<usize> {
        let mut start = spec.normalizer_len();
        if wire < start {
            return Some(wire);
        }
        for (inputs, outputs) in spec.layers() {
            let weights = inputs * outputs;
            let len = weights + outputs;
            if wire < start + len {
                let k = wire - start;
                let (row, column) = if k < weights {
                    (k / inputs, Some(k % inputs))
                } else {
                    (k - weights, None)
                };
                let (first, height) = self.tile_of(row, outputs)?;
                let in_tile = match column {
                    None => row - first,
                    Some(j) => height + j * height + (row - first),
                };
                return Some(start + first * (inputs + 1) + in_tile);
            }
            start += len;
        }
        (wire < start + spec.log_std_len()).then_some(wire)
    }

    /// The positions in this layout of all the spec's values, in wire order:
    /// `tiled_index(spec, i)` for `i` in `0..param_count`, computed incrementally (a few
    /// instructions per value instead of a walk over the layers), for the commit's CRC over
    /// a whole buffer.
    pub fn wire_order(self, spec: &PolicySpec) -> impl Iterator<Item = usize> + '_ {
        let normalizer_len = spec.normalizer_len();
        let layer_starts = spec
            .layers()
            .scan(normalizer_len, |start, (inputs, outputs)| {
                let this = *start;
                *start += outputs * (inputs + 1);
                Some((this, inputs, outputs))
            });
        let layers = layer_starts.flat_map(move |(start, inputs, outputs)| {
            // Row `row`'s bias position and the height of its tile.
            let row_base = move |row: usize| {
                let (first, height) = self.tile_of(row, outputs).unwrap_or((row, 1));
                (start + first * (inputs + 1) + (row - first), height)
            };
            let weights = (0..outputs).flat_map(move |row| {
                let (base, height) = row_base(row);
                (1..=inputs).map(move |j| base + j * height)
            });
            let biases = (0..outputs).map(move |row| row_base(row).0);
            weights.chain(biases)
        });
        let log_std_start = normalizer_len + spec.network_len();
        (0..normalizer_len)
            .chain(layers)
            .chain(log_std_start..log_std_start + spec.log_std_len())
    }

    /// Writes `values`, which sit at wire positions `offset..offset + values.len()`, to their
    /// positions in this layout in `buffer`. [`OutOfRange`] (after a partial write) if a
    /// position is beyond the spec's parameters or the buffer; the caller checks ranges
    /// first.
    pub fn scatter(
        self,
        spec: &PolicySpec,
        offset: usize,
        values: &[f32],
        buffer: &mut [f32],
    ) -> Result<(), OutOfRange> {
        for (wire, &value) in (offset..).zip(values) {
            let slot = self
                .tiled_index(spec, wire)
                .and_then(|p| buffer.get_mut(p))
                .ok_or(OutOfRange)?;
            *slot = value;
        }
        Ok(())
    }
}

/// A wire position beyond the spec's parameters or beyond the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// A policy's parameters in the tiled layout, interpreted through its spec: what the device
/// runs. The tiled counterpart of `tether_shared::policy::PolicyView`, with bit-identical
/// results.
#[derive(Clone, Copy, Debug)]
pub struct TiledPolicy<'a> {
    layers: LayeredParams<'a>,
    /// The host's tests evaluate other layouts than [`TileLayout::TARGET`].
    #[cfg(test)]
    layout: TileLayout,
}

impl<'a> TiledPolicy<'a> {
    /// Pairs a spec with its parameters in [`TileLayout::TARGET`], checking the length.
    pub fn new(spec: &'a PolicySpec, params: &'a [f32]) -> Result<Self, ForwardError> {
        Ok(TiledPolicy {
            layers: LayeredParams::new(spec, params)?,
            #[cfg(test)]
            layout: TileLayout::TARGET,
        })
    }

    /// Like [`Self::new`] for parameters in another target's layout, evaluated with the
    /// portable kernels: how the host tests the layouts of the targets it cannot run.
    #[cfg(test)]
    fn with_layout(
        layout: TileLayout,
        spec: &'a PolicySpec,
        params: &'a [f32],
    ) -> Result<Self, ForwardError> {
        Ok(TiledPolicy {
            layers: LayeredParams::new(spec, params)?,
            layout,
        })
    }

    /// Like [`Self::new`] without recomputing the spec's sizes, for a policy the caller
    /// checked with [`Self::new`] before (at commit); see [`LayeredParams::from_checked`].
    pub(crate) fn from_checked(spec: &'a PolicySpec, params: &'a [f32], width: usize) -> Self {
        TiledPolicy {
            layers: LayeredParams::from_checked(spec, params, width),
            #[cfg(test)]
            layout: TileLayout::TARGET,
        }
    }

    /// [`PolicySpec::max_width`] of the spec.
    pub fn width(&self) -> usize {
        self.layers.width()
    }

    /// The spec this policy reads its parameters with.
    pub fn spec(&self) -> &'a PolicySpec {
        self.layers.spec()
    }

    /// The state-independent log standard deviations of a Gaussian head (`None` for a
    /// categorical head). Same position as in the wire order.
    pub fn log_std(&self) -> Option<&'a [f32]> {
        self.layers.log_std()
    }

    /// Runs the network on one observation and writes the Gaussian mean or the categorical
    /// logits into `out`: bit for bit what `PolicyView::forward` computes from the wire
    /// order. Same errors, same scratch requirement ([`PolicySpec::scratch_len`]).
    #[inline]
    pub fn forward(
        &self,
        obs: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) -> Result<(), ForwardError> {
        self.run(obs, scratch, out).map(|_| ())
    }

    /// [`TiledPolicy::forward`], also returning the features the output layer read
    /// ([`PolicySpec::features_dim`] values inside `scratch`), which a gSDE head draws its
    /// noise from: bit for bit `PolicyView::forward_with_features`.
    #[inline]
    pub fn forward_with_features<'s>(
        &self,
        obs: &[f32],
        scratch: &'s mut [f32],
        out: &mut [f32],
    ) -> Result<&'s [f32], ForwardError> {
        let at = self.run(obs, scratch, out)?;
        self.layers.features_in(scratch, at)
    }

    /// The forward pass; returns where the features start in `scratch`.
    #[inline(always)]
    fn run(
        &self,
        obs: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) -> Result<usize, ForwardError> {
        #[cfg(test)]
        if self.layout != TileLayout::TARGET {
            let layout = self.layout;
            return self
                .layers
                .forward(obs, scratch, out, |region, x, y, hidden| {
                    portable_layer(layout, region, x, y, hidden)
                });
        }
        self.layers.forward(obs, scratch, out, layer)
    }
}

/// One layer over its tiled `region` (`y.len() · (x.len() + 1)` values) in
/// [`TileLayout::TARGET`]: `y = W x + b`, then `tanh` if `hidden`. Cortex-M4F/M7 run their
/// assembly kernels (`cortex_m`), every other target the portable ones, unrolled over the
/// target's tile heights at compile time.
#[inline]
fn layer(region: &[f32], x: &[f32], y: &mut [f32], hidden: bool) {
    #[cfg(all(target_arch = "arm", target_abi = "eabihf"))]
    cortex_m::layer(region, x, y, hidden);
    #[cfg(all(feature = "sim", target_arch = "x86_64"))]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the running CPU supports AVX2, checked just above.
        unsafe { portable_target_layer_avx2(region, x, y, hidden) };
        return;
    }
    #[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
    portable_target_layer(region, x, y, hidden);
}

/// [`portable_target_layer`] compiled with AVX2, for simulated boards on x86-64 hosts: the
/// x86-64 baseline has only 4-lane vectors, and the simulated devices' forward passes were
/// a tenth of a randomised training run's CPU. The same IEEE operations in the same order
/// per output (Rust never fuses a multiply and an add on its own, and AVX2 brings no FMA),
/// so the outputs are the portable kernel's bit for bit; only the lanes per instruction
/// change. Never compiled for a device.
#[cfg(all(feature = "sim", target_arch = "x86_64"))]
#[target_feature(enable = "avx2")]
fn portable_target_layer_avx2(region: &[f32], x: &[f32], y: &mut [f32], hidden: bool) {
    portable_target_layer(region, x, y, hidden);
}

/// The portable kernels over [`TileLayout::TARGET`]'s tile heights.
#[cfg(not(all(target_arch = "arm", target_abi = "eabihf")))]
#[inline(always)]
fn portable_target_layer(region: &[f32], x: &[f32], y: &mut [f32], hidden: bool) {
    let (region, y) = if TileLayout::TARGET.heights[0] == 32 {
        tiles::<32>(region, x, y, hidden, tile_rows::<32>)
    } else {
        (region, y)
    };
    let (region, y) = tiles::<16>(region, x, y, hidden, tile_rows::<16>);
    let (region, y) = tiles::<8>(region, x, y, hidden, tile_rows::<8>);
    let (region, y) = tiles::<4>(region, x, y, hidden, tile_rows::<4>);
    tiles::<1>(region, x, y, hidden, tile_rows::<1>);
}

/// [`layer`] in any layout, with the portable kernel for every tile height: how the host
/// tests the layouts of other targets.
#[cfg(test)]
fn portable_layer(layout: TileLayout, region: &[f32], x: &[f32], y: &mut [f32], hidden: bool) {
    let mut rest = (region, y);
    for &height in layout.heights() {
        let (region, y) = rest;
        rest = match height {
            32 => tiles::<32>(region, x, y, hidden, tile_rows::<32>),
            16 => tiles::<16>(region, x, y, hidden, tile_rows::<16>),
            8 => tiles::<8>(region, x, y, hidden, tile_rows::<8>),
            4 => tiles::<4>(region, x, y, hidden, tile_rows::<4>),
            _ => tiles::<1>(region, x, y, hidden, tile_rows::<1>),
        };
    }
}

/// Evaluates as many whole tiles of `H` rows as `y` has room for with `kernel` (which
/// writes a tile's `H` outputs, through `tanh` if `hidden`), and returns the rest of the
/// region and of `y`.
#[inline(always)]
fn tiles<'r, 'y, const H: usize>(
    mut region: &'r [f32],
    x: &[f32],
    y: &'y mut [f32],
    hidden: bool,
    kernel: impl Fn(&[f32], &[f32], &mut [f32; H], bool),
) -> (&'r [f32], &'y mut [f32]) {
    let (y_tiles, y_rest) = y.as_chunks_mut::<H>();
    let tile_len = H * (x.len() + 1);
    for out in y_tiles {
        let Some((tile, rest)) = region.split_at_checked(tile_len) else {
            break;
        };
        kernel(tile, x, out, hidden);
        region = rest;
    }
    (region, y_rest)
}

/// `acc[r] += column[r] · xj` for the rows of a tile.
#[inline(always)]
fn mul_add<const H: usize>(acc: &mut [f32; H], column: &[f32; H], xj: f32) {
    for (a, &w) in acc.iter_mut().zip(column) {
        *a += w * xj;
    }
}

/// Writes the `H` outputs of one tile (biases, then one column of `H` weights per input),
/// through `tanh` if `hidden`: each accumulator starts at its bias and adds its products in
/// input order, exactly the shared definition's order. Written lane-wise on arrays so LLVM
/// vectorises it: per input, one broadcast of `x[j]`, then `H / 4` vector multiplies and
/// adds. Four inputs per loop iteration amortise the loop overhead.
#[inline(always)]
fn tile_rows<const H: usize>(tile: &[f32], x: &[f32], out: &mut [f32; H], hidden: bool) {
    let Some((bias, weights)) = tile.split_first_chunk::<H>() else {
        return;
    };
    let mut acc = *bias;
    let (columns, _) = weights.as_chunks::<H>();
    let (column_quads, last_columns) = columns.as_chunks::<4>();
    let (x_quads, last_x) = x.as_chunks::<4>();
    for (c, xq) in column_quads.iter().zip(x_quads) {
        for k in 0..4 {
            mul_add(&mut acc, &c[k], xq[k]);
        }
    }
    for (c, &xj) in last_columns.iter().zip(last_x) {
        mul_add(&mut acc, c, xj);
    }
    if hidden {
        for (y, &a) in out.iter_mut().zip(&acc) {
            *y = tanh(a);
        }
    } else {
        *out = acc;
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use proptest::prelude::*;
    use tether_shared::policy::{MAX_HIDDEN_LAYERS, PolicyHead, PolicyView};

    use super::*;

    fn spec(obs_dim: u8, hidden: &[u16], head: PolicyHead, normalize_obs: bool) -> PolicySpec {
        PolicySpec {
            obs_dim,
            hidden: heapless::Vec::from_slice(hidden).unwrap(),
            head,
            normalize_obs,
        }
    }

    /// Both layouts, whatever the host's own: the Cortex-M layout is tested here too.
    const LAYOUTS: [TileLayout; 2] = [TileLayout::WIDE, TileLayout::NARROW];

    fn tiled(layout: TileLayout, spec: &PolicySpec, wire: &[f32]) -> Vec<f32> {
        let mut buffer = std::vec![f32::NAN; wire.len()];
        layout.scatter(spec, 0, wire, &mut buffer).unwrap();
        buffer
    }

    #[test]
    fn tiles_split_rows_greedily() {
        let heights = |layout: TileLayout, rows: usize| -> Vec<usize> {
            let mut out = Vec::new();
            let mut row = 0;
            while row < rows {
                let (first, height) = layout.tile_of(row, rows).unwrap();
                assert_eq!(first, row, "tiles start where the previous one ended");
                out.push(height);
                row += height;
            }
            assert_eq!(layout.tile_of(rows, rows), None);
            out
        };
        let (wide, narrow) = (TileLayout::WIDE, TileLayout::NARROW);
        assert_eq!(heights(wide, 70), [32, 32, 4, 1, 1]);
        assert_eq!(heights(wide, 64), [32, 32]);
        assert_eq!(heights(wide, 63), [32, 16, 8, 4, 1, 1, 1]);
        assert_eq!(heights(narrow, 70), [16, 16, 16, 16, 4, 1, 1]);
        assert_eq!(heights(narrow, 64), [16, 16, 16, 16]);
        for layout in LAYOUTS {
            assert_eq!(heights(layout, 31), [16, 8, 4, 1, 1, 1]);
            assert_eq!(heights(layout, 1), [1]);
            assert_eq!(heights(layout, 0), Vec::<usize>::new());
        }
        let expected = if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            wide
        } else {
            narrow
        };
        assert_eq!(TileLayout::TARGET, expected);
    }

    #[test]
    fn hand_laid_out_layer() {
        // 2 inputs -> 5 outputs (one tile of 4, one single row), linear output layer.
        let s = spec(2, &[], PolicyHead::Categorical { n: 5 }, false);
        #[rustfmt::skip]
        let wire: Vec<f32> = std::vec![
            1.0, 2.0,  3.0, 4.0,  5.0, 6.0,  7.0, 8.0,  9.0, 10.0, // rows
            -1.0, -2.0, -3.0, -4.0, -5.0,                         // biases
        ];
        #[rustfmt::skip]
        let expected = [
            -1.0, -2.0, -3.0, -4.0,  1.0, 3.0, 5.0, 7.0,  2.0, 4.0, 6.0, 8.0, // tile of 4
            -5.0, 9.0, 10.0,                                                  // single row
        ];
        for layout in LAYOUTS {
            assert_eq!(tiled(layout, &s, &wire), expected);
        }
    }

    #[test]
    fn out_of_range_positions_are_errors_not_panics() {
        let s = spec(3, &[5], PolicyHead::Gaussian { action_dim: 2 }, true);
        let n = s.param_count();
        let layout = TileLayout::TARGET;
        assert_eq!(layout.tiled_index(&s, n), None);
        assert_eq!(
            layout.tiled_index(&s, n - 1),
            Some(n - 1),
            "log_std stays in place"
        );
        let mut buffer = std::vec![0.0; n];
        assert_eq!(
            layout.scatter(&s, n - 1, &[1.0, 2.0], &mut buffer),
            Err(OutOfRange)
        );
        assert_eq!(
            layout.scatter(&s, 0, &[1.0; 4], &mut buffer[..2]),
            Err(OutOfRange)
        );
        let policy = TiledPolicy::new(&s, &buffer).unwrap();
        let mut out = [0.0; 2];
        assert_eq!(
            policy.forward(&[0.0; 3], &mut [0.0; 9], &mut out),
            Err(ForwardError::ScratchTooShort)
        );
        assert!(matches!(
            TiledPolicy::new(&s, &buffer[1..]),
            Err(ForwardError::ParamLength { .. })
        ));
    }

    /// A spec within the protocol's limits (not all are within a small device's capacity,
    /// which does not matter here) and wire parameters for it.
    fn spec_and_params() -> impl Strategy<Value = (PolicySpec, Vec<f32>, Vec<f32>)> {
        (
            1u8..=12,
            proptest::collection::vec(1u16..=70, 0..=MAX_HIDDEN_LAYERS),
            prop_oneof![
                (1u8..=3).prop_map(|a| PolicyHead::Gaussian { action_dim: a }),
                (2u8..=5).prop_map(|n| PolicyHead::Categorical { n }),
                (1u8..=3, any::<bool>()).prop_map(|(action_dim, full_std)| {
                    PolicyHead::GaussianSde(tether_shared::policy::SdeHead {
                        action_dim,
                        full_std,
                        use_expln: false,
                        resample_every: 4,
                    })
                }),
            ],
            any::<bool>(),
        )
            .prop_flat_map(|(obs_dim, hidden, head, normalize_obs)| {
                let s = spec(obs_dim, &hidden, head, normalize_obs);
                let n = s.param_count();
                (
                    Just(s),
                    proptest::collection::vec(-2.0f32..2.0, n),
                    proptest::collection::vec(-20.0f32..20.0, obs_dim as usize),
                )
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn layout_is_a_permutation((s, wire, _obs) in spec_and_params()) {
            let n = s.param_count();
            for layout in LAYOUTS {
                let mut seen = std::vec![false; n];
                for i in 0..n {
                    let p = layout.tiled_index(&s, i).unwrap();
                    prop_assert!(p < n && !seen[p], "position {p} of wire {i}");
                    seen[p] = true;
                }
                // Reading back in wire order gives the wire order.
                let buffer = tiled(layout, &s, &wire);
                for (i, &v) in wire.iter().enumerate() {
                    let p = layout.tiled_index(&s, i).unwrap();
                    prop_assert_eq!(buffer[p].to_bits(), v.to_bits());
                }
                // The incremental walk gives the same positions.
                let walk: Vec<usize> = layout.wire_order(&s).collect();
                let indexed: Vec<usize> =
                    (0..n).map(|i| layout.tiled_index(&s, i).unwrap()).collect();
                prop_assert_eq!(walk, indexed);
            }
        }

        #[test]
        fn chunked_and_resent_uploads_give_the_same_layout(
            (s, wire, _obs) in spec_and_params(),
            chunk in 1usize..300,
        ) {
            for layout in LAYOUTS {
                let whole = tiled(layout, &s, &wire);
                let mut buffer = std::vec![f32::NAN; wire.len()];
                for (k, values) in wire.chunks(chunk).enumerate() {
                    layout.scatter(&s, k * chunk, values, &mut buffer).unwrap();
                    // A resend of the same chunk changes nothing.
                    layout.scatter(&s, k * chunk, values, &mut buffer).unwrap();
                }
                prop_assert_eq!(
                    buffer.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }

        #[test]
        fn tiled_forward_equals_shared_forward_bit_for_bit(
            (s, wire, obs) in spec_and_params(),
        ) {
            let reference = PolicyView::new(&s, &wire).unwrap();
            let mut scratch = std::vec![0.0f32; s.scratch_len()];
            let mut expected = std::vec![0.0f32; s.output_dim()];
            let expected_features = reference
                .forward_with_features(&obs, &mut scratch, &mut expected)
                .unwrap()
                .to_vec();
            for layout in LAYOUTS {
                let buffer = tiled(layout, &s, &wire);
                let policy = if layout == TileLayout::TARGET {
                    TiledPolicy::new(&s, &buffer).unwrap()
                } else {
                    TiledPolicy::with_layout(layout, &s, &buffer).unwrap()
                };
                let mut got = std::vec![0.0f32; s.output_dim()];
                let features = policy
                    .forward_with_features(&obs, &mut scratch, &mut got)
                    .unwrap();
                prop_assert_eq!(
                    features.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    expected_features.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
                prop_assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{:?}", layout
                );
                prop_assert_eq!(policy.log_std(), reference.log_std());
            }
        }
    }
}
