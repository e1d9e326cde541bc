//! Plant parameters for simulated devices: fixed values and per-episode ranges, by name.
//!
//! A simulated plant's physical constants (masses, lengths, motor constants, ...) and its
//! imperfections (latency, sensor noise, deadzone) are run-time values with defaults; the
//! host sets them with one [`HostMessage::PlantParams`](super::HostMessage::PlantParams),
//! which replaces every earlier setting (a parameter the message does not name goes back to
//! its default). Each parameter is named, so the protocol does not depend on which plant a
//! device models; the device knows its plant's parameters, their units and their valid
//! ranges, and refuses what it does not know or cannot take.
//!
//! How a range is read depends on the parameter's kind, which the device knows: a physical
//! constant's range is a pair of multipliers of its nominal value (the fixed value when one
//! is set, else the default); an imperfection's range is absolute; a whole-number
//! parameter's range (latency in control periods, encoder counts) is absolute and both ends
//! are included. Every episode draws its values from the episode's seed, so a seeded run
//! reproduces. A draw is uniform over its range, except for the message's
//! [`PlantParams::range_end_share`] of draws, which land on an end of the range instead. A
//! physical plant refuses the message: its physics is its own.

use core::fmt;

use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::fill::{field, fill_field};

/// Longest parameter name, in bytes of UTF-8.
pub const MAX_PARAM_NAME: usize = 24;
/// Most settings one [`PlantParams`] carries (each parameter at most once).
pub const MAX_PARAM_SETTINGS: usize = 20;

/// The closed interval an episode draws a parameter from.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ParamRange {
    /// Lower end (a multiplier, or an absolute value, by the parameter's kind).
    pub low: f32,
    /// Upper end, `>= low`.
    pub high: f32,
}

/// One parameter's setting.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ParamSetting {
    /// The parameter's name, e.g. `"arm_mass"` (snake case, as in the configuration file).
    pub name: String<MAX_PARAM_NAME>,
    /// Its value, in the parameter's SI unit; `None`: the model's default.
    pub value: Option<f32>,
    /// The range each episode draws it from; `None`: every episode uses the value.
    pub range: Option<ParamRange>,
}

/// Every parameter setting of a simulated plant: replaces whatever was set before.
/// Deserialised by hand, into its own vector (see [`super::fill`]): the wire format is the
/// derived one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PlantParams {
    /// The settings, each parameter at most once; empty: every parameter at its default.
    pub settings: Vec<ParamSetting, MAX_PARAM_SETTINGS>,
    /// The share of draws, in [0, 1], that take an end of their range (half of them the low
    /// end, half the high one) instead of a uniform value; each ranged parameter of each
    /// episode draws on its own. 0: every draw uniform. A policy does worst at the edges of
    /// the plants it trained on, and a uniform draw of many parameters rarely puts any one
    /// of them near an edge.
    pub range_end_share: f32,
}

impl<'de> Deserialize<'de> for PlantParams {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = PlantParams;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("plant parameters")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PlantParams, A::Error> {
                let mut params = PlantParams::default();
                fill_field(&mut seq, &mut params.settings, 0, &self)?;
                params.range_end_share = field(&mut seq, 1, &self)?;
                Ok(params)
            }
        }
        deserializer.deserialize_struct(
            "PlantParams",
            &["settings", "range_end_share"],
            ParamsVisitor,
        )
    }
}

impl PlantParams {
    /// The setting of `name`, if the message has one.
    pub fn get(&self, name: &str) -> Option<&ParamSetting> {
        self.settings.iter().find(|s| s.name.as_str() == name)
    }
}

impl ParamSetting {
    /// A setting of `name` (`None` when the name is longer than [`MAX_PARAM_NAME`] bytes).
    pub fn new(name: &str, value: Option<f32>, range: Option<ParamRange>) -> Option<Self> {
        Some(ParamSetting {
            name: String::try_from(name).ok()?,
            value,
            range,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_found_by_name_and_long_names_refused() {
        let mut params = PlantParams::default();
        let mass = ParamSetting::new("arm_mass", Some(0.1), None).expect("short name");
        params.settings.push(mass.clone()).expect("room");
        assert_eq!(params.get("arm_mass"), Some(&mass));
        assert_eq!(params.get("arm"), None);
        assert!(ParamSetting::new(&"x".repeat(MAX_PARAM_NAME), None, None).is_some());
        assert!(ParamSetting::new(&"x".repeat(MAX_PARAM_NAME + 1), None, None).is_none());
    }
}
