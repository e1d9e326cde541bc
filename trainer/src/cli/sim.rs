//! `tether sim`: a simulated device on a pseudo-terminal, for trying the chain by hand or
//! from another program: the firmware built for the host, or its board image in QEMU.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use tether_firmware::sim::TimeMode;

use super::{SimArgs, interrupt_flag};
use crate::device::simulated::{DEFAULT_SIM_PLANT, SimDeviceSpec, SimMachine};
use crate::run::config::PlantSection;

pub fn sim(args: SimArgs) -> anyhow::Result<ExitCode> {
    let section = match &args.config {
        Some(path) => PlantSection::read(path)?,
        None => PlantSection::default(),
    };
    let plant = args
        .plant
        .clone()
        .or(section.plant.clone())
        .unwrap_or_else(|| DEFAULT_SIM_PLANT.to_string());
    let origin = args
        .config
        .as_deref()
        .unwrap_or(std::path::Path::new("--config"));
    let fixed = section.message(&plant, true, origin)?;
    let spec = SimDeviceSpec {
        plant: &plant,
        time: if args.realtime {
            TimeMode::RealTime
        } else {
            TimeMode::Virtual
        },
        baud: args.baud,
        faults: args.faults.as_deref(),
        seed: args.seed,
        action_rate_limit: None,
        fixed_params: fixed.as_ref(),
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
        .spawn_pty(&format!("qemu:{plant}"))
        .context("cannot start the simulated device")?;
    // The path first, alone on its line, so scripts can read it.
    println!("{}", path.display());
    std::io::stdout().flush()?;
    eprintln!(
        "simulated {plant} device{} on {} ({}{}); Ctrl-C to stop",
        if args.qemu { " in QEMU" } else { "" },
        path.display(),
        if args.realtime {
            "real time"
        } else {
            "virtual time"
        },
        match &fixed {
            Some(params) => format!(
                ", {} parameters fixed from the config, the host's refused",
                params.settings.len()
            ),
            None => String::new(),
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
