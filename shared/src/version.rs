//! Protocol version and the compatibility check run during the handshake.

use core::fmt;

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Version of the wire protocol in this build. Bump it whenever a message's encoding changes:
/// postcard is not self-describing, so two sides on different versions would misread each
/// other's bytes rather than fail loudly.
pub const PROTOCOL_VERSION: u16 = 2;

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
        let advice = if self.theirs < self.ours {
            "the device runs older firmware: flash firmware built from this tether release"
        } else {
            "the device runs newer firmware: update the trainer to the matching tether release"
        };
        write!(
            f,
            "device speaks tether protocol v{} but this trainer speaks v{}; {advice}",
            self.theirs, self.ours
        )
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
        let newer = check_compatible(PROTOCOL_VERSION + 1).unwrap_err();
        assert!(newer.to_string().contains("update the trainer"));
    }
}
