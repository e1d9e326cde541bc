//! TensorBoard event files in `runs/<run>/tb/`: the run's metrics, live.
//!
//! Each iteration appends one event holding every scalar of [`scalars::SCALARS`] at step =
//! environment steps so far, then flushes and fsyncs the file, so `tensorboard --logdir
//! runs` shows a run as it trains. The values are read from the iteration's
//! `metrics.jsonl` record, so the two files always agree.
//!
//! # Files
//!
//! A run has one event file, `tb/events.out.tfevents.<unix seconds>.<host>.<pid>.tether`
//! (TensorBoard reads every file whose name holds `tfevents`). It starts with the
//! `brain.Event:2` file-version event; the framing is in [`record`], the messages in
//! [`event`].
//!
//! # Resuming: truncate, never rewind
//!
//! TensorBoard draws every event it reads, so a step written twice shows as a zig-zag. A
//! resumed run continues from its checkpoint, taken after some iteration `k`; the event
//! file may hold events from after it (a crash between this file's append and the
//! checkpoint) and a torn last record (a crash mid-write). [`TensorBoardLog::open_resume`]
//! keeps only the events at steps up to the checkpoint's and rewrites the file atomically
//! when anything has to go (in the usual case, an interrupt between iterations, nothing does
//! and the file is simply reopened for appending, so a TensorBoard left running keeps its
//! place). Iterations `metrics.jsonl` kept but the file lacks (a run from before event files
//! existed, or a lost tail) are written again from their metrics records. The resumed run
//! then appends from iteration `k` on, and a reader sees one curve with every step once.

pub mod event;
pub mod record;
pub mod scalars;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;

use self::event::{Event, EventKind, FILE_VERSION, Summary, SummaryValue};
use self::record::{RecordDamage, frame_record, split_records};
use crate::run::metrics::IterationMetrics;
use crate::run::{AtomicWriteError, write_atomic};

/// What every event file name contains (TensorBoard's own test for event files).
const EVENT_FILE_MARK: &str = "tfevents";

