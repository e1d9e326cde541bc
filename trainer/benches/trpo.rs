//! One full TRPO iteration per plant preset on a batch of the plant model's own
//! transitions: pendulum (2048 transitions, [64, 64] networks, 15 CG iterations, line
//! search, 15 value epochs of 128) and qube (20 000 transitions, the qube preset), with the
//! achieved GFLOP/s from a FLOP model over the shapes, and nalgebra's throughput on one 512³
//! matrix product (f64 and f32) in the same run for comparison.
//!
//! Run: `cargo bench -p tether-trainer --bench trpo -- --warm-up-time 1 --measurement-time 5`
//! (`-- qube` or `-- pendulum` selects one plant).

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use nalgebra::DMatrix;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tether_firmware::plant::{Action, AnyPlant, Plant};
use tether_shared::message::{RecordLayout, TransitionRecords};
use tether_shared::plant::ActionSpace;
use tether_trainer::training::preset::Preset;
use tether_trainer::trpo::batch::{RolloutBatch, Trajectory};
use tether_trainer::trpo::distribution::ActionDistribution;
use tether_trainer::trpo::hyperparams::TrpoConfig;
use tether_trainer::trpo::mlp::{Mlp, standard_normal};
use tether_trainer::trpo::{Trpo, UpdateReport, UpdateTimings};

/// A benchmarked plant: its model, its preset, and the batch size of one iteration.
struct Case {
    plant: &'static str,
    transitions: usize,
}

const CASES: [Case; 2] = [
    Case {
        plant: "pendulum",
        transitions: 2048,
    },
    Case {
        plant: "qube",
        transitions: 20_000,
    },
];

/// `transitions` steps of the plant model driven by Gaussian actions (standard deviation a
/// sixth of the action range, as an early policy explores), in episodes of the plant's step
/// limit (or until it terminates), the last one cut by the batch and truncated with its
/// final observation. Deterministic in `seed`.
fn plant_batch(name: &str, transitions: usize, seed: u64) -> (RolloutBatch, usize) {
    let mut plant = AnyPlant::by_name(name).expect("a plant model");
    let description = plant.description();
    let ActionSpace::Continuous { low, high } = &description.action else {
        panic!("the benchmark plants have continuous actions");
    };
    let (low, high) = (low[0], high[0]);
    let layout = RecordLayout::of_plant(&description);
    let obs_dim = usize::from(description.obs_dim);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut batch = RolloutBatch::new(layout);
    let mut obs = vec![0.0f32; obs_dim];
    let mut episode_seed = seed;
    while batch.len() < transitions {
        plant.reset(episode_seed);
        episode_seed += 1;
        let limit = (description.episode_steps as usize).min(transitions - batch.len());
        // Records: observation, action, reward, log-probability (unused by the learner).
        let mut values = Vec::with_capacity(limit * layout.width());
        let mut terminated = false;
        for _ in 0..limit {
            plant.observe(&mut obs);
            let action = (0.5 * (low + high)
                + (high - low) / 6.0 * standard_normal(&mut rng) as f32)
                .clamp(low, high);
            let outcome = plant.actuate(Action::Continuous(&[action]));
            values.extend_from_slice(&obs);
            values.extend([action, outcome.reward, 0.0]);
            if outcome.terminated {
                terminated = true;
                break;
            }
        }
        let mut episode = Trajectory::new(layout);
        episode
            .extend(TransitionRecords::new_checked(layout, &values).expect("finite records"))
            .expect("same layout");
        if !terminated {
            plant.observe(&mut obs);
            episode
                .end_truncated(&obs)
                .expect("finite final observation");
        }
        batch.push(&episode).expect("same layout");
    }
    (batch, obs_dim)
}

