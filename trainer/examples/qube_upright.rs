//! Judges whether a QUBE policy swings up and balances: runs the deterministic policy (the
//! Gaussian mean, clamped by the plant to ±6 V, exactly as on the device) on the plant
//! model for `EPISODES` episodes from reset seeds 0, 1, … and prints one JSON line with,
//! per episode, the return, the first time the pendulum is within 0.2 rad (11°) of upright,
//! and the fraction of the final second spent within 0.2 rad of upright with the arm in
//! range.
//!
//! Run: `cargo run --release -p tether-trainer --example qube_upright -- RUN/policy.bin`

use std::path::Path;

use tether_firmware::plant::qube::{CONTROL_RATE_HZ, EPISODE_STEPS};
use tether_firmware::plant::{Action, Plant, Qube};
use tether_shared::policy::PolicyView;
use tether_trainer::run::policy_file::PolicyFile;

const EPISODES: u64 = 20;
const UPRIGHT_RAD: f32 = 0.2;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: qube_upright POLICY.bin")?;
    let policy = PolicyFile::read_bin(Path::new(&path))?;
    let view = PolicyView::new(&policy.spec, &policy.params).map_err(|e| format!("{e:?}"))?;
    let mut scratch = vec![0.0_f32; policy.spec.scratch_len()];
    let mut mean = vec![0.0_f32; policy.spec.output_dim()];
    let last_second = CONTROL_RATE_HZ as u32;
    let mut episodes = Vec::new();
    for seed in 0..EPISODES {
        let mut plant = Qube::new();
        plant.reset(seed);
        let mut obs = [0.0_f32; 6];
        let (mut total, mut first_upright, mut upright_at_end, mut steps) = (0.0, None, 0, 0);
        for step in 0..EPISODE_STEPS {
            plant.observe(&mut obs);
            view.forward(&obs, &mut scratch, &mut mean)
                .map_err(|e| format!("{e:?}"))?;
            let outcome = plant.actuate(Action::Continuous(&mean));
            total += f64::from(outcome.reward);
            steps += 1;
            let [_, alpha, _, _] = plant.state();
            let upright = alpha.abs() < UPRIGHT_RAD;
            if upright && first_upright.is_none() {
                first_upright = Some(f64::from(step) / f64::from(CONTROL_RATE_HZ));
            }
            if upright && !outcome.terminated && step >= EPISODE_STEPS - last_second {
                upright_at_end += 1;
            }
            if outcome.terminated {
                break;
            }
        }
        episodes.push(format!(
            "{{\"seed\":{seed},\"steps\":{steps},\"return\":{total:.1},\"first_upright_s\":{},\"upright_fraction_last_s\":{:.3}}}",
            first_upright.map_or("null".to_string(), |t| format!("{t:.3}")),
            f64::from(upright_at_end) / f64::from(last_second)
        ));
    }
    println!("[{}]", episodes.join(","));
    Ok(())
}
