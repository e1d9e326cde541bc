//! The trajectories a TRPO update learns from.
//!
//! Transitions arrive as the devices' flat records, checked once where they enter
//! ([`tether_shared::message::TransitionBatch::records`]). A [`Trajectory`] keeps one
//! episode's checked records as they are; a [`RolloutBatch`] lays the trajectories of an
//! iteration out once, in the learner's column-major f64 matrices (one column per
//! transition). Nothing here checks values again: the types only accept checked records,
//! and the learner only compares the batch's record layout with its own shape.

use nalgebra::DMatrix;
use tether_shared::message::{RecordAction, RecordError, RecordLayout, TransitionRecords};

use super::distribution::ActionDistribution;
use super::gsde::SdeDistribution;

/// How an episode ended, which decides whether GAE bootstraps.
#[derive(Clone, Debug, PartialEq)]
pub enum EpisodeEnding {
    /// The plant reached a terminal state: the value after the last step is 0.
    Terminated,
    /// Cut by the time limit, the host, or the end of the batch: bootstrap from
    /// V(`final_obs`).
    Truncated {
        /// Raw (unnormalised) observation after the last step, checked like a record.
        final_obs: Vec<f32>,
    },
}

/// The checked records of one episode (or of its leading part), in time order, and how it
/// ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Trajectory {
    layout: RecordLayout,
    /// Whole records of `layout`, each from a checked view.
    values: Vec<f32>,
    ending: EpisodeEnding,
}

impl Trajectory {
    /// An empty trajectory of records laid out as `layout`, ending terminated until told
    /// otherwise.
    pub fn new(layout: RecordLayout) -> Self {
        Trajectory {
            layout,
            values: Vec::new(),
            ending: EpisodeEnding::Terminated,
        }
    }

    /// Appends checked records; refuses records of another layout.
    pub fn extend(&mut self, records: TransitionRecords<'_>) -> Result<(), RecordError> {
        if records.layout() != self.layout {
            return Err(RecordError::Width);
        }
        self.values.extend_from_slice(records.values());
        Ok(())
    }

    /// The records.
    pub fn records(&self) -> TransitionRecords<'_> {
        // Whole records of `layout`, each from a checked view: `extend` is the only way in.
        TransitionRecords::from_checked(self.layout, &self.values)
    }

    /// The record layout.
    pub fn layout(&self) -> RecordLayout {
        self.layout
    }

    /// Transitions kept.
    pub fn len(&self) -> usize {
        self.values.len() / self.layout.width().max(1)
    }

    /// Whether no transition is kept.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Keeps the first `steps` transitions.
    pub fn truncate(&mut self, steps: usize) {
        self.values
            .truncate(steps.saturating_mul(self.layout.width()));
    }

    /// How the episode ended.
    pub fn ending(&self) -> &EpisodeEnding {
        &self.ending
    }

    /// The episode reached a terminal state.
    pub fn end_terminated(&mut self) {
        self.ending = EpisodeEnding::Terminated;
    }

    /// The episode was cut before a terminal state; `final_obs` (the observation after
    /// the last kept step) is checked like a record's.
    pub fn end_truncated(&mut self, final_obs: &[f32]) -> Result<(), RecordError> {
        self.layout.check_observation(final_obs)?;
        self.ending = EpisodeEnding::Truncated {
            final_obs: final_obs.to_vec(),
        };
        Ok(())
    }

    /// Undiscounted sum of the rewards, in f64.
    pub fn total_reward(&self) -> f64 {
        self.records().iter().map(|r| f64::from(r.reward)).sum()
    }

    /// Mean reward per step over the last `steps` records (all of them when the trajectory
    /// is shorter), in f64; 0 for an empty trajectory. How an episode ended, apart from its
    /// return: a balancing task's last second earns close to the per-step maximum only if
    /// the pole is still up.
    pub fn mean_reward_of_last(&self, steps: usize) -> f64 {
        let records = self.records();
        let tail = records.len().min(steps);
        if tail == 0 {
            return 0.0;
        }
        let sum: f64 = records
            .iter()
            .skip(records.len() - tail)
            .map(|r| f64::from(r.reward))
            .sum();
        sum / tail as f64
    }
}

/// Why a batch cannot be learned from. Nothing was changed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BatchError {
    /// No transitions at all.
    #[error("the rollout batch has no transitions")]
    Empty,
    /// The records are not the learner's shape.
    #[error("the rollout batch holds {found:?} records; the learner takes {expected}")]
    Shape {
        /// The batch's record layout.
        found: RecordLayout,
        /// The learner's observation width and action distribution.
        expected: String,
    },
}

