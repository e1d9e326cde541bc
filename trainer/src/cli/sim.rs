//! `tether sim`: a simulated device on a pseudo-terminal, for trying the chain by hand or
//! from another program: the firmware built for the host, or its board image in QEMU.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tether_firmware::sim::TimeMode;

use super::{SimArgs, interrupt_flag};
use crate::device::simulated::{SimDeviceSpec, SimMachine};

pub fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let spec = SimDeviceSpec {
        plant: &args.plant,
        time: if args.realtime {
            TimeMode::RealTime
        } else {
            TimeMode::Virtual
        },
        baud: args.baud,
        faults: args.faults.as_deref(),
        seed: args.seed,
        machine: if args.qemu {
            SimMachine::Qemu {
                firmware: args.firmware.as_deref(),
            }
        } else {
            SimMachine::Host
        },
    };
    let stop = interrupt_flag();
    let (path, mut device) = spec
        .spawn_pty(&format!("qemu:{}", args.plant))
        .context("cannot start the simulated device")?;
    // The path first, alone on its line, so scripts can read it.
    println!("{}", path.display());
    std::io::stdout().flush()?;
    eprintln!(
        "simulated {} device{} on {} ({}); Ctrl-C to stop",
        args.plant,
        if args.qemu { " in QEMU" } else { "" },
        path.display(),
        if args.realtime {
            "real time"
        } else {
            "virtual time"
        }
    );
    while !stop.load(Ordering::SeqCst) {
        if let Some(why) = device.ended() {
            anyhow::bail!("the device stopped on its own: {why}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("{}", device.stop());
    Ok(ExitCode::SUCCESS)
}
