//! Deploy: a policy built into the image runs with no host attached.
//!
//! Training ends with a policy; a robot must run it without a PC. A board built with a
//! [`BuiltInPolicy`] (the items `tether export --format rust` writes) calls
//! [`Standalone::boot`] once: the policy goes through the device's own upload checks (spec,
//! capacity, plant, CRC, finiteness) as if a host had sent it, and a deterministic run
//! starts (`episodes` of them, 0 for ever) at the plant's control rate with every limit of
//! the plant in force. Then the board keeps calling `Device::poll` and
//! [`Standalone::after_poll`] from its main loop:
//!
//! - while no host has spoken, the host watchdog is off (there is no host to hear from) and
//!   the device keeps nothing it sent for resending (no host will ask for it);
//! - the first message from a host (a `Hello`: `tether probe`, `tether train`, an upload)
//!   ends the standalone run as a `Stop` would, and from then on the device is the usual
//!   host-driven device, its watchdog on — the host can probe, upload and run;
//! - [`EpisodeTap`], a wrapper around the board's link, reads the device's own episode-end
//!   frames as they go out, so the board can report each episode's return (over
//!   semihosting, a log, a display) without any change to the runtime.
//!
//! Seeds: the run uses `seed` exactly as a host's run command does; with
//! [`evaluation_run_seed`] the episodes are those `tether eval --sim 1 --seed S` runs on one
//! simulated device, so the two can be compared return for return.

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};
use heapless::Deque;
use tether_shared::PolicySpec;
use tether_shared::frame::{FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{
    DeviceMessage, EpisodeEndReason, HostMessage, PolicyUpload, RunCommand, RunMode,
};

use crate::clock::Clock;
use crate::device::Device;
use crate::plant::Plant;

/// A policy compiled into the image: the `NAME_SPEC_POSTCARD` and `NAME_PARAMS` items of
/// `tether export --format rust`.
#[derive(Clone, Copy, Debug)]
pub struct BuiltInPolicy {
    /// The postcard-encoded [`PolicySpec`].
    pub spec_postcard: &'static [u8],
    /// The parameters in the wire layout.
    pub params: &'static [f32],
}

/// Why a built-in policy cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DeployError {
    /// The spec bytes do not decode.
    BadSpec,
    /// The device refused the policy (wrong plant, over capacity, non-finite values, ...).
    Refused,
}

/// The version number a built-in policy runs under (never one a host's training uses).
pub const BUILT_IN_VERSION: u32 = u32::MAX;

/// The run seed whose episodes are those `tether eval --seed seed` runs on a fleet's first
/// (or only) device.
pub fn evaluation_run_seed(seed: u64) -> u64 {
    tether_shared::seeds::evaluation_seed(seed, 0)
}

/// The standalone run's state (see the module docs).
#[derive(Clone, Debug)]
pub struct Standalone {
    /// The watchdog timeout to restore once a host speaks, µs.
    watchdog_us: u64,
    host_arrived: bool,
}

impl Standalone {
    /// Installs `policy` on `device` as if a host had uploaded it, and starts `episodes`
    /// deterministic episodes (0: until a host speaks) from `first_episode` with `seed`.
    /// `watchdog_us` is the device's usual watchdog timeout, restored when a host speaks.
    pub fn boot<P, L, C, const CAP: usize, const NOISE_CAP: usize, const TX: usize>(
        device: &mut Device<P, L, C, CAP, NOISE_CAP, TX>,
        policy: &BuiltInPolicy,
        episodes: u32,
        seed: u64,
        watchdog_us: u64,
    ) -> Result<Self, DeployError>
    where
        P: Plant,
        L: Read + ReadReady + Write + WriteReady,
        C: Clock,
    {
        let spec: PolicySpec =
            postcard::from_bytes(policy.spec_postcard).map_err(|_| DeployError::BadSpec)?;
        for step in PolicyUpload::new(BUILT_IN_VERSION, &spec, policy.params) {
            device.handle_message(step.message);
        }
        if device.active_policy() != Some(BUILT_IN_VERSION) {
            return Err(DeployError::Refused);
        }
        device.set_watchdog_timeout_us(0);
        device.handle_message(HostMessage::Run(RunCommand {
            first_episode: 0,
            episodes,
            seed,
            mode: RunMode::Deterministic,
        }));
        info!("built-in policy running: {} episodes", episodes);
        Ok(Standalone {
            watchdog_us,
            host_arrived: false,
        })
    }

