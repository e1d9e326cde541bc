//! Simulated devices: the firmware compiled for the host with a plant model, set up one way
//! for a run's fleet, for `tether sim` and for the tests.
//!
//! (The trainer's unit tests get handshaken ones on in-memory pipes from
//! `test_device`.)

use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::{AnyPlant, PLANT_NAMES};
use tether_firmware::sim::{FaultSpec, SimBoard, SimConfig, TimeMode};
use tether_shared::message::{PlantParams, RefusalReason};

/// The plant simulated devices model when nobody names one.
pub const DEFAULT_SIM_PLANT: &str = "pendulum";

/// Why a simulated device cannot be set up.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimDeviceError {
    /// The plant name is not one of the models.
    #[error("unknown plant `{0}`; simulated plants are: {names}", names = PLANT_NAMES.join(", "))]
    UnknownPlant(String),
    /// The fault spec does not parse.
    #[error("bad --faults spec: {0}")]
    BadFaults(String),
    /// The model refused its fixed parameters (they are checked before, so only a
    /// mismatched build gets here).
    #[error("the {plant} model refused its parameters ({reason:?})")]
    BadParams {
        /// The model.
        plant: String,
        /// Its refusal.
        reason: RefusalReason,
    },
}

/// How to run one simulated device.
#[derive(Clone, Debug, PartialEq)]
pub struct SimDeviceSpec<'a> {
    /// Plant model, one of [`PLANT_NAMES`].
    pub plant: &'a str,
    /// Virtual time (as fast as the host reads) or the plant's real control rate.
    pub time: TimeMode,
    /// Link rate limit, bits per second; `None`: unlimited.
    pub baud: Option<u32>,
    /// Fault injection spec (see [`FaultSpec`]); `None`: a clean link.
    pub faults: Option<&'a str>,
    /// Seed of the fault injector.
    pub seed: u64,
    /// Parameters the model is built with and keeps (it refuses the host's, as a rig
    /// whose physics the trainer is not told); `None`: defaults, and the host may set them.
    pub fixed_params: Option<&'a PlantParams>,
}

impl<'a> SimDeviceSpec<'a> {
    /// A device of `plant` in virtual time on a clean, unlimited link.
    pub fn virtual_time(plant: &'a str) -> Self {
        SimDeviceSpec {
            plant,
            time: TimeMode::Virtual,
            baud: None,
            faults: None,
            seed: 0,
            fixed_params: None,
        }
    }

    /// The board, ready to spawn on a memory pipe or a pseudo-terminal. In virtual time the
    /// device's watchdog is off: its seconds pass far faster than the host's heartbeats, so
    /// it would fire for no reason (the host still notices a silent device by wall time).
    /// In real time the device keeps its default watchdog.
    pub fn board(&self) -> Result<SimBoard<AnyPlant>, SimDeviceError> {
        let mut plant = sim_plant(self.plant)?;
        if let Some(params) = self.fixed_params {
            plant
                .fix_params(params)
                .map_err(|refusal| SimDeviceError::BadParams {
                    plant: self.plant.to_string(),
                    reason: refusal.reason,
                })?;
        }
        let device = match self.time {
            TimeMode::Virtual => DeviceConfig {
                watchdog_timeout_us: 0,
                ..DeviceConfig::default()
            },
            TimeMode::RealTime => DeviceConfig::default(),
        };
        let config = SimConfig {
            time: self.time,
            baud: self.baud,
            faults: parse_faults(self.faults)?,
            seed: self.seed,
            device,
            ..SimConfig::default()
        };
        Ok(SimBoard::new(plant, config))
    }
}

/// The plant model called `name`.
pub fn sim_plant(name: &str) -> Result<AnyPlant, SimDeviceError> {
    AnyPlant::by_name(name).ok_or_else(|| SimDeviceError::UnknownPlant(name.to_string()))
}

/// A fault spec's text parsed; `None` is a clean link.
pub fn parse_faults(text: Option<&str>) -> Result<FaultSpec, SimDeviceError> {
    match text {
        Some(text) => text
            .parse::<FaultSpec>()
            .map_err(|e| SimDeviceError::BadFaults(e.to_string())),
        None => Ok(FaultSpec::none()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_plants_and_bad_faults_are_named() {
        let err = SimDeviceSpec::virtual_time("segway").board().err();
        assert_eq!(err, Some(SimDeviceError::UnknownPlant("segway".into())));
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("pendulum, cartpole, qube"), "{message}");
        let spec = SimDeviceSpec {
            faults: Some("corrupt=lots"),
            ..SimDeviceSpec::virtual_time(DEFAULT_SIM_PLANT)
        };
        assert!(matches!(spec.board(), Err(SimDeviceError::BadFaults(_))));
        assert_eq!(parse_faults(None), Ok(FaultSpec::none()));
        assert!(parse_faults(Some("corrupt=0.01")).is_ok());
    }

    /// Every model boots as a device that handshakes and describes itself by its name.
    #[test]
    fn every_model_runs_as_a_device_that_reports_its_name() {
        for plant in PLANT_NAMES {
            let device = test_device::connect(plant);
            assert_eq!(device.client.info().plant.name.as_str(), plant);
        }
    }
}

/// Handshaken simulated devices on in-memory pipes, for the trainer's unit tests.
#[cfg(test)]
pub(crate) mod test_device {
    use std::time::Duration;

    use tether_firmware::sim::SimHandle;
    use tether_shared::{PlantDescription, PolicySpec};

    use super::SimDeviceSpec;
    use crate::device::{ByteStream, ClientConfig, DeviceClient, DeviceLink};

    /// A device and its board; the board stops when this is dropped (after the client).
    pub(crate) struct TestDevice {
        pub(crate) client: DeviceClient,
        pub(crate) board: SimHandle,
    }

    /// Timeouts short enough that a test about a silent device takes a fraction of a second.
    pub(crate) fn quick_config() -> ClientConfig {
        ClientConfig {
            handshake_timeout: Duration::from_millis(400),
            ack_timeout: Duration::from_millis(200),
            attempts: 2,
            ..ClientConfig::default()
        }
    }

    /// The byte stream to a fresh simulated device of `plant` (virtual time, clean link).
    pub(crate) fn stream(plant: &str) -> (Box<dyn ByteStream>, SimHandle) {
        let board = SimDeviceSpec::virtual_time(plant).board().expect("a model");
        let (mut host, handle) = board.spawn_memory();
        host.set_timeout(Duration::from_millis(5));
        (Box::new(host), handle)
    }

    /// [`stream`] as a link called `name`.
    pub(crate) fn link(plant: &str, name: &str) -> (DeviceLink, SimHandle) {
        let (stream, handle) = stream(plant);
        (DeviceLink::new(name, stream), handle)
    }

    /// A handshaken simulated device of `plant`, named after it.
    pub(crate) fn connect(plant: &str) -> TestDevice {
        let (link, board) = link(plant, plant);
        let client = DeviceClient::connect(link, quick_config()).expect("handshake");
        TestDevice { client, board }
    }

    /// A small policy for `plant` ([8] hidden, no normaliser) with finite parameters.
    pub(crate) fn policy(plant: &PlantDescription) -> (PolicySpec, Vec<f32>) {
        let spec = PolicySpec::for_plant(plant, &[8], false);
        let params = (0..spec.param_count())
            .map(|i| 0.01 * ((i % 7) as f32 - 3.0))
            .collect();
        (spec, params)
    }
}
