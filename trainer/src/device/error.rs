//! What can go wrong with a device, in words a user can act on.

use std::time::Duration;

use tether_shared::message::{DeviceState, RefusalReason};
use tether_shared::version::VersionMismatch;

/// A device-level failure. Each message names the device and ends with a hint.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The port path does not exist.
    #[error(
        "serial port {port} does not exist; run `tether ports` to list the ports on this machine"
    )]
    PortMissing {
        /// The path given.
        port: String,
    },
    /// Another program holds the port.
    #[error(
        "serial port {port} is busy; close the other program using it (a serial monitor, another tether)"
    )]
    PortBusy {
        /// The path given.
        port: String,
    },
    /// The user may not open the port.
    #[error(
        "permission denied opening {port}; add yourself to the `dialout` group (then log in again) or check the port's permissions"
    )]
    PermissionDenied {
        /// The path given.
        port: String,
    },
    /// The TCP endpoint refused or could not be reached.
    #[error(
        "cannot connect to {endpoint}: {source}; is ser2net (or the device server) running there?"
    )]
    TcpConnect {
        /// `host:port`.
        endpoint: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// Any other I/O failure opening or using the link.
    #[error("I/O error on {device}: {source}")]
    Io {
        /// The device.
        device: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The link closed (cable pulled, device reset, TCP peer gone).
    #[error("{device} disconnected; check the cable or the device's power")]
    Disconnected {
        /// The device.
        device: String,
    },
    /// Nothing came back.
    #[error("{device} did not answer within {:.1} s; is the tether firmware flashed and the baud rate right (--baud)?", waited.as_secs_f64())]
    Silent {
        /// The device.
        device: String,
        /// How long we waited.
        waited: Duration,
    },
    /// Bytes came back, but no valid tether frame.
    #[error(
        "{device} answered with {bytes} bytes but no valid tether frame; wrong baud rate, or not running tether firmware?"
    )]
    Garbage {
        /// The device.
        device: String,
        /// Bytes received.
        bytes: usize,
    },
    /// The device speaks another protocol version.
    #[error("{device}: {mismatch}")]
    ProtocolMismatch {
        /// The device.
        device: String,
        /// Both versions, explained.
        mismatch: VersionMismatch,
    },
    /// The device's plant description is unusable.
    #[error(
        "{device} describes its plant inconsistently ({reason}); check the firmware's plant configuration"
    )]
    BadPlant {
        /// The device.
        device: String,
        /// What is wrong.
        reason: String,
    },
    /// The device refused a command.
    #[error("{device} refused {what}: {reason:?}")]
    Refused {
        /// The device.
        device: String,
        /// The command.
        what: String,
        /// The device's reason.
        reason: RefusalReason,
    },
    /// The device refused the run's plant parameters.
    #[error("{device} refused the plant parameters: {}", explain_params_refusal(*reason, setting.as_deref()))]
    ParamsRefused {
        /// The device.
        device: String,
        /// The setting it refused, when it named one.
        setting: Option<String>,
        /// The device's reason.
        reason: RefusalReason,
    },
    /// A command was not acknowledged in time.
    #[error("{device} did not acknowledge {what} within {:.1} s (after {attempts} attempts)", waited.as_secs_f64())]
    NoAck {
        /// The device.
        device: String,
        /// The command.
        what: String,
        /// Time waited per attempt.
        waited: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The device keeps answering (heartbeats) but sends no transition data for longer
    /// than an episode can take.
    #[error(
        "{device} sent no transition data for {:.1} s although it should be running episodes; it is stuck — reconnecting resets its session", waited.as_secs_f64()
    )]
    NoData {
        /// The device.
        device: String,
        /// How long no data came.
        waited: Duration,
    },
    /// The device left the run it was given (it reset, or its safety logic stopped it).
    #[error(
        "{device} stopped running episodes (it reports {state:?}): it reset or faulted; check its power supply and the plant"
    )]
    NotRunning {
        /// The device.
        device: String,
        /// The state it reported.
        state: DeviceState,
    },
    /// So many episodes in a row were spoiled by lost or corrupted frames that training on
    /// this device cannot progress.
    #[error(
        "{device}: {discarded} episodes in a row were discarded ({rejected_frames} frames rejected so far); the link is too unreliable to train on — check the cable, the baud rate and electrical noise"
    )]
    Unreliable {
        /// The device.
        device: String,
        /// Episodes discarded in a row.
        discarded: u32,
        /// Frames the host rejected on this link so far.
        rejected_frames: u64,
    },
    /// The device does not fit the run (another plant than the others, too small for the policy).
    #[error("{device}: {reason}")]
    Incompatible {
        /// The device.
        device: String,
        /// What does not fit.
        reason: String,
    },
}

/// Why a device refuses plant parameters, and what to do about it.
fn explain_params_refusal(reason: RefusalReason, setting: Option<&str>) -> String {
    let setting = setting.map_or_else(|| "one of them".to_string(), |s| format!("`{s}`"));
    match reason {
        RefusalReason::FixedPhysics => "its plant's physics is its own (physical hardware, or a \
             simulated rig started with fixed parameters); [plant_params] and [plant_randomize] \
             apply to simulated devices only: remove them to train on this device"
            .into(),
        RefusalReason::UnknownParam => format!(
            "its plant has no parameter {setting}; is its firmware from another tether release?"
        ),
        RefusalReason::BadParam => format!(
            "{setting} is outside what its plant takes; is its firmware from another tether release?"
        ),
        RefusalReason::BadRangeEndShare => "its range_end_share is outside 0 to 1; is its \
             firmware from another tether release?"
            .into(),
        other => format!("{other:?}"),
    }
}

impl DeviceError {
    /// Whether a new handshake on the same address may cure it: the device went silent,
    /// reset, dropped off the bus or stopped acknowledging (as opposed to a refusal, an
    /// incompatible device or a link too noisy to use).
    pub fn may_recover_by_reconnecting(&self) -> bool {
        matches!(
            self,
            DeviceError::Silent { .. }
                | DeviceError::NoData { .. }
                | DeviceError::NotRunning { .. }
                | DeviceError::Disconnected { .. }
                | DeviceError::NoAck { .. }
                | DeviceError::Io { .. }
        )
    }
}
