//! Protocol version and the compatibility check run during the handshake.

use core::fmt;

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Version of the wire protocol in this build. Bump it whenever a message's encoding changes:
/// postcard is not self-describing, so two sides on different versions would misread each
/// other's bytes rather than fail loudly.
pub const PROTOCOL_VERSION: u16 = 7;

/// What each protocol version added, newest last: the compatibility message names what a
/// device on an older version lacks.
pub const PROTOCOL_CHANGES: &[(u16, &str)] = &[
    (1, "the first protocol"),
    (
        2,
        "plant parameters (set, randomise and acknowledge a simulated plant's physics)",
    ),
    (3, "observing and test pulses for bring-up (tether probe)"),
    (
        4,
        "selective repeat on lossy links (release, resend, batch limit) and idempotent upload and run commands",
    ),
    (
        5,
        "gSDE policy heads (state-dependent exploration sampled on the device) and the device's action rate limit",
    ),
    (
        6,
        "selective acknowledgement of transition data received past a gap (Received)",
    ),
    (
        7,
        "plant parameter draws weighted toward the ends of their ranges (range_end_share)",
    ),
];

/// What `version` added, if this build knows it.
pub fn protocol_change(version: u16) -> Option<&'static str> {
    PROTOCOL_CHANGES
        .iter()
        .find(|(v, _)| *v == version)
        .map(|(_, what)| *what)
}

/// A semantic version of the firmware, reported in the handshake for the user's benefit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct FirmwareVersion {
    /// Incompatible changes.
    pub major: u8,
    /// Compatible additions.
    pub minor: u8,
    /// Fixes.
    pub patch: u8,
}

impl fmt::Display for FirmwareVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a peer's protocol version cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionMismatch {
    /// The version this build speaks.
    pub ours: u16,
    /// The version the peer announced.
    pub theirs: u16,
}

impl fmt::Display for VersionMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device speaks tether protocol v{} but this trainer speaks v{}",
            self.theirs, self.ours
        )?;
        if self.theirs < self.ours {
            // Name what the device's firmware lacks: every version after its own.
            for (version, what) in PROTOCOL_CHANGES.iter().filter(|(v, _)| *v > self.theirs) {
                write!(f, " (v{version} added {what})")?;
            }
            write!(
                f,
                "; the device runs older firmware: flash firmware built from this tether release"
            )
        } else {
            write!(
                f,
                "; the device runs newer firmware: update the trainer to the matching tether release"
            )
        }
    }
}

/// Checks that a peer announcing `theirs` can talk to this build.
///
/// The protocol has no partial compatibility: the versions must be equal.
pub fn check_compatible(theirs: u16) -> Result<(), VersionMismatch> {
    if theirs == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(VersionMismatch {
            ours: PROTOCOL_VERSION,
            theirs,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::ToString;

    use super::*;

    #[test]
    fn same_version_is_compatible() {
        assert_eq!(check_compatible(PROTOCOL_VERSION), Ok(()));
    }

    #[test]
    fn mismatch_explains_which_side_to_update() {
        let older = check_compatible(PROTOCOL_VERSION.wrapping_sub(1)).unwrap_err();
        assert!(older.to_string().contains("older firmware"));
        // A device from before gSDE is told what it lacks.
        let v4 = check_compatible(4).unwrap_err().to_string();
        assert!(
            v4.starts_with("device speaks tether protocol v4 but this trainer speaks v7 (v5 added gSDE policy heads"),
            "{v4}"
        );
        // An older one hears every version it missed, oldest first.
        let v1 = check_compatible(1).unwrap_err().to_string();
        let named: std::vec::Vec<usize> = (2..=7)
            .map(|v| {
                v1.find(&std::format!("(v{v} added "))
                    .expect("every later version named")
            })
            .collect();
        assert!(named.windows(2).all(|w| w[0] < w[1]), "{v1}");
        assert_eq!(PROTOCOL_CHANGES.len(), usize::from(PROTOCOL_VERSION));
        assert_eq!(protocol_change(PROTOCOL_VERSION).map(|_| ()), Some(()));
        assert_eq!(protocol_change(0), None);
        let newer = check_compatible(PROTOCOL_VERSION + 1).unwrap_err();
        assert!(newer.to_string().contains("update the trainer"));
    }
}
