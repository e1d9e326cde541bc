//! Connecting a run's devices: simulated boards (in-process firmware with a plant model),
//! local serial ports and serial-over-TCP rigs. Every device is handshaken and must
//! describe the same plant.

use std::time::Duration;

use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::AnyPlant;
use tether_firmware::sim::{FaultSpec, SimBoard, SimConfig, SimHandle, TimeMode};
use tether_shared::PlantDescription;
use tether_shared::seeds::board_seed;

use super::link_budget::LinkBudget;
use crate::device::transport::{self, POLL_INTERVAL};
use crate::device::{ClientConfig, DeviceAddress, DeviceClient, DeviceError, DeviceLink};
use crate::run::config::{LinkKind, RunConfig, TimeoutsConfig};
use crate::trpo::hyperparams::TrpoConfig;

/// Why the fleet could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The plant name is not one of the simulated models.
    #[error("unknown plant `{0}`; simulated plants are: {names}", names = tether_firmware::plant::PLANT_NAMES.join(", "))]
    UnknownPlant(String),
    /// The fault spec does not parse.
    #[error("bad --faults spec: {0}")]
    BadFaults(String),
    /// A pseudo-terminal could not be created.
    #[error("cannot create a pseudo-terminal for a simulated device: {0}")]
    Pty(std::io::Error),
    /// No device at all.
    #[error("no devices: give --sim N, --port PATH or --tcp HOST:PORT")]
    Empty,
    /// A device failed to connect.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// Devices describe different plants.
    #[error(
        "{device} controls plant `{theirs}` but {first} controls `{ours}`; one run trains one kind of plant"
    )]
    MixedPlants {
        /// The odd device.
        device: String,
        /// Its plant.
        theirs: String,
        /// The first device.
        first: String,
        /// The first device's plant.
        ours: String,
    },
}

/// Which devices to connect, resolved from the configuration.
#[derive(Clone, Debug)]
pub struct FleetSpec {
    /// Plant model of the simulated devices.
    pub plant: String,
    /// Number of simulated devices.
    pub sim: u32,
    /// How simulated devices are linked.
    pub link: LinkKind,
    /// Rate-limit simulated links to `baud`.
    pub emulate_baud: bool,
    /// Serial rate, bits per second.
    pub baud: u32,
    /// Fault injection on simulated links.
    pub faults: Option<String>,
    /// Real devices.
    pub addresses: Vec<DeviceAddress>,
    /// Seed of the simulated links' fault injectors.
    pub seed: u64,
    /// Timeouts.
    pub timeouts: TimeoutsConfig,
}

impl FleetSpec {
    /// The fleet a run configuration asks for.
    pub fn from_config(config: &RunConfig<TrpoConfig>) -> Result<Self, String> {
        let d = &config.devices;
        let mut addresses = Vec::new();
        for port in &d.ports {
            addresses.push(DeviceAddress::parse_port(port, d.baud)?);
        }
        for tcp in &d.tcp {
            addresses.push(DeviceAddress::tcp(tcp)?);
        }
        Ok(FleetSpec {
            plant: config.plant.clone(),
            sim: d.sim,
            link: d.link,
            emulate_baud: d.emulate_baud,
            baud: d.baud,
            faults: d.faults.clone(),
            addresses,
            seed: config.seed,
            timeouts: config.timeouts.clone(),
        })
    }

    /// Timeouts and retries for the device clients.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            handshake_timeout: Duration::from_secs_f64(self.timeouts.handshake_s.max(0.01)),
            attempts: self.timeouts.upload_retries.max(1),
            ..ClientConfig::default()
        }
    }
}

/// The connected devices of a run, and the simulated boards behind some of them.
pub struct Fleet {
    /// Handshaken devices, in the order: simulated, serial ports, TCP.
    pub clients: Vec<DeviceClient>,
    /// The plant every device controls.
    pub plant: PlantDescription,
    /// Simulated boards (stopped when the fleet is dropped).
    pub boards: Vec<SimHandle>,
}

