//! `tether sim`: a simulated device on a pseudo-terminal, for trying the chain by hand or
//! from another program.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::{AnyPlant, PLANT_NAMES};
use tether_firmware::sim::{FaultSpec, SimBoard, SimConfig, TimeMode};

use super::{SimArgs, interrupt_flag};

pub fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let plant = AnyPlant::by_name(&args.plant).with_context(|| {
        format!(
            "unknown plant `{}`; simulated plants are: {}",
            args.plant,
            PLANT_NAMES.join(", ")
        )
    })?;
    let faults = match &args.faults {
        Some(text) => text
            .parse::<FaultSpec>()
            .map_err(|e| anyhow::anyhow!("bad --faults spec: {e}"))?,
        None => FaultSpec::none(),
    };
    let time = if args.realtime {
        TimeMode::RealTime
    } else {
        TimeMode::Virtual
    };
    let device = if args.realtime {
        DeviceConfig::default()
    } else {
        // In virtual time device seconds pass faster than the host's heartbeats: no watchdog.
        DeviceConfig {
            watchdog_timeout_us: 0,
            ..DeviceConfig::default()
        }
    };
    let config = SimConfig {
        time,
        baud: args.baud,
        faults,
        seed: args.seed,
        device,
        ..SimConfig::default()
    };
    let stop = interrupt_flag();
    let (path, handle) = SimBoard::new(plant, config)
        .spawn_pty()
        .context("cannot create a pseudo-terminal")?;
    // The path first, alone on its line, so scripts can read it.
    println!("{}", path.display());
    std::io::stdout().flush()?;
    eprintln!(
        "simulated {} device on {} ({}); Ctrl-C to stop",
        args.plant,
        path.display(),
        if args.realtime {
            "real time"
        } else {
            "virtual time"
        }
    );
    while !stop.load(Ordering::SeqCst) && !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let report = handle.stop();
    eprintln!(
        "stopped after {} steps, {} episodes, {} resets, {} bad frames",
        report.steps, report.episodes, report.resets, report.bad_frames
    );
    Ok(ExitCode::SUCCESS)
}
