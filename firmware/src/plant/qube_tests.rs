//! Physical sanity tests of the QUBE model (included from `qube.rs`).

extern crate std;

use super::*;
use crate::plant::params::{TestSetting, plant_params};

/// Pendulum angle measured from hanging down, in `[-π, π)`.
fn from_hanging(alpha: f32) -> f32 {
    wrap_angle(alpha - PI)
}

#[test]
fn description_is_valid_and_states_the_voltage_limit() {
    let d = Qube::new().description();
    assert!(d.validate().is_ok());
    assert_eq!(d.name.as_str(), "qube");
    assert_eq!(d.obs_dim, 6);
    assert_eq!(d.control_rate_hz, 250.0);
    assert_eq!(d.episode_steps, 1250);
    assert_eq!(d.action, symmetric_1d(MAX_VOLTAGE));
    assert_eq!(MAX_VOLTAGE, 6.0);
}

#[test]
fn reset_hangs_near_rest_deterministically() {
    let mut q = Qube::new();
    for seed in 0..50 {
        q.reset(seed);
        let s = q.state();
        assert!(s[0].abs() <= 0.05 && from_hanging(s[1]).abs() <= 0.05);
        assert!(s[2].abs() <= 0.05 && s[3].abs() <= 0.05);
        let mut obs = [0.0; 6];
        q.observe(&mut obs);
        assert!(obs[3] < -0.99, "cos α should read hanging: {obs:?}");
        assert_eq!((obs[4], obs[5]), (0.0, 0.0));
        let mut again = Qube::new();
        again.reset(seed);
        assert_eq!(again, q);
    }
}

#[test]
fn encoders_quantise_to_2048_counts_per_revolution() {
    let mut q = Qube::with_state([0.3, 2.0, 1.0, -3.0]);
    for _ in 0..300 {
        q.actuate(Action::Continuous(&[1.0]));
        let [theta, alpha, ..] = q.state();
        let [theta_m, alpha_m, ..] = q.measured();
        for (m, t) in [(theta_m, theta), (alpha_m, alpha)] {
            let counts = m / COUNT_RAD;
            assert!(
                (counts - libm::roundf(counts)).abs() < 1e-3,
                "{m} not on a count"
            );
            assert!(
                wrap_angle(m - t).abs() <= 0.5 * COUNT_RAD + 1e-5,
                "{m} vs {t}"
            );
        }
    }
}

#[test]
fn velocity_estimate_tracks_the_true_velocity() {
    // Free swing after release near upright; the estimate lags (low-pass) and is quantised,
    // but must follow the true velocity closely.
    let mut q = Qube::with_state([0.0, 0.3, 0.0, 0.0]);
    let (mut err2, mut true2) = (0.0f32, 0.0f32);
    for _ in 0..1250 {
        q.actuate(Action::Continuous(&[0.0]));
        let est = q.measured()[3];
        let truth = q.state()[3];
        err2 += (est - truth) * (est - truth);
        true2 += truth * truth;
    }
    let ratio = libm::sqrtf(err2 / true2);
    assert!(ratio < 0.3, "relative RMS velocity error {ratio}");
}

#[test]
fn released_near_upright_falls_and_oscillates_with_decaying_amplitude() {
    let mut q = Qube::with_state([0.0, 0.05, 0.0, 0.0]);
    let mut amplitude = [0.0f32; 5]; // largest |α − π| in each second
    let mut crossings = 0;
    let mut last = from_hanging(q.state()[1]);
    for step in 0..1250 {
        q.actuate(Action::Continuous(&[0.0]));
        let dev = from_hanging(q.state()[1]);
        if step >= 250 && dev.signum() != last.signum() {
            crossings += 1;
        }
        last = dev;
        let second = step / 250;
        amplitude[second] = amplitude[second].max(dev.abs());
    }
    // It fell: after the first second it swings about hanging down, never back near upright.
    assert!(amplitude[1] < PI - 0.3, "{amplitude:?}");
    // It oscillates (about 1.7 Hz: a few dozen sign changes over 4 s) ...
    assert!(crossings >= 10, "{crossings} crossings");
    // ... with decaying amplitude.
    for w in amplitude[1..].windows(2) {
        assert!(w[1] < w[0], "{amplitude:?}");
    }
    assert!(
        amplitude[4] > 2.0 * COUNT_RAD,
        "still swinging: {amplitude:?}"
    );
}