impl Fleet {
    /// Starts the simulated boards, opens every link and handshakes every device.
    pub fn connect(spec: &FleetSpec) -> Result<Self, FleetError> {
        let mut links = Vec::new();
        let mut boards = Vec::new();
        for index in 0..spec.sim {
            let (link, board) = start_sim(spec, index)?;
            links.push(link);
            boards.push(board);
        }
        for address in &spec.addresses {
            let again = address.clone();
            links.push(
                DeviceLink::new(address.to_string(), transport::open(address)?)
                    .with_reopen(Box::new(move || transport::open(&again))),
            );
        }
        if links.is_empty() {
            return Err(FleetError::Empty);
        }
        let config = spec.client_config();
        // Handshake in parallel: a silent device costs its timeout once, not once per device.
        let results: Vec<Result<DeviceClient, DeviceError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = links
                .into_iter()
                .map(|link| {
                    let config = config.clone();
                    scope.spawn(move || DeviceClient::connect(link, config))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(DeviceError::Disconnected {
                            device: "handshake thread".into(),
                        })
                    })
                })
                .collect()
        });
        let clients = results.into_iter().collect::<Result<Vec<_>, _>>()?;
        let plant = check_same_plant(&clients)?;
        for (client, baud) in clients.iter().zip(link_rates(spec)) {
            if let Some(warning) =
                baud.and_then(|b| LinkBudget::serial(&plant, b).warning(client.name()))
            {
                tracing::warn!("{warning}");
            }
        }
        Ok(Fleet {
            clients,
            plant,
            boards,
        })
    }
}

fn start_sim(spec: &FleetSpec, index: u32) -> Result<(DeviceLink, SimHandle), FleetError> {
    let plant = AnyPlant::by_name(&spec.plant)
        .ok_or_else(|| FleetError::UnknownPlant(spec.plant.clone()))?;
    let faults = match &spec.faults {
        Some(text) => text
            .parse::<FaultSpec>()
            .map_err(|e| FleetError::BadFaults(e.to_string()))?,
        None => FaultSpec::none(),
    };
    let config = SimConfig {
        time: TimeMode::Virtual,
        baud: spec.emulate_baud.then_some(spec.baud),
        faults,
        seed: board_seed(spec.seed, index),
        // The watchdog guards real hardware against a silent host; in virtual time the
        // device's seconds pass far faster than the host's heartbeats, so it would fire for
        // no reason. The host still detects a silent device by wall time.
        device: DeviceConfig {
            watchdog_timeout_us: 0,
            ..DeviceConfig::default()
        },
        ..SimConfig::default()
    };
    let name = format!("sim{index}:{}", spec.plant);
    let board = SimBoard::new(plant, config);
    match spec.link {
        LinkKind::Memory => {
            let (mut host, handle) = board.spawn_memory();
            host.set_timeout(POLL_INTERVAL);
            Ok((DeviceLink::new(name, Box::new(host)), handle))
        }
        LinkKind::Pty => {
            let (path, handle) = board.spawn_pty().map_err(FleetError::Pty)?;
            let address = DeviceAddress::Serial {
                path: path.to_string_lossy().into_owned(),
                baud: spec.baud,
            };
            let stream = transport::open(&address)?;
            Ok((
                DeviceLink::new(format!("{name}@{}", path.display()), stream),
                handle,
            ))
        }
    }
}

/// Each device's line rate in bits per second, in fleet order (`None`: not rate limited).
fn link_rates(spec: &FleetSpec) -> Vec<Option<u32>> {
    let sims = (0..spec.sim).map(|_| spec.emulate_baud.then_some(spec.baud));
    let real = spec.addresses.iter().map(|a| match a {
        DeviceAddress::Serial { baud, .. } => Some(*baud),
        // ser2net's far side has its own baud rate, which the host cannot see.
        DeviceAddress::Tcp { .. } => None,
    });
    sims.chain(real).collect()
}

fn check_same_plant(clients: &[DeviceClient]) -> Result<PlantDescription, FleetError> {
    let Some(first) = clients.first() else {
        return Err(FleetError::Empty);
    };
    let plant = first.info().plant.clone();
    for client in &clients[1..] {
        let theirs = &client.info().plant;
        if theirs.name != plant.name
            || theirs.obs_dim != plant.obs_dim
            || theirs.action != plant.action
        {
            return Err(FleetError::MixedPlants {
                device: client.name().to_string(),
                theirs: theirs.name.to_string(),
                first: first.name().to_string(),
                ours: plant.name.to_string(),
            });
        }
    }
    Ok(plant)
}
