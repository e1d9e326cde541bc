//! One-step parity of the Pendulum and CartPole models with gymnasium 1.4.
//!
//! The vectors in `tests/data/` come from `scripts/gen_gym_vectors.py` (gymnasium 1.4,
//! float64); this test needs no Python. For every recorded (state, action) pair the model is
//! put in the state, stepped once, and its next observation, reward and termination must
//! match within 1e-4 (termination exactly).

use serde::Deserialize;
use tether_firmware::plant::{Action, CartPole, Pendulum, Plant};

const TOLERANCE: f32 = 1e-4;

#[derive(Deserialize)]
struct Vectors<A> {
    env: String,
    gymnasium: String,
    rows: Vec<Row<A>>,
}

#[derive(Deserialize)]
struct Row<A> {
    state: Vec<f32>,
    action: A,
    next_obs: Vec<f32>,
    reward: f64,
    terminated: bool,
}

/// Largest absolute observation and reward errors seen.
#[derive(Default, Debug)]
struct MaxError {
    obs: f32,
    reward: f64,
}

fn check<A>(
    vectors: &Vectors<A>,
    mut step: impl FnMut(&Row<A>, &mut [f32]) -> (f32, bool),
) -> MaxError {
    assert!(vectors.gymnasium.starts_with("1."), "{}", vectors.gymnasium);
    assert!(vectors.rows.len() >= 1000, "{}: too few pairs", vectors.env);
    let mut max = MaxError::default();
    for (i, row) in vectors.rows.iter().enumerate() {
        let mut obs = vec![f32::NAN; row.next_obs.len()];
        let (reward, terminated) = step(row, &mut obs);
        for (k, (got, want)) in obs.iter().zip(&row.next_obs).enumerate() {
            let err = (got - want).abs();
            assert!(
                err <= TOLERANCE,
                "{} row {i}: obs[{k}] = {got}, gymnasium {want} (state {:?})",
                vectors.env,
                row.state
            );
            max.obs = max.obs.max(err);
        }
        let err = (reward as f64 - row.reward).abs();
        assert!(
            err <= TOLERANCE as f64,
            "{} row {i}: reward {reward}, gymnasium {}",
            vectors.env,
            row.reward
        );
        max.reward = max.reward.max(err);
        assert_eq!(
            terminated, row.terminated,
            "{} row {i}: termination differs (state {:?})",
            vectors.env, row.state
        );
    }
    println!(
        "{}: {} pairs, max error {max:?}",
        vectors.env,
        vectors.rows.len()
    );
    max
}

#[test]
fn pendulum_matches_gymnasium() {
    let vectors: Vectors<f32> =
        serde_json::from_str(include_str!("data/pendulum_v1.json")).expect("valid vectors");
    assert_eq!(vectors.env, "Pendulum-v1");
    check(&vectors, |row, obs| {
        let mut p = Pendulum::with_state(row.state[0], row.state[1]);
        let out = p.actuate(Action::Continuous(&[row.action]));
        p.observe(obs);
        (out.reward, out.terminated)
    });
}

#[test]
fn cartpole_matches_gymnasium() {
    let vectors: Vectors<usize> =
        serde_json::from_str(include_str!("data/cartpole_v1.json")).expect("valid vectors");
    assert_eq!(vectors.env, "CartPole-v1");
    let terminating = vectors.rows.iter().filter(|r| r.terminated).count();
    assert!(terminating >= 100, "only {terminating} terminating pairs");
    check(&vectors, |row, obs| {
        let state = [row.state[0], row.state[1], row.state[2], row.state[3]];
        let mut c = CartPole::with_state(state);
        let out = c.actuate(Action::Discrete(row.action));
        c.observe(obs);
        (out.reward, out.terminated)
    });
}