#[test]
fn energy_never_grows_without_input() {
    let mut rng = SplitMix64::new(99);
    let scale = 2.0 * MP * G * LP_CM; // upright at rest
    for _ in 0..20 {
        let state = [
            rng.uniform(-1.0, 1.0),
            rng.uniform(-PI, PI),
            rng.uniform(-5.0, 5.0),
            rng.uniform(-10.0, 10.0),
        ];
        let mut q = Qube::with_state(state);
        let e0 = q.energy();
        let mut peak = e0;
        for _ in 0..1250 {
            q.actuate(Action::Continuous(&[0.0]));
            peak = peak.max(q.energy());
        }
        // Symplectic Euler's bounded energy error: far below 1 % of the swing-up energy.
        assert!(peak <= e0 + 0.01 * scale, "{state:?}: {e0} -> peak {peak}");
        assert!(q.energy() < e0, "{state:?}: no dissipation");
    }
}

/// LQR gains about upright, `u = -K x` with `x = [θ, α, θ̇, α̇]`, from the linearised model
/// discretised at 4 ms with Q = diag(5, 10, 0.1, 0.1), R = 1 (computed offline).
const LQR: [f32; 4] = [-2.04, -23.27, -0.95, -1.85];

/// A hand-written swing-up and balance controller that sees only the observation.
///
/// Away from upright it asks for an arm acceleration that pumps the pendulum's energy
/// towards its upright value (Åström–Furuta: `a = ±100 rad/s²` with the sign of
/// `−α̇ cos α`, bang-bang because the energy gain is large), minus a stiff centring term
/// `80 θ`, and turns that acceleration into volts by inverting the arm's own dynamics
/// (inertia, viscous damping, back-EMF; the pendulum's reaction is ignored). Within 0.5 rad
/// of upright it switches to LQR.
fn swing_up_controller(obs: &[f32; 6]) -> f32 {
    let [s_th, c_th, s_al, c_al, th_dot, al_dot] = *obs;
    let theta = libm::atan2f(s_th, c_th);
    let alpha = libm::atan2f(s_al, c_al);
    if alpha.abs() < 0.5 {
        return -(LQR[0] * theta + LQR[1] * alpha + LQR[2] * th_dot + LQR[3] * al_dot);
    }
    // Pendulum energy, 0 upright at rest (arm coupling neglected).
    let energy = 0.5 * JP * al_dot * al_dot + MP * G * LP_CM * (c_al - 1.0);
    let direction = if al_dot * c_al >= 0.0 { -1.0 } else { 1.0 };
    let pump = (1.0e5 * (0.0 - energy) * direction).clamp(-100.0, 100.0);
    let accel = pump - 80.0 * theta;
    RM / KT * ((JR + MP * LR * LR) * accel + DR * th_dot) + KM * th_dot
}

#[test]
fn energy_pumping_swing_up_reaches_upright() {
    let mut balanced = 0;
    for seed in 0..10 {
        let mut q = Qube::new();
        q.reset(seed);
        let mut obs = [0.0; 6];
        let mut first_upright = None;
        let mut ret = 0.0;
        let mut upright_last_second = true;
        for step in 0..EPISODE_STEPS as usize {
            q.observe(&mut obs);
            let u = swing_up_controller(&obs);
            // The plant clamps to ±MAX_VOLTAGE itself.
            let out = q.actuate(Action::Continuous(&[u]));
            assert!((0.0..=1.0).contains(&out.reward));
            if out.terminated {
                upright_last_second = false;
                break;
            }
            ret += out.reward;
            let alpha = q.state()[1];
            if first_upright.is_none() && alpha.abs() < 0.2 {
                first_upright = Some(step);
            }
            if step >= 1000 && alpha.abs() > 0.3 {
                upright_last_second = false;
            }
        }
        let first = first_upright.unwrap_or(usize::MAX);
        std::println!(
            "seed {seed}: upright (|α| < 0.2) at step {first} ({:.2} s), return {ret:.1}, \
             balanced to the end: {upright_last_second}",
            first as f32 * DT
        );
        assert!(first < 500, "seed {seed}: not near upright within 2 s");
        balanced += usize::from(upright_last_second);
    }
    // The crude LQR catch does not hold every arrival; most stay up for the last second.
    assert!(balanced >= 8, "only {balanced}/10 balanced");
}

#[test]
fn commands_are_limited_to_the_safe_range() {
    let mut q = Qube::with_state([0.0, PI, 0.0, 0.0]);
    q.actuate(Action::Continuous(&[12.0]));
    assert_eq!(q.voltage(), MAX_VOLTAGE);
    q.actuate(Action::Continuous(&[-12.0]));
    assert_eq!(q.voltage(), -MAX_VOLTAGE);
    q.actuate(Action::Continuous(&[f32::NAN]));
    assert_eq!(q.voltage(), 0.0);
    q.actuate(Action::Discrete(3));
    assert_eq!(q.voltage(), 0.0);
    q.actuate(Action::Continuous(&[2.0]));
    q.safe_state();
    assert_eq!(q.voltage(), 0.0);
}

