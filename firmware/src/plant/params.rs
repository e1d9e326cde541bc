//! Run-time plant parameters: what each model's parameters are ([`ParamSpec`]), the
//! settings a host sent ([`ParamSettings`]) and each episode's draw from them.
//!
//! A model lists its parameters in a table, physical constants first, then the
//! imperfections it supports (see [`super::imperfections`]). A host's
//! [`PlantParams`] names parameters; [`check_setting`] is the one check of a setting
//! against a table — the device runs it before applying anything, and the trainer runs the
//! same function on a configuration before any device starts, so both refuse the same
//! settings for the same reason.
//!
//! Each episode, [`ParamSettings::draw`] takes exactly one uniform draw per parameter, in
//! table order, whether or not the parameter has a range: randomising one more parameter
//! does not change the values the others draw with the same seed.

use tether_shared::message::{AckTopic, ParamRange, ParamSetting, PlantParams, RefusalReason};
use tether_shared::seeds::SplitMix64;

use super::Plant;

/// What a device does with a [`PlantParams`] message: hands it to `plant` and returns the
/// answer (acknowledged with the number of settings, or refused naming the first refused
/// setting's index).
pub fn apply<P: Plant + ?Sized>(
    plant: &mut P,
    params: &PlantParams,
) -> (AckTopic, Result<(), RefusalReason>) {
    match plant.set_params(params) {
        Ok(()) => (
            AckTopic::PlantParams {
                count: u8::try_from(params.settings.len()).unwrap_or(u8::MAX),
            },
            Ok(()),
        ),
        Err(refusal) => (
            AckTopic::PlantParams {
                count: refusal.index,
            },
            Err(refusal.reason),
        ),
    }
}

/// What values a parameter takes and how a range of it is read.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ParamKind {
    /// A physical constant that must be positive (a mass, a length, a resistance). A range
    /// is a pair of multipliers of the nominal value, both positive.
    Positive,
    /// A physical constant that may be zero (a damping, a friction). A range is a pair of
    /// multipliers of the nominal value, both non-negative.
    NonNegative,
    /// An imperfection in `[0, max]` (a noise's standard deviation, a deadzone). A range is
    /// absolute.
    Imperfection {
        /// Largest value the plant takes.
        max: f32,
    },
    /// A whole number in `[min, max]` (latency in control periods, encoder counts). A range
    /// is absolute, both ends included, and drawn uniformly among its whole numbers.
    Count {
        /// Smallest value.
        min: u32,
        /// Largest value.
        max: u32,
    },
}

/// One run-time parameter of a plant model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamSpec {
    /// Name in configuration files and on the wire, snake case.
    pub name: &'static str,
    /// Its SI unit (or "control periods", "counts per revolution").
    pub unit: &'static str,
    /// The model's value when nothing is set (the constant it had before parameters).
    pub default: f32,
    /// Valid values and the meaning of a range.
    pub kind: ParamKind,
}

impl ParamSpec {
    /// Whether `value` is one the parameter may take.
    pub fn admits(&self, value: f32) -> bool {
        if !value.is_finite() {
            return false;
        }
        match self.kind {
            ParamKind::Positive => value > 0.0,
            ParamKind::NonNegative => value >= 0.0,
            ParamKind::Imperfection { max } => (0.0..=max).contains(&value),
            ParamKind::Count { min, max } => {
                libm::truncf(value) == value && (min as f32..=max as f32).contains(&value)
            }
        }
    }

    /// Whether a range is read as multipliers of the nominal value.
    pub fn is_relative(&self) -> bool {
        matches!(self.kind, ParamKind::Positive | ParamKind::NonNegative)
    }

