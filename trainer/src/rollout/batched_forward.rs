//! The shared f32 forward pass over blocks of observations, bit for bit per observation.
//!
//! The host recomputes every log-probability a device reports ([`super::crosscheck`]): one
//! forward pass per control step, as many as the devices run. Evaluated one observation at
//! a time (the firmware's tiled pass) that cost the trainer as much CPU as the simulated
//! devices' own forward passes. Here [`LANES`] observations go through the network together,
//! one per vector lane: each weight is loaded once per block, several rows accumulate at
//! once so the adds do not wait on each other, and `tanh` runs over whole lanes.
//!
//! The arithmetic per observation is the shared definition's
//! ([`tether_shared::policy::PolicyView::forward`]): the same [`normalize`], each output from
//! its bias adding the weight·input products in input order, every product and sum rounded
//! to f32 (no FMA), the same `tanh` ([`tanh_f32`]: the device's, bit for bit, in operations
//! that vectorise). Lanes only change which observations share an
//! instruction, never the order of one observation's operations, so the results are the
//! device's bits (tested against the shared pass).

use tether_shared::PolicySpec;
use tether_shared::policy::{ForwardError, LayeredParams, normalize};

use crate::trpo::kernels::tanh::tanh_f32;
use crate::trpo::kernels::vector_dispatch;

/// Observations per block: one per lane (two AVX2 vectors of f32).
pub const LANES: usize = 16;

/// One value for each observation of a block.
pub type Lanes = [f32; LANES];

/// Rows accumulated together: four rows of two vectors each keep eight independent sums in
/// flight, enough to hide the adder's latency without spilling registers.
const ROWS: usize = 4;

/// One layer's parameters in the wire layout: `weights` row-major `[outputs][inputs]`.
#[derive(Clone, Copy, Debug)]
struct Layer<'a> {
    inputs: usize,
    weights: &'a [f32],
    bias: &'a [f32],
}

/// A policy ready to evaluate in blocks (see the module documentation).
#[derive(Clone, Debug)]
pub struct BatchedPolicy<'a> {
    spec: &'a PolicySpec,
    /// The normaliser's mean and scale, when the spec has one.
    normalizer: Option<(&'a [f32], &'a [f32])>,
    layers: Vec<Layer<'a>>,
    log_std: Option<&'a [f32]>,
}

/// Buffers a block's pass works in: two layers' activations, lane-wise.
#[derive(Clone, Debug, Default)]
pub struct BlockScratch {
    current: Vec<Lanes>,
    next: Vec<Lanes>,
    observation: Vec<f32>,
}

