//! The budget benchmark: the device runs a [64, 64] Gaussian (or categorical) policy with
//! observation normaliser on this image's plant, and SysTick counts the instructions. With
//! [`Exploration::Sde`] (a continuous plant's image only) the head is gSDE instead, drawing
//! its noise matrix once per run (`sde_sample_freq = 0`), so the whole steps hold θ_ε.
//!
//! Run under `qemu-system-arm -icount shift=0` (one instruction per nanosecond of virtual
//! time; SysTick ticks every [`INSTRUCTIONS_PER_TICK`] instructions) by
//! `scripts/firmware-bench.sh`. The device is the production runtime (same type, same code
//! as when serving a host): its host is a [`Script`] that uploads the policy and starts an
//! endless explore run; its replies go out on UART0 (`-serial null`); its clock is virtual
//! and advanced one control period per poll, so every poll is one control step.
//!
//! Measured, each as an average:
//!
//! - `instructions_per_step`: [`STEPS`] whole polls (control step, framing, UART writes,
//!   episode ends and resets, heartbeats), everything included;
//! - `forward_instructions`: [`REPEATS`] forward passes of the running policy (normaliser,
//!   layers, tanh) on a plant observation;
//! - `sampling_instructions`: [`REPEATS`] Gaussian draws with log-density (or categorical
//!   draws) on that forward pass's output; for gSDE, exploring steps with θ_ε held (noise
//!   and variance from the 64 features, log-density);
//! - `sde_macs` (gSDE only): the step's multiply-accumulates beyond the network's, the
//!   noise and variance sums (2 × 64 × action-dim);
//! - `sde_draw_instructions` (gSDE only): one draw of θ_ε (64 × action-dim Gaussians),
//!   the difference between [`REPEATS`] exploring steps that each redraw and as many that
//!   hold θ_ε; a step that redraws costs this much more than `instructions_per_step`;
//! - `plant_instructions`: [`REPEATS`] observe + actuate steps of a fresh plant, with a
//!   reset whenever an episode would end;
//! - `link_instructions`: full transition batches of this plant's records framed (postcard,
//!   CRC-32, COBS) and written to UART0, per record.
//!
//! The parts are measured on their own, so their loops' few instructions are in them;
//! `instructions_per_step` contains all of them plus the runtime's own bookkeeping.

use core::hint::black_box;

use cortex_m_semihosting::{debug, hprint, hprintln};
use tether_firmware::gsde::SdeNoise;
use tether_firmware::link::{LinkEndpoint, Priority};
use tether_firmware::plant::{Action, Plant};
use tether_firmware::policy_tiles::TiledPolicy;
use tether_firmware::sampler::Sampler;
use tether_firmware::{Device, DeviceConfig};
use tether_shared::message::{
    DeviceMessage, DeviceState, RecordLayout, RunCommand, RunMode, TRANSITION_BATCH_VALUES,
    TransitionBatch,
};
use tether_shared::plant::MAX_OBS_DIM;
use tether_shared::policy::MAX_LAYER_WIDTH;
use tether_shared::policy::sde::SdeHead;
use tether_shared::{ActionSpace, PolicyHead, PolicySpec};

use crate::clock::{BoardClock, TimeSource};
use crate::fault::fail;
use crate::link::BoardLink;
use crate::script::Script;
use crate::systick::{self, INSTRUCTIONS_PER_TICK};
use crate::uart::CmsdkUart;
use crate::{BoardDevice, NOISE_CAPACITY, stack};

/// Hidden layers of the benchmark policy.
pub const HIDDEN: [u16; 2] = [64, 64];

/// Control steps averaged over.
pub const STEPS: u32 = 2_000;

/// Repetitions of each separately measured part.
pub const REPEATS: u32 = 1_000;

/// Polls allowed for the upload and the start of the run.
const UPLOAD_POLLS: u32 = 10_000;

/// The policy head the benchmark explores with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exploration {
    /// The plant's own head: Gaussian with state-independent noise, or categorical.
    Plain,
    /// gSDE (SB3's defaults: `full_std`, no `expln`), θ_ε drawn once per run.
    Sde,
}

