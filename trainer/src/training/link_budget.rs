//! Whether a link can carry a plant's transition stream, checked before training so a slow
//! serial line is a warning up front rather than a run of overrun episodes.

use tether_shared::PlantDescription;
use tether_shared::frame::max_frame_len;
use tether_shared::message::{RecordLayout, TRANSITION_BATCH_VALUES};

/// Fraction of a link's byte rate the transition stream may use; the rest carries
/// heartbeats, acknowledgements and episode ends, and absorbs jitter.
pub const USABLE_FRACTION: f64 = 0.8;

/// A plant's stream against a link's capacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkBudget {
    /// Bytes per second the device sends while running, framing included.
    pub needed_bytes_per_s: f64,
    /// Bytes per second the link carries (`baud / 10`: 8 data bits, start and stop bit).
    pub available_bytes_per_s: f64,
}

impl LinkBudget {
    /// The budget of `plant` on a serial line at `baud` bits per second.
    pub fn serial(plant: &PlantDescription, baud: u32) -> Self {
        let width = RecordLayout::of_plant(plant).width().max(1);
        let records_per_batch = (TRANSITION_BATCH_VALUES / width).max(1);
        // A full batch: the records' f32 values plus the batch header, CRC and COBS.
        let payload = records_per_batch * width * 4 + 16;
        let frame = max_frame_len(payload);
        let bytes_per_record = frame as f64 / records_per_batch as f64;
        LinkBudget {
            needed_bytes_per_s: bytes_per_record * f64::from(plant.control_rate_hz),
            available_bytes_per_s: f64::from(baud) / 10.0,
        }
    }

    /// Whether the stream fits in the usable share of the link.
    pub fn fits(&self) -> bool {
        self.needed_bytes_per_s <= USABLE_FRACTION * self.available_bytes_per_s
    }

    /// The lowest standard baud rate that carries the stream, if any.
    pub fn suggested_baud(&self) -> Option<u32> {
        const STANDARD: [u32; 8] = [
            9_600, 19_200, 38_400, 57_600, 115_200, 230_400, 460_800, 921_600,
        ];
        STANDARD
            .into_iter()
            .find(|&b| self.needed_bytes_per_s <= USABLE_FRACTION * f64::from(b) / 10.0)
    }

    /// A warning for the user, or `None` when the link is fast enough.
    pub fn warning(&self, device: &str) -> Option<String> {
        if self.fits() {
            return None;
        }
        let hint = match self.suggested_baud() {
            Some(b) => format!("use at least {b} baud"),
            None => {
                "no standard baud rate is enough: lower the control rate or use USB CDC".to_string()
            }
        };
        Some(format!(
            "{device}: the transition stream needs {:.0} bytes/s but the link carries {:.0} bytes/s ({:.0}% usable); episodes will overrun and be discarded — {hint}",
            self.needed_bytes_per_s,
            self.available_bytes_per_s,
            USABLE_FRACTION * 100.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tether_shared::ActionSpace;

    fn plant(obs_dim: u8, rate: f32) -> PlantDescription {
        PlantDescription {
            name: heapless::String::try_from("test").unwrap(),
            obs_dim,
            action: ActionSpace::Continuous {
                low: heapless::Vec::from_slice(&[-1.0]).unwrap(),
                high: heapless::Vec::from_slice(&[1.0]).unwrap(),
            },
            control_rate_hz: rate,
            episode_steps: 100,
        }
    }

    #[test]
    fn pendulum_fits_115200_but_a_250_hz_six_obs_plant_does_not_fit_9600() {
        // Pendulum: 6 values = 24 bytes per record at 20 Hz ≈ 500 B/s.
        let pendulum = LinkBudget::serial(&plant(3, 20.0), 115_200);
        assert!(pendulum.fits());
        assert!((pendulum.needed_bytes_per_s - 24.0 * 20.0).abs() < 0.05 * 24.0 * 20.0);
        assert_eq!(pendulum.warning("dev"), None);

        // Qube-like: 9 values = 36 bytes at 250 Hz ≈ 9.2 kB/s: far too much for 9600 baud,
        // and just over the usable 80% of 115200 baud (9.2 kB/s).
        let qube = LinkBudget::serial(&plant(6, 250.0), 9_600);
        assert!(!qube.fits());
        assert!(!LinkBudget::serial(&plant(6, 250.0), 115_200).fits());
        assert_eq!(qube.suggested_baud(), Some(230_400));
        let warning = qube.warning("/dev/ttyUSB0").unwrap_or_default();
        assert!(
            warning.contains("/dev/ttyUSB0") && warning.contains("230400"),
            "{warning}"
        );
    }

    #[test]
    fn nothing_standard_suffices_for_an_absurd_rate() {
        let fast = LinkBudget::serial(&plant(16, 100_000.0), 9_600);
        assert_eq!(fast.suggested_baud(), None);
        assert!(fast.warning("d").unwrap_or_default().contains("USB CDC"));
    }
}
