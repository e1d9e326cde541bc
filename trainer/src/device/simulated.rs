//! Simulated devices: the firmware with a plant model as a virtual plant, set up one way for
//! a run's fleet, for `tether sim` and for the tests. The firmware runs either compiled for
//! the host, in a thread of this process ([`SimMachine::Host`]), or as the Cortex-M board
//! image in QEMU ([`SimMachine::Qemu`], see [`super::qemu`]).
//!
//! (The trainer's unit tests get handshaken ones on in-memory pipes from
//! `test_device`.)

use std::path::{Path, PathBuf};

use tether_firmware::device::DeviceConfig;
use tether_firmware::plant::{AnyPlant, PLANT_NAMES};
use tether_firmware::rate_limit::ActionRateLimit;
use tether_firmware::sim::{FaultSpec, HostEnd, SimBoard, SimConfig, SimHandle, TimeMode};
use tether_shared::message::{PlantParams, RefusalReason};

use super::qemu::{self, QemuDevice, QemuError, QemuTiming};

/// The plant simulated devices model when nobody names one.
pub const DEFAULT_SIM_PLANT: &str = "pendulum";

/// Why a simulated device cannot be set up.
#[derive(Debug, thiserror::Error)]
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
    /// Fixed parameters asked of a QEMU device, whose board image is built with the
    /// model's defaults.
    #[error(
        "a rig with fixed parameters (--config with [plant_params]) runs in the host build \
         only; drop --qemu or the config's parameters"
    )]
    FixedParamsOnQemu,
    /// An action rate limit asked of a QEMU device, whose board image runs the default
    /// device settings (no limit).
    #[error(
        "an action rate limit ([devices] action_rate_limit) applies to the host build's \
         simulated devices only; a QEMU board image enforces none: drop --qemu or the limit"
    )]
    RateLimitOnQemu,
    /// Link emulation asked of a QEMU device, whose link is QEMU's UART: the flag (and its
    /// `[devices]` key).
    #[error(
        "{0} (`{1}` in [devices]) applies to the host build's simulated links only; a QEMU \
         device's link is its emulated UART: drop {0}, or use --link memory or --link pty"
    )]
    LinkEmulationOnQemu(&'static str, &'static str),
    /// A QEMU device was asked to run inside this process.
    #[error("a QEMU device runs in its own process and is reached over a pseudo-terminal")]
    NotInProcess,
    /// A pseudo-terminal could not be created.
    #[error("cannot create a pseudo-terminal for a simulated device: {0}")]
    Pty(std::io::Error),
    /// QEMU or the board image is missing, or QEMU did not start.
    #[error(transparent)]
    Qemu(#[from] QemuError),
}

/// Where a simulated device's firmware runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SimMachine<'a> {
    /// Compiled for the host, in a thread of this process.
    Host,
    /// The board image for a Cortex-M4F in `qemu-system-arm`: `firmware`, or the plant's
    /// image where `scripts/cross.sh` writes it ([`qemu::image_for`]).
    Qemu {
        /// The ELF to run instead of the plant's default image.
        firmware: Option<&'a Path>,
    },
}

/// How to run one simulated device.
#[derive(Clone, Debug, PartialEq)]
pub struct SimDeviceSpec<'a> {
    /// Plant model, one of [`PLANT_NAMES`].
    pub plant: &'a str,
    /// Virtual time (as fast as the host reads) or the plant's real control rate.
    pub time: TimeMode,
    /// Link rate limit, bits per second; `None`: unlimited. Host machine only.
    pub baud: Option<u32>,
    /// Fault injection spec (see [`FaultSpec`]); `None`: a clean link. Host machine only.
    pub faults: Option<&'a str>,
    /// Seed of the fault injector.
    pub seed: u64,
    /// The action rate limit the device enforces; `None`: none.
    pub action_rate_limit: Option<ActionRateLimit>,
    /// Parameters the model is built with and keeps (it refuses the host's, as a rig
    /// whose physics the trainer is not told); `None`: defaults, and the host may set them.
    /// Host machine only.
    pub fixed_params: Option<&'a PlantParams>,
    /// Where the firmware runs.
    pub machine: SimMachine<'a>,
}

