//! The fault matrix: training runs on a simulated pendulum board under seeded link faults,
//! each checked against the device's own record of what it produced.
//!
//! One [`Fault`] per cell. [`run_cell`] starts a board whose link emulation injects the fault
//! and whose [`WireTap`] keeps every byte the device sent *before* injection, trains through
//! the real [`Session`] (so `metrics.jsonl` is the product's), sees every accepted episode
//! through [`Session::observe_rounds`], and reports:
//!
//! - whether the run finished, or the error it stopped with (never a hang: the cell has a
//!   deadline, and a cell that misses it is reported as hung);
//! - how many accepted transitions were checked bitwise against the device's record, and
//!   any that do not match (must be none);
//! - the metrics' totals (`rejected_frames`, `discarded_episodes`, `reconnects`, and what
//!   recovery did: `resend_requests`, `recovered_steps`, `cut_episodes`, `lost_steps`) and how
//!   many episodes the device completed that the host neither accepted nor could still be
//!   waiting for (each must be counted as discarded);
//! - how many of the transitions the device produced (up to what the run needed) the
//!   learner got, and how many it lost inside the episodes it kept (each must be counted in
//!   `lost_steps`).
//!
//! `cargo run --release -p tether-hil-tests --example fault_matrix` prints the README table.

mod bridge;
mod record;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::AnyPlant;
use tether_firmware::sim::{FaultSpec, HostEnd, SimBoard, SimConfig, SimHandle, WireTap};
use tether_shared::PlantDescription;
use tether_shared::message::RecordLayout;
use tether_trainer::device::transport::{self, POLL_INTERVAL};
use tether_trainer::device::{ClientConfig, DeviceAddress, DeviceClient, DeviceLink};
use tether_trainer::rollout::CollectedEpisode;
use tether_trainer::run::{RunConfig, RunFolder, read_metrics};
use tether_trainer::training::{Fleet, Session};
use tether_trainer::trpo::hyperparams::TrpoConfig;

pub use bridge::TcpBridge;
pub use record::{DeviceRecord, StepKey};

/// One cell's fault.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// A clean link (the reference row).
    None,
    /// Each byte has one bit flipped with this probability (both directions).
    Corrupt(f64),
    /// Each byte is lost with this probability.
    Drop(f64),
    /// Each byte is sent twice with this probability.
    Duplicate(f64),
    /// Corruption, drops and duplicates, each at this rate.
    AllThree(f64),
    /// A burst of `len` random bytes before a share `probability` of the transfers.
    Garbage {
        /// Share of transfers (device reads and writes).
        probability: f64,
        /// Bytes per burst.
        len: usize,
    },
    /// The link moves no byte from board time `at_s` for `for_s` seconds (board time runs
    /// far faster than wall time while episodes run, so a long stall is needed to outlast
    /// the host's wall-clock timeouts).
    Stall {
        /// Start, board seconds.
        at_s: f64,
        /// Length, board seconds.
        for_s: f64,
    },
    /// The device power-cycles at board time `at_s` (in the middle of an episode).
    Reset {
        /// Board seconds.
        at_s: f64,
    },
    /// The board is reached over TCP through a bridge that cuts the connection after this
    /// many bytes from the device (one cut per entry).
    Disconnect {
        /// Device bytes forwarded before each cut.
        after_bytes: Vec<u64>,
    },
}

impl Fault {
    /// The fault's name in the table.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::Corrupt(_) => "corrupt",
            Fault::Drop(_) => "drop",
            Fault::Duplicate(_) => "dup",
            Fault::AllThree(_) => "all three",
            Fault::Garbage { .. } => "garbage",
            Fault::Stall { .. } => "stall",
            Fault::Reset { .. } => "reset",
            Fault::Disconnect { .. } => "disconnect",
        }
    }

    /// The rate or timing column of the table.
    pub fn rate(&self) -> String {
        match self {
            Fault::None => "-".into(),
            Fault::Corrupt(p) | Fault::Drop(p) | Fault::Duplicate(p) | Fault::AllThree(p) => {
                format!("{p:e}")
            }
            Fault::Garbage { probability, len } => format!("{len} B in {}%", probability * 100.0),
            Fault::Stall { at_s, for_s } => format!("{for_s}s@{at_s}s"),
            Fault::Reset { at_s } => format!("@{at_s}s"),
            Fault::Disconnect { after_bytes } => format!("{} cut(s)", after_bytes.len()),
        }
    }

    /// The link emulation's spec for this fault.
    pub fn spec(&self) -> FaultSpec {
        let text = match self {
            Fault::None | Fault::Disconnect { .. } => String::new(),
            Fault::Corrupt(p) => format!("corrupt={p}"),
            Fault::Drop(p) => format!("drop={p}"),
            Fault::Duplicate(p) => format!("dup={p}"),
            Fault::AllThree(p) => format!("corrupt={p},drop={p},dup={p}"),
            Fault::Garbage { probability, len } => format!("garbage={probability}:{len}"),
            Fault::Stall { at_s, for_s } => format!("stall={for_s}s@{at_s}s"),
            Fault::Reset { at_s } => format!("reset@{at_s}s"),
        };
        text.parse().unwrap_or_default()
    }
}

