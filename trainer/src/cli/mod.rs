//! The `tether` command line: argument definitions and dispatch. Each subcommand lives in
//! its own module and returns an `anyhow` error that `main` prints as one line.

mod eval;
mod export;
mod plot;
mod ports;
mod probe;
mod sim;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Train robot feedback controllers with TRPO, with the robot's microcontroller in the loop.
#[derive(Debug, Parser)]
#[command(name = "tether", version, about)]
pub struct Cli {
    /// Log more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train a policy on simulated devices (default: 2) or real ones.
    Train(TrainArgs),
    /// Run a trained policy deterministically and report its returns.
    Eval(EvalArgs),
    /// Serve a simulated device on a new pseudo-terminal (prints its path first).
    Sim(SimArgs),
    /// List serial ports with their USB identifiers.
    Ports,
    /// Bring-up: handshake, plant description, live observations, optional test pulses.
    Probe(ProbeArgs),
    /// Export a run's policy for flashing (bin, Rust, C) or for inference runtimes (ONNX).
    Export(ExportArgs),
    /// Continue an interrupted run from its checkpoint.
    Resume(ResumeArgs),
    /// Redraw a run's learning curves from its metrics.
    Plot(PlotArgs),
}

/// Which devices to use.
#[derive(Debug, Clone, Args)]
pub struct DeviceArgs {
    /// The plant: the model simulated devices run (pendulum, cartpole or qube; default
    /// pendulum), and what real devices must report (default: whatever they report).
    #[arg(long)]
    pub plant: Option<String>,
    /// Number of simulated devices (default: 2, or none when real devices are given).
    #[arg(long)]
    pub sim: Option<u32>,
    /// How simulated devices are linked.
    #[arg(long, value_enum)]
    pub link: Option<LinkArg>,
    /// Serial port of a real device (repeatable), e.g. /dev/ttyACM0.
    #[arg(long = "port", value_name = "PATH")]
    pub ports: Vec<String>,
    /// Serial port exposed over TCP (repeatable), HOST:PORT, e.g. by ser2net.
    #[arg(long = "tcp", value_name = "HOST:PORT")]
    pub tcp: Vec<String>,
    /// Serial line rate, bits per second.
    #[arg(long)]
    pub baud: Option<u32>,
    /// Rate-limit simulated links to --baud (to reproduce a real link's throughput).
    #[arg(long)]
    pub emulate_baud: bool,
    /// Fault injection on simulated links, e.g. "corrupt=0.001,drop=0.0005".
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// With --link qemu: the board image QEMU runs (default: the plant's image where
    /// scripts/cross.sh writes it, target/firmware/qemu-mps2-an386/<plant>.elf in the
    /// checkout holding the current directory).
    #[arg(long, value_name = "ELF")]
    pub firmware: Option<PathBuf>,
}

impl DeviceArgs {
    /// The flags as the configuration's `[devices]` keys they set, to lay over a file.
    /// Real devices named here replace the file's devices, simulated ones included, unless
    /// `--sim` says otherwise; where no flag says how many simulated devices, the
    /// configuration's own rule decides.
    pub fn as_config_table(&self) -> toml::Table {
        let mut devices = toml::Table::new();
        let strings = |list: &[String]| toml::Value::from(list.to_vec());
        if !self.ports.is_empty() {
            devices.insert("ports".into(), strings(&self.ports));
        }
        if !self.tcp.is_empty() {
            devices.insert("tcp".into(), strings(&self.tcp));
        }
        let names_real = !self.ports.is_empty() || !self.tcp.is_empty();
        match self.sim {
            Some(n) => {
                devices.insert("sim".into(), i64::from(n).into());
            }
            None if names_real => {
                devices.insert("sim".into(), 0.into());
            }
            None => {}
        }
        if let Some(link) = self.link {
            let kind = match link {
                LinkArg::Memory => "memory",
                LinkArg::Pty => "pty",
                LinkArg::Qemu => "qemu",
            };
            devices.insert("link".into(), kind.into());
        }
        if let Some(baud) = self.baud {
            devices.insert("baud".into(), i64::from(baud).into());
        }
        if self.emulate_baud {
            devices.insert("emulate_baud".into(), true.into());
        }
        if let Some(faults) = &self.faults {
            devices.insert("faults".into(), faults.as_str().into());
        }
        if let Some(firmware) = &self.firmware {
            devices.insert(
                "firmware".into(),
                firmware.to_string_lossy().into_owned().into(),
            );
        }
        let mut table = toml::Table::new();
        if !devices.is_empty() {
            table.insert("devices".into(), devices.into());
        }
        table
    }
}

