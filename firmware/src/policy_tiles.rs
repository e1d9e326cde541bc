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
//! inside which its rows are split greedily into *tiles* of [`TILE_HEIGHTS`] rows — as many
//! tiles of the widest height as fit, then at most one of each narrower height down to 4,
//! then single rows (70 rows on x86-64: two tiles of 32, one of 4, two of 1). A tile of `H`
//! rows starting at row `r0` holds `H · (inputs + 1)` values:
//!
//! ```text
//! b[r0 .. r0+H] | w[r0 .. r0+H][0] | w[r0 .. r0+H][1] | … | w[r0 .. r0+H][inputs−1]
//! ```
//!
//! so the kernel loads the biases as the accumulators, streams the weights once in order,
//! and applies `tanh` (hidden layers) to the accumulators before storing them.
//!
//! The widest tile is as tall as the target's registers allow without spilling: 32 rows
//! (eight 4-wide accumulators of SSE's or NEON's sixteen-plus vector registers) on x86-64
//! and AArch64, 16 rows elsewhere (sixteen of a Cortex-M4F/M7's thirty-two single-precision
//! registers, or four of Helium's eight vector registers). The layout is private to the
//! device, so it may differ between targets; the results do not.
//!
//! # Upload
//!
//! Uploaded chunks go straight to their tiled positions ([`scatter`]), value by value, so a
//! resent chunk rewrites the same positions (idempotent), and no second buffer is needed.
//! The commit reads the buffer back in wire order ([`wire_order`]) to check the CRC.

use tether_shared::PolicySpec;
use tether_shared::policy::{ForwardError, LayeredParams, tanh};

/// Whether the widest tiles have 32 rows (targets with sixteen or more 128-bit vector
/// registers: x86-64's SSE, AArch64's NEON) rather than 16 (Cortex-M FPUs and Helium,
/// which have the equivalent of eight).
const WIDE_TILES: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

/// Heights of the row tiles, in the order a layer's rows are split into them (greedily).
/// The last is 1 so that every row count splits.
pub const TILE_HEIGHTS: &[usize] = if WIDE_TILES {
    &[32, 16, 8, 4, 1]
} else {
    &[16, 8, 4, 1]
};

/// The tile holding `row` of a layer of `rows` rows: `(first row of the tile, height)`.
fn tile_of(row: usize, rows: usize) -> Option<(usize, usize)> {
    let mut start = 0;
    for &height in TILE_HEIGHTS {
        let end = start + (rows - start) / height * height;
        if row < end {
            return Some((row - (row - start) % height, height));
        }
        start = end;
    }
    None
}