/// Runs the benchmark on `plant`, prints one JSON line on the host's stdout and exits.
#[inline(never)]
pub fn bench<P: Plant + Clone>(plant: P, uart: CmsdkUart, exploration: Exploration) -> ! {
    let mut spec = PolicySpec::for_plant(&plant.description(), &HIDDEN, true);
    if exploration == Exploration::Sde {
        let PolicyHead::Gaussian { action_dim } = spec.head else {
            fail(format_args!("bench: gSDE needs a continuous plant"))
        };
        spec.head = PolicyHead::GaussianSde(SdeHead {
            action_dim,
            full_std: true,
            use_expln: false,
            resample_every: 0,
        });
    }
    let run = RunCommand {
        first_episode: 0,
        episodes: 0,
        seed: 1,
        mode: RunMode::Explore,
    };
    // The link is timed first, on its own endpoint in a frame of its own that is gone
    // before the device exists, and the device lives in the frame of the call after it
    // (not in this one, under the link's): the device's RAM is then what serving a host
    // needs.
    let (link_part, uart) = link_per_record(&plant, uart);
    bench_device(plant, uart, spec, exploration, run, link_part)
}

/// The device part of [`bench`]: uploads the policy, runs and measures it, prints the JSON
/// line with `link_part` (hundredths of an instruction per record) and exits. Not inlined:
/// the device (nearly all of the RAM) is in this call's frame only.
#[inline(never)]
fn bench_device<P: Plant + Clone>(
    plant: P,
    uart: CmsdkUart,
    spec: PolicySpec,
    exploration: Exploration,
    run: RunCommand,
    link_part: u64,
) -> ! {
    let mut script = Script::upload_and_run(spec.clone(), 1, run);
    let clock = BoardClock::new(TimeSource::Virtual);
    let config = DeviceConfig {
        watchdog_timeout_us: 0,
        ..DeviceConfig::default()
    };
    let link = BoardLink::scripted(uart, &mut script);
    let mut device: BoardDevice<'_, P> = Device::new(plant.clone(), link, &clock, config);
    start_run(&mut device, &clock);

    let step = whole_steps(&mut device, &clock);
    let Some(policy) = device.policy() else {
        fail(format_args!("bench: the policy is gone"))
    };
    let parts = policy_parts(&policy, &spec, plant.clone(), exploration);
    let plant_part = plant_steps(plant.clone());

    let peak_stack = stack::peak_bytes();
    hprint!(
        "{{\"plant\":\"{}\",\"macs\":{},\"params\":{},\"steps\":{},\"instructions_per_step\":{},\"forward_instructions\":{},\"sampling_instructions\":{},\"link_instructions\":{},\"plant_instructions\":{},\"peak_stack\":{},\"stack_capacity\":{},\"control_period_us\":{}",
        plant.description().name.as_str(),
        spec.macs(),
        spec.param_count(),
        step.steps,
        Hundredths(step.instructions),
        Hundredths(parts.forward),
        Hundredths(parts.sampling),
        Hundredths(link_part),
        Hundredths(plant_part),
        peak_stack,
        stack::capacity_bytes(),
        device.period_us(),
    );
    if let Some(draw) = parts.sde_draw {
        // The noise and variance sums: one multiply-accumulate each per matrix value.
        hprint!(
            ",\"sde_draw_instructions\":{},\"sde_macs\":{}",
            Hundredths(draw),
            2 * spec.noise_len()
        );
    }
    hprintln!("{}", "}");
    debug::exit(debug::EXIT_SUCCESS);
    fail(format_args!("bench: semihosting exit returned"))
}

/// The running policy's parts, each in hundredths of an instruction per repetition.
struct PolicyParts {
    forward: u64,
    sampling: u64,
    /// One draw of θ_ε (gSDE only).
    sde_draw: Option<u64>,
}