/// Recursively writes `top`'s keys over `base`.
fn overlay(base: &mut toml::Table, top: &toml::Table) {
    for (key, value) in top {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => overlay(b, t),
            _ => {
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Simulated link kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LinkArg {
    /// In-process byte pipes (fastest).
    Memory,
    /// Pseudo-terminals, opened like real serial ports.
    Pty,
    /// The firmware's Cortex-M board image in QEMU (qemu-system-arm), over its UART's
    /// pseudo-terminal.
    Qemu,
}

/// `tether train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Devices.
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Environment steps to train for (default: the plant's preset).
    #[arg(long)]
    pub steps: Option<u64>,
    /// Seed of every random stream; a fixed seed reproduces a simulated run bit for bit.
    #[arg(long)]
    pub seed: Option<u64>,
    /// TOML configuration file (CLI flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run folder (default: runs/<plant>-<timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Start from a trained policy: a run folder (policy, value function, normaliser with
    /// its statistics) or a policy.bin (policy and normaliser, fresh value function).
    #[arg(long, value_name = "RUN|POLICY")]
    pub init: Option<PathBuf>,
    /// Which policy of the `--init` run folder to start from: `last` (where its training
    /// stopped) or `best` (its best_policy.bin, what `tether export --best` deploys); the
    /// value function comes from the folder's checkpoint either way. Default: the config
    /// file's `init_policy`, else last.
    #[arg(long, value_enum, value_name = "WHICH")]
    pub init_policy: Option<crate::run::config::InitPolicy>,
}

/// `tether eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Policy file (`policy.bin` from a run folder).
    #[arg(long, value_name = "FILE")]
    pub policy: PathBuf,
    /// Devices.
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Episodes to run, split over the devices.
    #[arg(long, default_value_t = 20)]
    pub episodes: u32,
    /// Seed of the devices' initial states.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// TOML file whose `[plant_params]` (and `plant`, unless --plant is given) set the
    /// simulated plant; every other key of the file is ignored (its `[plant_randomize]`
    /// too, unless --randomize).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Give each episode its own plant, drawn from the --config file's `[plant_randomize]`
    /// ranges as in training. With a run's `config.toml`, its seed and its number of
    /// devices, these are the episodes (plants and starts) of the run's `[evaluation]`: its
    /// candidates can be graded again on more of them (the first episodes stay the same).
    #[arg(long, requires = "config")]
    pub randomize: bool,
}

/// `tether probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// The device (one): `--port`, `--tcp`, or a simulated `--plant` (one device by default).
    #[command(flatten)]
    pub devices: DeviceArgs,
    /// Seconds of live observations to print (the plant stays safe: move it by hand).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Apply a test pulse of this many volts (action units), +V then −V; at most a quarter
    /// of the plant's bound.
    #[arg(long, value_name = "VOLTS", allow_negative_numbers = true)]
    pub pulse: Option<f64>,
    /// Length of each test pulse, ms (at most 500).
    #[arg(long, default_value_t = 300)]
    pub pulse_ms: u32,
}

/// `tether sim`.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// Plant model: pendulum, cartpole or qube (default: the config file's `plant`, else
    /// pendulum).
    #[arg(long)]
    pub plant: Option<String>,
    /// TOML file whose `[plant_params]` and `[plant_randomize]` set the plant's physics (a
    /// rig the trainer is not told about: the device then refuses the host's settings);
    /// every other key but `plant` is ignored.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run at the plant's real control rate instead of as fast as the host reads.
    #[arg(long)]
    pub realtime: bool,
    /// Limit the link to this many bits per second (baud / 10 bytes per second).
    #[arg(long)]
    pub baud: Option<u32>,
    /// Fault injection, e.g. "corrupt=0.001,drop=0.0005,stall=2s@10s,reset@30s".
    #[arg(long, value_name = "SPEC")]
    pub faults: Option<String>,
    /// Seed of the fault injector.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run the firmware's Cortex-M board image in QEMU instead of the host build (its UART
    /// is the pseudo-terminal; no --baud or --faults).
    #[arg(long, conflicts_with_all = ["baud", "faults"])]
    pub qemu: bool,
    /// With --qemu: the board image to run (default: the plant's image where
    /// scripts/cross.sh writes it).
    #[arg(long, value_name = "ELF", requires = "qemu")]
    pub firmware: Option<PathBuf>,
}

/// `tether export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Run folder.
    #[arg(long, value_name = "DIR")]
    pub run: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ExportFormat::Bin)]
    pub format: ExportFormat,
    /// Export the run's best evaluated policy (`best_policy.bin`, written by runs with an
    /// `[evaluation]` table; with `average_best` the mean of the best few) instead of its
    /// latest (`policy.bin`).
    #[arg(long)]
    pub best: bool,
    /// Output file (default in the run folder: policy-export.bin, policy.rs, policy.onnx or
    /// policy.h).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// The wire layout with a header and CRC, as the trainer uploads it.
    Bin,
    /// A Rust source file with a `static` parameter array to build into the firmware.
    Rust,
    /// An ONNX model (opset 13) of the deterministic policy, for onnxruntime and others.
    Onnx,
    /// A self-contained C99 header with the deterministic policy as one function.
    C,
}

/// `tether resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// Run folder.
    pub dir: PathBuf,
    /// New total step budget (default: the run's own).
    #[arg(long)]
    pub steps: Option<u64>,
}

/// `tether plot`.
#[derive(Debug, Args)]
pub struct PlotArgs {
    /// Run folder.
    pub dir: PathBuf,
    /// Output file (.svg or .png; default: curve.svg and curve.png in the run folder).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    init_logging(cli.verbose);
    match cli.command {
        Command::Train(args) => train::train(args),
        Command::Resume(args) => train::resume(args),
        Command::Eval(args) => eval::eval(args),
        Command::Sim(args) => sim::sim(args),
        Command::Ports => ports::ports(),
        Command::Probe(args) => probe::probe(args),
        Command::Export(args) => export::export(args),
        Command::Plot(args) => plot::plot(args),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TETHER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}

/// A flag raised by the first Ctrl-C (or SIGTERM, SIGHUP); a second one exits at once. QEMU
/// devices do not outlive that exit: they die with tether (see `device::qemu`).
fn interrupt_flag() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let handler_flag = flag.clone();
    let installed = ctrlc::set_handler(move || {
        if handler_flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted twice: exiting without waiting");
            std::process::exit(130);
        }
        eprintln!(
            "\ninterrupt: finishing the current iteration, then saving (Ctrl-C again to quit now)"
        );
    });
    if let Err(e) = installed {
        tracing::warn!(
            "cannot catch Ctrl-C ({e}); an interrupt will end the run without a final checkpoint"
        );
    }
    flag
}
