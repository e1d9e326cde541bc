//! Per-iteration metrics: one JSON object per line in `metrics.jsonl`.
//!
//! JSON lines because every tool reads them (`jq`, pandas, a spreadsheet import) and a
//! crash can only damage the line being written. [`MetricsLog::append`] flushes and fsyncs
//! each line before returning, so everything appended before a crash survives it;
//! [`read_metrics`] skips a truncated last line (the crash landed mid-write) but refuses a
//! damaged line anywhere else, naming the file and line.
//!
//! Undefined floats (an explained variance with zero target variance, a ratio over a zero
//! expected improvement) are written as JSON `null` — JSON has no NaN — and read back as
//! NaN. Infinities are not expected in metrics and also come back as NaN.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::run::atomic_write::{AtomicWriteError, write_atomic};

/// What happened in one training iteration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    /// Iteration index, from 0.
    pub iteration: u64,
    /// Environment steps consumed so far, summed over devices (cumulative).
    pub env_steps: u64,
    /// Complete episodes in this iteration's batch.
    pub episodes: u64,
    /// Mean undiscounted return of this iteration's episodes.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean_return: f64,
    /// Mean length in steps of this iteration's complete episodes (NaN when none ended).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub mean_episode_length: f64,
    /// Measured mean KL divergence between the old and the accepted policy (nats).
    #[serde(deserialize_with = "nan_if_null")]
    pub kl: f64,
    /// Mean entropy of the policy on the batch (nats).
    #[serde(deserialize_with = "nan_if_null")]
    pub entropy: f64,
    /// Surrogate improvement predicted by the linear model at the accepted step.
    #[serde(deserialize_with = "nan_if_null")]
    pub expected_improvement: f64,
    /// Surrogate improvement measured at the accepted step.
    #[serde(deserialize_with = "nan_if_null")]
    pub actual_improvement: f64,
    /// `actual_improvement / expected_improvement` (NaN when the expectation is 0).
    #[serde(deserialize_with = "nan_if_null")]
    pub improvement_ratio: f64,
    /// Backtracking steps the line search took (0: the full step was accepted).
    pub line_search_steps: u32,
    /// Whether a step was accepted; false means the old policy was kept.
    pub accepted: bool,
    /// Value-function regression loss after its update.
    #[serde(deserialize_with = "nan_if_null")]
    pub value_loss: f64,
    /// Explained variance of the value function on the batch's returns.
    #[serde(deserialize_with = "nan_if_null")]
    pub explained_variance: f64,
    /// Frames the host rejected this iteration (CRC, gaps, stale policy versions).
    pub rejected_frames: u64,
    /// Episodes discarded (overrun, gap, device lost mid-episode).
    pub discarded_episodes: u64,
    /// Times a device was reconnected (re-handshaken after a reset, silence or disconnect)
    /// this iteration; the episodes its failed attempts lost are in `discarded_episodes`.
    #[serde(default)]
    pub reconnects: u64,
    /// Stretches of lost transitions the host asked the devices to send again this
    /// iteration.
    #[serde(default)]
    pub resend_requests: u64,
    /// Transitions that arrived only because they were asked for again (salvaged from the
    /// devices' retransmit rings).
    #[serde(default)]
    pub recovered_steps: u64,
    /// Episodes cut into segments at a gap that could not be recovered (kept, not
    /// discarded).
    #[serde(default)]
    pub cut_episodes: u64,
    /// Transitions of kept episodes the learner did not get: unrecovered gaps, and the
    /// transition before each (no next observation to bootstrap from).
    #[serde(default)]
    pub lost_steps: u64,
    /// Devices that contributed to the batch.
    pub devices_active: u32,
    /// Wall-clock seconds of the whole iteration (collection and update).
    #[serde(deserialize_with = "nan_if_null")]
    pub wall_s: f64,
    /// Wall-clock seconds of the TRPO update alone.
    #[serde(deserialize_with = "nan_if_null")]
    pub update_s: f64,
    /// Of `update_s`: values, advantages, old log-probabilities and the policy gradient,
    /// seconds (before the policy step and the value fit start side by side).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub update_gradient_s: f64,
    /// Of `update_s`: the conjugate gradient's Fisher-vector products, seconds.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub update_cg_s: f64,
    /// Of `update_s`: the line search's candidate evaluations, seconds.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub update_line_search_s: f64,
    /// The value function's fit, seconds; it runs beside the conjugate gradient and the line
    /// search, so `update_s` is about `update_gradient_s` plus the longer of the two.
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub value_fit_s: f64,
    /// Environment steps of this iteration per wall-clock second of it (collection and
    /// update).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub steps_per_s: f64,
    /// Longest control step any device measured in this iteration's episodes, in
    /// microseconds (0 when no episode ended on the device this iteration).
    #[serde(default)]
    pub device_worst_step_us: u32,
    /// Control steps that started past their deadline, summed over this iteration's
    /// episodes and devices.
    #[serde(default)]
    pub device_missed_deadlines: u64,
    /// The plant's control period, in microseconds, as the devices time their deadlines.
    #[serde(default)]
    pub control_period_us: u64,
    /// Mean `|aₜ − aₜ₋₁|` of the actions the plants received (after clamping and rate
    /// limiting), within this iteration's episodes, in action units (NaN when none).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub action_change_mean: f64,
    /// Mean over this iteration's episodes of the share of the received action's energy
    /// (mean removed) above a quarter of the control rate, in [0, 1] (NaN when none).
    #[serde(default = "nan", deserialize_with = "nan_if_null")]
    pub action_hf_share: f64,
    /// Control steps whose action a device's rate limit changed, summed over this
    /// iteration's episodes and devices.
    #[serde(default)]
    pub rate_limited_steps: u64,
    /// Why the update was skipped or the step rejected, if it was.
    #[serde(default)]
    pub skipped_reason: Option<String>,
    /// Mean return of the deterministic evaluation episodes run after this iteration's
    /// update (`[evaluation]`); absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_mean_return: Option<f64>,
    /// Their mean length in steps; absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_mean_episode_length: Option<f64>,
    /// Whether that evaluation is the best of the run so far, so `best_policy.bin` holds
    /// this iteration's policy (with `[evaluation] average_best` > 1: the mean of the best
    /// few, this one among them); absent when none ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval_best: Option<bool>,
}

