//! How high a return is reachable on a QUBE plant: searches for a good swing-up and
//! balance on the firmware's plant model with given parameters, and prints the returns it
//! achieves.
//!
//! The controller has two phases:
//!
//! 1. **Swing-up, open loop**: a piecewise-constant voltage sequence (`--segments` segments
//!    of `--segment-steps` control periods, each in ±6 V), the same sequence for every
//!    start state.
//! 2. **Balance, closed loop**: from the first step at which the measured pendulum angle is
//!    within `--catch-rad` of upright, a discrete LQR ([`Lqr`]) designed on that same
//!    plant's model linearised about upright (its parameters, its latency as commands in
//!    flight), whose weights are the reward's own quadratic expansion there. It sees the
//!    observation a policy sees (encoder angles, filtered and noisy velocities) and
//!    compensates the deadzone. If the sequence ends without a catch, the motor gets 0 V.
//!
//! The sequence is optimised by the cross-entropy method (seeded, deterministic whatever
//! the number of threads) for the mean return over reset seeds `0..--seeds`; each episode
//! is the plant's own: [`Plant::vary`] and [`Plant::reset`] with the seed, 1250 steps, the
//! plant's reward and termination. The best sequence is then also run from held-out
//! seeds. One JSON line per plant.
//!
//! **What the figures mean**: a controller that reaches them exists, so they are lower
//! bounds on the best return achievable on the plant. They do not prove that more is
//! impossible: a closed-loop swing-up, a longer search or another catch rule may do better.
//!
//! The search finds different local optima from different seeds and settings, so try a
//! few: on 2026-12-01 the best found came from `--segments 25` (1 s) on the nominal plant,
//! damping ×3 and the unseen plant, and from `--segments 30 --restarts 8` on the
//! heavy-and-slow corner, whose swing-up does not finish within 1 s. About 70 s of CPU per
//! plant and setting with the defaults. On the unseen plant the policies trained from
//! scratch did better (1092–1096) than this search (1086): there the bound is loose.
//!
//! Run (one plant, or all four when `--plant` is left out):
//! `cargo run --release -p tether-trainer --example qube_swing_up_bound -- --plant damping3`

use std::time::Instant;

use clap::Parser;
use nalgebra::{DMatrix, DVector, Matrix2, Vector2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use tether_firmware::plant::qube::QubePhysics;
use tether_firmware::plant::qube::{ARM_LIMIT, DT, EPISODE_STEPS, G, MAX_VOLTAGE, SUBSTEPS};
use tether_firmware::plant::{Action, Plant, Qube};
use tether_shared::message::{ParamSetting, PlantParams};

/// A plant of the evaluation grid: `[plant_params]` settings (SI units).
struct PlantCase {
    name: &'static str,
    settings: &'static [(&'static str, f32)],
}

const PLANTS: [PlantCase; 4] = [
    PlantCase {
        name: "nominal",
        settings: &[],
    },
    PlantCase {
        name: "damping3",
        settings: &[("arm_damping", 0.00081), ("pendulum_damping", 0.00015)],
    },
    PlantCase {
        name: "heavy-slow",
        settings: &[
            ("pendulum_mass", 0.0288),
            ("pendulum_length", 0.1548),
            ("arm_damping", 0.00081),
            ("torque_constant", 0.0378),
            ("arm_coulomb_friction", 0.002),
            ("latency_steps", 1.0),
        ],
    },
    PlantCase {
        name: "unseen",
        settings: &[
            ("arm_mass", 0.0684),
            ("arm_length", 0.1122),
            ("pendulum_mass", 0.03168),
            ("pendulum_length", 0.09288),
            ("arm_damping", 0.000891),
            ("pendulum_damping", 0.0000225),
            ("arm_coulomb_friction", 0.0022),
            ("motor_resistance", 6.804),
            ("torque_constant", 0.03402),
            ("back_emf_constant", 0.05082),
            ("latency_steps", 1.0),
            ("angle_noise_std", 0.0033),
            ("velocity_noise_std", 0.22),
            ("deadzone", 0.33),
        ],
    },
];

