//! Exact Fisher-vector products of the policy, in Gauss–Newton form:
//! `F·v = (1/N) Σᵢ Jᵢᵀ Mᵢ Jᵢ v + damping·v`, where `Jᵢ` is the Jacobian of sample i's
//! distribution parameters with respect to θ and `Mᵢ` the Fisher of the distribution in
//! those parameters. Computed as a JVP (`J v`, batched), a per-sample multiply by `M`, and
//! a VJP (`Jᵀ ·`), all as matrix products over the batch. The Gaussian log-std block is
//! `2·I` (state-independent, so the same for every sample); a gSDE head's log-std block is
//! `(1/N) Σ Jᵢᵀ 2 Jᵢ` through each sample's features (`Policy::own_fisher_product`).
//!
//! The batch may be subsampled (every k-th sample) and is split into column chunks of a
//! fixed width that rayon processes in parallel; each chunk keeps its forward activations
//! (computed once per update and reused by every product of the conjugate-gradient solve)
//! and its own JVP/VJP buffers, so a product allocates only its result. The chunks'
//! partial products are summed in chunk order, so the result is bit-for-bit the same
//! whatever the number of threads (a resumed run on another pool size stays identical).

use std::sync::{Mutex, PoisonError};

use nalgebra::{DMatrix, DVector};
use rayon::prelude::*;

use super::mlp::PassScratch;
use super::policy::{Policy, PolicyEvaluation};

/// Columns per chunk (the last one may be narrower): wide enough that each chunk's
/// products run at full `matrixmultiply` speed, narrow enough that a 2048-sample batch
/// gives both cores of the project machine work. Fixed, not derived from the thread count,
/// so the summation order never depends on the machine.
const CHUNK_COLUMNS: usize = 512;

/// One chunk of the batch: its forward pass at θ_old and its reusable buffers.
#[derive(Debug)]
struct Chunk {
    evaluation: PolicyEvaluation,
    work: Mutex<ChunkWork>,
}

/// Buffers a chunk's product writes into; locked by the one task that owns the chunk
/// during a product (never contended).
#[derive(Debug, Default)]
struct ChunkWork {
    scratch: PassScratch,
    /// This chunk's `Σᵢ Jᵢᵀ Mᵢ Jᵢ v` over the MLP parameters.
    partial: Vec<f64>,
}

/// The Fisher of the policy at fixed parameters, as a linear operator.
#[derive(Debug)]
pub struct FisherVectorProduct<'a> {
    policy: &'a Policy,
    chunks: Vec<Chunk>,
    samples: usize,
    damping: f64,
}

impl<'a> FisherVectorProduct<'a> {
    /// The Fisher at `params` over `observations` (`obs_dim × N`), using every
    /// `sub_sampling_factor`-th sample (1 = all), with Tikhonov `damping` added.
    pub fn new(
        policy: &'a Policy,
        params: &'a [f64],
        observations: &DMatrix<f64>,
        sub_sampling_factor: usize,
        damping: f64,
    ) -> Self {
        let subsample = strided_columns(observations, sub_sampling_factor.max(1));
        let samples = subsample.ncols();
        let chunks = (0..samples)
            .step_by(CHUNK_COLUMNS)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let width = CHUNK_COLUMNS.min(samples - start);
                let columns = subsample.columns(start, width).into_owned();
                Chunk {
                    evaluation: policy.evaluate(params, &columns),
                    work: Mutex::new(ChunkWork::default()),
                }
            })
            .collect();
        Self {
            policy,
            chunks,
            samples,
            damping,
        }
    }

    /// Number of samples the products average over (after subsampling).
    #[cfg(test)]
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// `F·v`.
    pub fn apply(&self, v: &DVector<f64>) -> DVector<f64> {
        let (v_weights, v_head) = self.policy.split(v.as_slice());
        let mlp = self.policy.mlp();
        let head = self.policy.head();
        self.chunks.par_iter().for_each(|chunk| {
            let mut work = chunk.work.lock().unwrap_or_else(PoisonError::into_inner);
            let ChunkWork { scratch, partial } = &mut *work;
            let cache = chunk.evaluation.cache();
            let tangent = mlp.jvp_into(cache, v_weights, scratch);
            head.apply_output_fisher(chunk.evaluation.distribution(), tangent);
            // The VJP reads the tangent while reusing the scratch: copy it out first.
            let tangent = tangent.to_vec();
            partial.resize(mlp.parameter_count(), 0.0);
            mlp.vjp_into(cache, &tangent, partial, scratch);
        });
        let mut mlp_part = vec![0.0; mlp.parameter_count()];
        for chunk in &self.chunks {
            let work = chunk.work.lock().unwrap_or_else(PoisonError::into_inner);
            for (sum, x) in mlp_part.iter_mut().zip(&work.partial) {
                *sum += x;
            }
        }
        let inv_n = 1.0 / self.samples.max(1) as f64;
        let own_part = self.policy.own_fisher_product(
            self.chunks.iter().map(|chunk| &chunk.evaluation),
            v_head,
            self.samples,
        );
        DVector::from_iterator(
            v.len(),
            mlp_part
                .iter()
                .map(|x| x * inv_n)
                .chain(own_part)
                .zip(v.iter())
                .map(|(fv, v)| fv + self.damping * v),
        )
    }
}