#[test]
fn leaving_the_arm_range_terminates_and_then_holds_zero_volts() {
    let mut q = Qube::with_state([ARM_LIMIT - 0.05, PI, 3.0, 0.0]);
    let mut steps = 0;
    while !q.actuate(Action::Continuous(&[MAX_VOLTAGE])).terminated {
        steps += 1;
        assert!(steps < 100, "never terminated");
    }
    assert!(q.measured()[0] > ARM_LIMIT);
    let after = q.actuate(Action::Continuous(&[MAX_VOLTAGE]));
    assert!(after.terminated);
    assert_eq!(after.reward, 0.0);
    assert_eq!(q.voltage(), 0.0);
    q.reset(1);
    assert!(!q.actuate(Action::Continuous(&[0.0])).terminated);
}

#[test]
fn reward_is_one_upright_centred_at_zero_volts_and_near_zero_hanging() {
    let mut up = Qube::with_state([0.0, 0.0, 0.0, 0.0]);
    let r = up.actuate(Action::Continuous(&[0.0])).reward;
    assert!(r > 0.999, "{r}");
    let mut down = Qube::with_state([0.0, PI, 0.0, 0.0]);
    let r = down.actuate(Action::Continuous(&[0.0])).reward;
    assert!(r < 1e-3, "{r}");
    let mut pushed = Qube::with_state([0.0, 0.0, 0.0, 0.0]);
    let r = pushed.actuate(Action::Continuous(&[MAX_VOLTAGE])).reward;
    assert!((0.85..0.95).contains(&r), "{r}");
}