/// Position in the tiled layout of the value at position `wire` of the wire order, or
/// `None` if `wire` is not below [`PolicySpec::param_count`].
pub fn tiled_index(spec: &PolicySpec, wire: usize) -> Option<usize> {
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
            let (first, height) = tile_of(row, outputs)?;
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

/// The tiled positions of all the spec's values, in wire order: `tiled_index(spec, i)` for
/// `i` in `0..param_count`, computed incrementally (a few instructions per value instead of
/// a walk over the layers), for the commit's CRC over a whole buffer.
pub fn wire_order(spec: &PolicySpec) -> impl Iterator<Item = usize> + '_ {
    let normalizer_len = spec.normalizer_len();
    let layer_starts = spec
        .layers()
        .scan(normalizer_len, |start, (inputs, outputs)| {
            let this = *start;
            *start += outputs * (inputs + 1);
            Some((this, inputs, outputs))
        });
    let layers = layer_starts.flat_map(|(start, inputs, outputs)| {
        // Row `row`'s bias position and the height of its tile.
        let row_base = move |row: usize| {
            let (first, height) = tile_of(row, outputs).unwrap_or((row, 1));
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

/// A wire position beyond the spec's parameters or beyond the buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutOfRange;

/// Writes `values`, which sit at wire positions `offset..offset + values.len()`, to their
/// tiled positions in `buffer`. [`OutOfRange`] (after a partial write) if a position is
/// beyond the spec's parameters or the buffer; the caller checks ranges first.
pub fn scatter(
    spec: &PolicySpec,
    offset: usize,
    values: &[f32],
    buffer: &mut [f32],
) -> Result<(), OutOfRange> {
    for (wire, &value) in (offset..).zip(values) {
        let slot = tiled_index(spec, wire)
            .and_then(|p| buffer.get_mut(p))
            .ok_or(OutOfRange)?;
        *slot = value;
    }
    Ok(())
}

/// A policy's parameters in the tiled layout, interpreted through its spec: what the device
/// runs. The tiled counterpart of `tether_shared::policy::PolicyView`, with bit-identical
/// results.
#[derive(Clone, Copy, Debug)]
pub struct TiledPolicy<'a> {
    layers: LayeredParams<'a>,
}

impl<'a> TiledPolicy<'a> {
    /// Pairs a spec with its tiled parameters, checking the length.
    pub fn new(spec: &'a PolicySpec, params: &'a [f32]) -> Result<Self, ForwardError> {
        Ok(TiledPolicy {
            layers: LayeredParams::new(spec, params)?,
        })
    }

    /// Like [`Self::new`] without recomputing the spec's sizes, for a policy the caller
    /// checked with [`Self::new`] before (at commit); see [`LayeredParams::from_checked`].
    pub(crate) fn from_checked(spec: &'a PolicySpec, params: &'a [f32], width: usize) -> Self {
        TiledPolicy {
            layers: LayeredParams::from_checked(spec, params, width),
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
    pub fn forward(
        &self,
        obs: &[f32],
        scratch: &mut [f32],
        out: &mut [f32],
    ) -> Result<(), ForwardError> {
        self.layers.forward(obs, scratch, out, layer)
    }
}

/// One layer over its tiled `region` (`y.len() · (x.len() + 1)` values): `y = W x + b`,
/// then `tanh` if `hidden`. The tile heights here are [`TILE_HEIGHTS`].
#[inline]
fn layer(region: &[f32], x: &[f32], y: &mut [f32], hidden: bool) {
    let (region, y) = if WIDE_TILES {
        tiles::<32>(region, x, y, hidden)
    } else {
        (region, y)
    };
    let (region, y) = tiles::<16>(region, x, y, hidden);
    let (region, y) = tiles::<8>(region, x, y, hidden);
    let (region, y) = tiles::<4>(region, x, y, hidden);
    tiles::<1>(region, x, y, hidden);
}

/// Evaluates as many whole tiles of `H` rows as `y` has room for, and returns the rest of
/// the region and of `y`.
#[inline(always)]
fn tiles<'r, 'y, const H: usize>(
    mut region: &'r [f32],
    x: &[f32],
    y: &'y mut [f32],
    hidden: bool,
) -> (&'r [f32], &'y mut [f32]) {
    let (y_tiles, y_rest) = y.as_chunks_mut::<H>();
    let tile_len = H * (x.len() + 1);
    for out in y_tiles {
        let Some((tile, rest)) = region.split_at_checked(tile_len) else {
            break;
        };
        tile_rows::<H>(tile, x, out, hidden);
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

/// Writes the `H` outputs of one tile (biases, then one column of `H` weights per input): each
/// accumulator starts at its bias and adds its products in input order, exactly the shared
/// definition's order. Written lane-wise on arrays so LLVM vectorises it: per input, one
/// broadcast of `x[j]`, then `H / 4` vector multiplies and adds. Four inputs per loop
/// iteration amortise the loop overhead.
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

    fn tiled(spec: &PolicySpec, wire: &[f32]) -> Vec<f32> {
        let mut buffer = std::vec![f32::NAN; wire.len()];
        scatter(spec, 0, wire, &mut buffer).unwrap();
        buffer
    }

    #[test]
    fn tiles_split_rows_greedily() {
        let heights = |rows: usize| -> Vec<usize> {
            let mut out = Vec::new();
            let mut row = 0;
            while row < rows {
                let (first, height) = tile_of(row, rows).unwrap();
                assert_eq!(first, row, "tiles start where the previous one ended");
                out.push(height);
                row += height;
            }
            assert_eq!(tile_of(rows, rows), None);
            out
        };
        if WIDE_TILES {
            assert_eq!(heights(70), [32, 32, 4, 1, 1]);
            assert_eq!(heights(64), [32, 32]);
            assert_eq!(heights(63), [32, 16, 8, 4, 1, 1, 1]);
        } else {
            assert_eq!(heights(70), [16, 16, 16, 16, 4, 1, 1]);
            assert_eq!(heights(64), [16, 16, 16, 16]);
        }
        assert_eq!(heights(31), [16, 8, 4, 1, 1, 1]);
        assert_eq!(heights(1), [1]);
        assert_eq!(heights(0), Vec::<usize>::new());
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
        assert_eq!(tiled(&s, &wire), expected);
    }

    #[test]
    fn out_of_range_positions_are_errors_not_panics() {
        let s = spec(3, &[5], PolicyHead::Gaussian { action_dim: 2 }, true);
        let n = s.param_count();
        assert_eq!(tiled_index(&s, n), None);
        assert_eq!(
            tiled_index(&s, n - 1),
            Some(n - 1),
            "log_std stays in place"
        );
        let mut buffer = std::vec![0.0; n];
        assert_eq!(
            scatter(&s, n - 1, &[1.0, 2.0], &mut buffer),
            Err(OutOfRange)
        );
        assert_eq!(scatter(&s, 0, &[1.0; 4], &mut buffer[..2]), Err(OutOfRange));
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
            let mut seen = std::vec![false; n];
            for i in 0..n {
                let p = tiled_index(&s, i).unwrap();
                prop_assert!(p < n && !seen[p], "position {p} of wire {i}");
                seen[p] = true;
            }
            // Reading back in wire order gives the wire order.
            let buffer = tiled(&s, &wire);
            for (i, &v) in wire.iter().enumerate() {
                prop_assert_eq!(buffer[tiled_index(&s, i).unwrap()].to_bits(), v.to_bits());
            }
            // The incremental walk gives the same positions.
            let walk: Vec<usize> = wire_order(&s).collect();
            let indexed: Vec<usize> = (0..n).map(|i| tiled_index(&s, i).unwrap()).collect();
            prop_assert_eq!(walk, indexed);
        }

        #[test]
        fn chunked_and_resent_uploads_give_the_same_layout(
            (s, wire, _obs) in spec_and_params(),
            chunk in 1usize..300,
        ) {
            let whole = tiled(&s, &wire);
            let mut buffer = std::vec![f32::NAN; wire.len()];
            for (k, values) in wire.chunks(chunk).enumerate() {
                scatter(&s, k * chunk, values, &mut buffer).unwrap();
                // A resend of the same chunk changes nothing.
                scatter(&s, k * chunk, values, &mut buffer).unwrap();
            }
            prop_assert_eq!(
                buffer.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                whole.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }

        #[test]
        fn tiled_forward_equals_shared_forward_bit_for_bit(
            (s, wire, obs) in spec_and_params(),
        ) {
            let reference = PolicyView::new(&s, &wire).unwrap();
            let buffer = tiled(&s, &wire);
            let policy = TiledPolicy::new(&s, &buffer).unwrap();
            let mut scratch = std::vec![0.0f32; s.scratch_len()];
            let mut expected = std::vec![0.0f32; s.output_dim()];
            let mut got = std::vec![0.0f32; s.output_dim()];
            reference.forward(&obs, &mut scratch, &mut expected).unwrap();
            policy.forward(&obs, &mut scratch, &mut got).unwrap();
            prop_assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            prop_assert_eq!(policy.log_std(), reference.log_std());
        }
    }
}
