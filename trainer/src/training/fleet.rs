//! Connecting a run's devices: simulated boards (the firmware with a plant model, in-process
//! or as the Cortex-M image in QEMU), local serial ports and serial-over-TCP rigs. Every device is handshaken and must
//! describe the same plant; when the run is configured for a plant, every device must
//! report that one.

use std::path::PathBuf;
use std::time::Duration;

use tether_firmware::rate_limit::ActionRateLimit;
use tether_firmware::sim::TimeMode;
use tether_shared::PlantDescription;
use tether_shared::message::PlantParams;
use tether_shared::seeds::board_seed;

use super::link_budget::LinkBudget;
use crate::device::simulated::{
    DEFAULT_SIM_PLANT, SimDevice, SimDeviceError, SimDeviceSpec, SimMachine,
};
use crate::device::transport::{self, POLL_INTERVAL};
use crate::device::{ClientConfig, DeviceAddress, DeviceClient, DeviceError, DeviceLink, replug};
use crate::run::config::{DevicesConfig, LinkKind, RunConfig, TimeoutsConfig};

/// Why the fleet could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A simulated device cannot be set up (unknown plant, bad fault spec).
    #[error(transparent)]
    Sim(#[from] SimDeviceError),
    /// A serial port or TCP address does not parse.
    #[error("bad device address: {0}")]
    BadAddress(String),
    /// Simulated devices, but no plant for them to model.
    #[error(
        "simulated and real devices together need --plant (or `plant` in the config): it names \
         the model the simulated devices run, and the real devices must report it"
    )]
    PlantNeeded,
    /// No device at all.
    #[error("no devices: give --sim N, --port PATH or --tcp HOST:PORT")]
    Empty,
    /// A device failed to connect.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// A device reports another plant than the one the run is configured for.
    #[error("{device} reports plant `{reports}`, but the run is configured for plant `{expected}`")]
    PlantMismatch {
        /// The device.
        device: String,
        /// The plant it reports in its handshake.
        reports: String,
        /// The configured plant.
        expected: String,
    },
    /// The plant settings are invalid (see [`crate::run::plant_settings`]).
    #[error("invalid `{key}`: {reason}")]
    PlantSettings {
        /// The dotted key.
        key: String,
        /// What is wrong.
        reason: String,
    },
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
    /// The plant the run is configured for: simulated devices model it and every device
    /// must report it. `None`: the plant the (real) devices report, whatever it is.
    pub plant: Option<String>,
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
    /// The action rate limit simulated devices enforce; `None`: none.
    pub action_rate_limit: Option<ActionRateLimit>,
    /// The board image QEMU devices run instead of the plant's default one.
    pub firmware: Option<PathBuf>,
    /// Real devices.
    pub addresses: Vec<DeviceAddress>,
    /// Seed of the simulated links' fault injectors.
    pub seed: u64,
    /// Timeouts.
    pub timeouts: TimeoutsConfig,
    /// Plant parameters every device gets after its handshake (`None`: none sent, each
    /// device keeps its own physics).
    pub plant_params: Option<PlantParams>,
}

impl FleetSpec {
    /// The fleet of `devices`, for the configured `plant` if any. Simulated devices model
    /// `plant`; with no plant named they model [`DEFAULT_SIM_PLANT`] when they are the only
    /// devices, and are an error ([`FleetError::PlantNeeded`]) beside real ones. Checks what
    /// can be checked before connecting: addresses, and that simulated devices have a known
    /// plant.
    pub fn new(
        devices: &DevicesConfig,
        timeouts: &TimeoutsConfig,
        seed: u64,
        plant: Option<&str>,
    ) -> Result<Self, FleetError> {
        let mut addresses = Vec::new();
        for port in &devices.ports {
            addresses.push(
                DeviceAddress::parse_port(port, devices.baud).map_err(FleetError::BadAddress)?,
            );
        }
        for tcp in &devices.tcp {
            addresses.push(DeviceAddress::tcp(tcp).map_err(FleetError::BadAddress)?);
        }
        let plant = match plant {
            Some(named) => Some(named),
            None if devices.sim > 0 && addresses.is_empty() => Some(DEFAULT_SIM_PLANT),
            None => None,
        };
        let spec = FleetSpec {
            plant: plant.map(str::to_string),
            sim: devices.sim,
            link: devices.link,
            emulate_baud: devices.emulate_baud,
            baud: devices.baud,
            faults: devices.faults.clone(),
            // Checked by `RunConfig::validate`; an unusable limit is treated as none here.
            action_rate_limit: ActionRateLimit::new(&devices.action_rate_limit).ok(),
            firmware: devices.firmware.clone(),
            addresses,
            seed,
            timeouts: timeouts.clone(),
            plant_params: None,
        };
        if spec.sim > 0 {
            spec.sim_device(0)?.check()?;
        }
        Ok(spec)
    }