impl IterationMetrics {
    /// The evaluation's result in a few words (for the progress line), e.g.
    /// `"eval 1101.2, best"`; `None` when none ran this iteration.
    pub fn evaluation_note(&self) -> Option<String> {
        self.eval_mean_return.map(|mean| {
            let best = if self.eval_best == Some(true) {
                ", best"
            } else {
                ""
            };
            format!("eval {mean:.1}{best}")
        })
    }

    /// How often the devices' action rate limit acted this iteration, in a few words (for
    /// the progress line), e.g. `"rate limit changed 120 actions"`; `None` when it never
    /// did.
    pub fn rate_limit_note(&self) -> Option<String> {
        (self.rate_limited_steps > 0).then(|| {
            format!(
                "rate limit changed {}",
                counted(self.rate_limited_steps, "action")
            )
        })
    }

    /// The devices' real-time health in a few words when a control deadline was missed this
    /// iteration (for the progress line), e.g. `"3 missed deadlines, worst step 25100 µs of
    /// 20000 µs"`; `None` when every step started on time.
    pub fn missed_deadline_note(&self) -> Option<String> {
        (self.device_missed_deadlines > 0).then(|| {
            format!(
                "{}, worst step {} µs of {} µs",
                counted(self.device_missed_deadlines, "missed deadline"),
                self.device_worst_step_us,
                self.control_period_us
            )
        })
    }
}

/// `"1 thing"`, `"3 things"`.
fn counted(n: u64, thing: &str) -> String {
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}

/// The value of a float field that older `metrics.jsonl` files do not have.
fn nan() -> f64 {
    f64::NAN
}

