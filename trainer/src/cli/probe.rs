//! `tether probe`: bring-up of a device before its first episode.
//!
//! Handshakes, prints the plant's description, then streams what the device observes with
//! the plant in its safe state (move the arm by hand and watch the signs). With `--pulse V`
//! it applies +V, then −V, each for `--pulse-ms` (≤ 500 ms, |V| ≤ a quarter of the plant's
//! bound, checked here and again on the device), and reports which way each angle moved,
//! so a swapped motor lead or encoder channel shows before training.

use std::f64::consts::PI;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tether_shared::message::{MAX_PULSE_FRACTION, MAX_PULSE_US, PulseCommand};
use tether_shared::{ActionSpace, DeviceMessage, PlantDescription};

use super::ProbeArgs;
use crate::device::DeviceClient;
use crate::run::config::RunConfig;
use crate::training::{Fleet, FleetSpec};
use crate::trpo::hyperparams::TrpoConfig;

/// Observations printed per second while streaming (the device sends one per period).
const PRINTS_PER_SECOND: f64 = 10.0;
/// Watching before, and settling after, each pulse (device time: counted in observations,
/// one per control period, so a slow host or a lagging link reads the same window).
const QUIET: Duration = Duration::from_millis(300);

pub fn probe(args: ProbeArgs) -> anyhow::Result<ExitCode> {
    let mut devices = args.devices.clone();
    if devices.sim.is_none() && devices.ports.is_empty() && devices.tcp.is_empty() {
        devices.sim = Some(1);
    }
    let table = devices.as_config_table();
    let flags = toml::to_string(&table)?;
    let config = RunConfig::<TrpoConfig>::from_toml_str(&flags, Path::new("command line"))?;
    let spec = FleetSpec::new(
        &config.devices,
        &config.timeouts,
        0,
        args.devices.plant.as_deref(),
    )?;
    let mut fleet = Fleet::connect(&spec)?;
    if fleet.clients.len() != 1 {
        bail!(
            "tether probe works on one device at a time; {} given",
            fleet.clients.len()
        );
    }
    let pulse = match args.pulse {
        Some(volts) => Some(pulse_command(&fleet.plant, volts, args.pulse_ms)?),
        None => None,
    };
    let client = &mut fleet.clients[0];
    print_description(client.name(), &fleet.plant, client.info().active_policy);
    client
        .observe()
        .context("the device did not start observing")?;
    let angles = Angles::of(&fleet.plant);
    let quiet = observations_in(&fleet.plant, QUIET);
    stream(
        client,
        &angles,
        Duration::from_secs_f64(args.seconds.max(0.0)),
    )?;
    if let Some(pulse) = pulse {
        for sign in [1.0f32, -1.0] {
            let mut this = pulse.clone();
            this.action.iter_mut().for_each(|a| *a *= sign);
            let moved = pulse_and_measure(client, &angles, this.clone(), quiet)?;
            report_pulse(&this, &angles, &moved);
        }
    }
    client.stop().context("the device did not stop")?;
    Ok(ExitCode::SUCCESS)
}

/// The pulse `volts` on every action dimension, checked against the plant's bounds.
fn pulse_command(plant: &PlantDescription, volts: f64, ms: u32) -> anyhow::Result<PulseCommand> {
    let ActionSpace::Continuous { low, high } = &plant.action else {
        bail!(
            "--pulse needs a plant with continuous actions; {} has discrete choices",
            plant.name
        );
    };
    let mut action = heapless::Vec::new();
    for _ in 0..low.len() {
        let _ = action.push(volts as f32);
    }
    let pulse = PulseCommand {
        action,
        duration_us: ms.saturating_mul(1000),
    };
    if pulse.check(&plant.action).is_err() {
        let bound = low
            .iter()
            .zip(high)
            .map(|(l, h)| l.abs().max(h.abs()))
            .fold(f32::INFINITY, f32::min);
        bail!(
            "refusing a pulse of {volts} for {ms} ms: at most {:.3} (a quarter of the plant's bound {bound}) for at most {} ms",
            MAX_PULSE_FRACTION * bound,
            MAX_PULSE_US / 1000
        );
    }
    Ok(pulse)
}