/// How big a run each cell trains.
#[derive(Clone, Debug)]
pub struct CellConfig {
    /// Steps to train for.
    pub total_steps: u64,
    /// Steps per TRPO iteration.
    pub steps_per_iteration: usize,
    /// Hidden layers of the policy and value networks.
    pub hidden: Vec<usize>,
    /// Seed of the run and of the fault injector.
    pub seed: u64,
    /// The cell is reported as hung past this.
    pub deadline: Duration,
    /// Requests for a lost stretch before its episode is cut (`None`: the default; 0:
    /// cut at every gap without asking).
    pub resend_attempts: Option<u32>,
    /// The simulated link's rate limit in baud (`None`: unlimited, the default).
    pub baud: Option<u32>,
}

impl CellConfig {
    /// A small run for `cargo test` (a few iterations of a small network).
    pub fn quick(seed: u64) -> Self {
        CellConfig {
            total_steps: 6_000,
            steps_per_iteration: 2_000,
            hidden: vec![16, 16],
            seed,
            deadline: Duration::from_secs(60),
            resend_attempts: None,
            baud: None,
        }
    }
}

/// What one cell did.
#[derive(Clone, Debug)]
pub struct CellReport {
    /// Fault name.
    pub fault: &'static str,
    /// Rate or timing.
    pub rate: String,
    /// Whether the step budget was reached.
    pub finished: bool,
    /// The error the run stopped with, if it did.
    pub error: Option<String>,
    /// Whether the deadline passed with the run still going.
    pub hung: bool,
    /// Iterations recorded in metrics.jsonl.
    pub iterations: usize,
    /// Sum of `rejected_frames` over metrics.jsonl.
    pub frames_lost: u64,
    /// Sum of `discarded_episodes` over metrics.jsonl.
    pub episodes_discarded: u64,
    /// Sum of `reconnects` over metrics.jsonl.
    pub reconnects: u64,
    /// Sum of `resend_requests` over metrics.jsonl.
    pub resend_requests: u64,
    /// Sum of `recovered_steps` over metrics.jsonl.
    pub recovered_steps: u64,
    /// Sum of `cut_episodes` over metrics.jsonl.
    pub cut_episodes: u64,
    /// Sum of `lost_steps` over metrics.jsonl.
    pub lost_steps: u64,
    /// Transitions the device produced up to what the run needed (from its wire tap).
    pub produced: u64,
    /// Of the accepted episodes, steps the device produced below a kept step that the host
    /// did not get (each must be counted in `lost_steps`).
    pub lost_inside_kept: u64,
    /// `mean_return` of the last iteration.
    pub final_return: f64,
    /// Accepted transitions checked against the device's record.
    pub checked: usize,
    /// Accepted transitions the device never produced (must be empty).
    pub mismatches: Vec<String>,
    /// Episodes the device completed that the host lost (each must be counted discarded).
    pub lost_episodes: usize,
    /// Device power cycles the board carried out.
    pub resets: u32,
    /// Connections the TCP bridge cut.
    pub cuts: u32,
    /// Wall time of the cell.
    pub wall: Duration,
    /// CPU time (user + system) the process spent during the cell, seconds: the trainer
    /// and the board thread together (NaN where `/proc/self/stat` cannot be read).
    pub cpu_s: f64,
}

impl CellReport {
    /// Share of the transitions the device produced (up to what the run needed) that the
    /// learner got.
    pub fn used_fraction(&self) -> f64 {
        if self.produced == 0 {
            return f64::NAN;
        }
        self.checked as f64 / self.produced as f64
    }

    /// One row of the README table; `clean_wall` is the clean run's wall time (for the
    /// ratio column).
    pub fn table_row(&self, clean_wall: Duration) -> String {
        let outcome = if self.hung {
            "HUNG".to_string()
        } else if self.finished {
            "finished".to_string()
        } else {
            format!(
                "stopped: {}",
                self.error.as_deref().unwrap_or("?").replace('|', "/")
            )
        };
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.2} | {:.1} % | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            self.fault,
            self.rate,
            self.wall.as_secs_f64(),
            self.cpu_s,
            self.wall.as_secs_f64() / clean_wall.as_secs_f64().max(1e-9),
            100.0 * self.used_fraction(),
            self.frames_lost,
            self.resend_requests,
            self.recovered_steps,
            self.cut_episodes,
            self.lost_steps,
            self.episodes_discarded,
            self.reconnects,
            self.final_return,
            outcome
        )
    }

    /// The table's header.
    pub fn table_header() -> &'static str {
        "| fault | rate | wall s | CPU s | × clean | transitions used | frames lost | resend requests | steps recovered | episodes cut | steps lost | episodes discarded | reconnects | final return | outcome |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    }
}