/// Columns 0, k, 2k, … of a matrix.
pub(crate) fn strided_columns(matrix: &DMatrix<f64>, every: usize) -> DMatrix<f64> {
    if every <= 1 {
        return matrix.clone();
    }
    let indices: Vec<usize> = (0..matrix.ncols()).step_by(every).collect();
    matrix.select_columns(indices.iter())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trpo::distribution::ActionDistribution;
    use crate::trpo::mlp::standard_normal;
    use crate::trpo::surrogate::mean_kl_gradient;
    use crate::trpo::surrogate::tests::{HEADS, fixture};
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn random_vector(n: usize, seed: u64) -> DVector<f64> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        DVector::from_fn(n, |_, _| standard_normal(&mut rng))
    }

    /// Every head on one chunk, and the gSDE heads (whose own block is summed chunk by
    /// chunk) on two: `F·v` is the finite difference of the mean KL's gradient along `v`.
    /// A gSDE head's features are constants to the learner, so they are held at θ_old.
    #[test]
    fn fvp_matches_finite_differences_of_the_kl_gradient_at_the_old_parameters() {
        let one_chunk = HEADS.iter().map(|&head| (head, 20));
        let two_chunks = HEADS[2..].iter().map(|&head| (head, CHUNK_COLUMNS + 37));
        for (head, n) in one_chunk.chain(two_chunks) {
            let fx = fixture(head, n, 21);
            let params = fx.policy.parameters().clone();
            let old = fx.policy.evaluate(params.as_slice(), &fx.observations);
            let v = random_vector(params.len(), 5);
            let fvp =
                FisherVectorProduct::new(&fx.policy, params.as_slice(), &fx.observations, 1, 0.0);
            assert_eq!(fvp.chunks.len(), n.div_ceil(CHUNK_COLUMNS));
            let analytic = fvp.apply(&v);
            let eps = 1e-5;
            let grad_at = |p: DVector<f64>| {
                let new = fx
                    .policy
                    .evaluate_holding_features(p.as_slice(), &fx.observations, &old);
                mean_kl_gradient(&fx.policy, p.as_slice(), &old, &new)
            };
            let numeric = (grad_at(&params + &v * eps) - grad_at(&params - &v * eps)) / (2.0 * eps);
            approx::assert_abs_diff_eq!(analytic, numeric, epsilon = 1e-6);
            if let ActionDistribution::StateDependent(_) = head {
                // The head's block is not the state-independent Gaussian's 2·I.
                let (start, own) = (
                    fx.policy.mlp().parameter_count(),
                    head.own_parameter_count(),
                );
                let naive = v.rows(start, own) * 2.0;
                assert!((analytic.rows(start, own) - naive).amax() > 1e-3);
            }
        }
    }

    #[test]
    fn damping_adds_a_multiple_of_the_vector() {
        let fx = fixture(HEADS[0], 10, 22);
        let params = fx.policy.parameters().as_slice();
        let v = random_vector(params.len(), 6);
        let plain =
            FisherVectorProduct::new(&fx.policy, params, &fx.observations, 1, 0.0).apply(&v);
        let damped =
            FisherVectorProduct::new(&fx.policy, params, &fx.observations, 1, 0.1).apply(&v);
        approx::assert_abs_diff_eq!(damped, plain + &v * 0.1, epsilon = 1e-12);
    }

    #[test]
    fn subsampled_fvp_equals_the_full_fvp_on_the_subsample() {
        for head in HEADS {
            let fx = fixture(head, 31, 23);
            let params = fx.policy.parameters().as_slice();
            let v = random_vector(params.len(), 7);
            let sub = FisherVectorProduct::new(&fx.policy, params, &fx.observations, 4, 0.05);
            assert_eq!(sub.samples(), 8);
            let picked = strided_columns(&fx.observations, 4);
            let full_on_subsample = FisherVectorProduct::new(&fx.policy, params, &picked, 1, 0.05);
            approx::assert_abs_diff_eq!(
                sub.apply(&v),
                full_on_subsample.apply(&v),
                epsilon = 1e-14
            );
        }
    }

    #[test]
    fn chunked_products_equal_the_single_chunk_product() {
        // 600 samples in two chunks versus one JVP/VJP over the whole batch.
        let fx = fixture(HEADS[0], 600, 24);
        let params = fx.policy.parameters().as_slice();
        let v = random_vector(params.len(), 8);
        let pool = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool")
        };
        let product = |threads| {
            pool(threads).install(|| {
                FisherVectorProduct::new(&fx.policy, params, &fx.observations, 1, 0.1).apply(&v)
            })
        };
        let serial = product(1);
        assert_eq!(
            FisherVectorProduct::new(&fx.policy, params, &fx.observations, 1, 0.1)
                .chunks
                .len(),
            2
        );
        let whole = {
            let mlp = fx.policy.mlp();
            let eval = fx.policy.evaluate(params, &fx.observations);
            let (v_weights, _) = fx.policy.split(v.as_slice());
            let mut tangent = mlp.jvp(eval.cache(), v_weights);
            HEADS[0].apply_output_fisher(eval.distribution(), tangent.as_mut_slice());
            mlp.vjp(eval.cache(), &tangent) / 600.0 + v.rows(0, mlp.parameter_count()) * 0.1
        };
        approx::assert_relative_eq!(
            serial.rows(0, whole.len()).into_owned(),
            whole,
            max_relative = 1e-12,
            epsilon = 1e-14
        );
        // The chunks' sum is ordered: any pool size gives the same bits.
        for threads in [2, 3] {
            let parallel = product(threads);
            assert!(
                serial
                    .iter()
                    .zip(parallel.iter())
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// uᵀFv = vᵀFu and vᵀFv ≥ 0 (≥ damping·|v|²) on random vectors.
        #[test]
        fn fvp_is_symmetric_and_positive_semidefinite(seed in 0u64..1000, head_index in 0usize..HEADS.len()) {
            let fx = fixture(HEADS[head_index], 12, seed);
            let params = fx.policy.parameters().as_slice();
            let fvp = FisherVectorProduct::new(&fx.policy, params, &fx.observations, 1, 0.0);
            let u = random_vector(params.len(), seed + 1);
            let v = random_vector(params.len(), seed + 2);
            let (fu, fv) = (fvp.apply(&u), fvp.apply(&v));
            let (ufv, vfu) = (u.dot(&fv), v.dot(&fu));
            prop_assert!((ufv - vfu).abs() <= 1e-10 * (1.0 + ufv.abs()), "{ufv} vs {vfu}");
            prop_assert!(v.dot(&fv) >= -1e-12);
            prop_assert!(u.dot(&fu) >= -1e-12);
        }
    }
}
