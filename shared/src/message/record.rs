//! The transition record: the flat layout of one control step inside a
//! [`TransitionBatch`], a checked read view over untrusted values, and the write helper the
//! device fills batches with.
//!
//! A record is `observation ++ action ++ reward ++ log_prob`, all f32: the observation the
//! policy saw (`obs_dim` values), the action as sampled before the device clamped it (the
//! action dimension, or one value holding a discrete choice's index), the reward that
//! followed, and the log-probability of the sampled action (0 in deterministic mode).
//! Records follow each other with no separator; the plant's description fixes the layout
//! ([`RecordLayout::of_plant`]).
//!
//! Values from a link are untrusted: [`TransitionBatch::records`] checks them once (whole
//! records, every value finite, every discrete index a valid choice) and gives a
//! [`TransitionRecords`] view whose accessors cannot fail afterwards.

use super::{TRANSITION_BATCH_VALUES, TransitionBatch};
use crate::plant::{ActionSpace, MAX_ACTION_DIM, MAX_OBS_DIM, PlantDescription};

/// What the action part of a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecordAction {
    /// `dim` real values, as sampled (before clamping to the plant's bounds).
    Continuous {
        /// Action dimension.
        dim: u8,
    },
    /// One value holding the index of one of `n` choices: a whole number in `0..n`.
    Discrete {
        /// Number of choices.
        n: u8,
    },
}

impl RecordAction {
    /// f32 values the action occupies.
    #[inline]
    pub const fn width(&self) -> usize {
        match *self {
            RecordAction::Continuous { dim } => dim as usize,
            RecordAction::Discrete { .. } => 1,
        }
    }
}

/// The layout of one transition record: `observation ++ action ++ reward ++ log_prob`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecordLayout {
    obs_dim: u8,
    action: RecordAction,
}

impl RecordLayout {
    /// Widest record any valid plant has, in f32 values.
    pub const MAX_WIDTH: usize = MAX_OBS_DIM + MAX_ACTION_DIM + 2;

    /// The layout for `obs_dim` observation values and `action`.
    pub const fn new(obs_dim: u8, action: RecordAction) -> Self {
        RecordLayout { obs_dim, action }
    }

    /// The layout of the records a device controlling `plant` sends.
    pub fn of_plant(plant: &PlantDescription) -> Self {
        let action = match &plant.action {
            ActionSpace::Continuous { low, .. } => RecordAction::Continuous {
                dim: u8::try_from(low.len()).unwrap_or(u8::MAX),
            },
            ActionSpace::Discrete { n } => RecordAction::Discrete { n: *n },
        };
        RecordLayout::new(plant.obs_dim, action)
    }

    /// Observation values per record.
    #[inline]
    pub const fn obs_dim(&self) -> usize {
        self.obs_dim as usize
    }

    /// What the action part holds.
    pub const fn action(&self) -> RecordAction {
        self.action
    }

    /// Action values per record.
    #[inline]
    pub const fn action_width(&self) -> usize {
        self.action.width()
    }

    /// f32 values per record.
    #[inline]
    pub const fn width(&self) -> usize {
        self.obs_dim() + self.action_width() + 2
    }

    /// Checks an observation that travels outside a record (an episode's final
    /// observation): its length and that every value is finite.
    pub fn check_observation(&self, observation: &[f32]) -> Result<(), RecordError> {
        if observation.len() != self.obs_dim() {
            return Err(RecordError::Width);
        }
        match observation.iter().all(|v| v.is_finite()) {
            true => Ok(()),
            false => Err(RecordError::NonFinite { record: 0 }),
        }
    }

    /// Checks one record's values (`width()` of them).
    fn check_record(&self, index: usize, values: &[f32]) -> Result<(), RecordError> {
        if !values.iter().all(|v| v.is_finite()) {
            return Err(RecordError::NonFinite { record: index });
        }
        if let RecordAction::Discrete { n } = self.action {
            let choice = values.get(self.obs_dim()).copied().unwrap_or(f32::NAN);
            if !(is_whole(choice) && choice >= 0.0 && choice < f32::from(n)) {
                return Err(RecordError::ActionIndex { record: index });
            }
        }
        Ok(())
    }
}