impl<'a> BatchedPolicy<'a> {
    /// Reads `params` (the wire layout of `spec`), checking the length.
    pub fn new(spec: &'a PolicySpec, params: &'a [f32]) -> Result<Self, ForwardError> {
        let checked = LayeredParams::new(spec, params)?;
        let length_error = ForwardError::ParamLength {
            expected: spec.param_count(),
            got: params.len(),
        };
        let mut rest = params;
        let mut take = |n: usize| -> Result<&'a [f32], ForwardError> {
            let (taken, after) = rest.split_at_checked(n).ok_or(length_error)?;
            rest = after;
            Ok(taken)
        };
        let obs_dim = usize::from(spec.obs_dim);
        let normalizer = match spec.normalize_obs {
            true => Some((take(obs_dim)?, take(obs_dim)?)),
            false => None,
        };
        let layers = spec
            .layers()
            .map(|(inputs, outputs)| {
                Ok(Layer {
                    inputs,
                    weights: take(inputs * outputs)?,
                    bias: take(outputs)?,
                })
            })
            .collect::<Result<Vec<_>, ForwardError>>()?;
        Ok(BatchedPolicy {
            spec,
            normalizer,
            layers,
            log_std: checked.log_std(),
        })
    }

    /// The head's log standard deviations (see [`LayeredParams::log_std`]).
    pub fn log_std(&self) -> Option<&'a [f32]> {
        self.log_std
    }

    /// A scratch sized for this policy.
    pub fn scratch(&self) -> BlockScratch {
        let width = self.spec.max_width();
        BlockScratch {
            current: vec![[0.0; LANES]; width],
            next: vec![[0.0; LANES]; width],
            observation: vec![0.0; usize::from(self.spec.obs_dim)],
        }
    }

    /// Runs the network on up to [`LANES`] observations: output `k` of observation `i` is
    /// `out[k][i]` (`out` holds [`PolicySpec::output_dim`] rows). Returns the features the
    /// output layer read ([`PolicySpec::features_dim`] rows, inside `scratch`), what a gSDE
    /// head needs. Lanes past the last observation hold values of no meaning.
    pub fn forward_block<'s>(
        &self,
        observations: &[&[f32]],
        scratch: &'s mut BlockScratch,
        out: &mut [Lanes],
    ) -> Result<&'s [Lanes], ForwardError> {
        if observations.len() > LANES {
            return Err(ForwardError::ObsLength);
        }
        if out.len() != self.spec.output_dim() {
            return Err(ForwardError::OutputLength);
        }
        let width = self.spec.max_width();
        let BlockScratch {
            current,
            next,
            observation,
        } = scratch;
        if current.len() < width || next.len() < width {
            return Err(ForwardError::ScratchTooShort);
        }
        self.load_observations(observations, observation, current)?;
        let (mut current, mut next) = (current, next);
        let Some((output_layer, hidden)) = self.layers.split_last() else {
            return Err(ForwardError::OutputLength);
        };
        for layer in hidden {
            let outputs = layer.bias.len();
            let (Some(x), Some(y)) = (current.get(..layer.inputs), next.get_mut(..outputs)) else {
                return Err(ForwardError::ScratchTooShort);
            };
            affine_block(layer.weights, layer.bias, x, y);
            tanh_block(y);
            core::mem::swap(&mut current, &mut next);
        }
        let features = current
            .get(..output_layer.inputs)
            .ok_or(ForwardError::ScratchTooShort)?;
        affine_block(output_layer.weights, output_layer.bias, features, out);
        Ok(features)
    }

    /// Writes the block's (normalised) observations into the first layer's input, lane by
    /// lane; unused lanes get zeros.
    fn load_observations(
        &self,
        observations: &[&[f32]],
        normalized: &mut [f32],
        input: &mut [Lanes],
    ) -> Result<(), ForwardError> {
        let obs_dim = usize::from(self.spec.obs_dim);
        let input = input
            .get_mut(..obs_dim)
            .ok_or(ForwardError::ScratchTooShort)?;
        for lane in 0..LANES {
            match observations.get(lane) {
                Some(obs) if obs.len() != obs_dim => return Err(ForwardError::ObsLength),
                Some(obs) => match self.normalizer {
                    Some((mean, scale)) => normalize(obs, mean, scale, normalized),
                    None => normalized.copy_from_slice(obs),
                },
                None => normalized.fill(0.0),
            }
            for (row, &value) in input.iter_mut().zip(normalized.iter()) {
                row[lane] = value;
            }
        }
        Ok(())
    }
}

vector_dispatch!(
    /// `y = W·x + b` for each lane: `W` row-major with `x.len()` columns and `y.len()` rows.
    /// Sizes that do not fit leave `y` as it is.
    fn affine_block => affine_block_impl(weights: &[f32], bias: &[f32], x: &[Lanes], y: &mut [Lanes])
);

vector_dispatch!(
    /// The device's `tanh` of every value.
    fn tanh_block => tanh_block_impl(values: &mut [Lanes])
);

