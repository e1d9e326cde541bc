//! How a device describes the plant it controls, sent in the handshake.

use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Largest observation a plant may have (values per control step).
pub const MAX_OBS_DIM: usize = 16;
/// Largest continuous action a plant may take (values per control step).
pub const MAX_ACTION_DIM: usize = 4;
/// Largest number of choices of a discrete action.
pub const MAX_DISCRETE_ACTIONS: usize = 16;
/// Longest plant name, in bytes of UTF-8.
pub const MAX_PLANT_NAME: usize = 16;

/// The actions a plant accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ActionSpace {
    /// A vector of real values, each clamped to `[low[i], high[i]]` in the plant's units
    /// (newton-metres for a torque, volts for a motor voltage, ...).
    Continuous {
        /// Lower bound per dimension.
        low: Vec<f32, MAX_ACTION_DIM>,
        /// Upper bound per dimension.
        high: Vec<f32, MAX_ACTION_DIM>,
    },
    /// One of `n` choices, numbered `0..n`.
    Discrete {
        /// Number of choices.
        n: u8,
    },
}

/// Why a [`PlantDescription`] cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlantError {
    /// Observation dimension is 0 or above [`MAX_OBS_DIM`].
    ObsDim,
    /// Continuous bounds are empty or `low` and `high` differ in length.
    BoundsShape,
    /// A continuous bound is not finite, or `low >= high`.
    BoundsValue,
    /// A discrete action has fewer than 2 or more than [`MAX_DISCRETE_ACTIONS`] choices.
    DiscreteChoices,
    /// The control rate is not a positive, finite number of hertz.
    ControlRate,
    /// The episode step limit is 0.
    EpisodeSteps,
}

impl core::fmt::Display for PlantError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            PlantError::ObsDim => write!(f, "observation dimension must be 1..={MAX_OBS_DIM}"),
            PlantError::BoundsShape => {
                f.write_str("continuous action bounds must be non-empty and of equal length")
            }
            PlantError::BoundsValue => {
                f.write_str("continuous action bounds must be finite with low < high")
            }
            PlantError::DiscreteChoices => write!(
                f,
                "a discrete action needs 2..={MAX_DISCRETE_ACTIONS} choices"
            ),
            PlantError::ControlRate => {
                f.write_str("control rate must be a positive number of hertz")
            }
            PlantError::EpisodeSteps => f.write_str("episode step limit must be at least 1"),
        }
    }
}

/// What a device tells the host about its plant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PlantDescription {
    /// Short name, e.g. `"pendulum"`.
    pub name: String<MAX_PLANT_NAME>,
    /// Values in one observation.
    pub obs_dim: u8,
    /// The actions the plant accepts.
    pub action: ActionSpace,
    /// Control rate in hertz: one policy step every `1 / control_rate_hz` seconds.
    pub control_rate_hz: f32,
    /// Steps after which an episode is truncated (the time limit).
    pub episode_steps: u32,
}

impl PlantDescription {
    /// The control period in whole microseconds, as a device times its deadlines:
    /// `1e6 / control_rate_hz` rounded down, at least 1; one second for a rate that is not a
    /// positive finite number (which [`Self::validate`] refuses).
    pub fn control_period_us(&self) -> u64 {
        let rate = self.control_rate_hz;
        if rate.is_finite() && rate > 0.0 {
            ((1.0e6 / rate as f64) as u64).max(1)
        } else {
            1_000_000
        }
    }

    /// Checks the description is within this protocol's capacities and self-consistent.
    pub fn validate(&self) -> Result<(), PlantError> {
        if self.obs_dim == 0 || self.obs_dim as usize > MAX_OBS_DIM {
            return Err(PlantError::ObsDim);
        }
        match &self.action {
            ActionSpace::Continuous { low, high } => {
                if low.is_empty() || low.len() != high.len() {
                    return Err(PlantError::BoundsShape);
                }
                if low
                    .iter()
                    .zip(high.iter())
                    .any(|(l, h)| !(l.is_finite() && h.is_finite() && l < h))
                {
                    return Err(PlantError::BoundsValue);
                }
            }
            ActionSpace::Discrete { n } => {
                if *n < 2 || *n as usize > MAX_DISCRETE_ACTIONS {
                    return Err(PlantError::DiscreteChoices);
                }
            }
        }
        if !(self.control_rate_hz.is_finite() && self.control_rate_hz > 0.0) {
            return Err(PlantError::ControlRate);
        }
        if self.episode_steps == 0 {
            return Err(PlantError::EpisodeSteps);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pendulum() -> PlantDescription {
        PlantDescription {
            name: String::try_from("pendulum").unwrap(),
            obs_dim: 3,
            action: ActionSpace::Continuous {
                low: Vec::from_slice(&[-2.0]).unwrap(),
                high: Vec::from_slice(&[2.0]).unwrap(),
            },
            control_rate_hz: 50.0,
            episode_steps: 200,
        }
    }

    #[test]
    fn validate_names_each_problem() {
        assert_eq!(pendulum().validate(), Ok(()));
        let mut p = pendulum();
        p.obs_dim = 0;
        assert_eq!(p.validate(), Err(PlantError::ObsDim));
        let mut p = pendulum();
        p.action = ActionSpace::Continuous {
            low: Vec::from_slice(&[2.0]).unwrap(),
            high: Vec::from_slice(&[-2.0]).unwrap(),
        };
        assert_eq!(p.validate(), Err(PlantError::BoundsValue));
        let mut p = pendulum();
        p.action = ActionSpace::Discrete { n: 1 };
        assert_eq!(p.validate(), Err(PlantError::DiscreteChoices));
        let mut p = pendulum();
        p.control_rate_hz = f32::NAN;
        assert_eq!(p.validate(), Err(PlantError::ControlRate));
        let mut p = pendulum();
        p.episode_steps = 0;
        assert_eq!(p.validate(), Err(PlantError::EpisodeSteps));
    }

    #[test]
    fn control_period_is_whole_microseconds() {
        assert_eq!(pendulum().control_period_us(), 20_000);
        let mut p = pendulum();
        p.control_rate_hz = 300.0;
        assert_eq!(p.control_period_us(), 3333);
        p.control_rate_hz = 1.0e7;
        assert_eq!(p.control_period_us(), 1);
        for bad in [0.0, -5.0, f32::NAN, f32::INFINITY] {
            p.control_rate_hz = bad;
            assert_eq!(p.control_period_us(), 1_000_000, "{bad}");
        }
    }
}
