//! [`RunFolder`]: where a run keeps its files, and the rule that a new run never overwrites
//! an old one.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// Why a run folder could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The directory could not be created or inspected.
    #[error("cannot {action} run folder {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A new run was asked for in a folder that already holds one.
    #[error(
        "{} already holds a run (it has {}); use `tether resume {}` to continue it or pick \
         another --out",
        path.display(), marker, path.display()
    )]
    AlreadyHoldsRun {
        /// The folder.
        path: PathBuf,
        /// The file that marks it as a run (`config.toml` or `checkpoint.bin`).
        marker: &'static str,
    },
    /// `path` exists but is not a directory.
    #[error("{} exists and is not a directory; pick another --out", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Resume was asked for a folder that is not a run.
    #[error(
        "{} is not a run folder (no {missing}); pass the folder `tether train` created, \
         e.g. runs/pendulum-20250101-120000",
        path.display()
    )]
    NotARun {
        /// The folder.
        path: PathBuf,
        /// The expected file that is missing.
        missing: &'static str,
    },
}

/// A run's folder and the names of the files in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFolder {
    root: PathBuf,
}

impl RunFolder {
    /// Resolved configuration file name.
    pub const CONFIG: &'static str = "config.toml";
    /// Metrics file name.
    pub const METRICS: &'static str = "metrics.jsonl";
    /// Checkpoint file name.
    pub const CHECKPOINT: &'static str = "checkpoint.bin";
    /// Exported policy file name.
    pub const POLICY: &'static str = "policy.bin";
    /// The policy with the best evaluation so far (`[evaluation]`), same format.
    pub const BEST_POLICY: &'static str = "best_policy.bin";
    /// Folder of the policies `best_policy.bin` averages (`[evaluation] average_best`).
    pub const CANDIDATES: &'static str = "candidates";
    /// Learning-curve SVG file name.
    pub const CURVE_SVG: &'static str = "curve.svg";
    /// Learning-curve PNG file name.
    pub const CURVE_PNG: &'static str = "curve.png";
    /// Plant description file name.
    pub const PLANT: &'static str = "plant.json";
    /// TensorBoard event folder name.
    pub const TENSORBOARD: &'static str = "tb";

    /// The default folder for a new run: `<runs_root>/<plant>-<YYYYmmdd-HHMMSS>`, time in
    /// UTC (names sort chronologically and do not jump with daylight saving). Characters of
    /// `plant` other than ASCII letters, digits, `-` and `_` become `_`.
    pub fn default_path(runs_root: &Path, plant: &str, now: SystemTime) -> PathBuf {
        let plant: String = plant
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let plant = if plant.is_empty() {
            "run".into()
        } else {
            plant
        };
        runs_root.join(format!("{plant}-{}", utc_stamp(now)))
    }