/// Why values are not valid records, or a record cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RecordError {
    /// The values are not a whole, non-zero number of records.
    Length,
    /// A part has another length than the layout says.
    Width,
    /// Record `record` holds a NaN or an infinity.
    NonFinite {
        /// Its position in the batch.
        record: usize,
    },
    /// Record `record`'s discrete action is not a whole number below the number of choices.
    ActionIndex {
        /// Its position in the batch.
        record: usize,
    },
    /// The batch has no room for another record.
    Full,
}

impl core::fmt::Display for RecordError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RecordError::Length => f.write_str("values are not a whole number of records"),
            RecordError::Width => f.write_str("a part's length does not match the layout"),
            RecordError::NonFinite { record } => write!(f, "record {record} is not finite"),
            RecordError::ActionIndex { record } => {
                write!(f, "record {record}'s action is not a valid choice")
            }
            RecordError::Full => f.write_str("the batch is full"),
        }
    }
}

/// One transition: the parts of a record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransitionRecord<'a> {
    /// The observation the policy saw.
    pub observation: &'a [f32],
    /// The action as sampled (a discrete choice's index as f32).
    pub action: &'a [f32],
    /// The reward that followed.
    pub reward: f32,
    /// Log-probability of the sampled action (0 in deterministic mode).
    pub log_prob: f32,
}

impl TransitionRecord<'_> {
    /// The index of a discrete action (its one value); for a record from a checked view
    /// of a discrete layout, always a valid choice.
    pub fn action_index(&self) -> Option<usize> {
        match self.action {
            [choice] if is_whole(*choice) && *choice >= 0.0 => Some(*choice as usize),
            _ => None,
        }
    }
}

/// Records checked against a layout: a whole number of them, every value finite, every
/// discrete action a valid choice. Built only by [`TransitionRecords::new_checked`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransitionRecords<'a> {
    layout: RecordLayout,
    values: &'a [f32],
}

impl<'a> TransitionRecords<'a> {
    /// Checks `values` as records of `layout` (zero records are valid here; a batch on the
    /// wire must carry at least one, see [`TransitionBatch::records`]).
    pub fn new_checked(layout: RecordLayout, values: &'a [f32]) -> Result<Self, RecordError> {
        let width = layout.width();
        if width == 0 || !values.len().is_multiple_of(width) {
            return Err(RecordError::Length);
        }
        for (index, record) in values.chunks_exact(width).enumerate() {
            layout.check_record(index, record)?;
        }
        Ok(TransitionRecords { layout, values })
    }

    /// A view over values that were checked already: records gathered from views checked
    /// against this same `layout` (the batches of one episode, concatenated, say). Nothing
    /// is checked again; finiteness and choice validity are what the caller kept. Values
    /// past the last whole record are left out.
    pub fn from_checked(layout: RecordLayout, values: &'a [f32]) -> Self {
        let whole = values.len() - values.len() % layout.width().max(1);
        TransitionRecords {
            layout,
            values: values.get(..whole).unwrap_or(&[]),
        }
    }

    /// The layout the records were checked against.
    pub fn layout(&self) -> RecordLayout {
        self.layout
    }

    /// The records' values, flat.
    pub fn values(&self) -> &'a [f32] {
        self.values
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.values.len() / self.layout.width()
    }

    /// Whether there is no record.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The first `count` records (all of them if there are fewer).
    pub fn take(&self, count: usize) -> Self {
        let end = count
            .saturating_mul(self.layout.width())
            .min(self.values.len());
        TransitionRecords {
            layout: self.layout,
            values: self.values.get(..end).unwrap_or(&[]),
        }
    }

    /// Record `index`, if there is one.
    pub fn get(&self, index: usize) -> Option<TransitionRecord<'a>> {
        let width = self.layout.width();
        let start = index.checked_mul(width)?;
        let record = self.values.get(start..start.checked_add(width)?)?;
        Some(self.split(record))
    }

    /// The records in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = TransitionRecord<'a>> + use<'a> {
        let layout = self.layout;
        let view = *self;
        self.values
            .chunks_exact(layout.width())
            .map(move |record| view.split(record))
    }

    fn split(&self, record: &'a [f32]) -> TransitionRecord<'a> {
        let (observation, rest) = record.split_at(self.layout.obs_dim());
        let (action, rest) = rest.split_at(self.layout.action_width());
        TransitionRecord {
            observation,
            action,
            reward: rest.first().copied().unwrap_or(0.0),
            log_prob: rest.get(1).copied().unwrap_or(0.0),
        }
    }
}