/// Times `policy`'s forward pass on an observation of `plant` and its sampling. Not
/// inlined: its buffers (a scratch for the widest layers) live in this call's frame only.
#[inline(never)]
fn policy_parts<P: Plant>(
    policy: &TiledPolicy<'_>,
    spec: &PolicySpec,
    mut probe: P,
    exploration: Exploration,
) -> PolicyParts {
    let mut obs = [0.0f32; MAX_OBS_DIM];
    let obs = &mut obs[..spec.obs_dim as usize];
    probe.reset(7);
    probe.observe(obs);
    let mut out = [0.0f32; 8];
    let out = &mut out[..spec.output_dim()];
    let mut scratch = [0.0f32; 2 * MAX_LAYER_WIDTH];
    let forward = per_repeat(|| {
        if policy.forward(black_box(obs), &mut scratch, out).is_err() {
            fail(format_args!("bench: forward pass refused"));
        }
        black_box(&out);
    });
    let (sampling, sde_draw) = match exploration {
        Exploration::Plain => (sampling(spec, out, policy.log_std()), None),
        Exploration::Sde => {
            let features = match policy.forward_with_features(obs, &mut scratch, out) {
                Ok(features) => features,
                Err(_) => fail(format_args!("bench: forward pass refused")),
            };
            let (held, draw) = sde_sampling(policy, features, out);
            (held, Some(draw))
        }
    };
    PolicyParts {
        forward,
        sampling,
        sde_draw,
    }
}

/// Instructions in hundredths, printed as a decimal number (no float formatting on the
/// device).
struct Hundredths(u64);