    /// The value a draw `u ∈ [0, 1)` gives within `range` around `nominal`.
    fn value_at(&self, nominal: f32, range: ParamRange, u: f32) -> f32 {
        let ParamRange { low, high } = range;
        match self.kind {
            ParamKind::Positive | ParamKind::NonNegative => nominal * (low + (high - low) * u),
            ParamKind::Imperfection { .. } => low + (high - low) * u,
            ParamKind::Count { .. } => {
                let choices = high - low + 1.0;
                (low + libm::floorf(u * choices)).min(high)
            }
        }
    }
}

/// What is wrong with a parameter setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamProblem {
    /// The plant has no parameter of that name.
    Unknown,
    /// A known imperfection this plant does not have (a deadzone on a discrete action).
    NotForThisPlant,
    /// The name appears twice in one message.
    Duplicate,
    /// The value is outside the parameter's domain (not finite, negative mass, latency
    /// beyond the device's buffer, a fractional count).
    Value,
    /// The range is not finite or has `low > high`.
    RangeOrder,
    /// An end of the range, read as the parameter's kind says, is outside its domain.
    RangeValue,
}

impl ParamProblem {
    /// The refusal a device answers with.
    pub fn refusal(self) -> RefusalReason {
        match self {
            ParamProblem::Unknown | ParamProblem::NotForThisPlant => RefusalReason::UnknownParam,
            _ => RefusalReason::BadParam,
        }
    }
}

/// Why a device refused a [`PlantParams`] message: which setting (its index in the
/// message) and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamRefusal {
    /// Index of the refused setting (0 when the plant takes no parameters).
    pub index: u8,
    /// The reason on the wire.
    pub reason: RefusalReason,
}

impl ParamRefusal {
    /// The refusal of a plant that takes no parameters (physical hardware).
    pub const FIXED_PHYSICS: ParamRefusal = ParamRefusal {
        index: 0,
        reason: RefusalReason::FixedPhysics,
    };
}

/// Checks `setting` against `table`; `known_elsewhere` lists names that exist on other
/// plants (so such a name is [`ParamProblem::NotForThisPlant`], not unknown). Returns the
/// parameter's index in `table`.
pub fn check_setting(
    table: &[ParamSpec],
    known_elsewhere: &[&str],
    setting: &ParamSetting,
) -> Result<usize, ParamProblem> {
    let name = setting.name.as_str();
    let Some((index, spec)) = table.iter().enumerate().find(|(_, spec)| spec.name == name) else {
        return Err(if known_elsewhere.contains(&name) {
            ParamProblem::NotForThisPlant
        } else {
            ParamProblem::Unknown
        });
    };
    if setting.value.is_some_and(|v| !spec.admits(v)) {
        return Err(ParamProblem::Value);
    }
    let Some(range) = setting.range else {
        return Ok(index);
    };
    let ParamRange { low, high } = range;
    if !(low.is_finite() && high.is_finite() && low <= high) {
        return Err(ParamProblem::RangeOrder);
    }
    let ends_fit = if spec.is_relative() {
        let nominal = setting.value.unwrap_or(spec.default);
        let multiplier_ok = |m: f32| match spec.kind {
            ParamKind::Positive => m > 0.0,
            _ => m >= 0.0,
        };
        multiplier_ok(low)
            && multiplier_ok(high)
            && spec.admits(nominal * low)
            && spec.admits(nominal * high)
    } else {
        spec.admits(low) && spec.admits(high)
    };
    if ends_fit {
        Ok(index)
    } else {
        Err(ParamProblem::RangeValue)
    }
}

/// The settings a plant model holds for its `N` parameters: an optional fixed value and an
/// optional range per parameter, in table order.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSettings<const N: usize> {
    table: &'static [ParamSpec; N],
    values: [Option<f32>; N],
    ranges: [Option<ParamRange>; N],
    /// The share of draws that land on an end of their range ([`PlantParams::range_end_share`]).
    range_end_share: f32,
    /// Set by [`ParamSettings::lock`]: the plant then refuses settings like a physical one.
    locked: bool,
}