/// A fresh run folder under the system's temporary directory.
fn temp_run_dir(label: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    std::env::temp_dir().join(format!(
        "tether-fault-{}-{}-{label}-{n}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ))
}

/// Trains one cell and checks it (see the module documentation).
pub fn run_cell(fault: &Fault, config: &CellConfig) -> CellReport {
    let started = Instant::now();
    let cpu_started = process_cpu_s();
    let tap = WireTap::new();
    let (host, board) = start_board(fault, config, &tap);
    let (link, bridge) = open_link(fault, host);
    let folder = temp_run_dir(fault.name());
    let mut report = CellReport::new(fault);
    let accepted: Arc<Mutex<Vec<CollectedEpisode>>> = Arc::default();
    let plant = train(link, config, &folder, &accepted, &mut report);
    if let Some(b) = bridge {
        report.cuts = b.stop();
    }
    report.resets = board.stop().resets;
    report.add_metrics(&folder);
    if let Some(plant) = plant {
        let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner());
        report.check_against_device(&plant, &tap, &accepted);
    }
    let _ = std::fs::remove_dir_all(&folder);
    report.wall = started.elapsed();
    report.cpu_s = process_cpu_s() - cpu_started;
    report
}

/// CPU time (user + system) this process has used so far, seconds; NaN where
/// `/proc/self/stat` cannot be read.
pub fn process_cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // Fields after the parenthesised command name: state is the first, utime the 12th and
    // stime the 13th, in clock ticks (100 per second on Linux).
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) else {
        return f64::NAN;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

/// A pendulum board whose link emulation injects the cell's fault and whose tap records
/// what the device sent before injection.
fn start_board(fault: &Fault, config: &CellConfig, tap: &WireTap) -> (HostEnd, SimHandle) {
    let sim = SimConfig {
        faults: fault.spec(),
        baud: config.baud,
        seed: config.seed ^ 0x5EED,
        // As in the trainer's fleet: in virtual time the watchdog would fire for no reason.
        device: DeviceConfig {
            watchdog_timeout_us: 0,
            ..DeviceConfig::default()
        },
        tx_tap: Some(tap.clone()),
        ..SimConfig::default()
    };
    let plant = AnyPlant::by_name("pendulum").expect("the pendulum model exists");
    SimBoard::new(plant, sim).spawn_memory()
}

/// The host's link to the board: the memory pipe itself, or (for a disconnect fault) a TCP
/// connection through a bridge that cuts it, reopened on demand.
fn open_link(fault: &Fault, mut host: HostEnd) -> (DeviceLink, Option<TcpBridge>) {
    match fault {
        Fault::Disconnect { after_bytes } => {
            let bridge = TcpBridge::start(host, after_bytes.clone()).expect("bridge starts");
            let address = DeviceAddress::tcp(&bridge.endpoint).expect("a TCP address");
            let reopen_address = address.clone();
            let stream = transport::open(&address).expect("bridge accepts");
            let link = DeviceLink::new(address.to_string(), stream)
                .with_reopen(Box::new(move || transport::open(&reopen_address)));
            (link, Some(bridge))
        }
        _ => {
            host.set_timeout(POLL_INTERVAL);
            (DeviceLink::new("sim0", Box::new(host)), None)
        }
    }
}

/// Trains the cell through the product's [`Session`], collecting every accepted episode
/// into `accepted`; the outcome goes into `report`. Returns the plant the device described,
/// `None` when the handshake failed.
fn train(
    link: DeviceLink,
    config: &CellConfig,
    folder: &Path,
    accepted: &Arc<Mutex<Vec<CollectedEpisode>>>,
    report: &mut CellReport,
) -> Option<PlantDescription> {
    let client_config = ClientConfig {
        handshake_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };
    let client = match DeviceClient::connect(link, client_config) {
        Ok(client) => client,
        Err(e) => {
            report.error = Some(format!("cannot start training: {e}"));
            return None;
        }
    };
    let plant = client.info().plant.clone();
    let fleet = Fleet {
        clients: vec![client],
        plant: plant.clone(),
        boards: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (worker, done) = spawn_session(
        folder.to_path_buf(),
        run_config(config, &plant),
        fleet,
        accepted.clone(),
        stop.clone(),
    );
    match done.recv_timeout(config.deadline) {
        Ok(Ok(finished)) => report.finished = finished,
        Ok(Err(e)) => report.error = Some(e),
        Err(_) => {
            report.hung = true;
            stop.store(true, Ordering::SeqCst);
            // Give an iteration in progress a bounded chance to end.
            let _ = done.recv_timeout(Duration::from_secs(30));
        }
    }
    if !report.hung {
        let _ = worker.join();
    }
    Some(plant)
}

/// The run a cell trains on `plant`: the cell's size and seed over the trainer's defaults.
fn run_config(config: &CellConfig, plant: &PlantDescription) -> RunConfig<TrpoConfig> {
    let mut run_config: RunConfig<TrpoConfig> = RunConfig {
        plant: plant.name.to_string(),
        seed: config.seed,
        total_steps: config.total_steps,
        steps_per_iteration: config.steps_per_iteration as u64,
        ..RunConfig::default()
    };
    run_config.trpo.policy_hidden = config.hidden.clone();
    run_config.trpo.value_hidden = config.hidden.clone();
    if let Some(attempts) = config.resend_attempts {
        run_config.timeouts.resend_attempts = attempts;
    }
    run_config
}

/// Runs the session in a thread (so the cell can enforce its deadline); the channel gets
/// whether it finished, or its error.
fn spawn_session(
    folder: PathBuf,
    run_config: RunConfig<TrpoConfig>,
    fleet: Fleet,
    sink: Arc<Mutex<Vec<CollectedEpisode>>>,
    stop: Arc<AtomicBool>,
) -> (JoinHandle<()>, mpsc::Receiver<Result<bool, String>>) {
    let (done_tx, done_rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let result = RunFolder::create(&folder)
            .map_err(|e| e.to_string())
            .and_then(|folder| {
                Session::start_with_fleet(folder, run_config, fleet).map_err(|e| e.to_string())
            })
            .and_then(|mut session| {
                session.observe_rounds(move |results| {
                    let mut sink = sink.lock().unwrap_or_else(|p| p.into_inner());
                    for r in results {
                        if let Ok(rollout) = &r.outcome {
                            sink.extend(rollout.episodes.iter().cloned());
                        }
                    }
                });
                session
                    .run(&stop, |_| {})
                    .map(|outcome| outcome.finished)
                    .map_err(|e| e.to_string())
            });
        let _ = done_tx.send(result);
    });
    (worker, done_rx)
}

impl CellReport {
    /// A report of nothing done yet.
    fn new(fault: &Fault) -> Self {
        CellReport {
            fault: fault.name(),
            rate: fault.rate(),
            finished: false,
            error: None,
            hung: false,
            iterations: 0,
            frames_lost: 0,
            episodes_discarded: 0,
            reconnects: 0,
            resend_requests: 0,
            recovered_steps: 0,
            cut_episodes: 0,
            lost_steps: 0,
            produced: 0,
            lost_inside_kept: 0,
            final_return: f64::NAN,
            checked: 0,
            mismatches: Vec::new(),
            lost_episodes: 0,
            resets: 0,
            cuts: 0,
            wall: Duration::ZERO,
            cpu_s: f64::NAN,
        }
    }

    /// The totals of the run's `metrics.jsonl`, if it wrote one.
    fn add_metrics(&mut self, folder: &Path) {
        if let Ok(metrics) = read_metrics(&folder.join("metrics.jsonl")) {
            self.iterations = metrics.len();
            self.frames_lost = metrics.iter().map(|m| m.rejected_frames).sum();
            self.episodes_discarded = metrics.iter().map(|m| m.discarded_episodes).sum();
            self.reconnects = metrics.iter().map(|m| m.reconnects).sum();
            self.resend_requests = metrics.iter().map(|m| m.resend_requests).sum();
            self.recovered_steps = metrics.iter().map(|m| m.recovered_steps).sum();
            self.cut_episodes = metrics.iter().map(|m| m.cut_episodes).sum();
            self.lost_steps = metrics.iter().map(|m| m.lost_steps).sum();
            self.final_return = metrics.last().map_or(f64::NAN, |m| m.mean_return);
        }
    }

    /// Checks the accepted episodes bitwise against what the device sent.
    fn check_against_device(
        &mut self,
        plant: &PlantDescription,
        tap: &WireTap,
        accepted: &[CollectedEpisode],
    ) {
        let record = DeviceRecord::from_wire(&tap.bytes(), RecordLayout::of_plant(plant));
        match record.verify(accepted) {
            Ok(n) => self.checked = n,
            Err(bad) => self.mismatches = bad,
        }
        self.lost_episodes = record.lost_episodes(accepted);
        self.produced = record.produced_needed(accepted);
        self.lost_inside_kept = record.lost_inside_kept(accepted);
    }
}