fn print_description(name: &str, plant: &PlantDescription, policy: Option<u32>) {
    println!("device {name}: plant {}", plant.name);
    println!("  observation: {} values", plant.obs_dim);
    match &plant.action {
        ActionSpace::Continuous { low, high } => {
            println!("  action: continuous, low {low:?}, high {high:?}")
        }
        ActionSpace::Discrete { n } => println!("  action: one of {n} choices"),
    }
    println!(
        "  control rate {} Hz, episodes of {} steps, policy {}",
        plant.control_rate_hz,
        plant.episode_steps,
        policy.map_or("none".to_string(), |v| format!("v{v}"))
    );
}

/// Prints observations for `length`, about [`PRINTS_PER_SECOND`] of them a second.
fn stream(client: &mut DeviceClient, angles: &Angles, length: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last_print: Option<Instant> = None;
    while start.elapsed() < length {
        let Some(obs) = next_observation(client)? else {
            continue;
        };
        if last_print.is_none_or(|t| t.elapsed().as_secs_f64() >= 1.0 / PRINTS_PER_SECOND) {
            last_print = Some(Instant::now());
            let named: Vec<String> = angles
                .read(&obs)
                .iter()
                .map(|(name, v)| format!("{name} {v:+.3}"))
                .collect();
            println!(
                "{:7.2} s  {}  obs {:?}",
                start.elapsed().as_secs_f64(),
                named.join("  "),
                obs
            );
        }
    }
    Ok(())
}

/// The next observation within 0.5 s (`None`: something else arrived); an error if the
/// device faulted or fell silent.
fn next_observation(client: &mut DeviceClient) -> anyhow::Result<Option<Vec<f32>>> {
    Ok(next_report(client)?.map(|(values, _)| values))
}

/// The next observation within 0.5 s and whether a test pulse acted on the period after it
/// (`None`: something else arrived); an error if the device faulted or fell silent.
fn next_report(client: &mut DeviceClient) -> anyhow::Result<Option<(Vec<f32>, bool)>> {
    match client.next_message(Duration::from_millis(500))? {
        Some(DeviceMessage::Observation(o)) => Ok(Some((o.values.to_vec(), o.pulsing))),
        Some(DeviceMessage::Heartbeat(h))
            if h.state == tether_shared::message::DeviceState::SafeStop =>
        {
            bail!(
                "the device went to its safe stop (a plant fault or its watchdog); see its log line above"
            )
        }
        Some(_) => Ok(None),
        None => bail!("no observation from {} for 0.5 s", client.name()),
    }
}

/// How many observations (one per control period) span `length` of device time.
fn observations_in(plant: &PlantDescription, length: Duration) -> usize {
    let period = u128::from(plant.control_period_us().max(1));
    usize::try_from(length.as_micros() / period).map_or(usize::MAX, |n| n.max(1))
}

/// Each angle's change over the pulse: from the observation the pulse's first period starts
/// from to `quiet` observations after its last period, all in device time (the device
/// marks the observations a pulse acts on), after `quiet` observations of rest first.
fn pulse_and_measure(
    client: &mut DeviceClient,
    angles: &Angles,
    pulse: PulseCommand,
    quiet: usize,
) -> anyhow::Result<Vec<f64>> {
    let _ = observations(client, quiet)?;
    let length = Duration::from_micros(u64::from(pulse.duration_us));
    client
        .pulse(pulse)
        .context("the device refused the test pulse")?;
    // Observations queued before the pulse began come first; the first one marked is the
    // state the pulse starts from.
    let started = Instant::now();
    let before = loop {
        if let Some((values, true)) = next_report(client)? {
            break values;
        }
        if started.elapsed() > length + Duration::from_secs(2) {
            bail!(
                "the device acknowledged the pulse but never applied it (shorter than a control period?)"
            );
        }
    };
    while let Some((_, true)) | None = next_report(client)? {}
    let after = observations(client, quiet)?;
    let (a, b) = (angles.read(&before), angles.read(&after));
    Ok(a.iter()
        .zip(&b)
        .map(|((_, x), (_, y))| angles.difference(*x, *y))
        .collect())
}