/// The transitions of one iteration in the learner's layout: every observation and action
/// a column of a matrix, episodes concatenated in a deterministic order (device, then
/// episode), with each episode's length and ending for GAE.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutBatch {
    layout: RecordLayout,
    /// `obs_dim × len()`, column-major.
    observations: Vec<f64>,
    /// `action_width × len()`, column-major (a discrete action is its index).
    actions: Vec<f64>,
    rewards: Vec<f64>,
    episodes: Vec<EpisodeSpan>,
}

/// One episode's place in a [`RolloutBatch`].
#[derive(Clone, Debug, PartialEq)]
struct EpisodeSpan {
    len: usize,
    ending: EpisodeEnding,
}

/// One episode of a batch as GAE reads it.
#[derive(Clone, Copy, Debug)]
pub struct EpisodeView<'a> {
    /// The episode's first column in the batch's matrices.
    pub start: usize,
    /// Its rewards, in time order.
    pub rewards: &'a [f64],
    /// How it ended.
    pub ending: &'a EpisodeEnding,
}

impl RolloutBatch {
    /// An empty batch of records laid out as `layout`.
    pub fn new(layout: RecordLayout) -> Self {
        RolloutBatch {
            layout,
            observations: Vec::new(),
            actions: Vec::new(),
            rewards: Vec::new(),
            episodes: Vec::new(),
        }
    }

    /// Appends a trajectory's transitions as the next episode (an empty one is skipped);
    /// refuses a trajectory of another layout.
    pub fn push(&mut self, trajectory: &Trajectory) -> Result<(), RecordError> {
        if trajectory.layout() != self.layout {
            return Err(RecordError::Width);
        }
        if trajectory.is_empty() {
            return Ok(());
        }
        for record in trajectory.records().iter() {
            self.observations
                .extend(record.observation.iter().map(|&v| f64::from(v)));
            self.actions
                .extend(record.action.iter().map(|&v| f64::from(v)));
            self.rewards.push(f64::from(record.reward));
        }
        self.episodes.push(EpisodeSpan {
            len: trajectory.len(),
            ending: trajectory.ending().clone(),
        });
        Ok(())
    }

    /// The record layout of every transition.
    pub fn layout(&self) -> RecordLayout {
        self.layout
    }

    /// Total transitions over all episodes.
    pub fn len(&self) -> usize {
        self.rewards.len()
    }

    /// True when there are no transitions.
    pub fn is_empty(&self) -> bool {
        self.rewards.is_empty()
    }

    /// Checks the batch has transitions and is shaped for a learner reading `obs_dim`
    /// observations and acting through `distribution`.
    pub fn check_shape(
        &self,
        obs_dim: usize,
        distribution: ActionDistribution,
    ) -> Result<(), BatchError> {
        if self.is_empty() {
            return Err(BatchError::Empty);
        }
        let fits = self.layout.obs_dim() == obs_dim
            && match (self.layout.action(), distribution) {
                (
                    RecordAction::Continuous { dim },
                    ActionDistribution::DiagGaussian { action_dim }
                    | ActionDistribution::StateDependent(SdeDistribution { action_dim, .. }),
                ) => usize::from(dim) == action_dim,
                (RecordAction::Discrete { n }, ActionDistribution::Categorical { n_actions }) => {
                    usize::from(n) == n_actions
                }
                _ => false,
            };
        match fits {
            true => Ok(()),
            false => Err(BatchError::Shape {
                found: self.layout,
                expected: format!("{obs_dim} observations and {distribution:?}"),
            }),
        }
    }

    /// All observations as columns, `obs_dim × len()`.
    pub fn observation_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_column_slice(self.layout.obs_dim(), self.len(), &self.observations)
    }

    /// All actions as columns, `action_width × len()`.
    pub fn action_matrix(&self) -> DMatrix<f64> {
        DMatrix::from_column_slice(self.layout.action_width(), self.len(), &self.actions)
    }

    /// The episodes in order.
    pub fn episodes(&self) -> impl Iterator<Item = EpisodeView<'_>> {
        self.episodes.iter().scan(0, move |start, span| {
            let view = EpisodeView {
                start: *start,
                rewards: &self.rewards[*start..*start + span.len],
                ending: &span.ending,
            };
            *start += span.len;
            Some(view)
        })
    }
}

