//! The run directory: everything `tether` writes to and reads from a run folder.
//!
//! A run folder (`runs/<plant>-<YYYYmmdd-HHMMSS>` by default) holds:
//!
//! | file | module | written |
//! | --- | --- | --- |
//! | `config.toml` | [`config`] | once, at start: the fully resolved configuration (with the plant settings of [`plant_settings`]) |
//! | `metrics.jsonl` | [`metrics`] | one JSON line per iteration, fsynced |
//! | `checkpoint.bin` | [`checkpoint`] | every iteration, atomically (temp file + rename) |
//! | `policy.bin` | [`policy_file`] | the exported f32 policy in the device's wire layout |
//! | `curve.svg`, `curve.png` | [`plot`] | learning curves, on demand or at the end |
//! | `tb/events.out.tfevents.*` | [`tensorboard`] | the metrics as TensorBoard scalars, each iteration |
//! | `plant.json` | [`plant_file`] | the devices' plant description, at start and resume |
//!
//! [`folder::RunFolder`] creates the folder and names the paths; each file format lives in
//! its own module with its own error type, and every error names the file it concerns. The
//! two binary files share one container ([`sealed`]: magic, version, body, CRC); every
//! file written whole is replaced through [`atomic_write`].
//!
//! Crash safety, in the order the run loop should write each iteration: append the metrics
//! line and its TensorBoard event ([`iteration_log::IterationLog::append`], durable when it
//! returns), then save the checkpoint
//! ([`checkpoint::Checkpoint::save`], atomic). A crash at any point leaves a checkpoint for
//! some iteration `k` and metrics for at least the iterations before it; resuming calls
//! [`iteration_log::IterationLog::open_resume`] with `k` to drop what was written after it.
//! The training loop hands each iteration's writes, in that order, to a
//! [`background_writer::BackgroundWriter`], which runs them on a thread of its own.

pub mod atomic_write;
pub mod background_writer;
pub mod checkpoint;
pub mod config;
pub mod folder;
pub mod iteration_log;
pub mod metrics;
pub mod plant_file;
pub mod plant_settings;
pub mod plot;
pub mod policy_file;
pub mod sealed;
pub mod tensorboard;

pub use atomic_write::{AtomicWriteError, write_atomic};
pub use checkpoint::{Checkpoint, CheckpointError};
pub use config::{DevicesConfig, LinkKind, RunConfig, RunConfigError, TimeoutsConfig};
pub use folder::{FolderError, RunFolder};
pub use metrics::{IterationMetrics, MetricsError, MetricsLog, read_metrics};
pub use plot::{PlotError, plot_curves};
pub use policy_file::{PolicyFile, PolicyFileError};

/// Scratch directories for tests: unique per process and call, removed on drop.
#[cfg(test)]
pub(crate) mod testdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    static NEXT: AtomicU64 = AtomicU64::new(0);

    /// A fresh empty directory under the system temp dir.
    pub(crate) struct TestDir(PathBuf);

    impl TestDir {
        pub(crate) fn new(label: &str) -> Self {
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "tether-run-test-{label}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).expect("create test dir");
            TestDir(path)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }

        pub(crate) fn join(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