impl<const N: usize> ParamSettings<N> {
    /// Every parameter of `table` at its default, no ranges.
    pub const fn new(table: &'static [ParamSpec; N]) -> Self {
        ParamSettings {
            table,
            values: [None; N],
            ranges: [None; N],
            range_end_share: 0.0,
            locked: false,
        }
    }

    /// The parameters.
    pub fn table(&self) -> &'static [ParamSpec; N] {
        self.table
    }

    /// Replaces every setting with those of `params`, or changes nothing and says which
    /// setting was refused and why. `known_elsewhere` as in [`check_setting`].
    pub fn set(
        &mut self,
        params: &PlantParams,
        known_elsewhere: &[&str],
    ) -> Result<(), ParamRefusal> {
        if self.locked {
            return Err(ParamRefusal::FIXED_PHYSICS);
        }
        let share = params.range_end_share;
        if !(0.0..=1.0).contains(&share) {
            return Err(ParamRefusal {
                index: 0,
                reason: RefusalReason::BadRangeEndShare,
            });
        }
        let mut values = [None; N];
        let mut ranges = [None; N];
        let mut seen = [false; N];
        for (i, setting) in params.settings.iter().enumerate() {
            let refuse = |problem: ParamProblem| ParamRefusal {
                index: u8::try_from(i).unwrap_or(u8::MAX),
                reason: problem.refusal(),
            };
            let index = check_setting(self.table, known_elsewhere, setting).map_err(refuse)?;
            let slot = seen.get_mut(index).ok_or(refuse(ParamProblem::Unknown))?;
            if core::mem::replace(slot, true) {
                return Err(refuse(ParamProblem::Duplicate));
            }
            if let (Some(v), Some(r)) = (values.get_mut(index), ranges.get_mut(index)) {
                *v = setting.value;
                *r = setting.range;
            }
        }
        self.values = values;
        self.ranges = ranges;
        self.range_end_share = share;
        Ok(())
    }

    /// From now on [`ParamSettings::set`] refuses with `FixedPhysics`: the model behaves
    /// like a rig whose physics the host is not told (`tether sim --config`).
    pub fn lock(&mut self) {
        self.locked = true;
    }

    /// Parameter `i`'s nominal value: the fixed one, else the default.
    pub fn nominal(&self, i: usize) -> f32 {
        match (self.values.get(i), self.table.get(i)) {
            (Some(Some(v)), _) => *v,
            (_, Some(spec)) => spec.default,
            _ => 0.0,
        }
    }

    /// This episode's values: one draw from `rng` per parameter in table order (uniform
    /// over the range, or one of its ends for the range end share of draws); a parameter
    /// without a range takes its nominal value.
    pub fn draw(&self, rng: &mut SplitMix64) -> [f32; N] {
        let mut out = [0.0; N];
        for (i, slot) in out.iter_mut().enumerate() {
            let u = toward_ends(rng.next_unit(), self.range_end_share);
            let nominal = self.nominal(i);
            *slot = match (self.table.get(i), self.ranges.get(i)) {
                (Some(spec), Some(Some(range))) => spec.value_at(nominal, *range, u),
                _ => nominal,
            };
        }
        out
    }
}

/// Where in its range a draw lands, 0 (low end) to 1 (high end), from a uniform `u` in
/// [0, 1): the lowest `share / 2` of `u` to the low end, the highest `share / 2` to the high
/// end, the rest stretched over the whole range (still uniform there). One uniform number
/// per draw either way, so the stream of draws does not depend on the share; with share 0
/// the result is `u` exactly.
fn toward_ends(u: f32, share: f32) -> f32 {
    let half = share / 2.0;
    if u < half {
        0.0
    } else if u >= 1.0 - half {
        // `>=`: with share 1 nothing is left to stretch (and 0/0 would be NaN).
        1.0
    } else {
        // Rounding could carry the last `u` below the high end a hair past 1.
        ((u - half) / (1.0 - share)).min(1.0)
    }
}