    /// Call after every `Device::poll`: hands the device over to a host once one spoke.
    pub fn after_poll<P, L, C, const CAP: usize, const NOISE_CAP: usize, const TX: usize>(
        &mut self,
        device: &mut Device<P, L, C, CAP, NOISE_CAP, TX>,
    ) where
        P: Plant,
        L: Read + ReadReady + Write + WriteReady,
        C: Clock,
    {
        if !self.host_arrived && device.stats().messages_in > 0 {
            self.host_arrived = true;
            device.set_watchdog_timeout_us(self.watchdog_us);
            info!("host connected: the built-in run gives way");
        }
        if !self.host_arrived {
            // No host will release or ask again for what was sent: kept, it would fill the
            // retransmit ring (evictions on a real-time board, a stopped clock on a
            // free-running one).
            device.forget_sent_data();
        }
    }

    /// Whether a host has taken over.
    pub fn host_arrived(&self) -> bool {
        self.host_arrived
    }
}

/// One episode's end as the device reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpisodeSummary {
    /// Episode id.
    pub episode: u32,
    /// Undiscounted return.
    pub episode_return: f32,
    /// Steps.
    pub length: u32,
    /// Why it ended.
    pub reason: EpisodeEndReason,
}

/// Episode ends kept for the board to read.
pub const TAP_DEPTH: usize = 8;

/// A link that reads the device's own outgoing frames for their episode ends, passing every
/// byte on unchanged.
pub struct EpisodeTap<L> {
    inner: L,
    decoder: FrameDecoder<MAX_FRAME_LEN>,
    ends: Deque<EpisodeSummary, TAP_DEPTH>,
}

impl<L> EpisodeTap<L> {
    /// Wraps the board's link.
    pub fn new(inner: L) -> Self {
        EpisodeTap {
            inner,
            decoder: FrameDecoder::new(),
            ends: Deque::new(),
        }
    }

    /// The oldest episode end not taken yet.
    pub fn take_end(&mut self) -> Option<EpisodeSummary> {
        self.ends.pop_front()
    }

    /// The wrapped link.
    pub fn inner_mut(&mut self) -> &mut L {
        &mut self.inner
    }

    fn watch(&mut self, mut sent: &[u8]) {
        while let Some(result) = self.decoder.decode_next::<DeviceMessage>(&mut sent) {
            if let Ok(DeviceMessage::EpisodeEnd(end)) = result {
                if self.ends.is_full() {
                    self.ends.pop_front();
                }
                let _ = self.ends.push_back(EpisodeSummary {
                    episode: end.episode,
                    episode_return: end.episode_return,
                    length: end.length,
                    reason: end.reason,
                });
            }
        }
    }
}

impl<L: ErrorType> ErrorType for EpisodeTap<L> {
    type Error = L::Error;
}

impl<L: Read> Read for EpisodeTap<L> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.inner.read(buf)
    }
}

impl<L: ReadReady> ReadReady for EpisodeTap<L> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        self.inner.read_ready()
    }
}

impl<L: Write> Write for EpisodeTap<L> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let n = self.inner.write(buf)?;
        self.watch(buf.get(..n).unwrap_or(&[]));
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.inner.flush()
    }
}

impl<L: WriteReady> WriteReady for EpisodeTap<L> {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        self.inner.write_ready()
    }
}

#[cfg(test)]
mod tests;