/// Why the event file could not be read or written. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum TensorBoardError {
    /// Creating, reading, writing or syncing failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Rewriting the file on resume failed.
    #[error(transparent)]
    Rewrite(#[from] AtomicWriteError),
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TensorBoardError {
    let path = path.to_path_buf();
    move |source| TensorBoardError::Io {
        action,
        path,
        source,
    }
}

/// The events of one file, up to the first damaged or undecodable record.
#[derive(Debug, Default, PartialEq)]
pub struct EventFile {
    /// Decoded events, in file order.
    pub events: Vec<Event>,
    /// Why reading stopped before the end of the file, if it did.
    pub damage: Option<RecordDamage>,
}

/// Reads an event file's events.
pub fn read_event_file(path: &Path) -> Result<EventFile, TensorBoardError> {
    let bytes = std::fs::read(path).map_err(io_error("read TensorBoard events", path))?;
    let split = split_records(&bytes);
    let mut file = EventFile {
        events: Vec::with_capacity(split.payloads.len()),
        damage: split.damage,
    };
    for payload in split.payloads {
        match Event::decode(payload) {
            Ok(event) => file.events.push(event),
            // Framed correctly but not an Event: as unusable as a bad checksum.
            Err(_) => {
                file.damage = Some(RecordDamage::BadChecksum);
                break;
            }
        }
    }
    Ok(file)
}

/// The event files in `dir`, sorted by name (the order TensorBoard reads them in).
pub fn event_files(dir: &Path) -> Result<Vec<PathBuf>, TensorBoardError> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("list TensorBoard folder", dir))? {
        let entry = entry.map_err(io_error("list TensorBoard folder", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.contains(EVENT_FILE_MARK) && !name.starts_with('.') && entry.path().is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// Appends iterations to a run's event file.
#[derive(Debug)]
pub struct TensorBoardLog {
    path: PathBuf,
    file: File,
}

impl TensorBoardLog {
    /// Starts a new event file in `dir` (created if needed) with its file-version event.
    pub fn create(dir: &Path) -> Result<Self, TensorBoardError> {
        std::fs::create_dir_all(dir).map_err(io_error("create TensorBoard folder", dir))?;
        let path = dir.join(new_file_name(SystemTime::now()));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(io_error("create TensorBoard events", &path))?;
        let mut log = TensorBoardLog { path, file };
        log.write_events(&[file_version_event()])?;
        Ok(log)
    }

    /// Reopens the events of a run resumed from a checkpoint taken at `checkpoint_steps`
    /// environment steps, whose `metrics.jsonl` kept the records `history`: drops events
    /// past the checkpoint and a damaged tail (rewriting the file atomically, as one file),
    /// writes the history's iterations the file lacks, and returns the log positioned for
    /// appending. See the module documentation.
    pub fn open_resume(
        dir: &Path,
        checkpoint_steps: u64,
        history: &[IterationMetrics],
    ) -> Result<Self, TensorBoardError> {
        let files = event_files(dir)?;
        let Some(last) = files.last().cloned() else {
            let mut log = Self::create(dir)?;
            log.write_events(&history.iter().map(metrics_event).collect::<Vec<_>>())?;
            return Ok(log);
        };
        let mut kept = Vec::new();
        let mut last_step: Option<i64> = None;
        let mut dropped = files.len() > 1;
        for path in &files {
            let file = read_event_file(path)?;
            dropped |= file.damage.is_some();
            for event in file.events {
                // One file-version event first, then strictly increasing steps up to the
                // checkpoint's.
                let keep = match event.kind {
                    Some(EventKind::FileVersion(_)) => kept.is_empty(),
                    _ => {
                        u64::try_from(event.step).is_ok_and(|s| s <= checkpoint_steps)
                            && last_step.is_none_or(|last| event.step > last)
                    }
                };
                dropped |= !keep;
                if keep {
                    if !matches!(event.kind, Some(EventKind::FileVersion(_))) {
                        last_step = Some(event.step);
                    }
                    kept.push(event);
                }
            }
        }
        // A file cut before its file-version event (a crash right after it was created).
        let versioned = kept
            .first()
            .is_some_and(|e| matches!(e.kind, Some(EventKind::FileVersion(_))));
        if dropped || !versioned {
            if !versioned {
                kept.insert(0, file_version_event());
            }
            let mut bytes = Vec::new();
            for event in &kept {
                frame_record(&event.encode_to_vec(), &mut bytes);
            }
            write_atomic(&last, &bytes)?;
            for other in &files[..files.len() - 1] {
                std::fs::remove_file(other)
                    .map_err(io_error("remove TensorBoard events", other))?;
            }
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&last)
            .map_err(io_error("open TensorBoard events for appending", &last))?;
        let mut log = TensorBoardLog { path: last, file };
        let missing: Vec<Event> = history
            .iter()
            .filter(|m| last_step.is_none_or(|s| scalars::step_of(m) > s))
            .map(metrics_event)
            .collect();
        log.write_events(&missing)?;
        Ok(log)
    }

    /// Appends one iteration's scalars and makes them durable (flush and fsync), so a
    /// running TensorBoard sees them at once and a crash cannot lose them.
    pub fn append(&mut self, metrics: &IterationMetrics) -> Result<(), TensorBoardError> {
        self.write_events(&[metrics_event(metrics)])
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One write call for all of `events`, then fsync.
    fn write_events(&mut self, events: &[Event]) -> Result<(), TensorBoardError> {
        if events.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::new();
        for event in events {
            frame_record(&event.encode_to_vec(), &mut bytes);
        }
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_data())
            .map_err(io_error("append TensorBoard events", &self.path))
    }
}

/// Seconds since the Unix epoch, as event wall times are kept.
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn file_version_event() -> Event {
    Event {
        wall_time: unix_seconds(SystemTime::now()),
        step: 0,
        kind: Some(EventKind::FileVersion(FILE_VERSION.to_owned())),
    }
}

/// The event of one iteration: every scalar at the iteration's step, stamped now.
fn metrics_event(metrics: &IterationMetrics) -> Event {
    let value = scalars::scalar_values(metrics)
        .into_iter()
        .map(|(tag, v)| SummaryValue {
            tag: tag.to_owned(),
            simple_value: Some(v),
        })
        .collect();
    Event {
        wall_time: unix_seconds(SystemTime::now()),
        step: scalars::step_of(metrics),
        kind: Some(EventKind::Summary(Summary { value })),
    }
}

/// `events.out.tfevents.<unix seconds>.<host>.<pid>.tether`, as TensorFlow names its files
/// (the time sorts a folder's files in the order they were started).
fn new_file_name(now: SystemTime) -> String {
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect();
    let host = if host.is_empty() { "localhost" } else { &host };
    format!(
        "events.out.{EVENT_FILE_MARK}.{secs}.{host}.{}.tether",
        std::process::id()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;

    fn record(i: u64) -> IterationMetrics {
        IterationMetrics {
            iteration: i,
            env_steps: 1000 * (i + 1),
            mean_return: -100.0 + i as f64,
            rejected_frames: i % 2,
            ..IterationMetrics::default()
        }
    }

    /// `(step, value of rollout/ep_rew_mean)` of every scalar event in `dir`'s files.
    fn curve(dir: &Path) -> Vec<(i64, f32)> {
        let mut points = Vec::new();
        for path in event_files(dir).unwrap() {
            let file = read_event_file(&path).unwrap();
            assert_eq!(file.damage, None, "{}", path.display());
            for e in file.events {
                if let Some(EventKind::Summary(s)) = e.kind {
                    let v = s.value.iter().find(|v| v.tag == "rollout/ep_rew_mean");
                    points.push((e.step, v.unwrap().simple_value.unwrap()));
                }
            }
        }
        points
    }

    fn expected(iterations: std::ops::Range<u64>) -> Vec<(i64, f32)> {
        iterations
            .map(record)
            .map(|m| (m.env_steps as i64, m.mean_return as f32))
            .collect()
    }

    #[test]
    fn a_new_file_starts_with_its_version_and_holds_every_iteration() {
        let dir = TestDir::new("tb-new");
        let tb = dir.join("tb");
        let mut log = TensorBoardLog::create(&tb).unwrap();
        for i in 0..3 {
            log.append(&record(i)).unwrap();
        }
        let name = log
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let file = read_event_file(log.path()).unwrap();
        assert_eq!(
            file.events[0].kind,
            Some(EventKind::FileVersion("brain.Event:2".into()))
        );
        assert_eq!(curve(&tb), expected(0..3));
        let Some(EventKind::Summary(s)) = &file.events[1].kind else {
            panic!("not a summary")
        };
        // Every scalar but the evaluation's: these records ran no evaluation.
        let evaluation_tags = scalars::SCALARS
            .iter()
            .filter(|(tag, _)| tag.starts_with("eval/"))
            .count();
        assert_eq!(s.value.len(), scalars::SCALARS.len() - evaluation_tags);
    }

    #[test]
    fn resume_after_a_clean_stop_appends_to_the_same_file() {
        let dir = TestDir::new("tb-clean");
        let tb = dir.join("tb");
        let mut log = TensorBoardLog::create(&tb).unwrap();
        for i in 0..4 {
            log.append(&record(i)).unwrap();
        }
        let before = std::fs::read(log.path()).unwrap();
        let history: Vec<_> = (0..4).map(record).collect();
        let mut log = TensorBoardLog::open_resume(&tb, 4000, &history).unwrap();
        assert_eq!(std::fs::read(log.path()).unwrap(), before, "untouched");
        log.append(&record(4)).unwrap();
        assert_eq!(curve(&tb), expected(0..5));
    }

    #[test]
    fn resume_drops_events_past_the_checkpoint_and_a_torn_tail() {
        let dir = TestDir::new("tb-crash");
        let tb = dir.join("tb");
        let mut log = TensorBoardLog::create(&tb).unwrap();
        for i in 0..6 {
            log.append(&record(i)).unwrap();
        }
        // A crash mid-write of a seventh event; the checkpoint is from after iteration 3.
        let path = log.path().to_path_buf();
        let mut bytes = std::fs::read(&path).unwrap();
        let mut torn = Vec::new();
        frame_record(&metrics_event(&record(6)).encode_to_vec(), &mut torn);
        bytes.extend_from_slice(&torn[..torn.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();

        let history: Vec<_> = (0..4).map(record).collect();
        let mut log = TensorBoardLog::open_resume(&tb, 4000, &history).unwrap();
        assert_eq!(log.path(), path);
        assert_eq!(curve(&tb), expected(0..4));
        for i in 4..7 {
            log.append(&record(i)).unwrap();
        }
        assert_eq!(curve(&tb), expected(0..7), "one curve, every step once");
    }

    #[test]
    fn resume_writes_iterations_the_file_lacks_and_merges_files() {
        let dir = TestDir::new("tb-backfill");
        let tb = dir.join("tb");
        let history: Vec<_> = (0..3).map(record).collect();
        // A run from before event files existed: everything comes from the metrics.
        let log = TensorBoardLog::open_resume(&tb, 3000, &history).unwrap();
        assert_eq!(curve(&tb), expected(0..3));
        // A second file (copied in by hand) is merged into the last one, minus duplicates
        // past the checkpoint.
        let copy = tb.join("events.out.tfevents.0.old");
        std::fs::copy(log.path(), &copy).unwrap();
        let log = TensorBoardLog::open_resume(&tb, 1000, &history[..1]).unwrap();
        assert_eq!(event_files(&tb).unwrap(), vec![log.path().to_path_buf()]);
        assert_eq!(curve(&tb), expected(0..1));
        let events = read_event_file(log.path()).unwrap().events;
        let versions = events
            .iter()
            .filter(|e| matches!(e.kind, Some(EventKind::FileVersion(_))))
            .count();
        assert_eq!(versions, 1);
    }

    #[test]
    fn resume_gives_an_empty_file_its_version_event() {
        let dir = TestDir::new("tb-empty");
        let tb = dir.join("tb");
        std::fs::create_dir_all(&tb).unwrap();
        let path = tb.join("events.out.tfevents.1.host.1.tether");
        std::fs::write(&path, b"").unwrap();
        let history: Vec<_> = (0..2).map(record).collect();
        TensorBoardLog::open_resume(&tb, 2000, &history).unwrap();
        let events = read_event_file(&path).unwrap().events;
        assert!(matches!(events[0].kind, Some(EventKind::FileVersion(_))));
        assert_eq!(curve(&tb), expected(0..2));
    }

    #[test]
    fn errors_name_the_path() {
        let dir = TestDir::new("tb-error");
        std::fs::write(dir.join("tb"), "a file, not a folder").unwrap();
        let err = TensorBoardLog::create(&dir.join("tb")).unwrap_err();
        assert!(err.to_string().contains("tb"), "{err}");
        let err = read_event_file(&dir.join("missing")).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }
}
