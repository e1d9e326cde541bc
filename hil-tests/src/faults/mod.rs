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
//! - the metrics' totals (`rejected_frames`, `discarded_episodes`, `reconnects`) and how
//!   many episodes the device completed that the host neither accepted nor could still be
//!   waiting for (each must be counted as discarded).
//!
//! `cargo run --release -p tether-hil-tests --example fault_matrix` prints the README table.

mod bridge;
mod record;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::AnyPlant;
use tether_firmware::sim::{FaultSpec, SimBoard, SimConfig, WireTap};
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
            Fault::Stall { .. } => "stall",
            Fault::Reset { .. } => "reset",
            Fault::Disconnect { .. } => "disconnect",
        }
    }

    /// The rate or timing column of the table.
    pub fn rate(&self) -> String {
        match self {
            Fault::None => "-".into(),
            Fault::Corrupt(p) | Fault::Drop(p) | Fault::Duplicate(p) => format!("{p:e}"),
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
}

impl CellReport {
    /// One row of the README table.
    pub fn table_row(&self) -> String {
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
            "| {} | {} | {} | {} | {} | {:.1} | {} | {} |",
            self.fault,
            self.rate,
            self.frames_lost,
            self.episodes_discarded,
            self.reconnects,
            self.final_return,
            self.checked,
            outcome
        )
    }

    /// The table's header.
    pub fn table_header() -> &'static str {
        "| fault | rate | frames lost | episodes discarded | reconnects | final return | accepted transitions checked | outcome |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
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
    let tap = WireTap::new();
    let sim = SimConfig {
        faults: fault.spec(),
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
    let (mut host, board) = SimBoard::new(plant, sim).spawn_memory();
    let client_config = ClientConfig {
        handshake_timeout: Duration::from_secs(2),
        ..ClientConfig::default()
    };

    let mut bridge = None;
    let link = match fault {
        Fault::Disconnect { after_bytes } => {
            let b = TcpBridge::start(host, after_bytes.clone()).expect("bridge starts");
            let address = DeviceAddress::tcp(&b.endpoint).expect("a TCP address");
            let again = address.clone();
            let stream = transport::open(&address).expect("bridge accepts");
            bridge = Some(b);
            DeviceLink::new(address.to_string(), stream)
                .with_reopen(Box::new(move || transport::open(&again)))
        }
        _ => {
            host.set_timeout(POLL_INTERVAL);
            DeviceLink::new("sim0", Box::new(host))
        }
    };

    let folder_path = temp_run_dir(fault.name());
    let mut report = CellReport {
        fault: fault.name(),
        rate: fault.rate(),
        finished: false,
        error: None,
        hung: false,
        iterations: 0,
        frames_lost: 0,
        episodes_discarded: 0,
        reconnects: 0,
        final_return: f64::NAN,
        checked: 0,
        mismatches: Vec::new(),
        lost_episodes: 0,
        resets: 0,
        cuts: 0,
        wall: Duration::ZERO,
    };

    let accepted: Arc<Mutex<Vec<CollectedEpisode>>> = Arc::default();
    let plant_info = match DeviceClient::connect(link, client_config) {
        Ok(client) => {
            let plant = client.info().plant.clone();
            let fleet = Fleet {
                clients: vec![client],
                plant: plant.clone(),
                boards: Vec::new(),
            };
            let mut run_config: RunConfig<TrpoConfig> = RunConfig {
                plant: plant.name.to_string(),
                seed: config.seed,
                total_steps: config.total_steps,
                steps_per_iteration: config.steps_per_iteration as u64,
                ..RunConfig::default()
            };
            run_config.trpo.policy_hidden = config.hidden.clone();
            run_config.trpo.value_hidden = config.hidden.clone();
            let stop = Arc::new(AtomicBool::new(false));
            let (done_tx, done_rx) = mpsc::channel();
            let sink = accepted.clone();
            let flag = stop.clone();
            let path = folder_path.clone();
            let worker = std::thread::spawn(move || {
                let result = RunFolder::create(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|folder| {
                        Session::start_with_fleet(folder, run_config, fleet)
                            .map_err(|e| e.to_string())
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
                        session.run(&flag, |_| {}).map_err(|e| e.to_string())
                    });
                let _ = done_tx.send(result);
            });
            match done_rx.recv_timeout(config.deadline) {
                Ok(Ok(outcome)) => report.finished = outcome.finished,
                Ok(Err(e)) => report.error = Some(e),
                Err(_) => {
                    report.hung = true;
                    stop.store(true, Ordering::SeqCst);
                    // Give an iteration in progress a bounded chance to end.
                    let _ = done_rx.recv_timeout(Duration::from_secs(30));
                }
            }
            if !report.hung {
                let _ = worker.join();
            }
            Some(plant)
        }
        Err(e) => {
            report.error = Some(format!("cannot start training: {e}"));
            None
        }
    };

    if let Some(b) = bridge.take() {
        report.cuts = b.stop();
    }
    report.resets = board.stop().resets;

    if let Ok(metrics) = read_metrics(&folder_path.join("metrics.jsonl")) {
        report.iterations = metrics.len();
        report.frames_lost = metrics.iter().map(|m| m.rejected_frames).sum();
        report.episodes_discarded = metrics.iter().map(|m| m.discarded_episodes).sum();
        report.reconnects = metrics.iter().map(|m| m.reconnects).sum();
        report.final_return = metrics.last().map_or(f64::NAN, |m| m.mean_return);
    }
    if let Some(plant) = plant_info {
        let obs_dim = plant.obs_dim as usize;
        let action_width = plant.action.wire_width();
        let record = DeviceRecord::from_wire(&tap.bytes(), obs_dim + action_width + 2);
        let accepted = accepted.lock().unwrap_or_else(|p| p.into_inner());
        match record.verify(&accepted, obs_dim, action_width) {
            Ok(n) => report.checked = n,
            Err(bad) => report.mismatches = bad,
        }
        report.lost_episodes = record.lost_episodes(&accepted);
    }
    let _ = std::fs::remove_dir_all(&folder_path);
    report.wall = started.elapsed();
    report
}