impl TransitionBatch {
    /// The batch's records, checked against `layout`; a batch must carry at least one.
    pub fn records(&self, layout: RecordLayout) -> Result<TransitionRecords<'_>, RecordError> {
        let records = TransitionRecords::new_checked(layout, &self.values)?;
        match records.is_empty() {
            true => Err(RecordError::Length),
            false => Ok(records),
        }
    }

    /// Whether one more record of `layout` fits.
    #[inline]
    pub fn has_room_for(&self, layout: &RecordLayout) -> bool {
        self.values.len() + layout.width() <= TRANSITION_BATCH_VALUES
    }

    /// Worst-case frame length in bytes, terminator included, of a batch carrying up to
    /// `values` values: the message tag, three ids at their longest varints, the value
    /// count and the values, then CRC and COBS.
    pub const fn max_frame_len(values: usize) -> usize {
        const TAG: usize = 1;
        const IDS: usize = 3 * 5;
        // Up to TRANSITION_BATCH_VALUES (< 2^14): two varint bytes.
        const COUNT: usize = 2;
        crate::frame::max_frame_len(TAG + IDS + COUNT + 4 * values)
    }

    /// Appends `record` (the write helper): checks its parts' lengths against `layout` and
    /// the room left, writes nothing on error. Values are written as given: the device
    /// checks finiteness before it records a step.
    // Always inlined: it runs every control step on the device.
    #[inline(always)]
    pub fn push_record(
        &mut self,
        layout: &RecordLayout,
        record: &TransitionRecord<'_>,
    ) -> Result<(), RecordError> {
        if record.observation.len() != layout.obs_dim()
            || record.action.len() != layout.action_width()
        {
            return Err(RecordError::Width);
        }
        if !self.has_room_for(layout) {
            return Err(RecordError::Full);
        }
        // Cannot fail after the room check.
        let pushed = self.values.extend_from_slice(record.observation).is_ok()
            && self.values.extend_from_slice(record.action).is_ok()
            && self.values.push(record.reward).is_ok()
            && self.values.push(record.log_prob).is_ok();
        match pushed {
            true => Ok(()),
            false => Err(RecordError::Full),
        }
    }
}

/// Whether `value` is a whole number (no fractional part; NaN and infinities are not).
fn is_whole(value: f32) -> bool {
    value.is_finite() && libm::truncf(value) == value
}

/// A record of the widest plant always fits in a batch.
const _: () = assert!(RecordLayout::MAX_WIDTH <= TRANSITION_BATCH_VALUES);

#[cfg(test)]
mod tests {
    use heapless::Vec;

    use super::*;

    const GAUSSIAN: RecordLayout = RecordLayout::new(2, RecordAction::Continuous { dim: 1 });
    const DISCRETE: RecordLayout = RecordLayout::new(1, RecordAction::Discrete { n: 3 });

    fn batch(values: &[f32]) -> TransitionBatch {
        TransitionBatch {
            episode: 1,
            first_step: 0,
            policy_version: 2,
            values: Vec::from_slice(values).unwrap_or_default(),
        }
    }

