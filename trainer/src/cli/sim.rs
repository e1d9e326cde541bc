//! `tether sim`: a simulated device on a pseudo-terminal, for trying the chain by hand or
//! from another program.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tether_firmware::sim::TimeMode;

use super::{SimArgs, interrupt_flag};
use crate::device::simulated::SimDeviceSpec;

pub fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let board = SimDeviceSpec {
        plant: &args.plant,
        time: if args.realtime {
            TimeMode::RealTime
        } else {
            TimeMode::Virtual
        },
        baud: args.baud,
        faults: args.faults.as_deref(),
        seed: args.seed,
        action_rate_limit: None,
    }
    .board()?;
    let stop = interrupt_flag();
    let (path, handle) = board
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