/// Test helpers: trajectories from plain steps, through the same checked view a device's
/// batch goes through.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The trajectory of `(observation, action, reward)` steps; panics on values the
    /// checked view refuses (a test's own data).
    pub(crate) fn trajectory(
        layout: RecordLayout,
        steps: &[(&[f32], &[f32], f32)],
        ending: EpisodeEnding,
    ) -> Trajectory {
        let values: Vec<f32> = steps
            .iter()
            .flat_map(|(obs, action, reward)| {
                obs.iter()
                    .chain(action.iter())
                    .copied()
                    .chain([*reward, 0.0])
            })
            .collect();
        let mut t = Trajectory::new(layout);
        t.extend(TransitionRecords::new_checked(layout, &values).expect("valid steps"))
            .expect("same layout");
        if let EpisodeEnding::Truncated { final_obs } = ending {
            t.end_truncated(&final_obs)
                .expect("valid final observation");
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::trajectory;
    use super::*;

    const LAYOUT: RecordLayout = RecordLayout::new(2, RecordAction::Continuous { dim: 1 });
    const GAUSS: ActionDistribution = ActionDistribution::DiagGaussian { action_dim: 1 };

    fn episode(n: usize, first: f32) -> Trajectory {
        let steps: Vec<([f32; 2], [f32; 1], f32)> = (0..n)
            .map(|i| ([first + i as f32, 0.5], [i as f32 * 0.25], 1.0))
            .collect();
        let steps: Vec<(&[f32], &[f32], f32)> = steps
            .iter()
            .map(|(o, a, r)| (o.as_slice(), a.as_slice(), *r))
            .collect();
        trajectory(LAYOUT, &steps, EpisodeEnding::Terminated)
    }

    #[test]
    fn mean_reward_of_last_averages_only_the_tail() {
        let steps: Vec<([f32; 2], [f32; 1], f32)> =
            (0..5).map(|i| ([0.0, 0.0], [0.0], i as f32)).collect();
        let steps: Vec<(&[f32], &[f32], f32)> = steps
            .iter()
            .map(|(o, a, r)| (o.as_slice(), a.as_slice(), *r))
            .collect();
        let rewards_0_to_4 = trajectory(LAYOUT, &steps, EpisodeEnding::Terminated);
        assert_eq!(rewards_0_to_4.mean_reward_of_last(2), 3.5);
        assert_eq!(rewards_0_to_4.mean_reward_of_last(5), 2.0);
        assert_eq!(rewards_0_to_4.mean_reward_of_last(50), 2.0);
        assert_eq!(episode(0, 0.0).mean_reward_of_last(3), 0.0);
    }

    #[test]
    fn trajectories_become_columns_in_order_with_their_endings() {
        let mut batch = RolloutBatch::new(LAYOUT);
        batch.push(&episode(2, 0.0)).expect("same layout");
        batch.push(&episode(0, 9.0)).expect("empty is skipped");
        let mut cut = episode(3, 10.0);
        cut.end_truncated(&[7.0, 8.0]).expect("valid");
        batch.push(&cut).expect("same layout");
        assert_eq!(batch.check_shape(2, GAUSS), Ok(()));
        let sde = ActionDistribution::StateDependent(SdeDistribution {
            action_dim: 1,
            features: 8,
            full_std: true,
            use_expln: false,
        });
        assert_eq!(batch.check_shape(2, sde), Ok(()), "gSDE acts continuously");
        assert_eq!(batch.len(), 5);
        let obs = batch.observation_matrix();
        assert_eq!(obs.shape(), (2, 5));
        assert_eq!(obs.column(3).as_slice(), &[11.0, 0.5]);
        let actions = batch.action_matrix();
        assert_eq!(
            actions.row(0).iter().copied().collect::<Vec<_>>(),
            [0.0, 0.25, 0.0, 0.25, 0.5]
        );
        let episodes: Vec<EpisodeView<'_>> = batch.episodes().collect();
        assert_eq!(episodes.len(), 2, "the empty episode is not kept");
        assert_eq!((episodes[1].start, episodes[1].rewards.len()), (2, 3));
        assert_eq!(
            episodes[1].ending,
            &EpisodeEnding::Truncated {
                final_obs: vec![7.0, 8.0]
            }
        );
    }

    #[test]
    fn shapes_other_than_the_learners_are_refused_with_context() {
        let empty = RolloutBatch::new(LAYOUT);
        assert_eq!(empty.check_shape(2, GAUSS), Err(BatchError::Empty));
        let mut batch = RolloutBatch::new(LAYOUT);
        batch.push(&episode(1, 0.0)).expect("same layout");
        let err = batch.check_shape(3, GAUSS).expect_err("wrong width");
        assert!(err.to_string().contains("3 observations"), "{err}");
        assert!(matches!(
            batch.check_shape(2, ActionDistribution::Categorical { n_actions: 2 }),
            Err(BatchError::Shape { .. })
        ));
        let other = RecordLayout::new(2, RecordAction::Discrete { n: 2 });
        assert_eq!(
            RolloutBatch::new(other).push(&episode(1, 0.0)),
            Err(RecordError::Width)
        );
    }

    #[test]
    fn final_observations_are_checked_like_records() {
        let mut t = episode(1, 0.0);
        assert_eq!(t.end_truncated(&[0.0]), Err(RecordError::Width));
        assert_eq!(
            t.end_truncated(&[0.0, f32::NAN]),
            Err(RecordError::NonFinite { record: 0 })
        );
        assert_eq!(t.ending(), &EpisodeEnding::Terminated);
        t.truncate(0);
        assert!(t.is_empty());
    }
}
