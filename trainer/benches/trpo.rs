//! One full TRPO iteration on a recorded-style 2048-transition pendulum batch ([64, 64]
//! policy and value networks, pendulum preset: 15 CG iterations, line search, 15 value
//! epochs of 128), its achieved GFLOP/s from a FLOP model over the shapes, and nalgebra's
//! throughput on one 512³ matrix product (f64 and f32) in the same run for comparison.
//!
//! Run: `cargo bench -p tether-trainer --bench trpo -- --warm-up-time 1 --measurement-time 5`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nalgebra::DMatrix;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tether_shared::message::{RecordAction, RecordLayout, TransitionRecords};
use tether_trainer::training::preset::Preset;
use tether_trainer::trpo::batch::{RolloutBatch, Trajectory};
use tether_trainer::trpo::distribution::ActionDistribution;
use tether_trainer::trpo::hyperparams::TrpoConfig;
use tether_trainer::trpo::mlp::{Mlp, standard_normal};
use tether_trainer::trpo::{Trpo, UpdateReport, UpdateTimings};

const OBS_DIM: usize = 3;
const EPISODES: usize = 10;
const TRANSITIONS: usize = 2048;

/// A deterministic pendulum-like batch: Pendulum-v1 dynamics (dt 0.05 s, g 10, m = l = 1,
/// torque ±2) driven by Gaussian torques, reward −(θ² + 0.1·θ̇² + 0.001·u²), 10 episodes
/// of 204–205 steps, each truncated (time limit) with its final observation.
fn pendulum_batch(seed: u64) -> RolloutBatch {
    let layout = RecordLayout::new(OBS_DIM as u8, RecordAction::Continuous { dim: 1 });
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let observe = |theta: f64, omega: f64| [theta.cos() as f32, theta.sin() as f32, omega as f32];
    let mut batch = RolloutBatch::new(layout);
    for e in 0..EPISODES {
        let steps = TRANSITIONS / EPISODES + usize::from(e < TRANSITIONS % EPISODES);
        let mut theta: f64 = rng.random_range(-std::f64::consts::PI..std::f64::consts::PI);
        let mut omega: f64 = rng.random_range(-1.0..1.0);
        // Records: observation, action, reward, log-probability (unused by the learner).
        let mut values = Vec::with_capacity(steps * layout.width());
        for _ in 0..steps {
            let u = standard_normal(&mut rng);
            let torque = u.clamp(-2.0, 2.0);
            let wrapped = (theta + std::f64::consts::PI).rem_euclid(std::f64::consts::TAU)
                - std::f64::consts::PI;
            values.extend(observe(theta, omega));
            values.push(u as f32);
            values.push(-(wrapped.powi(2) + 0.1 * omega.powi(2) + 0.001 * torque.powi(2)) as f32);
            values.push(0.0);
            omega = (omega + (15.0 * theta.sin() + 3.0 * torque) * 0.05).clamp(-8.0, 8.0);
            theta += omega * 0.05;
        }
        let mut episode = Trajectory::new(layout);
        episode
            .extend(TransitionRecords::new_checked(layout, &values).expect("finite records"))
            .expect("same layout");
        episode
            .end_truncated(&observe(theta, omega))
            .expect("finite final observation");
        batch.push(&episode).expect("same layout");
    }
    batch
}

/// FLOPs of one update from the shapes (multiply-add = 2 FLOPs; tanh, bias, head and
/// vector operations are not counted, so this is a lower bound). Per sample, with P the
/// multiply-adds of a forward pass and F the first layer's share:
/// forward 2P; VJP 2P (weight gradients) + 2(P − F) (input gradients); JVP the same.
/// An update: V(s) and old π forward; the surrogate-gradient VJP; the Fisher's forward
/// (on N / sub_sampling samples) and one JVP + VJP per CG iteration plus one for sᵀFs;
/// one forward per line-search candidate and one for the entropy; the value fit's
/// forward + VJP over every sample per epoch (its explained variance reuses V(s) from the
/// advantage pass).
fn update_flops(config: &TrpoConfig, report: &UpdateReport) -> f64 {
    let policy = Mlp::new(OBS_DIM, &config.policy_hidden, 1);
    let value = Mlp::new(OBS_DIM, &config.value_hidden, 1);
    let per_sample = |mlp: &Mlp| {
        let p = mlp.multiply_adds_per_sample() as f64;
        let first = (OBS_DIM * mlp.hidden_sizes()[0]) as f64;
        (2.0 * p, 4.0 * p - 2.0 * first)
    };
    let (pf, pb) = per_sample(&policy);
    let (vf, vb) = per_sample(&value);
    let n = report.samples as f64;
    let fisher_n = n / config.sub_sampling_factor as f64;
    let policy_forwards = 2.0 + report.line_search_steps as f64 + 1.0;
    let fvps = report.cg_iterations as f64 + 1.0;
    n * (vf + pf * policy_forwards + pb)
        + fisher_n * (pf + fvps * 2.0 * pb)
        + n * config.n_critic_updates as f64 * (vf + vb)
}

