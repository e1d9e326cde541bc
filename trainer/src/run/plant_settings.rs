//! The configuration's `[plant_params]` and `[plant_randomize]` tables: a simulated plant's
//! physical parameters, imperfections and per-episode ranges, checked and turned into the
//! [`PlantParams`] message simulated devices receive.
//!
//! ```toml
//! plant = "qube"
//!
//! [plant_params]              # values in SI units (imperfections too)
//! pendulum_mass = 0.025
//! latency_steps = 1
//!
//! [plant_randomize]           # [low, high] per episode
//! arm_mass = [0.9, 1.1]       # physical: multipliers of the nominal value
//! angle_noise_std = [0.0, 0.003]   # imperfections: absolute
//! latency_steps = [0, 1]      # whole numbers: absolute, both ends included
//! ```
//!
//! The keys are the model's parameter names (`tether_firmware::plant::AnyPlant::params_of`,
//! documented on each model). Every setting is checked with the firmware's own
//! [`check_setting`], the function a device runs on receipt, so a configuration a device
//! would refuse is refused here, naming the key, before any device starts.

use std::collections::BTreeMap;

use tether_firmware::plant::AnyPlant;
use tether_firmware::plant::PLANT_NAMES;
use tether_firmware::plant::imperfections::{IMPERFECTION_NAMES, MAX_LATENCY_STEPS};
use tether_firmware::plant::params::{ParamKind, ParamProblem, ParamSpec, check_setting};
use tether_shared::message::{MAX_PARAM_SETTINGS, ParamRange, ParamSetting, PlantParams};

/// `[plant_params]`: parameter name → value (SI units).
pub type PlantParamsTable = BTreeMap<String, f64>;
/// `[plant_randomize]`: parameter name → `[low, high]`.
pub type PlantRandomizeTable = BTreeMap<String, [f64; 2]>;

/// A setting the plant cannot take: the dotted key (`plant_params.arm_mass`) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidSetting {
    /// `plant_params.<name>` or `plant_randomize.<name>` (or the table's name alone).
    pub key: String,
    /// What is wrong and what would do.
    pub reason: String,
}

/// The [`PlantParams`] message for `plant` from the two tables and the top-level
/// `range_end_share` (the share of draws at an end of their range, in [0, 1]); `Ok(None)`
/// when both tables are empty (nothing to send: every device keeps its own physics).
pub fn plant_params_message(
    plant: &str,
    params: &PlantParamsTable,
    randomize: &PlantRandomizeTable,
    range_end_share: f64,
) -> Result<Option<PlantParams>, InvalidSetting> {
    if !(0.0..=1.0).contains(&range_end_share) {
        return Err(InvalidSetting {
            key: "range_end_share".into(),
            reason: format!(
                "{range_end_share} is not a share: it must be between 0 (every draw uniform over \
                 its range) and 1 (every draw at one end)"
            ),
        });
    }
    if range_end_share > 0.0 && randomize.is_empty() {
        return Err(InvalidSetting {
            key: "range_end_share".into(),
            reason: "it weights the draws from [plant_randomize] ranges, and there are none: \
                     add the ranges or remove the key"
                .into(),
        });
    }
    if params.is_empty() && randomize.is_empty() {
        return Ok(None);
    }
    let Some(table) = AnyPlant::params_of(plant) else {
        return Err(InvalidSetting {
            key: if params.is_empty() {
                "plant_randomize"
            } else {
                "plant_params"
            }
            .into(),
            reason: format!(
                "plant `{plant}` has no simulated model; [plant_params] and [plant_randomize] \
                 set the physics of simulated plants ({}), a real device's physics is its own",
                PLANT_NAMES.join(", ")
            ),
        });
    };
    let mut names: Vec<&String> = params.keys().chain(randomize.keys()).collect();
    names.sort();
    names.dedup();
    let mut message = PlantParams {
        range_end_share: range_end_share as f32,
        ..PlantParams::default()
    };
    for name in names {
        let setting = setting(name, params.get(name), randomize.get(name));
        let problem = match &setting {
            Some(s) => check_setting(table, &IMPERFECTION_NAMES, s).err(),
            None => Some(ParamProblem::Unknown),
        };
        if let Some(problem) = problem {
            return Err(explain(plant, table, name, params, randomize, problem));
        }
        let pushed = setting.map(|s| message.settings.push(s));
        if !matches!(pushed, Some(Ok(()))) {
            return Err(InvalidSetting {
                key: "plant_params".into(),
                reason: format!("more than {MAX_PARAM_SETTINGS} parameters"),
            });
        }
    }
    Ok(Some(message))
}