#[inline(always)]
fn affine_block_impl(weights: &[f32], bias: &[f32], x: &[Lanes], y: &mut [Lanes]) {
    let n = x.len();
    if weights.len() != n * y.len() || bias.len() != y.len() {
        return;
    }
    if n == 0 {
        for (y, &b) in y.iter_mut().zip(bias) {
            *y = [b; LANES];
        }
        return;
    }
    let mut y_groups = y.chunks_exact_mut(ROWS);
    let mut bias_groups = bias.chunks_exact(ROWS);
    let mut weight_groups = weights.chunks_exact(ROWS * n);
    for ((y, bias), weights) in (&mut y_groups)
        .zip(&mut bias_groups)
        .zip(&mut weight_groups)
    {
        if let (Ok(y), Ok(bias)) = (y.try_into(), bias.try_into()) {
            rows_block::<ROWS>(weights, bias, x, y);
        }
    }
    // The rows after the last whole group, one at a time.
    let tail = y_groups
        .into_remainder()
        .iter_mut()
        .zip(bias_groups.remainder())
        .zip(weight_groups.remainder().chunks_exact(n));
    for ((y, &bias), row) in tail {
        rows_block::<1>(row, &[bias], x, core::array::from_mut(y));
    }
}

/// `R` rows of the product at once: each row's sum starts at its bias and adds its products
/// in input order (the shared definition), lane by lane.
#[inline(always)]
fn rows_block<const R: usize>(weights: &[f32], bias: &[f32; R], x: &[Lanes], y: &mut [Lanes; R]) {
    let n = x.len();
    let mut acc: [Lanes; R] = bias.map(|b| [b; LANES]);
    let Some(rows) = weights.get(..R * n) else {
        return;
    };
    // Each row exactly `n` long, so indexing it by input below needs no check.
    let rows: [&[f32]; R] = core::array::from_fn(|r| &rows[r * n..(r + 1) * n]);
    for (j, xj) in x.iter().enumerate() {
        for (acc, row) in acc.iter_mut().zip(&rows) {
            let w = row[j];
            for (a, &xl) in acc.iter_mut().zip(xj) {
                *a += w * xl;
            }
        }
    }
    *y = acc;
}