    /// How simulated device `index` runs.
    fn sim_device(&self, index: u32) -> Result<SimDeviceSpec<'_>, FleetError> {
        let plant = self.plant.as_deref().ok_or(FleetError::PlantNeeded)?;
        Ok(SimDeviceSpec {
            plant,
            time: TimeMode::Virtual,
            baud: self.emulate_baud.then_some(self.baud),
            faults: self.faults.as_deref(),
            seed: board_seed(self.seed, index),
            machine: match self.link {
                LinkKind::Memory | LinkKind::Pty => SimMachine::Host,
                LinkKind::Qemu => SimMachine::Qemu {
                    firmware: self.firmware.as_deref(),
                },
            },
            fixed_params: None,
            action_rate_limit: self.action_rate_limit,
        })
    }

    /// The same fleet, whose devices get `params` after their handshake.
    pub fn with_plant_params(mut self, params: Option<PlantParams>) -> Self {
        self.plant_params = params;
        self
    }

    /// The fleet a run configuration asks for (its devices must report its plant and get
    /// its plant settings).
    pub fn from_config<T>(config: &RunConfig<T>) -> Result<Self, FleetError> {
        let params = config
            .plant_settings()
            .map_err(|invalid| FleetError::PlantSettings {
                key: invalid.key,
                reason: invalid.reason,
            })?;
        Ok(Self::new(
            &config.devices,
            &config.timeouts,
            config.seed,
            Some(&config.plant),
        )?
        .with_plant_params(params))
    }

    /// Timeouts and retries for the device clients.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            handshake_timeout: Duration::from_secs_f64(self.timeouts.handshake_s.max(0.01)),
            attempts: self.timeouts.upload_retries.max(1),
            rto_floor: Duration::from_secs_f64(self.timeouts.rto_floor_s.max(1e-4)),
            rto_ceiling: Duration::from_secs_f64(self.timeouts.rto_ceiling_s.max(1e-4)),
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
    /// Simulated devices (stopped when the fleet is dropped).
    pub boards: Vec<SimDevice>,
}