/// One setting as tests write it: name, value, range.
#[cfg(test)]
pub(crate) type TestSetting<'a> = (&'a str, Option<f32>, Option<(f32, f32)>);

/// A [`PlantParams`] of `(name, value, range)` settings (for tests).
#[cfg(test)]
pub(crate) fn plant_params(settings: &[TestSetting<'_>]) -> PlantParams {
    let mut params = PlantParams::default();
    for &(name, value, range) in settings {
        let range = range.map(|(low, high)| ParamRange { low, high });
        let setting = ParamSetting::new(name, value, range).expect("a short name");
        params.settings.push(setting).expect("room for the setting");
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: [ParamSpec; 4] = [
        ParamSpec {
            name: "mass",
            unit: "kg",
            default: 2.0,
            kind: ParamKind::Positive,
        },
        ParamSpec {
            name: "damping",
            unit: "N·m·s/rad",
            default: 0.0,
            kind: ParamKind::NonNegative,
        },
        ParamSpec {
            name: "noise",
            unit: "rad",
            default: 0.0,
            kind: ParamKind::Imperfection { max: 1.0 },
        },
        ParamSpec {
            name: "latency",
            unit: "control periods",
            default: 0.0,
            kind: ParamKind::Count { min: 0, max: 3 },
        },
    ];

    fn setting(name: &str, value: Option<f32>, range: Option<(f32, f32)>) -> ParamSetting {
        plant_params(&[(name, value, range)]).settings[0].clone()
    }

    fn params(settings: &[ParamSetting]) -> PlantParams {
        let mut p = PlantParams::default();
        for s in settings {
            p.settings.push(s.clone()).expect("room");
        }
        p
    }

    #[test]
    fn each_problem_is_named() {
        let check = |s: ParamSetting| check_setting(&TABLE, &["deadzone"], &s);
        assert_eq!(check(setting("mass", Some(1.0), Some((0.5, 2.0)))), Ok(0));
        assert_eq!(check(setting("latency", Some(3.0), None)), Ok(3));
        assert_eq!(
            check(setting("volume", None, None)),
            Err(ParamProblem::Unknown)
        );
        assert_eq!(
            check(setting("deadzone", Some(0.1), None)),
            Err(ParamProblem::NotForThisPlant)
        );
        for bad in [-1.0, 0.0, f32::NAN, f32::INFINITY] {
            assert_eq!(
                check(setting("mass", Some(bad), None)),
                Err(ParamProblem::Value)
            );
        }
        assert_eq!(check(setting("damping", Some(0.0), None)), Ok(1));
        assert_eq!(
            check(setting("latency", Some(4.0), None)),
            Err(ParamProblem::Value),
            "beyond the delay buffer"
        );
        assert_eq!(
            check(setting("latency", Some(1.5), None)),
            Err(ParamProblem::Value)
        );
        assert_eq!(
            check(setting("mass", None, Some((1.2, 0.8)))),
            Err(ParamProblem::RangeOrder)
        );
        assert_eq!(
            check(setting("mass", None, Some((f32::NAN, 1.0)))),
            Err(ParamProblem::RangeOrder)
        );
        assert_eq!(
            check(setting("mass", None, Some((0.0, 1.0)))),
            Err(ParamProblem::RangeValue),
            "a mass multiplied by 0"
        );
        assert_eq!(
            check(setting("damping", Some(1.0), Some((0.0, 3.0)))),
            Ok(1)
        );
        assert_eq!(
            check(setting("noise", None, Some((0.5, 1.5)))),
            Err(ParamProblem::RangeValue)
        );
        assert_eq!(
            check(setting("latency", None, Some((0.0, 5.0)))),
            Err(ParamProblem::RangeValue)
        );
        assert_eq!(
            check(setting("mass", Some(3.0e38), Some((1.0, 10.0)))),
            Err(ParamProblem::RangeValue),
            "an end that overflows"
        );
    }

    #[test]
    fn a_refused_message_changes_nothing_and_names_the_setting() {
        let mut settings = ParamSettings::new(&TABLE);
        settings
            .set(&params(&[setting("mass", Some(3.0), None)]), &[])
            .expect("valid");
        let before = settings.clone();
        let bad = params(&[
            setting("noise", Some(0.1), None),
            setting("mass", Some(-3.0), None),
        ]);
        assert_eq!(
            settings.set(&bad, &[]),
            Err(ParamRefusal {
                index: 1,
                reason: RefusalReason::BadParam
            })
        );
        assert_eq!(settings, before);
        let twice = params(&[
            setting("mass", Some(1.0), None),
            setting("mass", Some(2.0), None),
        ]);
        assert_eq!(settings.set(&twice, &[]).map_err(|r| r.index), Err(1));
        let unknown = params(&[setting("volume", None, None)]);
        assert_eq!(
            settings.set(&unknown, &[]).map_err(|r| r.reason),
            Err(RefusalReason::UnknownParam)
        );
        // A new message replaces everything: what it does not name is back to its default.
        settings.set(&PlantParams::default(), &[]).expect("empty");
        assert_eq!(settings.nominal(0), 2.0);
        settings.lock();
        assert_eq!(
            settings.set(&PlantParams::default(), &[]),
            Err(ParamRefusal::FIXED_PHYSICS)
        );
    }

    #[test]
    fn draws_cover_their_ranges_and_reproduce() {
        let mut settings = ParamSettings::new(&TABLE);
        settings
            .set(
                &params(&[
                    setting("mass", Some(4.0), Some((0.5, 1.5))),
                    setting("noise", None, Some((0.1, 0.2))),
                    setting("latency", None, Some((1.0, 3.0))),
                ]),
                &[],
            )
            .expect("valid");
        let mut rng = SplitMix64::new(5);
        let mut latencies = [0u32; 4];
        for _ in 0..3000 {
            let [mass, damping, noise, latency] = settings.draw(&mut rng);
            assert!((2.0..=6.0).contains(&mass), "{mass}");
            assert_eq!(damping, 0.0);
            assert!((0.1..=0.2).contains(&noise), "{noise}");
            latencies[latency as usize] += 1;
        }
        assert_eq!(latencies[0], 0);
        assert!(latencies[1..].iter().all(|&n| n > 800), "{latencies:?}");
        let draw = |seed| settings.draw(&mut SplitMix64::new(seed));
        assert_eq!(draw(9), draw(9));
        assert_ne!(draw(9), draw(10));
    }

    #[test]
    fn one_more_randomised_parameter_leaves_the_others_draws_alone() {
        let mut one = ParamSettings::new(&TABLE);
        one.set(&params(&[setting("mass", None, Some((0.5, 1.5)))]), &[])
            .expect("valid");
        let mut two = one.clone();
        two.set(
            &params(&[
                setting("mass", None, Some((0.5, 1.5))),
                setting("noise", None, Some((0.0, 0.5))),
            ]),
            &[],
        )
        .expect("valid");
        let a = one.draw(&mut SplitMix64::new(3));
        let b = two.draw(&mut SplitMix64::new(3));
        assert_eq!(a[0], b[0]);
        assert_ne!(a[2], b[2]);
    }

    /// A mass range of 0.5-1.5 x 4 kg, a noise range of 0.1-0.2 and a latency of 1-3
    /// steps, with `share` of the draws at the ranges' ends.
    fn three_ranges(share: f32) -> PlantParams {
        let mut message = params(&[
            setting("mass", Some(4.0), Some((0.5, 1.5))),
            setting("noise", None, Some((0.1, 0.2))),
            setting("latency", None, Some((1.0, 3.0))),
        ]);
        message.range_end_share = share;
        message
    }

    /// Fresh settings set from [`three_ranges`].
    fn end_weighted(share: f32) -> Result<ParamSettings<4>, ParamRefusal> {
        let mut settings = ParamSettings::new(&TABLE);
        settings.set(&three_ranges(share), &[]).map(|()| settings)
    }

    #[test]
    fn the_range_end_share_of_draws_lands_on_the_ends() {
        let settings = end_weighted(0.3).expect("valid");
        let mut rng = SplitMix64::new(5);
        let (mut low, mut high, mut inside, mut latencies) = (0, 0, 0, [0u32; 4]);
        let draws = 20_000;
        for _ in 0..draws {
            let [mass, _, noise, latency] = settings.draw(&mut rng);
            assert!((2.0..=6.0).contains(&mass), "{mass}");
            assert!((0.1..=0.2).contains(&noise), "{noise}");
            match mass {
                2.0 => low += 1,
                6.0 => high += 1,
                _ => inside += 1,
            }
            latencies[latency as usize] += 1;
        }
        // 15 % at each end (3000 of 20 000 expected; 4 standard deviations is 200).
        for end in [low, high] {
            assert!((2800..=3200).contains(&end), "{low} {high} {inside}");
        }
        // Ends of a whole-number range: 1/3 of the uniform draws plus 15 % each.
        let end_share = (0.7 / 3.0 + 0.15) * f64::from(draws);
        for count in [latencies[1], latencies[3]] {
            assert!(
                (f64::from(count) - end_share).abs() < 300.0,
                "{latencies:?}"
            );
        }
        assert_eq!(latencies[0], 0);
    }

    #[test]
    fn a_zero_share_draws_as_before_and_one_only_the_ends() {
        let uniform = end_weighted(0.0).expect("valid");
        let mut plain = ParamSettings::new(&TABLE);
        let message = three_ranges(0.0);
        plain.set(&message, &[]).expect("valid");
        for seed in 0..200 {
            let draw = |s: &ParamSettings<4>| s.draw(&mut SplitMix64::new(seed));
            assert_eq!(draw(&uniform), draw(&plain));
        }
        let ends = end_weighted(1.0).expect("valid");
        let mut rng = SplitMix64::new(7);
        for _ in 0..2000 {
            let [mass, _, noise, latency] = ends.draw(&mut rng);
            assert!(mass == 2.0 || mass == 6.0, "{mass}");
            assert!(noise == 0.1 || noise == 0.2, "{noise}");
            assert!(latency == 1.0 || latency == 3.0, "{latency}");
        }
        // A later message without a share draws uniformly again.
        let mut again = end_weighted(1.0).expect("valid");
        again.set(&message, &[]).expect("valid");
        assert_eq!(
            again.draw(&mut SplitMix64::new(1)),
            plain.draw(&mut SplitMix64::new(1))
        );
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused_and_changes_nothing() {
        for share in [-0.1, 1.5, f32::NAN, f32::INFINITY] {
            let mut settings = end_weighted(0.5).expect("valid");
            let before = settings.clone();
            let mut message = params(&[setting("mass", None, Some((0.9, 1.1)))]);
            message.range_end_share = share;
            let refusal = settings.set(&message, &[]).expect_err("refused");
            assert_eq!(refusal.reason, RefusalReason::BadRangeEndShare, "{share}");
            assert_eq!(settings, before);
        }
    }

    proptest::proptest! {
        #[test]
        fn a_draw_stays_in_zero_to_one_and_grows_with_u(
            u in 0.0f32..1.0,
            v in 0.0f32..1.0,
            share in 0.0f32..=1.0,
        ) {
            let (a, b) = (toward_ends(u, share), toward_ends(v, share));
            proptest::prop_assert!((0.0..=1.0).contains(&a), "{} {}", u, share);
            if u <= v {
                proptest::prop_assert!(a <= b, "{} {} {}", u, v, share);
            }
        }
    }
}