#[inline(always)]
fn tanh_block_impl(values: &mut [Lanes]) {
    for row in values {
        for v in row.iter_mut() {
            *v = tanh_f32(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tether_shared::PolicyHead;
    use tether_shared::policy::{PolicyView, SdeHead};

    use super::*;

    fn spec(obs_dim: u8, hidden: &[u16], head: PolicyHead, normalize_obs: bool) -> PolicySpec {
        PolicySpec {
            obs_dim,
            hidden: heapless::Vec::from_slice(hidden).expect("at most four hidden layers"),
            head,
            normalize_obs,
        }
    }

    /// Every observation of `observations` through both passes, in blocks: outputs and
    /// features must be the shared pass's bits.
    fn assert_bit_identical(spec: &PolicySpec, params: &[f32], observations: &[Vec<f32>]) {
        let reference = PolicyView::new(spec, params).expect("parameters fit the spec");
        let batched = BatchedPolicy::new(spec, params).expect("parameters fit the spec");
        assert_eq!(batched.log_std(), reference.log_std());
        let mut scratch = batched.scratch();
        let mut out = vec![[f32::NAN; LANES]; spec.output_dim()];
        let mut reference_scratch = vec![0.0; spec.scratch_len()];
        let mut reference_out = vec![0.0; spec.output_dim()];
        for block in observations.chunks(LANES) {
            let views: Vec<&[f32]> = block.iter().map(Vec::as_slice).collect();
            let features = batched
                .forward_block(&views, &mut scratch, &mut out)
                .expect("a block of observations that fit")
                .to_vec();
            for (lane, obs) in block.iter().enumerate() {
                let expected = reference
                    .forward_with_features(obs, &mut reference_scratch, &mut reference_out)
                    .expect("the reference runs");
                let bits = |values: &mut dyn Iterator<Item = f32>| -> Vec<u32> {
                    values.map(f32::to_bits).collect()
                };
                assert_eq!(
                    bits(&mut out.iter().map(|row| row[lane])),
                    bits(&mut reference_out.iter().copied()),
                    "output of observation {lane} of a block"
                );
                assert_eq!(
                    bits(&mut features.iter().map(|row| row[lane])),
                    bits(&mut expected.iter().copied()),
                    "features of observation {lane} of a block"
                );
            }
        }
    }

    fn head_strategy() -> impl Strategy<Value = PolicyHead> {
        prop_oneof![
            (1u8..=3).prop_map(|action_dim| PolicyHead::Gaussian { action_dim }),
            (2u8..=5).prop_map(|n| PolicyHead::Categorical { n }),
            (1u8..=2, any::<bool>()).prop_map(|(action_dim, full_std)| {
                PolicyHead::GaussianSde(SdeHead {
                    action_dim,
                    full_std,
                    use_expln: false,
                    resample_every: 4,
                })
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any shape (row counts that are and are not multiples of the row group, no
        /// hidden layer), any parameters of a trained policy's size and beyond (large
        /// weights drive `tanh` into its clamp), partial blocks: the device's bits.
        #[test]
        fn blocks_compute_the_shared_pass_bit_for_bit(
            obs_dim in 1u8..=9,
            hidden in prop::collection::vec(1u16..=11, 0..=3),
            head in head_strategy(),
            normalize_obs in any::<bool>(),
            seed in any::<u64>(),
            steps in 1usize..=40,
            weight_scale in prop_oneof![Just(0.3f32), Just(3.0f32)],
        ) {
            let spec = spec(obs_dim, &hidden, head, normalize_obs);
            let mut rng = tether_shared::seeds::SplitMix64::new(seed);
            let mut uniform = move || rng.next_unit() * 2.0 - 1.0;
            let params: Vec<f32> = (0..spec.param_count()).map(|_| weight_scale * uniform()).collect();
            let observations: Vec<Vec<f32>> = (0..steps)
                .map(|_| (0..obs_dim).map(|_| 4.0 * uniform()).collect())
                .collect();
            assert_bit_identical(&spec, &params, &observations);
        }
    }

    /// The qube preset's shape, on a full block and a partial one.
    #[test]
    fn the_qube_policy_is_computed_bit_for_bit() {
        let spec = spec(7, &[64, 64], PolicyHead::Gaussian { action_dim: 1 }, true);
        let params: Vec<f32> = (0..spec.param_count())
            .map(|i| ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 0.4)
            .collect();
        let observations: Vec<Vec<f32>> = (0..LANES + 5)
            .map(|s| {
                (0..7)
                    .map(|j| ((s * 31 + j * 17) % 23) as f32 * 0.3 - 3.0)
                    .collect()
            })
            .collect();
        assert_bit_identical(&spec, &params, &observations);
    }

    #[test]
    fn wrong_sizes_are_errors() {
        let spec = spec(2, &[3], PolicyHead::Gaussian { action_dim: 1 }, false);
        let params = vec![0.1; spec.param_count()];
        assert!(matches!(
            BatchedPolicy::new(&spec, &params[1..]),
            Err(ForwardError::ParamLength { .. })
        ));
        let policy = BatchedPolicy::new(&spec, &params).expect("parameters fit");
        let mut scratch = policy.scratch();
        let mut out = vec![[0.0; LANES]; 1];
        let short: &[f32] = &[1.0];
        assert_eq!(
            policy.forward_block(&[short], &mut scratch, &mut out).err(),
            Some(ForwardError::ObsLength)
        );
        let obs: &[f32] = &[1.0, 2.0];
        let too_many = vec![obs; LANES + 1];
        assert_eq!(
            policy
                .forward_block(&too_many, &mut scratch, &mut out)
                .err(),
            Some(ForwardError::ObsLength)
        );
        let mut no_out: Vec<Lanes> = Vec::new();
        assert_eq!(
            policy
                .forward_block(&[obs], &mut scratch, &mut no_out)
                .err(),
            Some(ForwardError::OutputLength)
        );
    }
}