/// Reads `count` observations (at least one); the last of them.
fn observations(client: &mut DeviceClient, count: usize) -> anyhow::Result<Vec<f32>> {
    let mut last = None;
    let mut seen = 0;
    while seen < count.max(1) {
        if let Some(obs) = next_observation(client)? {
            last = Some(obs);
            seen += 1;
        }
    }
    Ok(last.unwrap_or_default())
}

fn report_pulse(pulse: &PulseCommand, angles: &Angles, moved: &[f64]) {
    println!(
        "pulse {:+?} for {} ms:",
        pulse.action.as_slice(),
        pulse.duration_us / 1000
    );
    for ((name, _), delta) in angles.names.iter().zip(moved) {
        let way = if delta.abs() < 1e-6 {
            "did not move"
        } else if *delta > 0.0 {
            "moved positive"
        } else {
            "moved negative"
        };
        println!("  {name}: {way} ({delta:+.4})");
    }
    if angles.names.first().is_some_and(|(_, actuated)| *actuated) && !pulse.action.is_empty() {
        println!(
            "  (a positive pulse should move {} positive: if not, swap the motor leads or reverse it in the rig's settings)",
            angles.names[0].0
        );
    }
}

/// How to read a plant's observation as named angles (or positions).
struct Angles {
    /// Names, and whether the action drives that coordinate directly.
    names: Vec<(String, bool)>,
    kind: Layout,
}

enum Layout {
    /// qube / rotary rig: `[sin θ, cos θ, sin α, cos α, …]`.
    Rotary,
    /// pendulum: `[cos θ, sin θ, θ̇]`.
    Pendulum,
    /// cartpole: `[x, ẋ, θ, θ̇]`.
    CartPole,
    /// Anything else: every value as it is.
    Raw,
}

impl Angles {
    fn of(plant: &PlantDescription) -> Self {
        let named = |names: &[(&str, bool)], kind| Angles {
            names: names.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
            kind,
        };
        match (plant.name.as_str(), plant.obs_dim) {
            ("qube", 6) => named(&[("arm θ", true), ("pendulum α", false)], Layout::Rotary),
            ("pendulum", 3) => named(&[("θ", true)], Layout::Pendulum),
            ("cartpole", 4) => named(&[("cart x", true), ("pole θ", false)], Layout::CartPole),
            _ => Angles {
                names: (0..plant.obs_dim)
                    .map(|i| (format!("obs[{i}]"), false))
                    .collect(),
                kind: Layout::Raw,
            },
        }
    }

    fn read(&self, obs: &[f32]) -> Vec<(String, f64)> {
        let o = |i: usize| f64::from(obs.get(i).copied().unwrap_or(f32::NAN));
        let values: Vec<f64> = match self.kind {
            Layout::Rotary => vec![o(0).atan2(o(1)), o(2).atan2(o(3))],
            Layout::Pendulum => vec![o(1).atan2(o(0))],
            Layout::CartPole => vec![o(0), o(2)],
            Layout::Raw => (0..obs.len()).map(o).collect(),
        };
        self.names
            .iter()
            .map(|(n, _)| n.clone())
            .zip(values)
            .collect()
    }

    /// `after − before`, the shorter way round for angles.
    fn difference(&self, before: f64, after: f64) -> f64 {
        let d = after - before;
        match self.kind {
            Layout::Rotary | Layout::Pendulum => (d + PI).rem_euclid(2.0 * PI) - PI,
            Layout::CartPole | Layout::Raw => d,
        }
    }
}