    #[test]
    fn written_records_read_back_part_by_part() {
        let mut b = batch(&[]);
        let first = TransitionRecord {
            observation: &[0.5, -1.0],
            action: &[2.5],
            reward: -0.25,
            log_prob: -1.5,
        };
        let second = TransitionRecord {
            observation: &[1.0, 2.0],
            action: &[-3.0],
            reward: 1.0,
            log_prob: 0.0,
        };
        assert_eq!(b.push_record(&GAUSSIAN, &first), Ok(()));
        assert_eq!(b.push_record(&GAUSSIAN, &second), Ok(()));
        assert_eq!(
            b.values.as_slice(),
            &[0.5, -1.0, 2.5, -0.25, -1.5, 1.0, 2.0, -3.0, 1.0, 0.0]
        );
        let records = b.records(GAUSSIAN).expect("valid");
        assert_eq!(records.len(), 2);
        assert_eq!(records.get(0), Some(first));
        assert_eq!(records.get(1), Some(second));
        assert_eq!(records.get(2), None);
        assert!(records.iter().eq([first, second]));
        assert_eq!(records.take(1).len(), 1);
        assert_eq!(records.take(9).len(), 2);
    }

    #[test]
    fn writing_checks_widths_and_room_and_writes_nothing_on_error() {
        let mut b = batch(&[]);
        let short = TransitionRecord {
            observation: &[0.5],
            action: &[2.5],
            reward: 0.0,
            log_prob: 0.0,
        };
        assert_eq!(b.push_record(&GAUSSIAN, &short), Err(RecordError::Width));
        assert!(b.values.is_empty());
        let record = TransitionRecord {
            observation: &[0.5, 0.5],
            ..short
        };
        let mut written = 0;
        while b.has_room_for(&GAUSSIAN) {
            assert_eq!(b.push_record(&GAUSSIAN, &record), Ok(()));
            written += 1;
        }
        assert_eq!(written, TRANSITION_BATCH_VALUES / GAUSSIAN.width());
        let full = b.values.len();
        assert_eq!(b.push_record(&GAUSSIAN, &record), Err(RecordError::Full));
        assert_eq!(b.values.len(), full);
    }

    #[test]
    fn reading_refuses_partial_empty_non_finite_and_bad_choices() {
        assert_eq!(batch(&[]).records(GAUSSIAN), Err(RecordError::Length));
        assert_eq!(
            batch(&[0.0, 0.0, 0.0, 0.0]).records(GAUSSIAN),
            Err(RecordError::Length)
        );
        let mut values = [0.0f32; 10];
        values[7] = f32::INFINITY;
        assert_eq!(
            batch(&values).records(GAUSSIAN),
            Err(RecordError::NonFinite { record: 1 })
        );
        // obs, choice, reward, log_prob
        assert!(batch(&[0.3, 2.0, 1.0, -0.4]).records(DISCRETE).is_ok());
        for choice in [3.0, -1.0, 0.5, 1e9] {
            assert_eq!(
                batch(&[0.3, 0.0, 1.0, -0.4, 0.3, choice, 1.0, -0.4]).records(DISCRETE),
                Err(RecordError::ActionIndex { record: 1 }),
                "choice {choice}"
            );
        }
        let records =
            TransitionRecords::new_checked(DISCRETE, &[0.3, 2.0, 1.0, -0.4]).expect("valid");
        assert_eq!(records.get(0).and_then(|r| r.action_index()), Some(2));
        assert!(TransitionRecords::new_checked(DISCRETE, &[]).is_ok_and(|r| r.is_empty()));
    }

    #[test]
    fn layouts_follow_the_plant_and_final_observations_are_checked() {
        let plant = PlantDescription {
            name: heapless::String::try_from("pendulum").unwrap_or_default(),
            obs_dim: 3,
            action: ActionSpace::Continuous {
                low: Vec::from_slice(&[-2.0]).unwrap_or_default(),
                high: Vec::from_slice(&[2.0]).unwrap_or_default(),
            },
            control_rate_hz: 50.0,
            episode_steps: 200,
        };
        let layout = RecordLayout::of_plant(&plant);
        assert_eq!((layout.obs_dim(), layout.action_width()), (3, 1));
        assert_eq!(layout.width(), 6);
        assert_eq!(layout.check_observation(&[1.0, 2.0, 3.0]), Ok(()));
        assert_eq!(
            layout.check_observation(&[1.0, 2.0]),
            Err(RecordError::Width)
        );
        assert_eq!(
            layout.check_observation(&[1.0, f32::NAN, 3.0]),
            Err(RecordError::NonFinite { record: 0 })
        );
        assert_eq!(DISCRETE.width(), 4);
    }
}