/// The wire setting of `name` (`None` when the name is too long to be any parameter).
fn setting(name: &str, value: Option<&f64>, range: Option<&[f64; 2]>) -> Option<ParamSetting> {
    let range = range.map(|&[low, high]| ParamRange {
        low: low as f32,
        high: high as f32,
    });
    ParamSetting::new(name, value.map(|&v| v as f32), range)
}

fn explain(
    plant: &str,
    table: &[ParamSpec],
    name: &str,
    params: &PlantParamsTable,
    randomize: &PlantRandomizeTable,
    problem: ParamProblem,
) -> InvalidSetting {
    let in_params = params.contains_key(name);
    let table_of = |in_values: bool| {
        if in_values {
            "plant_params"
        } else {
            "plant_randomize"
        }
    };
    let spec = table.iter().find(|s| s.name == name);
    let (table_name, reason) = match (problem, spec) {
        (ParamProblem::NotForThisPlant, _) if name == "deadzone" => (
            table_of(in_params),
            format!(
                "a deadzone needs a continuous action; plant `{plant}`'s action is discrete \
                 (a choice has no magnitude to lose)"
            ),
        ),
        (ParamProblem::Unknown | ParamProblem::NotForThisPlant, _) | (_, None) => (
            table_of(in_params),
            format!(
                "plant `{plant}` has no parameter `{name}`; its parameters are: {}",
                table
                    .iter()
                    .map(|s| format!("{} ({})", s.name, s.unit))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (ParamProblem::Value, Some(spec)) => (
            "plant_params",
            format!(
                "{} is not a value `{name}` can take: it must be {}",
                params.get(name).copied().unwrap_or(f64::NAN),
                domain(spec)
            ),
        ),
        (ParamProblem::RangeOrder, Some(_)) => {
            let [low, high] = randomize.get(name).copied().unwrap_or([f64::NAN; 2]);
            (
                "plant_randomize",
                format!("[{low}, {high}] is not a range: it needs finite ends with low ≤ high"),
            )
        }
        (ParamProblem::RangeValue | ParamProblem::Duplicate, Some(spec)) => {
            let [low, high] = randomize.get(name).copied().unwrap_or([f64::NAN; 2]);
            let reason = if spec.is_relative() {
                let nominal = params.get(name).copied().unwrap_or(f64::from(spec.default));
                format!(
                    "[{low}, {high}] multiplies the nominal {nominal} {} into [{}, {}]; the \
                     multipliers must be {} and the values {}",
                    spec.unit,
                    nominal * low,
                    nominal * high,
                    if matches!(spec.kind, ParamKind::Positive) {
                        "positive"
                    } else {
                        "≥ 0"
                    },
                    domain(spec)
                )
            } else {
                format!("[{low}, {high}]: both ends must be {}", domain(spec))
            };
            ("plant_randomize", reason)
        }
    };
    InvalidSetting {
        key: format!("{table_name}.{name}"),
        reason,
    }
}

/// What values `spec` admits, in words.
fn domain(spec: &ParamSpec) -> String {
    let unit = spec.unit;
    match spec.kind {
        ParamKind::Positive => format!("a positive number ({unit})"),
        ParamKind::NonNegative => format!("a number ≥ 0 ({unit})"),
        ParamKind::Imperfection { max } if max < f32::MAX => {
            format!("between 0 and {max} ({unit})")
        }
        ParamKind::Imperfection { .. } => format!("a finite number ≥ 0 ({unit})"),
        ParamKind::Count { min, max } if spec.name == "latency_steps" => format!(
            "a whole number of control periods from {min} to {max} (the device holds at most \
             {MAX_LATENCY_STEPS} commands in flight)"
        ),
        ParamKind::Count { min, max } => format!("a whole number from {min} to {max} ({unit})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(entries: &[(&str, f64)]) -> PlantParamsTable {
        entries.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    fn ranges(entries: &[(&str, [f64; 2])]) -> PlantRandomizeTable {
        entries.iter().map(|&(k, v)| (k.to_string(), v)).collect()
    }

    fn error(plant: &str, p: &[(&str, f64)], r: &[(&str, [f64; 2])]) -> InvalidSetting {
        plant_params_message(plant, &params(p), &ranges(r), 0.0).expect_err("invalid")
    }

    #[test]
    fn empty_tables_send_nothing() {
        assert_eq!(
            plant_params_message("myrig", &params(&[]), &ranges(&[]), 0.0),
            Ok(None)
        );
    }

    #[test]
    fn a_key_in_both_tables_becomes_one_setting() {
        let message = plant_params_message(
            "qube",
            &params(&[("arm_mass", 0.1), ("latency_steps", 1.0)]),
            &ranges(&[("arm_mass", [0.9, 1.1]), ("angle_noise_std", [0.0, 0.003])]),
            0.25,
        )
        .expect("valid")
        .expect("something to send");
        assert_eq!(message.settings.len(), 3);
        assert_eq!(message.range_end_share, 0.25);
        let mass = message.get("arm_mass").expect("arm_mass");
        assert_eq!(mass.value, Some(0.1));
        assert_eq!(
            mass.range,
            Some(ParamRange {
                low: 0.9,
                high: 1.1
            })
        );
        assert_eq!(message.get("angle_noise_std").map(|s| s.value), Some(None));
    }

    #[test]
    fn a_range_end_share_outside_zero_to_one_or_without_ranges_is_refused() {
        let arm = ranges(&[("arm_mass", [0.9, 1.1])]);
        for share in [-0.5, 1.01, f64::NAN] {
            let e = plant_params_message("qube", &params(&[]), &arm, share).expect_err("refused");
            assert_eq!(e.key, "range_end_share");
            assert!(e.reason.contains("between 0"), "{}", e.reason);
        }
        let fixed = params(&[("arm_mass", 0.1)]);
        let e = plant_params_message("qube", &fixed, &ranges(&[]), 0.3).expect_err("refused");
        assert_eq!(e.key, "range_end_share");
        assert!(e.reason.contains("[plant_randomize]"), "{}", e.reason);
        for share in [0.0, 1.0] {
            let message = plant_params_message("qube", &params(&[]), &arm, share);
            let sent = message.expect("valid").expect("a range to send");
            assert_eq!(f64::from(sent.range_end_share), share);
        }
    }

    #[test]
    fn each_bad_setting_is_one_error_naming_its_key() {
        let e = error("qube", &[("arm_mas", 0.1)], &[]);
        assert_eq!(e.key, "plant_params.arm_mas");
        assert!(e.reason.contains("arm_mass (kg)"), "{}", e.reason);
        let e = error("qube", &[("pendulum_mass", -0.024)], &[]);
        assert_eq!(e.key, "plant_params.pendulum_mass");
        assert!(e.reason.contains("positive"), "{}", e.reason);
        let e = error("qube", &[("latency_steps", 4.0)], &[]);
        assert_eq!(e.key, "plant_params.latency_steps");
        assert!(e.reason.contains("at most 3 commands"), "{}", e.reason);
        let e = error("pendulum", &[], &[("length", [1.2, 0.8])]);
        assert_eq!(e.key, "plant_randomize.length");
        assert!(e.reason.contains("low ≤ high"), "{}", e.reason);
        let e = error("qube", &[], &[("latency_steps", [0.0, 5.0])]);
        assert_eq!(e.key, "plant_randomize.latency_steps");
        let e = error("qube", &[], &[("encoder_counts", [1024.5, 2048.0])]);
        assert!(e.reason.contains("whole number"), "{}", e.reason);
        let e = error("qube", &[], &[("arm_damping", [-1.0, 2.0])]);
        assert!(e.reason.contains("≥ 0"), "{}", e.reason);
        let e = error("cartpole", &[("deadzone", 0.1)], &[]);
        assert_eq!(e.key, "plant_params.deadzone");
        assert!(e.reason.contains("discrete"), "{}", e.reason);
        let e = error("myrig", &[("mass", 1.0)], &[]);
        assert_eq!(e.key, "plant_params");
        assert!(e.reason.contains("no simulated model"), "{}", e.reason);
        let e = error(
            "qube",
            &[("a_name_far_longer_than_any_parameter", 1.0)],
            &[],
        );
        assert!(e.reason.contains("has no parameter"), "{}", e.reason);
    }
}