/// Search settings.
#[derive(Parser)]
struct Options {
    /// Plants to search (`nominal`, `damping3`, `heavy-slow`, `unseen`); all when absent.
    #[arg(long)]
    plant: Vec<String>,
    /// The sequence is optimised for the mean return over reset seeds `0..seeds`.
    #[arg(long, default_value_t = 8)]
    seeds: u64,
    /// The best sequence is also run from reset seeds `1000..1000 + held_out`.
    #[arg(long, default_value_t = 20)]
    held_out: u64,
    /// Cross-entropy iterations.
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Sequences sampled per iteration.
    #[arg(long, default_value_t = 96)]
    population: usize,
    /// Best sequences the next iteration's distribution is fitted to.
    #[arg(long, default_value_t = 10)]
    elites: usize,
    /// Control periods per segment of the open-loop sequence.
    #[arg(long, default_value_t = 10)]
    segment_steps: usize,
    /// Segments of the open-loop sequence. With 10-step segments, 25 make 1 s: enough for
    /// the nominal plant and damping ×3, where a longer sequence only made the search
    /// slower to converge; a slower plant needs more (a plant still swinging after 1 s
    /// cannot reach 1100 anyway).
    #[arg(long, default_value_t = 25)]
    segments: usize,
    /// Measured pendulum angle within which the LQR takes over, radians.
    #[arg(long, default_value_t = 0.6)]
    catch_rad: f64,
    /// Independent searches from search seeds `0..restarts`; the best one is kept (the
    /// method finds different local optima from different seeds).
    #[arg(long, default_value_t = 4)]
    restarts: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = Options::parse();
    if options.seeds == 0 || options.elites == 0 || options.elites > options.population {
        return Err("need --seeds >= 1 and 1 <= --elites <= --population".into());
    }
    if options.segment_steps == 0 || options.segments == 0 || options.restarts == 0 {
        return Err("need --segment-steps, --segments and --restarts >= 1".into());
    }
    for case in selected_plants(&options.plant)? {
        let started = Instant::now();
        let setup = Setup::of(case, options.segment_steps, options.catch_rad)?;
        let train: Vec<u64> = (0..options.seeds).collect();
        let (restart, sequence, history) = best_of_restarts(&setup, &train, &options);
        let held: Vec<u64> = (1000..1000 + options.held_out).collect();
        let rounded = |v: &[f64], scale: f64| -> Vec<f64> {
            v.iter().map(|x| (x * scale).round() / scale).collect()
        };
        println!(
            "{{\"plant\":\"{}\",\"lqr_gain\":{:?},\"best_restart\":{restart},\
             \"search_mean_by_iteration\":{:?},\"sequence_v\":{:?},\"optimised_seeds\":{},\
             \"held_out_seeds\":{},\"wall_s\":{:.1}}}",
            case.name,
            rounded(&setup.lqr.gain, 1e3),
            rounded(&history, 10.0),
            rounded(&sequence, 100.0),
            Returns::of(&setup, &sequence, &train).json(),
            Returns::of(&setup, &sequence, &held).json(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The plants named in `names` (all four when empty).
fn selected_plants(names: &[String]) -> Result<Vec<&'static PlantCase>, String> {
    if names.is_empty() {
        return Ok(PLANTS.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            PLANTS
                .iter()
                .find(|c| c.name == name.as_str())
                .ok_or_else(|| format!("unknown plant `{name}`"))
        })
        .collect()
}

/// The best of `--restarts` searches by mean return over `seeds`: its search seed, its
/// sequence and its best mean after each iteration.
fn best_of_restarts(setup: &Setup, seeds: &[u64], options: &Options) -> (u64, Vec<f64>, Vec<f64>) {
    let mut best: Option<(u64, Vec<f64>, Vec<f64>)> = None;
    for search_seed in 0..options.restarts {
        let (sequence, history) = search(setup, seeds, options, search_seed);
        let score = history.last().copied().unwrap_or(f64::NEG_INFINITY);
        let better = best
            .as_ref()
            .is_none_or(|b| score > b.2.last().copied().unwrap_or(f64::NEG_INFINITY));
        if better {
            best = Some((search_seed, sequence, history));
        }
    }
    best.unwrap_or_default()
}

/// A plant ready for episodes: the model with its parameters, and the controller's view
/// of it.
struct Setup {
    template: Qube,
    lqr: Lqr,
    /// Commands below this many volts do nothing; the LQR adds it to its commands.
    deadzone: f32,
    /// The amplifier's saturation, volts.
    vmax: f64,
    /// Control periods per segment of the open-loop sequence.
    segment_steps: usize,
    /// Measured pendulum angle within which the LQR takes over, radians.
    catch_rad: f64,
}

impl Setup {
    fn of(case: &PlantCase, segment_steps: usize, catch_rad: f64) -> Result<Self, String> {
        let mut message = PlantParams::default();
        for &(name, value) in case.settings {
            let setting = ParamSetting::new(name, Some(value), None)
                .ok_or_else(|| format!("parameter name `{name}` too long"))?;
            message
                .settings
                .push(setting)
                .map_err(|_| "too many settings".to_string())?;
        }
        let mut template = Qube::new();
        template
            .set_params(&message)
            .map_err(|e| format!("{}: refused: {e:?}", case.name))?;
        // No ranges: every episode draws the set values; the physics is the same for all.
        template.vary(0);
        let setting = |name: &str| {
            case.settings
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0.0, |&(_, v)| v)
        };
        Ok(Setup {
            lqr: Lqr::design(&template.physics(), setting("latency_steps") as usize),
            deadzone: setting("deadzone"),
            vmax: f64::from(template.physics().max_voltage),
            segment_steps,
            catch_rad,
            template,
        })
    }
}

/// One episode's return, and the step at which the LQR took over.
#[derive(Clone, Copy)]
struct Outcome {
    total: f64,
    caught_at: Option<usize>,
}

/// One episode from reset seed `seed`: `sequence` (volts per segment) until the catch, the
/// LQR after it.
fn episode(setup: &Setup, sequence: &[f64], seed: u64) -> Outcome {
    let mut plant = setup.template.clone();
    plant.vary(seed);
    plant.reset(seed);
    let mut obs = [0.0_f32; 6];
    // Commands issued and not yet applied, oldest first (the plant's latency queue).
    let mut in_flight = vec![0.0_f64; setup.lqr.latency];
    let (mut total, mut caught_at) = (0.0, None);
    for step in 0..EPISODE_STEPS as usize {
        plant.observe(&mut obs);
        let [s_th, c_th, s_al, c_al, th_dot, al_dot] = obs.map(f64::from);
        let alpha = s_al.atan2(c_al);
        if caught_at.is_none() && alpha.abs() < setup.catch_rad {
            caught_at = Some(step);
        }
        let caught = caught_at.is_some();
        let command = if caught {
            let state = [s_th.atan2(c_th), alpha, th_dot, al_dot];
            setup.lqr.command(state, &in_flight, setup.vmax)
        } else {
            sequence
                .get(step / setup.segment_steps)
                .copied()
                .unwrap_or(0.0)
        };
        let sent = through_deadzone_compensation(command as f32, setup.deadzone, caught);
        if !in_flight.is_empty() {
            // What will reach the motor: clamped, and nothing below the deadzone.
            let arriving = if sent.abs() < setup.deadzone {
                0.0
            } else {
                sent
            };
            in_flight.remove(0);
            in_flight.push(f64::from(arriving).clamp(-setup.vmax, setup.vmax));
        }
        let outcome = plant.actuate(Action::Continuous(&[sent]));
        total += f64::from(outcome.reward);
        if outcome.terminated {
            break;
        }
    }
    Outcome { total, caught_at }
}

/// The command to send for `volts` on a plant whose deadzone swallows commands below
/// `deadzone`: while balancing, small commands are pushed just past it (the open-loop
/// sequence is optimised as sent).
fn through_deadzone_compensation(volts: f32, deadzone: f32, balancing: bool) -> f32 {
    if balancing && deadzone > 0.0 && volts != 0.0 && volts.abs() < deadzone {
        deadzone.copysign(volts)
    } else {
        volts
    }
}

/// The cross-entropy method over open-loop sequences, its random numbers from
/// `search_seed`: the best sequence found (by mean return over `seeds`) and the best mean
/// after each iteration.
fn search(
    setup: &Setup,
    seeds: &[u64],
    options: &Options,
    search_seed: u64,
) -> (Vec<f64>, Vec<f64>) {
    let vmax = setup.vmax;
    let mut rng = ChaCha8Rng::seed_from_u64(search_seed);
    let segments = options.segments;
    let (mut mean, mut spread) = (vec![0.0; segments], vec![vmax / 2.0; segments]);
    let mut best: (f64, Vec<f64>) = (f64::NEG_INFINITY, vec![0.0; segments]);
    let mut history = Vec::new();
    for _ in 0..options.iterations {
        let mut candidates: Vec<Vec<f64>> = (0..options.population)
            .map(|_| {
                (0..segments)
                    .map(|i| (mean[i] + spread[i] * normal(&mut rng)).clamp(-vmax, vmax))
                    .collect()
            })
            .collect();
        // The best so far competes again, so the search never loses it.
        candidates[0].clone_from(&best.1);
        let scores: Vec<f64> = candidates
            .par_iter()
            .map(|c| {
                let total: f64 = seeds.iter().map(|&s| episode(setup, c, s).total).sum();
                total / seeds.len() as f64
            })
            .collect();
        let mut order: Vec<usize> = (0..candidates.len()).collect();
        order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        if scores[order[0]] > best.0 {
            best = (scores[order[0]], candidates[order[0]].clone());
        }
        history.push(best.0);
        let elites = &order[..options.elites];
        for i in 0..segments {
            let values = elites.iter().map(|&e| candidates[e][i]);
            let m = values.clone().sum::<f64>() / elites.len() as f64;
            let var = values.map(|v| (v - m) * (v - m)).sum::<f64>() / elites.len() as f64;
            mean[i] = m;
            // A floor keeps the search from freezing on a plateau of the return.
            spread[i] = var.sqrt().max(0.05);
        }
    }
    (best.1, history)
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u: f64 = 1.0 - rng.random::<f64>();
    let v: f64 = rng.random();
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Outcomes of one sequence from a list of reset seeds.
struct Returns(Vec<Outcome>);

impl Returns {
    fn of(setup: &Setup, sequence: &[f64], seeds: &[u64]) -> Self {
        Returns(
            seeds
                .par_iter()
                .map(|&s| episode(setup, sequence, s))
                .collect(),
        )
    }

    fn json(&self) -> String {
        if self.0.is_empty() {
            return "null".into();
        }
        let returns: Vec<f64> = self.0.iter().map(|o| o.total).collect();
        let n = returns.len() as f64;
        let mean = returns.iter().sum::<f64>() / n;
        let min = returns.iter().copied().fold(f64::INFINITY, f64::min);
        let max = returns.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let at_least_1100 = returns.iter().filter(|&&r| r >= 1100.0).count();
        let catches: Vec<f64> = self
            .0
            .iter()
            .filter_map(|o| o.caught_at)
            .map(|s| s as f64 * f64::from(DT))
            .collect();
        // JSON has no NaN: no catch, no mean.
        let catch_mean = match catches.len() {
            0 => "null".to_string(),
            n => format!("{:.3}", catches.iter().sum::<f64>() / n as f64),
        };
        format!(
            "{{\"mean\":{mean:.2},\"min\":{min:.2},\"max\":{max:.2},\"episodes\":{},\
             \"at_least_1100\":{at_least_1100},\"caught\":{},\"mean_catch_s\":{catch_mean}}}",
            returns.len(),
            catches.len()
        )
    }
}

/// A discrete-time LQR about upright, `u = −K z`, where `z` is the state
/// `[θ, α, θ̇, α̇]` (radians, 0 upright; rad/s) followed by the `latency` commands in flight
/// (volts, oldest first).
struct Lqr {
    gain: Vec<f64>,
    latency: usize,
}

impl Lqr {
    /// The LQR of the plant with `physics`, whose commands arrive `latency` control periods
    /// late. The weights are the reward's expansion about upright: `r ≈ 1 − α²/4 −
    /// 0.2 (θ/θmax)² − 0.1 (V/Vmax)²`, plus a small weight on the velocities that keeps
    /// the gains on the noisy velocity estimates moderate.
    fn design(physics: &QubePhysics, latency: usize) -> Self {
        let (a, b) = upright_model(physics);
        let n = 4 + latency;
        let mut az = DMatrix::zeros(n, n);
        let mut bz = DVector::zeros(n);
        az.view_mut((0, 0), (4, 4)).copy_from(&a);
        if latency == 0 {
            bz.rows_mut(0, 4).copy_from(&b);
        } else {
            // The oldest command in flight is the one applied this period.
            az.view_mut((0, 4), (4, 1)).copy_from(&b);
            for i in 4..n - 1 {
                az[(i, i + 1)] = 1.0;
            }
            bz[n - 1] = 1.0;
        }
        let arm = 0.2 / f64::from(ARM_LIMIT).powi(2);
        let mut q = DMatrix::zeros(n, n);
        for (i, w) in [arm, 0.25, 1e-4, 1e-4].into_iter().enumerate() {
            q[(i, i)] = w;
        }
        let r = 0.1 / f64::from(MAX_VOLTAGE).powi(2);
        Lqr {
            gain: riccati_gain(&az, &bz, &q, r).iter().copied().collect(),
            latency,
        }
    }

    /// The command for the measured `state` with `in_flight` commands, limited to ±`vmax`.
    fn command(&self, state: [f64; 4], in_flight: &[f64], vmax: f64) -> f64 {
        let u: f64 = -state
            .iter()
            .chain(in_flight)
            .zip(&self.gain)
            .map(|(x, k)| x * k)
            .sum::<f64>();
        u.clamp(-vmax, vmax)
    }
}

/// The plant's motion about upright at rest, linearised, over one control period exactly
/// as the model integrates it (semi-implicit Euler substeps, voltage held): `x' = A x + B V`
/// with `x = [θ, α, θ̇, α̇]`. Dry friction is left out.
fn upright_model(p: &QubePhysics) -> (DMatrix<f64>, DVector<f64>) {
    let f = f64::from;
    let (mr, lr, mp, lpl) = (
        f(p.arm_mass),
        f(p.arm_length),
        f(p.pendulum_mass),
        f(p.pendulum_length),
    );
    let (jr, lp, jp) = (mr * lr * lr / 12.0, lpl / 2.0, mp * lpl * lpl / 3.0);
    let (rm, kt, km) = (
        f(p.motor_resistance),
        f(p.torque_constant),
        f(p.back_emf_constant),
    );
    let mass = Matrix2::new(jr + mp * lr * lr, mp * lr * lp, mp * lr * lp, jp);
    let inverse = mass
        .try_inverse()
        .expect("the mass matrix is positive definite");
    // Accelerations = on_angles · [θ, α] + on_velocities · [θ̇, α̇] + on_volts · V.
    let on_angles = inverse * Matrix2::new(0.0, 0.0, 0.0, mp * f(G) * lp);
    let on_velocities = inverse
        * Matrix2::new(
            -(f(p.arm_damping) + kt * km / rm),
            0.0,
            0.0,
            -f(p.pendulum_damping),
        );
    let on_volts = inverse * Vector2::new(kt / rm, 0.0);
    let h = f(DT) / SUBSTEPS as f64;
    // One substep: v' = v + h·acc(x, V), then angles' = angles + h v'.
    let mut step = DMatrix::<f64>::identity(4, 4);
    let mut step_b = DVector::<f64>::zeros(4);
    for r in 0..2 {
        for c in 0..2 {
            step[(r, c)] += h * h * on_angles[(r, c)];
            step[(r, c + 2)] += h * h * on_velocities[(r, c)];
            step[(r + 2, c)] += h * on_angles[(r, c)];
            step[(r + 2, c + 2)] += h * on_velocities[(r, c)];
        }
        step[(r, r + 2)] += h;
        step_b[r] = h * h * on_volts[r];
        step_b[r + 2] = h * on_volts[r];
    }
    let (mut a, mut b) = (DMatrix::identity(4, 4), DVector::zeros(4));
    for _ in 0..SUBSTEPS {
        b = &step * b + &step_b;
        a = &step * a;
    }
    (a, b)
}

/// The gain of the infinite-horizon discrete LQR for `x' = A x + B u` and the cost
/// `Σ xᵀQx + r u²`, by iterating the Riccati recursion to its fixed point.
fn riccati_gain(a: &DMatrix<f64>, b: &DVector<f64>, q: &DMatrix<f64>, r: f64) -> DVector<f64> {
    let mut p = q.clone();
    let mut gain = DVector::zeros(a.nrows());
    for _ in 0..200_000 {
        let pb = &p * b;
        gain = (a.transpose() * &pb) / (r + b.dot(&pb));
        // The symmetric (Joseph) form of the recursion: `Q + r KᵀK + (A − BK)ᵀ P (A − BK)`
        // stays symmetric and positive semi-definite in floating point, where the shorter
        // `Q + AᵀP(A − BK)` drifts and diverges on this plant's slow arm mode.
        let closed = a - b * gain.transpose();
        let next = q + &gain * gain.transpose() * r + closed.transpose() * &p * &closed;
        let change = (&next - &p).amax();
        p = next;
        if change <= 1e-13 * p.amax() {
            break;
        }
    }
    gain
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The LQR holds the nominal plant up from a 0.1 rad tilt for a whole episode, near
    /// the reward's maximum (upright, arm centred, little voltage).
    #[test]
    fn the_lqr_balances_the_nominal_plant_from_a_small_tilt() {
        let setup = Setup::of(&PLANTS[0], 10, 0.3).expect("nominal plant");
        let mut plant = setup.template.clone();
        plant.set_state([0.1, 0.1, 0.0, 0.0]);
        let mut obs = [0.0_f32; 6];
        let mut total = 0.0;
        for _ in 0..EPISODE_STEPS {
            plant.observe(&mut obs);
            let [s_th, c_th, s_al, c_al, th_dot, al_dot] = obs.map(f64::from);
            let state = [s_th.atan2(c_th), s_al.atan2(c_al), th_dot, al_dot];
            let u = setup.lqr.command(state, &[], setup.vmax) as f32;
            let outcome = plant.actuate(Action::Continuous(&[u]));
            assert!(!outcome.terminated);
            total += f64::from(outcome.reward);
        }
        let [theta, alpha, _, _] = plant.state();
        assert!(
            alpha.abs() < 0.02 && theta.abs() < 0.1,
            "{:?}",
            plant.state()
        );
        assert!(total > 1240.0, "return {total}");
    }
}