/// A QUBE with `settings` drawn for an episode (seed 0), in `state`.
fn configured(settings: &[TestSetting<'_>], state: [f32; 4]) -> Qube {
    let mut q = Qube::with_state(state);
    q.set_params(&plant_params(settings))
        .expect("valid settings");
    q.vary(0);
    q.set_state(state);
    q
}

const HANGING: [f32; 4] = [0.0, PI, 0.0, 0.0];

#[test]
fn masses_lengths_and_motor_constants_change_the_response() {
    let spin = |settings: &[TestSetting<'_>]| {
        let mut q = configured(settings, HANGING);
        for _ in 0..25 {
            q.actuate(Action::Continuous(&[3.0]));
        }
        q.state()[2]
    };
    let nominal = spin(&[]);
    assert!(nominal > 1.0, "{nominal}");
    for (settings, faster) in [
        (&[("arm_mass", Some(MR * 2.0), None)][..], false),
        (&[("arm_length", Some(LR * 1.2), None)][..], false),
        (&[("pendulum_mass", Some(MP * 0.5), None)][..], true),
        (&[("torque_constant", Some(KT * 1.1), None)][..], true),
        (&[("motor_resistance", Some(RM * 1.5), None)][..], false),
        (&[("arm_damping", Some(DR * 3.0), None)][..], false),
    ] {
        let speed = spin(settings);
        assert_eq!(
            speed > nominal,
            faster,
            "{settings:?}: {speed} vs {nominal}"
        );
    }
    // A longer pendulum swings more slowly (small oscillation after a kick).
    let period_proxy = |length: f32| {
        let mut q = configured(&[("pendulum_length", Some(length), None)], HANGING);
        q.set_state([0.0, PI - 0.1, 0.0, 0.0]);
        let mut steps = 0;
        while from_hanging(q.state()[1]) < 0.0 && steps < 1000 {
            q.actuate(Action::Continuous(&[0.0]));
            steps += 1;
        }
        steps
    };
    assert!(period_proxy(LP * 1.2) > period_proxy(LP));
}

#[test]
fn the_amplifier_saturates_at_max_voltage() {
    let mut q = configured(&[("max_voltage", Some(3.0), None)], HANGING);
    q.actuate(Action::Continuous(&[6.0]));
    assert_eq!(q.voltage(), 3.0);
    q.actuate(Action::Continuous(&[-4.0]));
    assert_eq!(q.voltage(), -3.0);
}

#[test]
fn coulomb_friction_holds_a_weak_push_and_stops_a_coasting_arm() {
    // 1 V stalls at kt V / Rm = 5 mN·m: a 10 mN·m dry friction holds the arm.
    let mut held = configured(&[("arm_coulomb_friction", Some(0.01), None)], HANGING);
    let mut free = Qube::with_state(HANGING);
    for _ in 0..250 {
        held.actuate(Action::Continuous(&[1.0]));
        free.actuate(Action::Continuous(&[1.0]));
    }
    assert!(held.state()[0].abs() < 1e-4, "{:?}", held.state());
    assert!(free.state()[0] > 0.1, "{:?}", free.state());
    // 2 mN·m slows a driven arm, and a coasting arm comes to rest without reversing.
    let mut rubbing = configured(&[("arm_coulomb_friction", Some(0.002), None)], HANGING);
    let mut smooth = Qube::with_state(HANGING);
    for _ in 0..50 {
        rubbing.actuate(Action::Continuous(&[6.0]));
        smooth.actuate(Action::Continuous(&[6.0]));
    }
    assert!(rubbing.state()[2] < smooth.state()[2]);
    // Friction stronger than everything else stops a coasting arm within a step, and it
    // stays stopped: the friction torque never exceeds what stopping takes.
    let coasting = [0.0, PI, 1.0, 0.0];
    let mut stuck = configured(&[("arm_coulomb_friction", Some(0.05), None)], coasting);
    for _ in 0..100 {
        stuck.actuate(Action::Continuous(&[0.0]));
        assert!(stuck.state()[2].abs() < 1e-5, "{:?}", stuck.state());
    }
    assert!(stuck.state()[0] > 0.0 && stuck.state()[0] < 0.004);
}

#[test]
fn encoder_counts_set_the_quantisation() {
    let mut coarse = configured(&[("encoder_counts", Some(512.0), None)], HANGING);
    let step = TAU / 512.0;
    for _ in 0..100 {
        coarse.actuate(Action::Continuous(&[2.0]));
        for m in &coarse.measured()[..2] {
            let counts = m / step;
            assert!((counts - libm::roundf(counts)).abs() < 1e-3, "{m}");
        }
    }
    // Hanging down reads exactly half a revolution.
    coarse.set_state(HANGING);
    assert_eq!(coarse.measured()[1], -256.0 * step);
}

#[test]
fn latency_and_deadzone_act_on_the_voltage() {
    let mut late = configured(&[("latency_steps", Some(1.0), None)], HANGING);
    let mut applied = [0.0f32; 4];
    for (slot, v) in applied.iter_mut().zip([1.0, 2.0, -3.0, 4.0]) {
        late.actuate(Action::Continuous(&[v]));
        *slot = late.voltage();
    }
    assert_eq!(applied, [0.0, 1.0, 2.0, -3.0]);
    late.safe_state();
    late.actuate(Action::Continuous(&[5.0]));
    assert_eq!(
        late.voltage(),
        0.0,
        "the safe state drops commands in flight"
    );

    let mut dead = configured(&[("deadzone", Some(0.3), None)], HANGING);
    dead.actuate(Action::Continuous(&[0.29]));
    assert_eq!(dead.voltage(), 0.0);
    dead.actuate(Action::Continuous(&[-0.31]));
    assert_eq!(dead.voltage(), -0.31);
}

#[test]
fn sensor_noise_is_seen_by_the_policy_but_not_rewarded() {
    let settings = [
        ("angle_noise_std", Some(0.005), None),
        ("velocity_noise_std", Some(0.2), None),
    ];
    let start = [0.1, 0.2, 0.5, -1.0];
    let mut noisy = configured(&settings, start);
    let mut clean = Qube::with_state(start);
    let (mut seen, mut exact) = ([0.0; 6], [0.0; 6]);
    for _ in 0..50 {
        noisy.observe(&mut seen);
        clean.observe(&mut exact);
        assert!(seen.iter().zip(&exact).all(|(a, b)| a != b), "{seen:?}");
        let a = noisy.actuate(Action::Continuous(&[1.0]));
        let b = clean.actuate(Action::Continuous(&[1.0]));
        assert_eq!(a, b);
    }
    assert_eq!(noisy.state(), clean.state());
}

#[test]
fn ranges_are_drawn_per_episode_from_the_seed() {
    let mut q = Qube::new();
    q.set_params(&plant_params(&[
        ("arm_mass", None, Some((0.8, 1.2))),
        ("encoder_counts", None, Some((1024.0, 4096.0))),
        ("latency_steps", None, Some((0.0, 1.0))),
    ]))
    .expect("valid");
    let mut seen_latency = [false; 2];
    for seed in 0..40 {
        q.vary(seed);
        let p = q.physics();
        assert!((MR * 0.8..=MR * 1.2).contains(&p.arm_mass), "{p:?}");
        assert!((1024..=4096).contains(&p.encoder_counts), "{p:?}");
        seen_latency[q.variation.imperfections.latency_steps()] = true;
        let mut again = q.clone();
        again.vary(seed);
        assert_eq!(again, q);
    }
    assert_eq!(seen_latency, [true, true]);
}