    /// Creates a new run in `dir` (and its parents). An existing empty or unrelated folder
    /// is fine; one holding `config.toml` or `checkpoint.bin` is refused
    /// ([`FolderError::AlreadyHoldsRun`]) so a run is never overwritten.
    pub fn create(dir: &Path) -> Result<Self, FolderError> {
        if dir.exists() && !dir.is_dir() {
            return Err(FolderError::NotADirectory {
                path: dir.to_path_buf(),
            });
        }
        for marker in [Self::CONFIG, Self::CHECKPOINT] {
            if dir.join(marker).exists() {
                return Err(FolderError::AlreadyHoldsRun {
                    path: dir.to_path_buf(),
                    marker,
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|source| FolderError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(RunFolder {
            root: dir.to_path_buf(),
        })
    }

    /// Creates a new run under `runs_root` with the [default name](Self::default_path) for
    /// the current time. If two runs start within the same second, the later one gets a
    /// `-2`, `-3`, ... suffix instead of failing.
    pub fn create_default(runs_root: &Path, plant: &str) -> Result<Self, FolderError> {
        let base = Self::default_path(runs_root, plant, SystemTime::now());
        let mut candidate = base.clone();
        let mut n = 1;
        loop {
            match Self::create(&candidate) {
                Err(FolderError::AlreadyHoldsRun { .. }) if n < 1000 => {
                    n += 1;
                    let mut name = base.as_os_str().to_owned();
                    name.push(format!("-{n}"));
                    candidate = PathBuf::from(name);
                }
                other => return other,
            }
        }
    }

    /// Opens an existing run (for `tether resume`): the folder must hold `config.toml`.
    pub fn open(dir: &Path) -> Result<Self, FolderError> {
        if !dir.is_dir() {
            return Err(FolderError::NotARun {
                path: dir.to_path_buf(),
                missing: "such directory",
            });
        }
        if !dir.join(Self::CONFIG).is_file() {
            return Err(FolderError::NotARun {
                path: dir.to_path_buf(),
                missing: Self::CONFIG,
            });
        }
        Ok(RunFolder {
            root: dir.to_path_buf(),
        })
    }

    /// The folder itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `config.toml`: the resolved configuration.
    pub fn config_path(&self) -> PathBuf {
        self.root.join(Self::CONFIG)
    }

    /// `metrics.jsonl`: one JSON line per iteration.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join(Self::METRICS)
    }

    /// `checkpoint.bin`: the latest training state.
    pub fn checkpoint_path(&self) -> PathBuf {
        self.root.join(Self::CHECKPOINT)
    }

    /// `policy.bin`: the exported f32 policy.
    pub fn policy_path(&self) -> PathBuf {
        self.root.join(Self::POLICY)
    }

    /// `best_policy.bin`: the policy whose evaluation (`[evaluation]`) scored the highest
    /// mean return so far, or with `average_best = k > 1` the mean of the `k` best; absent
    /// until a run evaluates.
    pub fn best_policy_path(&self) -> PathBuf {
        self.root.join(Self::BEST_POLICY)
    }

    /// `candidates/`: the policies `best_policy.bin` is the mean of, when a run's
    /// `[evaluation]` averages more than one (`average_best`); absent otherwise.
    pub fn candidates_dir(&self) -> PathBuf {
        self.root.join(Self::CANDIDATES)
    }

    /// `candidates/iteration-NNNNNN.bin`: the policy iteration `iteration` (0-based)
    /// produced, kept while it is among the best evaluated.
    pub fn candidate_path(&self, iteration: u64) -> PathBuf {
        self.candidates_dir()
            .join(format!("iteration-{iteration:06}.bin"))
    }

    /// The iteration a candidate file's name stands for; `None` for any other name.
    pub fn candidate_iteration(file_name: &str) -> Option<u64> {
        let digits = file_name.strip_prefix("iteration-")?.strip_suffix(".bin")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    }

    /// `curve.svg`: learning curves as vector graphics.
    pub fn curve_svg(&self) -> PathBuf {
        self.root.join(Self::CURVE_SVG)
    }

    /// `curve.png`: learning curves as a bitmap.
    pub fn curve_png(&self) -> PathBuf {
        self.root.join(Self::CURVE_PNG)
    }

    /// `plant.json`: the plant description the devices sent.
    pub fn plant_path(&self) -> PathBuf {
        self.root.join(Self::PLANT)
    }

    /// `tb/`: TensorBoard event files.
    pub fn tensorboard_dir(&self) -> PathBuf {
        self.root.join(Self::TENSORBOARD)
    }
}

/// `YYYYmmdd-HHMMSS` in UTC (times before 1970 print as the epoch).
fn utc_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days` algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn candidate_names_round_trip_and_other_names_are_not_candidates() {
        let folder = RunFolder {
            root: PathBuf::from("run"),
        };
        for iteration in [0, 7, 123_456, 9_999_999] {
            let path = folder.candidate_path(iteration);
            let name = path.file_name().and_then(|n| n.to_str()).expect("a name");
            assert_eq!(RunFolder::candidate_iteration(name), Some(iteration));
        }
        for other in [
            "iteration-.bin",
            "iteration-12.tmp",
            "best_policy.bin",
            "iteration--1.bin",
        ] {
            assert_eq!(RunFolder::candidate_iteration(other), None, "{other}");
        }
    }

    #[test]
    fn utc_stamps_of_known_instants() {
        assert_eq!(utc_stamp(at(0)), "19700101-000000");
        // 2000-02-29 12:34:56 UTC (leap day of a century leap year).
        assert_eq!(utc_stamp(at(951_827_696)), "20000229-123456");
        // 2024-12-31 23:59:59 UTC.
        assert_eq!(utc_stamp(at(1_735_689_599)), "20241231-235959");
        // 2100-03-01 00:00:00 UTC (2100 is not a leap year).
        assert_eq!(utc_stamp(at(4_107_542_400)), "21000301-000000");
    }

    #[test]
    fn civil_from_days_agrees_with_day_counting() {
        // Walk 1970..2200 day by day and check against a naive calendar.
        let mut expected = (1970i64, 1u32, 1u32);
        for days in 0..(230 * 366) {
            assert_eq!(civil_from_days(days), expected, "day {days}");
            let (y, m, d) = expected;
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            expected = if d < len {
                (y, m, d + 1)
            } else if m < 12 {
                (y, m + 1, 1)
            } else {
                (y + 1, 1, 1)
            };
        }
    }

    #[test]
    fn default_path_names_plant_and_time() {
        let p = RunFolder::default_path(Path::new("runs"), "pendulum", at(951_827_696));
        assert_eq!(p, Path::new("runs/pendulum-20000229-123456"));
        let p = RunFolder::default_path(Path::new("runs"), "../x y", at(0));
        assert_eq!(p, Path::new("runs/___x_y-19700101-000000"));
    }

    #[test]
    fn create_refuses_a_folder_holding_a_run() {
        let dir = TestDir::new("folder-create");
        let run = RunFolder::create(&dir.join("a/b")).unwrap();
        assert!(run.root().is_dir());
        // No run files yet: creating again is fine (e.g. a crash before config was written).
        RunFolder::create(run.root()).unwrap();
        std::fs::write(run.config_path(), "").unwrap();
        let err = RunFolder::create(run.root()).unwrap_err();
        assert!(matches!(
            err,
            FolderError::AlreadyHoldsRun {
                marker: "config.toml",
                ..
            }
        ));
        let msg = err.to_string();
        assert!(msg.contains("tether resume"), "{msg}");
        assert!(msg.contains("--out"), "{msg}");
        assert!(msg.contains("a/b"), "{msg}");

        let other = RunFolder::create(&dir.join("c")).unwrap();
        std::fs::write(other.checkpoint_path(), "").unwrap();
        assert!(matches!(
            RunFolder::create(other.root()),
            Err(FolderError::AlreadyHoldsRun {
                marker: "checkpoint.bin",
                ..
            })
        ));
        std::fs::write(dir.join("file"), "").unwrap();
        assert!(matches!(
            RunFolder::create(&dir.join("file")),
            Err(FolderError::NotADirectory { .. })
        ));
    }

    #[test]
    fn create_default_never_reuses_a_run_folder() {
        let dir = TestDir::new("folder-default");
        let a = RunFolder::create_default(dir.path(), "cartpole").unwrap();
        std::fs::write(a.config_path(), "").unwrap();
        let b = RunFolder::create_default(dir.path(), "cartpole").unwrap();
        assert_ne!(a, b);
        let name = |r: &RunFolder| r.root().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name(&a).starts_with("cartpole-"), "{}", name(&a));
        assert!(name(&b).starts_with("cartpole-"), "{}", name(&b));
    }

    #[test]
    fn open_requires_config() {
        let dir = TestDir::new("folder-open");
        let err = RunFolder::open(&dir.join("missing")).unwrap_err();
        assert!(matches!(err, FolderError::NotARun { .. }));
        let err = RunFolder::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("no config.toml"), "{err}");
        std::fs::write(dir.join("config.toml"), "").unwrap();
        let run = RunFolder::open(dir.path()).unwrap();
        assert_eq!(run.metrics_path(), dir.join("metrics.jsonl"));
        assert_eq!(run.checkpoint_path(), dir.join("checkpoint.bin"));
        assert_eq!(run.policy_path(), dir.join("policy.bin"));
        assert_eq!(run.config_path(), dir.join("config.toml"));
        assert_eq!(run.curve_svg(), dir.join("curve.svg"));
        assert_eq!(run.curve_png(), dir.join("curve.png"));
        assert_eq!(run.plant_path(), dir.join("plant.json"));
        assert_eq!(run.tensorboard_dir(), dir.join("tb"));
    }
}