/// FLOPs of one update from the shapes (multiply-add = 2 FLOPs; tanh, bias, head and
/// vector operations are not counted, so this is a lower bound). Per sample, with P the
/// multiply-adds of a forward pass and F the first layer's share:
/// forward 2P; VJP 2P (weight gradients) + 2(P − F) (input gradients); JVP the same.
/// An update: V(s) and old π forward; the surrogate-gradient VJP; the Fisher's forward
/// (on N / sub_sampling samples) and one JVP + VJP per CG iteration plus one for sᵀFs;
/// one forward per line-search candidate; the value fit's forward + VJP over every sample
/// per epoch (its explained variance reuses V(s) from the advantage pass).
fn update_flops(obs_dim: usize, config: &TrpoConfig, report: &UpdateReport) -> f64 {
    let policy = Mlp::new(obs_dim, &config.policy_hidden, 1);
    let value = Mlp::new(obs_dim, &config.value_hidden, 1);
    let per_sample = |mlp: &Mlp| {
        let p = mlp.multiply_adds_per_sample() as f64;
        let first = (obs_dim * mlp.hidden_sizes()[0]) as f64;
        (2.0 * p, 4.0 * p - 2.0 * first)
    };
    let (pf, pb) = per_sample(&policy);
    let (vf, vb) = per_sample(&value);
    let n = report.samples as f64;
    let fisher_n = (n / config.sub_sampling_factor as f64).ceil();
    let policy_forwards = 1.0 + (report.line_search_steps as f64 + 1.0);
    let fvps = report.cg_iterations as f64 + 1.0;
    n * (vf + pf * policy_forwards + pb)
        + fisher_n * (pf + fvps * 2.0 * pb)
        + n * config.n_critic_updates as f64 * (vf + vb)
}

fn learner(obs_dim: usize, config: &TrpoConfig) -> Trpo {
    Trpo::new(
        obs_dim,
        ActionDistribution::DiagGaussian { action_dim: 1 },
        config.clone(),
        0,
    )
    .expect("the preset is valid")
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

/// Average time split over a few updates, printed for the report.
fn print_time_split(
    name: &str,
    obs_dim: usize,
    config: &TrpoConfig,
    batch: &RolloutBatch,
    threads: usize,
) -> UpdateReport {
    let runs = 10;
    let mut total = UpdateTimings::default();
    let mut last = UpdateReport::default();
    pool(threads).install(|| {
        for _ in 0..runs {
            let report = learner(obs_dim, config).update(batch).expect("valid batch");
            total.gradient_seconds += report.timings.gradient_seconds / runs as f64;
            total.cg_seconds += report.timings.cg_seconds / runs as f64;
            total.line_search_seconds += report.timings.line_search_seconds / runs as f64;
            total.value_fit_seconds += report.timings.value_fit_seconds / runs as f64;
            last = report;
        }
    });
    eprintln!(
        "{name}: time split ({threads} thread(s)), ms: gradient {:.2}, cg {:.2}, line search {:.2}, value fit {:.2} (beside the policy step)",
        1e3 * total.gradient_seconds,
        1e3 * total.cg_seconds,
        1e3 * total.line_search_seconds,
        1e3 * total.value_fit_seconds,
    );
    eprintln!(
        "{name}: cg_iterations {}, line search backtracks {}, accepted {}, kl {:.4}, FLOPs {:.3e}",
        last.cg_iterations,
        last.line_search_steps,
        last.accepted,
        last.kl,
        update_flops(obs_dim, config, &last)
    );
    last
}

fn trpo_iteration(c: &mut Criterion) {
    let mut group = c.benchmark_group("trpo_iteration");
    group.sample_size(10);
    for case in CASES {
        let config = Preset::named(case.plant).expect("known plant").trpo;
        let (batch, obs_dim) = plant_batch(case.plant, case.transitions, 0);
        let report = print_time_split(case.plant, obs_dim, &config, &batch, 1);
        print_time_split(case.plant, obs_dim, &config, &batch, 2);
        group.throughput(Throughput::Elements(
            update_flops(obs_dim, &config, &report) as u64,
        ));
        for threads in [1, 2] {
            let threads_pool = pool(threads);
            let fresh = learner(obs_dim, &config);
            let id = format!("{}_{}_threads_{threads}", case.plant, case.transitions);
            group.bench_function(id, |b| {
                b.iter_batched(
                    || fresh.clone(),
                    |mut trpo| threads_pool.install(|| black_box(trpo.update(&batch))),
                    BatchSize::LargeInput,
                )
            });
        }
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
    // The update's large products run in f32: its fair ceiling is the single-precision
    // kernel, about twice the f64 one.
    let (a32, b32) = (a.cast::<f32>(), b_matrix.cast::<f32>());
    group.bench_function("nalgebra_dmatrix_f32_512", |bench| {
        bench.iter(|| black_box(&a32 * &b32))
    });
    group.finish();
}

criterion_group!(benches, trpo_iteration);
criterion_main!(benches);
