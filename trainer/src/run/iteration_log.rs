//! The record of each iteration, written in the two forms people read: `metrics.jsonl`
//! ([`crate::run::metrics`]) and TensorBoard event files ([`crate::run::tensorboard`]).
//!
//! The JSON line is written (and fsynced) first, then the event built from it: a crash in
//! between leaves an iteration in `metrics.jsonl` that the event file lacks, which resuming
//! writes again ([`IterationLog::open_resume`]).

use crate::run::folder::RunFolder;
use crate::run::metrics::{IterationMetrics, MetricsError, MetricsLog};
use crate::run::tensorboard::{TensorBoardError, TensorBoardLog};

/// Why an iteration could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum IterationLogError {
    /// `metrics.jsonl` failed.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The TensorBoard event file failed.
    #[error(transparent)]
    TensorBoard(#[from] TensorBoardError),
}

/// Appends every iteration to `metrics.jsonl` and to the run's TensorBoard events.
#[derive(Debug)]
pub struct IterationLog {
    metrics: MetricsLog,
    tensorboard: TensorBoardLog,
}

impl IterationLog {
    /// Starts both files of a new run.
    pub fn create(folder: &RunFolder) -> Result<Self, IterationLogError> {
        Ok(IterationLog {
            metrics: MetricsLog::create(&folder.metrics_path())?,
            tensorboard: TensorBoardLog::create(&folder.tensorboard_dir())?,
        })
    }

    /// Reopens both files of a run resumed from the checkpoint taken after `iterations`
    /// iterations and `env_steps` environment steps, dropping what was written after it;
    /// returns the kept metrics records.
    pub fn open_resume(
        folder: &RunFolder,
        iterations: u64,
        env_steps: u64,
    ) -> Result<(Self, Vec<IterationMetrics>), IterationLogError> {
        let (metrics, history) = MetricsLog::open_resume(&folder.metrics_path(), iterations)?;
        let tensorboard =
            TensorBoardLog::open_resume(&folder.tensorboard_dir(), env_steps, &history)?;
        Ok((
            IterationLog {
                metrics,
                tensorboard,
            },
            history,
        ))
    }

    /// Records one iteration in both files, each durable when this returns.
    pub fn append(&mut self, metrics: &IterationMetrics) -> Result<(), IterationLogError> {
        self.metrics.append(metrics)?;
        self.tensorboard.append(metrics)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::metrics::read_metrics;
    use crate::run::tensorboard::{event::EventKind, event_files, read_event_file};
    use crate::run::testdir::TestDir;

    fn record(i: u64) -> IterationMetrics {
        IterationMetrics {
            iteration: i,
            env_steps: 500 * (i + 1),
            ..IterationMetrics::default()
        }
    }

    fn tb_steps(folder: &RunFolder) -> Vec<i64> {
        let files = event_files(&folder.tensorboard_dir()).unwrap();
        assert_eq!(files.len(), 1);
        read_event_file(&files[0])
            .unwrap()
            .events
            .into_iter()
            .filter(|e| matches!(e.kind, Some(EventKind::Summary(_))))
            .map(|e| e.step)
            .collect()
    }

    #[test]
    fn both_files_hold_the_same_iterations_across_a_resume() {
        let dir = TestDir::new("iteration-log");
        let folder = RunFolder::create(dir.path()).unwrap();
        let mut log = IterationLog::create(&folder).unwrap();
        for i in 0..5 {
            log.append(&record(i)).unwrap();
        }
        drop(log);
        // The checkpoint is from after iteration 2: iterations 3 and 4 are redone.
        let (mut log, history) = IterationLog::open_resume(&folder, 3, 1500).unwrap();
        assert_eq!(history, (0..3).map(record).collect::<Vec<_>>());
        assert_eq!(tb_steps(&folder), [500, 1000, 1500]);
        for i in 3..6 {
            log.append(&record(i)).unwrap();
        }
        let metrics = read_metrics(&folder.metrics_path()).unwrap();
        assert_eq!(metrics, (0..6).map(record).collect::<Vec<_>>());
        assert_eq!(tb_steps(&folder), [500, 1000, 1500, 2000, 2500, 3000]);
    }
}