impl Fleet {
    /// Starts the simulated boards, opens every link and handshakes every device. QEMU
    /// devices end with the thread that calls this (see [`crate::device::qemu`]).
    pub fn connect(spec: &FleetSpec) -> Result<Self, FleetError> {
        let mut links = Vec::new();
        let mut boards = Vec::new();
        for index in 0..spec.sim {
            let (link, board) = start_sim(spec, index)?;
            links.push(link);
            boards.push(board);
        }
        let grace = Duration::from_secs_f64(spec.timeouts.replug_grace_s.max(0.0));
        for address in &spec.addresses {
            links.push(
                DeviceLink::new(address.to_string(), transport::open(address)?)
                    .with_reopen(replug::reopener(address, grace)),
            );
        }
        if links.is_empty() {
            return Err(FleetError::Empty);
        }
        let config = spec.client_config();
        let params = spec.plant_params.as_ref();
        // Handshake in parallel: a silent device costs its timeout once, not once per device.
        let results: Vec<Result<DeviceClient, DeviceError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = links
                .into_iter()
                .map(|link| {
                    let config = config.clone();
                    scope.spawn(move || {
                        let mut client = DeviceClient::connect(link, config)?;
                        if let Some(params) = params {
                            client.set_plant_params(params.clone())?;
                        }
                        Ok(client)
                    })
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
        if let Some(expected) = &spec.plant {
            check_reported_plant(&clients, expected)?;
        }
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

fn start_sim(spec: &FleetSpec, index: u32) -> Result<(DeviceLink, SimDevice), FleetError> {
    let device = spec.sim_device(index)?;
    let plant = device.plant;
    match spec.link {
        LinkKind::Memory => {
            let (mut host, handle) = device.spawn_memory()?;
            host.set_timeout(POLL_INTERVAL);
            let name = format!("sim{index}:{plant}");
            Ok((DeviceLink::new(name, Box::new(host)), handle))
        }
        LinkKind::Pty | LinkKind::Qemu => {
            let name = match spec.link {
                LinkKind::Qemu => format!("qemu{index}:{plant}"),
                _ => format!("sim{index}:{plant}"),
            };
            let (path, handle) = device.spawn_pty(&name)?;
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

/// The first device that reports another plant than `expected` is an error naming both.
fn check_reported_plant(clients: &[DeviceClient], expected: &str) -> Result<(), FleetError> {
    match clients
        .iter()
        .find(|c| c.info().plant.name.as_str() != expected)
    {
        Some(odd) => Err(FleetError::PlantMismatch {
            device: odd.name().to_string(),
            reports: odd.info().plant.name.to_string(),
            expected: expected.to_string(),
        }),
        None => Ok(()),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::simulated::test_device;

    fn devices(sim: u32, ports: &[&str]) -> DevicesConfig {
        DevicesConfig {
            sim,
            ports: ports.iter().map(|p| p.to_string()).collect(),
            ..DevicesConfig::default()
        }
    }

    fn spec(devices: &DevicesConfig, plant: Option<&str>) -> Result<FleetSpec, FleetError> {
        FleetSpec::new(devices, &TimeoutsConfig::default(), 0, plant)
    }

    #[test]
    fn simulated_devices_get_a_known_plant_before_anything_connects() {
        let only_sims = spec(&devices(2, &[]), None).expect("valid");
        assert_eq!(only_sims.plant.as_deref(), Some(DEFAULT_SIM_PLANT));
        let real = spec(&devices(0, &["/dev/ttyACM0"]), None).expect("valid");
        assert_eq!((real.plant, real.addresses.len()), (None, 1));
        assert!(matches!(
            spec(&devices(1, &["/dev/ttyACM0"]), None),
            Err(FleetError::PlantNeeded)
        ));
        let both = spec(&devices(1, &["/dev/ttyACM0"]), Some("qube")).expect("named");
        assert_eq!(both.plant.as_deref(), Some("qube"));
        assert!(matches!(
            spec(&devices(1, &[]), Some("segway")),
            Err(FleetError::Sim(SimDeviceError::UnknownPlant(_)))
        ));
        assert!(
            spec(&devices(0, &[]), Some("segway")).is_ok(),
            "real devices may report any plant"
        );
        assert!(matches!(
            spec(&devices(0, &[""]), None),
            Err(FleetError::BadAddress(_))
        ));
        let mut qemu = devices(2, &[]);
        qemu.link = LinkKind::Qemu;
        qemu.emulate_baud = true;
        assert!(matches!(
            spec(&qemu, Some("pendulum")),
            Err(FleetError::Sim(SimDeviceError::LinkEmulationOnQemu(..)))
        ));
        let config = RunConfig::<()> {
            plant: "cartpole".into(),
            ..RunConfig::default()
        };
        let from_config = FleetSpec::from_config(&config).expect("valid");
        assert_eq!(from_config.plant.as_deref(), Some("cartpole"));
        assert_eq!(from_config.client_config().attempts, 3);
    }

    #[test]
    fn simulated_devices_connect_in_order_and_describe_the_plant() {
        let fleet = Fleet::connect(&spec(&devices(2, &[]), Some("cartpole")).expect("valid"))
            .expect("connected");
        let names: Vec<&str> = fleet.clients.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["sim0:cartpole", "sim1:cartpole"]);
        assert_eq!(fleet.plant.name.as_str(), "cartpole");
        assert_eq!(fleet.boards.len(), 2);
        assert!(matches!(
            Fleet::connect(&spec(&devices(0, &[]), None).expect("valid")),
            Err(FleetError::Empty)
        ));
    }

    #[test]
    fn devices_must_agree_on_the_plant_and_report_the_configured_one() {
        let first = test_device::connect("pendulum");
        let second = test_device::connect("pendulum");
        let odd = test_device::connect("qube");
        let same = [first.client, second.client];
        assert_eq!(
            check_same_plant(&same).expect("same").name.as_str(),
            "pendulum"
        );
        assert!(check_reported_plant(&same, "pendulum").is_ok());
        let err = check_reported_plant(&same, "cartpole").expect_err("not cartpole");
        assert!(
            err.to_string()
                == "pendulum reports plant `pendulum`, but the run is configured for plant `cartpole`",
            "{err}"
        );
        let [first, _] = same;
        let mixed = [first, odd.client];
        let err = check_same_plant(&mixed).expect_err("two plants");
        assert!(
            matches!(&err, FleetError::MixedPlants { theirs, ours, .. } if theirs == "qube" && ours == "pendulum"),
            "{err}"
        );
    }

    #[test]
    fn link_rates_follow_the_fleet_order() {
        let mut config = devices(2, &["/dev/ttyACM0"]);
        config.tcp = vec!["rig:4000".into()];
        config.baud = 9600;
        let mut fleet = spec(&config, Some("pendulum")).expect("valid");
        assert_eq!(link_rates(&fleet), [None, None, Some(9600), None]);
        fleet.emulate_baud = true;
        assert_eq!(
            link_rates(&fleet),
            [Some(9600), Some(9600), Some(9600), None]
        );
    }
}