impl core::fmt::Display for Hundredths {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// Hundredths of an instruction per repetition from a tick count.
fn hundredths_per(ticks: u64, repeats: u64) -> u64 {
    ticks * u64::from(INSTRUCTIONS_PER_TICK) * 100 / repeats.max(1)
}

/// Hundredths of an instruction per call of `f`, over [`REPEATS`] calls.
fn per_repeat(mut f: impl FnMut()) -> u64 {
    let start = systick::ticks();
    for _ in 0..REPEATS {
        f();
    }
    hundredths_per(systick::ticks() - start, u64::from(REPEATS))
}

/// Polls until the scripted upload is committed and the run has started.
fn start_run<P: Plant>(device: &mut BoardDevice<'_, P>, clock: &BoardClock) {
    for _ in 0..UPLOAD_POLLS {
        device.poll();
        if device.active_policy() == Some(1) && device.state() == DeviceState::Running {
            return;
        }
        clock.advance_by(1);
    }
    fail(format_args!(
        "bench: the device did not accept the scripted upload and run"
    ))
}

struct WholeSteps {
    steps: u64,
    instructions: u64,
}

/// [`STEPS`] polls, one control period apart.
fn whole_steps<P: Plant>(device: &mut BoardDevice<'_, P>, clock: &BoardClock) -> WholeSteps {
    let period = device.period_us();
    let before = device.stats().steps;
    let start = systick::ticks();
    for _ in 0..STEPS {
        clock.advance_by(period);
        device.poll();
    }
    let ticks = systick::ticks() - start;
    let steps = device.stats().steps - before;
    if device.state() != DeviceState::Running || steps + 100 < u64::from(STEPS) {
        fail(format_args!(
            "bench: {} steps in {} polls; the run stopped",
            steps, STEPS
        ));
    }
    WholeSteps {
        steps,
        instructions: hundredths_per(ticks, steps),
    }
}

/// Hundredths of an instruction per action drawn from `out`.
fn sampling(spec: &PolicySpec, out: &[f32], log_std: Option<&[f32]>) -> u64 {
    let mut sampler = Sampler::new(3);
    match (spec.head, log_std) {
        (PolicyHead::Gaussian { action_dim }, Some(log_std)) => {
            let mut action = [0.0f32; 8];
            let action = &mut action[..usize::from(action_dim)];
            per_repeat(|| {
                black_box(sampler.gaussian(black_box(out), log_std, action));
            })
        }
        _ => per_repeat(|| {
            black_box(sampler.categorical(black_box(out)));
        }),
    }
}

/// Hundredths of an instruction per gSDE exploring step with θ_ε held, and per draw of
/// θ_ε (steps that each redraw, less those that hold).
#[inline(never)]
fn sde_sampling(policy: &TiledPolicy<'_>, features: &[f32], mean: &[f32]) -> (u64, u64) {
    let mut noise = SdeNoise::<NOISE_CAPACITY>::new();
    if !noise.load(policy) {
        fail(format_args!("bench: the gSDE noise matrix does not fit"));
    }
    let mut sampler = Sampler::new(3);
    let mut action = [0.0f32; 8];
    let action = &mut action[..mean.len()];
    let mut explore = |noise: &mut SdeNoise<NOISE_CAPACITY>| {
        if noise
            .explore(&mut sampler, black_box(features), black_box(mean), action)
            .is_none()
        {
            fail(format_args!("bench: the gSDE step refused"));
        }
        black_box(&action);
    };
    explore(&mut noise);
    let held = per_repeat(|| explore(&mut noise));
    let redrawn = per_repeat(|| {
        noise.restart();
        explore(&mut noise);
    });
    if noise.draws() < REPEATS {
        fail(format_args!("bench: θ_ε was not redrawn every step"));
    }
    (held, redrawn.saturating_sub(held))
}

/// Hundredths of an instruction per plant step (observe, actuate; a reset when the episode
/// ends), under a slowly swinging action.
#[inline(never)]
fn plant_steps<P: Plant>(mut plant: P) -> u64 {
    let description = plant.description();
    let mut obs = [0.0f32; MAX_OBS_DIM];
    let obs = &mut obs[..usize::from(description.obs_dim)];
    let limit = match &description.action {
        ActionSpace::Continuous { high, .. } => high.first().copied().unwrap_or(0.0),
        ActionSpace::Discrete { .. } => 0.0,
    };
    let discrete = matches!(description.action, ActionSpace::Discrete { .. });
    let mut seed = 0u64;
    let mut step = 0u32;
    plant.reset(seed);
    per_repeat(|| {
        plant.observe(obs);
        let command = [limit * (((step % 64) as f32) / 32.0 - 1.0)];
        let action = if discrete {
            Action::Discrete((step / 8 % 2) as usize)
        } else {
            Action::Continuous(&command)
        };
        step += 1;
        let outcome = plant.actuate(action);
        if outcome.terminated || step % description.episode_steps.max(1) == 0 {
            seed += 1;
            plant.reset(seed);
        }
        black_box(&obs);
    })
}

/// Hundredths of an instruction per record for framing full transition batches of
/// `plant`'s records and writing them to the UART, which it gives back. Not inlined: its
/// endpoint (retransmit ring and decoder) lives in this call's frame only. Generic over the
/// plant like the device, so its framing code is the device's copy, not a second one.
#[inline(never)]
fn link_per_record<P: Plant>(plant: &P, uart: CmsdkUart) -> (u64, CmsdkUart) {
    let record = RecordLayout::of_plant(&plant.description()).width();
    let records = TRANSITION_BATCH_VALUES / record;
    let mut batch = TransitionBatch {
        episode: 3,
        first_step: 120,
        policy_version: 1,
        values: heapless::Vec::new(),
    };
    for i in 0..records * record {
        // Values of observation-like magnitudes, no zero bytes to speak of.
        let _ = batch.values.push(((i * 37 % 200) as f32 - 100.5) * 0.0137);
    }
    let message = DeviceMessage::Transitions(batch);
    let mut endpoint = LinkEndpoint::new(BoardLink::uart(uart));
    let batches = REPEATS / 10;
    let start = systick::ticks();
    for _ in 0..batches {
        if endpoint.send(&message, Priority::Data).is_err() {
            fail(format_args!("bench: a batch did not fit the empty queue"));
        }
        endpoint.poll_write();
        black_box(&endpoint);
    }
    let per_record = hundredths_per(
        systick::ticks() - start,
        u64::from(batches) * records as u64,
    );
    (per_record, endpoint.into_inner().into_uart())
}