impl<'a> SimDeviceSpec<'a> {
    /// A device of `plant` compiled for the host, in virtual time on a clean, unlimited link.
    pub fn virtual_time(plant: &'a str) -> Self {
        SimDeviceSpec {
            plant,
            time: TimeMode::Virtual,
            baud: None,
            faults: None,
            seed: 0,
            action_rate_limit: None,
            fixed_params: None,
            machine: SimMachine::Host,
        }
    }

    /// Checks what can be checked before starting the device: a known plant, a fault spec
    /// that parses, no link emulation on QEMU, QEMU installed and the image present.
    pub fn check(&self) -> Result<(), SimDeviceError> {
        sim_plant(self.plant)?;
        match self.machine {
            SimMachine::Host => parse_faults(self.faults).map(drop),
            SimMachine::Qemu { .. } => self.qemu_image().map(drop),
        }
    }

    /// The host build's board, ready to spawn on a memory pipe or a pseudo-terminal. In
    /// virtual time the device's watchdog is off: its seconds pass far faster than the
    /// host's heartbeats, so it would fire for no reason (the host still notices a silent
    /// device by wall time). In real time the device keeps its default watchdog.
    pub fn board(&self) -> Result<SimBoard<AnyPlant>, SimDeviceError> {
        if self.machine != SimMachine::Host {
            return Err(SimDeviceError::NotInProcess);
        }
        let mut plant = sim_plant(self.plant)?;
        if let Some(params) = self.fixed_params {
            plant
                .fix_params(params)
                .map_err(|refusal| SimDeviceError::BadParams {
                    plant: self.plant.to_string(),
                    reason: refusal.reason,
                })?;
        }
        let device = DeviceConfig {
            action_rate_limit: self.action_rate_limit,
            ..match self.time {
                TimeMode::Virtual => DeviceConfig {
                    watchdog_timeout_us: 0,
                    ..DeviceConfig::default()
                },
                TimeMode::RealTime => DeviceConfig::default(),
            }
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

    /// Starts the device on an in-memory pipe (host machine only); the host's end of it.
    pub fn spawn_memory(&self) -> Result<(HostEnd, SimDevice), SimDeviceError> {
        let (host, handle) = self.board()?.spawn_memory();
        Ok((host, SimDevice::Host(handle)))
    }

    /// Starts the device behind a pseudo-terminal; the path a host opens like a serial
    /// port. `name` labels a QEMU device's output in the log.
    pub fn spawn_pty(&self, name: &str) -> Result<(PathBuf, SimDevice), SimDeviceError> {
        match self.machine {
            SimMachine::Host => {
                let (path, handle) = self.board()?.spawn_pty().map_err(SimDeviceError::Pty)?;
                Ok((path, SimDevice::Host(handle)))
            }
            SimMachine::Qemu { .. } => {
                let image = self.qemu_image()?;
                let timing = match self.time {
                    TimeMode::Virtual => QemuTiming::FreeRunning,
                    TimeMode::RealTime => QemuTiming::RealTime,
                };
                let device = QemuDevice::spawn(&image, timing, name)?;
                Ok((device.pty().to_path_buf(), SimDevice::Qemu(device)))
            }
        }
    }

    /// The QEMU image to run, after checking the spec asks for no link emulation and QEMU
    /// is installed.
    fn qemu_image(&self) -> Result<PathBuf, SimDeviceError> {
        let SimMachine::Qemu { firmware } = self.machine else {
            return Err(SimDeviceError::NotInProcess);
        };
        if self.fixed_params.is_some() {
            return Err(SimDeviceError::FixedParamsOnQemu);
        }
        if self.action_rate_limit.is_some() {
            return Err(SimDeviceError::RateLimitOnQemu);
        }
        if self.faults.is_some() {
            return Err(SimDeviceError::LinkEmulationOnQemu("--faults", "faults"));
        }
        if self.baud.is_some() {
            return Err(SimDeviceError::LinkEmulationOnQemu(
                "--emulate-baud",
                "emulate_baud",
            ));
        }
        qemu::qemu_program()?;
        Ok(qemu::image_for(self.plant, firmware)?)
    }
}

/// A running simulated device; dropping it stops it (a QEMU process is killed).
pub enum SimDevice {
    /// The host build's board thread.
    Host(SimHandle),
    /// A QEMU process running the board image.
    Qemu(QemuDevice),
}

impl SimDevice {
    /// Why the device stopped on its own (a panic in the board thread, QEMU's exit with the
    /// board's last words); `None` while it runs.
    pub fn ended(&mut self) -> Option<String> {
        match self {
            SimDevice::Host(handle) => handle
                .is_finished()
                .then(|| "the simulated board's thread ended".to_string()),
            SimDevice::Qemu(qemu) => qemu.exit_status().map(|status| {
                let last = qemu.output().pop().unwrap_or_default();
                format!("QEMU exited with {status}: {last}")
            }),
        }
    }

    /// Stops the device; one line about how it ran.
    pub fn stop(self) -> String {
        match self {
            SimDevice::Host(handle) => {
                let report = handle.stop();
                format!(
                    "stopped after {} steps, {} episodes, {} resets, {} bad frames",
                    report.steps, report.episodes, report.resets, report.bad_frames
                )
            }
            SimDevice::Qemu(qemu) => {
                let pid = qemu.pid();
                format!("stopped QEMU (pid {pid})")
            }
        }
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
        assert!(matches!(&err, Some(SimDeviceError::UnknownPlant(p)) if p == "segway"));
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("pendulum, cartpole, qube"), "{message}");
        let spec = SimDeviceSpec {
            faults: Some("corrupt=lots"),
            ..SimDeviceSpec::virtual_time(DEFAULT_SIM_PLANT)
        };
        assert!(matches!(spec.board(), Err(SimDeviceError::BadFaults(_))));
        assert_eq!(parse_faults(None).ok(), Some(FaultSpec::none()));
        assert!(parse_faults(Some("corrupt=0.01")).is_ok());
    }

    /// A QEMU device's link is QEMU's UART: no fault injection or rate limit, and no
    /// in-process board; with those, the image must exist (checked before starting).
    #[test]
    fn qemu_devices_take_no_link_emulation_and_need_their_image() {
        let qemu = SimDeviceSpec {
            machine: SimMachine::Qemu {
                firmware: Some(Path::new("/no/such/image.elf")),
            },
            ..SimDeviceSpec::virtual_time("qube")
        };
        let faulty = SimDeviceSpec {
            faults: Some("corrupt=0.01"),
            ..qemu.clone()
        };
        let err = faulty.check().expect_err("faults on QEMU");
        assert!(
            matches!(
                err,
                SimDeviceError::LinkEmulationOnQemu("--faults", "faults")
            ),
            "{err}"
        );
        let limited = SimDeviceSpec {
            baud: Some(9600),
            ..qemu.clone()
        };
        assert!(matches!(
            limited.check(),
            Err(SimDeviceError::LinkEmulationOnQemu("--emulate-baud", _))
        ));
        // The board image enforces no action rate limit: asking one of it is an error.
        let rate_limited = SimDeviceSpec {
            action_rate_limit: Some(ActionRateLimit::new(&[0.5]).expect("a usable limit")),
            ..qemu.clone()
        };
        let err = rate_limited.check().expect_err("a rate limit on QEMU");
        assert!(matches!(err, SimDeviceError::RateLimitOnQemu), "{err}");
        assert!(err.to_string().contains("action_rate_limit"), "{err}");
        assert!(matches!(qemu.board(), Err(SimDeviceError::NotInProcess)));
        assert!(matches!(
            qemu.spawn_memory(),
            Err(SimDeviceError::NotInProcess)
        ));
        let missing = qemu.check().expect_err("no such image");
        assert!(missing.to_string().contains("scripts/"), "{missing}");
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