/// Reads a JSON number or `null` (written for NaN and infinities) as `f64`.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// Why the metrics file could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Opening, reading, writing or syncing failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A complete line (not the last one) is not a valid metrics record.
    #[error(
        "{}:{line}: corrupted metrics line ({reason}); fix or delete that line to continue",
        path.display()
    )]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What the JSON parser reported.
        reason: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode metrics for {}: {source}", path.display())]
    Encode {
        /// The file.
        path: PathBuf,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Rewriting the file on resume failed.
    #[error(transparent)]
    Rewrite(#[from] AtomicWriteError),
}

/// Reads every record of a metrics file.
///
/// A last line without its terminating newline that does not parse is a write cut short by
/// a crash: it is skipped with a warning. A damaged line before it is an error
/// ([`MetricsError::Corrupted`]) naming the line. Blank lines are ignored.
pub fn read_metrics(path: &Path) -> Result<Vec<IterationMetrics>, MetricsError> {
    let file = File::open(path).map_err(|source| MetricsError::Io {
        action: "open metrics",
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| MetricsError::Io {
                action: "read metrics",
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let complete = buf.last() == Some(&b'\n');
        let text = buf.trim_ascii();
        if text.is_empty() {
            continue;
        }
        match serde_json::from_slice::<IterationMetrics>(text) {
            Ok(record) => records.push(record),
            Err(_) if !complete => {
                tracing::warn!(
                    "{}:{line_no}: skipping a truncated last metrics line ({} bytes), \
                     left by an interrupted write",
                    path.display(),
                    text.len()
                );
            }
            Err(e) => {
                return Err(MetricsError::Corrupted {
                    path: path.to_path_buf(),
                    line: line_no,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(records)
}

/// Appends metrics records to a run's `metrics.jsonl`, durably.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Starts a new, empty metrics file at `path` (an existing file is replaced).
    pub fn create(path: &Path) -> Result<Self, MetricsError> {
        let file = File::create(path).map_err(|source| MetricsError::Io {
            action: "create metrics",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(MetricsLog {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Reopens the metrics of a run resumed from the checkpoint taken after
    /// `keep_iterations` iterations: keeps only records with `iteration < keep_iterations`
    /// (in file order), rewrites the file atomically with them — which also removes a
    /// truncated last line — and returns the log positioned for appending plus the kept
    /// records (for plotting). A missing file is treated as empty.
    pub fn open_resume(
        path: &Path,
        keep_iterations: u64,
    ) -> Result<(Self, Vec<IterationMetrics>), MetricsError> {
        let mut kept = if path.exists() {
            read_metrics(path)?
        } else {
            Vec::new()
        };
        kept.retain(|m| m.iteration < keep_iterations);
        let mut text = Vec::new();
        for m in &kept {
            encode_line(path, m, &mut text)?;
        }
        write_atomic(path, &text)?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| MetricsError::Io {
                action: "open metrics for appending",
                path: path.to_path_buf(),
                source,
            })?;
        Ok((
            MetricsLog {
                path: path.to_path_buf(),
                file,
            },
            kept,
        ))
    }

    /// Appends one record as a JSON line and fsyncs it: when this returns `Ok`, the line
    /// survives a crash or power loss.
    pub fn append(&mut self, metrics: &IterationMetrics) -> Result<(), MetricsError> {
        let mut line = Vec::with_capacity(512);
        encode_line(&self.path, metrics, &mut line)?;
        // One write call for the whole line, so a crash leaves at most one partial line.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_data())
            .map_err(|source| MetricsError::Io {
                action: "append metrics",
                path: self.path.clone(),
                source,
            })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn encode_line(path: &Path, m: &IterationMetrics, out: &mut Vec<u8>) -> Result<(), MetricsError> {
    serde_json::to_writer(&mut *out, m).map_err(|source| MetricsError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;

    fn record(i: u64) -> IterationMetrics {
        IterationMetrics {
            iteration: i,
            env_steps: 1000 * (i + 1),
            episodes: 5,
            mean_return: -100.0 + i as f64 * 0.1,
            mean_episode_length: 200.0,
            kl: 0.009,
            entropy: 1.2,
            expected_improvement: 0.02,
            actual_improvement: 0.018,
            improvement_ratio: 0.9,
            line_search_steps: (i % 3) as u32,
            accepted: i % 4 != 3,
            value_loss: 3.5,
            explained_variance: 0.7,
            rejected_frames: i,
            discarded_episodes: 0,
            reconnects: i % 2,
            resend_requests: 3 * i,
            recovered_steps: 40 * i,
            cut_episodes: i % 2,
            lost_steps: i,
            devices_active: 2,
            wall_s: 1.5,
            update_s: 0.2,
            update_gradient_s: 0.05,
            update_cg_s: 0.0625,
            update_line_search_s: 0.03125,
            value_fit_s: 0.125,
            steps_per_s: 1500.0 + i as f64,
            device_worst_step_us: 40 + i as u32,
            device_missed_deadlines: i / 2,
            control_period_us: 20_000,
            action_change_mean: 0.125 * i as f64,
            action_hf_share: 0.25 + 0.125 * i as f64,
            rate_limited_steps: 3 * i,
            skipped_reason: (i % 4 == 3).then(|| "line search failed".to_owned()),
            // Every other record evaluated, so both forms (fields present and absent) are
            // written and read back.
            eval_mean_return: (i % 2 == 1).then_some(1000.0 + i as f64),
            eval_mean_episode_length: (i % 2 == 1).then_some(1250.0),
            eval_best: (i % 2 == 1).then_some(i == 1),
        }
    }

    fn write_records(path: &Path, n: u64) -> Vec<IterationMetrics> {
        let mut log = MetricsLog::create(path).unwrap();
        let recs: Vec<_> = (0..n).map(record).collect();
        for r in &recs {
            log.append(r).unwrap();
        }
        recs
    }

    #[test]
    fn append_then_read_round_trips() {
        let dir = TestDir::new("metrics-rt");
        let path = dir.join("metrics.jsonl");
        let recs = write_records(&path, 5);
        assert_eq!(read_metrics(&path).unwrap(), recs);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().all(|l| l.starts_with("{\"iteration\":")));
    }

    #[test]
    fn nan_is_written_as_null_and_read_back_as_nan() {
        let dir = TestDir::new("metrics-nan");
        let path = dir.join("metrics.jsonl");
        let mut r = record(0);
        r.explained_variance = f64::NAN;
        r.improvement_ratio = f64::INFINITY;
        r.action_hf_share = f64::NAN;
        let mut log = MetricsLog::create(&path).unwrap();
        log.append(&r).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"explained_variance\":null"), "{text}");
        let back = read_metrics(&path).unwrap();
        assert!(back[0].explained_variance.is_nan());
        assert!(back[0].improvement_ratio.is_nan());
        assert!(back[0].action_hf_share.is_nan());
        assert_eq!(back[0].kl, 0.009);
    }

    #[test]
    fn lines_from_before_the_timing_fields_still_read() {
        let dir = TestDir::new("metrics-old");
        let path = dir.join("metrics.jsonl");
        let mut line = serde_json::to_value(record(2)).unwrap();
        let fields = line.as_object_mut().unwrap();
        for key in [
            "mean_episode_length",
            "update_gradient_s",
            "update_cg_s",
            "update_line_search_s",
            "value_fit_s",
            "steps_per_s",
            "device_worst_step_us",
            "device_missed_deadlines",
            "control_period_us",
            "action_change_mean",
            "action_hf_share",
            "rate_limited_steps",
        ] {
            assert!(fields.remove(key).is_some(), "{key}");
        }
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let back = read_metrics(&path).unwrap();
        assert!(back[0].mean_episode_length.is_nan() && back[0].steps_per_s.is_nan());
        assert!(back[0].update_gradient_s.is_nan() && back[0].value_fit_s.is_nan());
        assert!(back[0].update_cg_s.is_nan() && back[0].update_line_search_s.is_nan());
        assert!(back[0].action_change_mean.is_nan() && back[0].action_hf_share.is_nan());
        assert_eq!(
            (
                back[0].device_worst_step_us,
                back[0].device_missed_deadlines,
                back[0].control_period_us,
                back[0].rate_limited_steps
            ),
            (0, 0, 0, 0)
        );
        assert_eq!(back[0].mean_return, record(2).mean_return);
    }

    #[test]
    fn the_rate_limit_note_appears_only_when_the_limit_acted() {
        assert_eq!(record(0).rate_limit_note(), None);
        assert_eq!(
            record(1).rate_limit_note().as_deref(),
            Some("rate limit changed 3 actions")
        );
    }

    #[test]
    fn the_progress_note_appears_only_when_a_deadline_was_missed() {
        assert_eq!(record(0).missed_deadline_note(), None);
        assert_eq!(
            record(3).missed_deadline_note().as_deref(),
            Some("1 missed deadline, worst step 43 µs of 20000 µs")
        );
    }

    #[test]
    fn truncated_last_line_is_skipped_at_every_cut() {
        let dir = TestDir::new("metrics-trunc");
        let path = dir.join("metrics.jsonl");
        let recs = write_records(&path, 3);
        let full = std::fs::read(&path).unwrap();
        let second_end = full
            .iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(1)
            .unwrap()
            .0
            + 1;
        // Every cut inside the third line (its newline excluded) keeps the first two.
        for cut in second_end..full.len() - 1 {
            std::fs::write(&path, &full[..cut]).unwrap();
            assert_eq!(read_metrics(&path).unwrap(), recs[..2], "cut at {cut}");
        }
    }

    #[test]
    fn corrupted_middle_line_is_an_error_naming_the_line() {
        let dir = TestDir::new("metrics-corrupt");
        let path = dir.join("metrics.jsonl");
        write_records(&path, 3);
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines[1].truncate(20);
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = read_metrics(&path).unwrap_err();
        assert!(
            matches!(err, MetricsError::Corrupted { line: 2, .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("metrics.jsonl:2"), "{msg}");
        // A complete (newline-terminated) but invalid last line is corruption too.
        std::fs::write(&path, text.clone() + "garbage\n").unwrap();
        assert!(matches!(
            read_metrics(&path),
            Err(MetricsError::Corrupted { line: 4, .. })
        ));
    }

    #[test]
    fn open_resume_keeps_earlier_iterations_and_appends_after_them() {
        let dir = TestDir::new("metrics-resume");
        let path = dir.join("metrics.jsonl");
        let recs = write_records(&path, 6);
        // Simulate a crash mid-write of a seventh line.
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"iteration\":6,\"env_st");
        std::fs::write(&path, &bytes).unwrap();

        let (mut log, kept) = MetricsLog::open_resume(&path, 4).unwrap();
        assert_eq!(kept, recs[..4]);
        log.append(&record(4)).unwrap();
        let back = read_metrics(&path).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back[..4], recs[..4]);
        assert_eq!(back[4], record(4));
        assert!(std::fs::read_to_string(&path).unwrap().ends_with("}\n"));
    }

    #[test]
    fn open_resume_on_missing_file_starts_empty() {
        let dir = TestDir::new("metrics-resume-missing");
        let path = dir.join("metrics.jsonl");
        let (mut log, kept) = MetricsLog::open_resume(&path, 10).unwrap();
        assert!(kept.is_empty());
        log.append(&record(0)).unwrap();
        assert_eq!(read_metrics(&path).unwrap(), vec![record(0)]);
    }

    #[test]
    fn open_resume_refuses_corrupted_file() {
        let dir = TestDir::new("metrics-resume-corrupt");
        let path = dir.join("metrics.jsonl");
        std::fs::write(&path, "not json\n{}\n").unwrap();
        assert!(matches!(
            MetricsLog::open_resume(&path, 1),
            Err(MetricsError::Corrupted { line: 1, .. })
        ));
        // The damaged file is left as it was for the user to inspect.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not json\n{}\n");
    }

    #[test]
    fn missing_file_error_names_path() {
        let err = read_metrics(Path::new("/nonexistent/metrics.jsonl")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/metrics.jsonl"));
    }
}