fn learner(config: &TrpoConfig) -> Trpo {
    Trpo::new(
        OBS_DIM,
        ActionDistribution::DiagGaussian { action_dim: 1 },
        config.clone(),
        0,
    )
    .expect("pendulum preset is valid")
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Average time split over a few updates, printed for the report.
fn print_time_split(config: &TrpoConfig, batch: &RolloutBatch, threads: usize) -> UpdateReport {
    let runs = 10;
    let mut total = UpdateTimings::default();
    let mut last = UpdateReport::default();
    pool(threads).install(|| {
        for _ in 0..runs {
            let report = learner(config).update(batch).expect("valid batch");
            total.gradient_seconds += report.timings.gradient_seconds / runs as f64;
            total.cg_seconds += report.timings.cg_seconds / runs as f64;
            total.line_search_seconds += report.timings.line_search_seconds / runs as f64;
            total.value_fit_seconds += report.timings.value_fit_seconds / runs as f64;
            last = report;
        }
    });
    let sum = total.gradient_seconds
        + total.cg_seconds
        + total.line_search_seconds
        + total.value_fit_seconds;
    eprintln!(
        "time split ({threads} thread(s)), ms: gradient {:.2}, cg {:.2}, line search {:.2}, value fit {:.2}; total {:.2}",
        1e3 * total.gradient_seconds,
        1e3 * total.cg_seconds,
        1e3 * total.line_search_seconds,
        1e3 * total.value_fit_seconds,
        1e3 * sum
    );
    eprintln!(
        "update: cg_iterations {}, line search backtracks {}, accepted {}, kl {:.4}, FLOPs {:.3e}",
        last.cg_iterations,
        last.line_search_steps,
        last.accepted,
        last.kl,
        update_flops(config, &last)
    );
    last
}

fn trpo_iteration(c: &mut Criterion) {
    let config = Preset::named("pendulum").expect("known plant").trpo;
    let batch = pendulum_batch(0);
    assert_eq!(batch.len(), TRANSITIONS);
    let report = print_time_split(&config, &batch, 1);
    print_time_split(&config, &batch, 2);
    let flops = update_flops(&config, &report);

    let mut group = c.benchmark_group("trpo_iteration");
    group.throughput(Throughput::Elements(flops as u64));
    group.sample_size(10);
    for threads in [1, 2] {
        let threads_pool = pool(threads);
        let fresh = learner(&config);
        group.bench_function(format!("pendulum_2048_threads_{threads}"), |b| {
            b.iter_batched(
                || fresh.clone(),
                |mut trpo| threads_pool.install(|| black_box(trpo.update(&batch))),
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();

    let n = 512;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = DMatrix::from_fn(n, n, |_, _| standard_normal(&mut rng));
    let b_matrix = DMatrix::from_fn(n, n, |_, _| standard_normal(&mut rng));
    let mut group = c.benchmark_group("gemm_reference");
    group.throughput(Throughput::Elements(2 * (n as u64).pow(3)));
    group.sample_size(10);
    group.bench_function("nalgebra_dmatrix_f64_512", |bench| {
        bench.iter(|| black_box(&a * &b_matrix))
    });
    // The update's large products run in f32 (`Precision::Single`): its fair ceiling is the
    // single-precision kernel, about twice the f64 one.
    let (a32, b32) = (a.cast::<f32>(), b_matrix.cast::<f32>());
    group.bench_function("nalgebra_dmatrix_f32_512", |bench| {
        bench.iter(|| black_box(&a32 * &b32))
    });
    group.finish();
}

criterion_group!(benches, trpo_iteration);
criterion_main!(benches);
