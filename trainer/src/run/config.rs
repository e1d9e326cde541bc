//! [`RunConfig`]: the resolved configuration of a run, read from and written as TOML.
//!
//! A user writes a partial file (every key has a default, see each field); the CLI loads it,
//! sets fields from its flags, calls [`RunConfig::validate`] and writes the resolved result
//! into the run folder's `config.toml` with [`RunConfig::save`], so a run always records
//! exactly what it ran with and `tether resume` reads it back.
//!
//! Every table denies unknown keys: a typo (`totl_steps`) is an error naming the key, the
//! file and the line, not a silently ignored setting.
//!
//! ```toml
//! plant = "pendulum"
//! seed = 7
//! total_steps = 200000
//!
//! [devices]
//! sim = 2
//! link = "memory"       # or "pty"
//! ports = []            # serial ports, e.g. ["/dev/ttyACM0"]
//! tcp = []              # serial-over-TCP rigs, e.g. ["rig1:4000"]
//! baud = 115200
//! emulate_baud = false
//!
//! [trpo]                # the learner's own hyperparameters (generic `T`)
//!
//! [timeouts]
//! handshake_s = 2.0
//! silence_s = 2.0
//! upload_retries = 3
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::run::checkpoint::{CheckpointError, write_atomic};

/// Why a configuration could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML for a run configuration (syntax error, unknown key, wrong
    /// type). `message` comes from the TOML parser and names the offending key.
    #[error("{}{}: {message}", origin.display(), match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        _ => String::new(),
    })]
    Parse {
        /// The file (or other origin label) the text came from.
        origin: PathBuf,
        /// 1-based line of the problem, when the parser located it.
        line: Option<usize>,
        /// 1-based column (in characters) of the problem, when located.
        column: Option<usize>,
        /// What is wrong, e.g. "unknown field `totl_steps`, expected one of ...".
        message: String,
    },
    /// A value is out of range.
    #[error("{}: invalid `{key}`: {reason}", origin.display())]
    Invalid {
        /// The file (or origin label) the configuration came from.
        origin: PathBuf,
        /// Dotted key, e.g. `devices.baud`.
        key: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The configuration could not be turned into TOML.
    #[error("cannot write config as TOML: {0}")]
    Serialize(#[from] toml::ser::Error),
    /// Writing `config.toml` failed.
    #[error(transparent)]
    Write(#[from] CheckpointError),
}

/// How simulated devices are connected to the trainer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// In-process byte pipes: fastest, no OS involvement.
    #[default]
    Memory,
    /// Pseudo-terminal pairs: exercises the same serial code path as real hardware.
    Pty,
}

/// The `[devices]` table: which devices the run trains against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawDevices")]
pub struct DevicesConfig {
    /// Number of simulated devices (firmware compiled for the host with a plant model).
    /// When the key is absent: 1 if no `ports` or `tcp` are listed, else 0 — so listing real
    /// devices does not silently add a simulated one. (A caller that adds ports from CLI
    /// flags after loading sets this field itself.)
    pub sim: u32,
    /// How simulated devices are connected. Default `memory`.
    pub link: LinkKind,
    /// Serial ports of real devices, e.g. `/dev/ttyACM0`.
    pub ports: Vec<String>,
    /// Serial-over-TCP devices (ser2net raw mode), `host:port` or `tcp://host:port`.
    pub tcp: Vec<String>,
    /// Serial line rate in bits per second for `ports` (and for emulated links). Default
    /// 115200.
    pub baud: u32,
    /// Whether simulated links are rate limited to `baud`, to reproduce a real link's
    /// throughput. Default false.
    pub emulate_baud: bool,
    /// Fault injection on simulated links (a spec the device driver parses, e.g.
    /// `"corrupt=0.01,drop=0.001"`); `None` for a clean link.
    pub faults: Option<String>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            sim: 1,
            link: LinkKind::Memory,
            ports: Vec::new(),
            tcp: Vec::new(),
            baud: 115_200,
            emulate_baud: false,
            faults: None,
        }
    }
}

/// `[devices]` as written by the user: `sim` may be absent, see [`DevicesConfig::sim`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDevices {
    sim: Option<u32>,
    link: LinkKind,
    ports: Vec<String>,
    tcp: Vec<String>,
    baud: u32,
    emulate_baud: bool,
    faults: Option<String>,
}

impl Default for RawDevices {
    fn default() -> Self {
        let d = DevicesConfig::default();
        RawDevices {
            sim: None,
            link: d.link,
            ports: d.ports,
            tcp: d.tcp,
            baud: d.baud,
            emulate_baud: d.emulate_baud,
            faults: d.faults,
        }
    }
}

impl From<RawDevices> for DevicesConfig {
    fn from(raw: RawDevices) -> Self {
        let real = !raw.ports.is_empty() || !raw.tcp.is_empty();
        DevicesConfig {
            sim: raw.sim.unwrap_or(if real { 0 } else { 1 }),
            link: raw.link,
            ports: raw.ports,
            tcp: raw.tcp,
            baud: raw.baud,
            emulate_baud: raw.emulate_baud,
            faults: raw.faults,
        }
    }
}

impl DevicesConfig {
    /// Total number of devices of all kinds.
    pub fn count(&self) -> usize {
        self.sim as usize + self.ports.len() + self.tcp.len()
    }
}

/// The `[timeouts]` table: how long the host waits before declaring a device faulty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutsConfig {
    /// Seconds to wait for a device's handshake reply. Default 2.0.
    pub handshake_s: f64,
    /// Seconds without any frame (heartbeats included) after which a device is considered
    /// lost. Default 2.0.
    pub silence_s: f64,
    /// Attempts at a policy upload before the device is dropped from the run. Default 3.
    pub upload_retries: u32,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            handshake_s: 2.0,
            silence_s: 2.0,
            upload_retries: 3,
        }
    }
}

/// The resolved configuration of a run, generic over the learner's hyperparameters `T`
/// (the `[trpo]` table; `T` should itself be `deny_unknown_fields, default` so a typo there
/// is caught as well).
///
/// Fields are public: the CLI overrides them from flags after [`RunConfig::load`], then
/// calls [`RunConfig::validate`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    default,
    bound(
        serialize = "T: Serialize",
        deserialize = "T: DeserializeOwned + Default"
    )
)]
pub struct RunConfig<T> {
    /// Plant model name for simulated devices (and the run folder's name). Default
    /// `"pendulum"`.
    pub plant: String,
    /// Seed of every random stream in the run; a fixed seed reproduces the run bit for bit.
    /// At most `i64::MAX` (TOML integers are signed 64-bit). Default 0.
    pub seed: u64,
    /// Environment steps to train for, summed over devices. Default 1 000 000.
    pub total_steps: u64,
    /// Devices to train against.
    pub devices: DevicesConfig,
    /// The learner's hyperparameters.
    pub trpo: T,
    /// Link timeouts.
    pub timeouts: TimeoutsConfig,
}

impl<T: Default> Default for RunConfig<T> {
    fn default() -> Self {
        RunConfig {
            plant: "pendulum".to_owned(),
            seed: 0,
            total_steps: 1_000_000,
            devices: DevicesConfig::default(),
            trpo: T::default(),
            timeouts: TimeoutsConfig::default(),
        }
    }
}

/// 1-based (line, column) of a byte offset in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

impl<T: Serialize + DeserializeOwned + Default> RunConfig<T> {
    /// Reads and parses a TOML file (missing keys take their defaults). Does not validate:
    /// call [`RunConfig::validate`] after applying overrides.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses TOML text; `origin` (usually the file's path) labels errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let (line, column) = match e.span() {
                Some(span) => {
                    let (l, c) = line_column(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Parse {
                origin: origin.to_path_buf(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })
    }

    /// The configuration as TOML text that [`RunConfig::from_toml_str`] reads back equal.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Writes the configuration as TOML to `path` atomically (the run folder's
    /// `config.toml`).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = self.to_toml_string()?;
        write_atomic(path, text.as_bytes())?;
        Ok(())
    }
}

impl<T> RunConfig<T> {
    /// Checks the values the run loop relies on; `origin` labels errors. The learner's `T`
    /// is validated by the learner.
    pub fn validate(&self, origin: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                origin: origin.to_path_buf(),
                key: key.to_owned(),
                reason,
            })
        };
        if self.plant.trim().is_empty() {
            return invalid("plant", "must name a plant model, e.g. \"pendulum\"".into());
        }
        if self.seed > i64::MAX as u64 {
            return invalid(
                "seed",
                format!(
                    "{} is above {} (TOML integers are signed)",
                    self.seed,
                    i64::MAX
                ),
            );
        }
        if self.total_steps == 0 || self.total_steps > i64::MAX as u64 {
            return invalid("total_steps", format!("must be 1..={}", i64::MAX));
        }
        if self.devices.count() == 0 {
            return invalid(
                "devices",
                "no devices: set `devices.sim` ≥ 1 or list `devices.ports` / `devices.tcp`".into(),
            );
        }
        if self.devices.baud == 0 {
            return invalid("devices.baud", "must be positive, e.g. 115200".into());
        }
        if let Some(bad) = self.devices.ports.iter().find(|p| p.trim().is_empty()) {
            return invalid("devices.ports", format!("empty port name {bad:?}"));
        }
        for addr in &self.devices.tcp {
            let hostport = addr.strip_prefix("tcp://").unwrap_or(addr);
            let ok = hostport
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return invalid(
                    "devices.tcp",
                    format!("{addr:?} is not `host:port` (e.g. \"rig1:4000\")"),
                );
            }
        }
        for (key, v) in [
            ("timeouts.handshake_s", self.timeouts.handshake_s),
            ("timeouts.silence_s", self.timeouts.silence_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return invalid(key, format!("{v} s: must be a positive number of seconds"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stand-in for the learner's hyperparameters, declared the way the learner does.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Hyper {
        max_kl: f64,
        hidden: Vec<u16>,
    }

    impl Default for Hyper {
        fn default() -> Self {
            Hyper {
                max_kl: 0.01,
                hidden: vec![64, 64],
            }
        }
    }

    type Config = RunConfig<Hyper>;

    fn origin() -> &'static Path {
        Path::new("/home/me/pendulum.toml")
    }

    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = Config::from_toml_str("", origin()).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.plant, "pendulum");
        assert_eq!(c.devices.baud, 115_200);
        assert_eq!(c.devices.sim, 1);
        assert_eq!(c.timeouts.handshake_s, 2.0);
        assert_eq!(c.timeouts.upload_retries, 3);
        assert_eq!(c.trpo.max_kl, 0.01);
        c.validate(origin()).unwrap();
    }

    #[test]
    fn full_file_parses_every_section() {
        let text = r#"
plant = "cartpole"
seed = 7
total_steps = 5000

[devices]
sim = 0
link = "pty"
ports = ["/dev/ttyACM0"]
tcp = ["rig1:4000", "tcp://10.0.0.2:4001"]
baud = 921600
emulate_baud = true
faults = "corrupt=0.01"

[trpo]
max_kl = 0.02

[timeouts]
handshake_s = 5.0
silence_s = 0.5
upload_retries = 1
"#;
        let c = Config::from_toml_str(text, origin()).unwrap();
        assert_eq!(c.plant, "cartpole");
        assert_eq!(c.seed, 7);
        assert_eq!(c.devices.link, LinkKind::Pty);
        assert_eq!(c.devices.count(), 3);
        assert_eq!(c.devices.faults.as_deref(), Some("corrupt=0.01"));
        assert!(c.devices.emulate_baud);
        assert_eq!(c.trpo.max_kl, 0.02);
        assert_eq!(
            c.trpo.hidden,
            vec![64, 64],
            "missing trpo key takes its default"
        );
        assert_eq!(c.timeouts.silence_s, 0.5);
        c.validate(origin()).unwrap();
    }

    #[test]
    fn unknown_keys_are_errors_naming_key_file_and_line() {
        for (text, key, line) in [
            ("seed = 1\ntotl_steps = 5\n", "totl_steps", 2),
            ("[devices]\nsim = 1\nbaudrate = 9600\n", "baudrate", 3),
            ("[trpo]\nmax_kll = 0.1\n", "max_kll", 2),
            ("[timeouts]\nstep_s = 1.0\n", "step_s", 2),
            ("[extra]\n", "extra", 1),
        ] {
            let err = Config::from_toml_str(text, origin()).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(key), "{msg}");
            assert!(msg.contains("/home/me/pendulum.toml"), "{msg}");
            assert!(
                matches!(err, ConfigError::Parse { line: Some(l), .. } if l == line),
                "{text:?}: {err:?}"
            );
        }
    }

    #[test]
    fn sim_defaults_to_zero_when_real_devices_are_listed() {
        let c = Config::from_toml_str("[devices]\nports = [\"/dev/ttyACM0\"]\n", origin()).unwrap();
        assert_eq!((c.devices.sim, c.devices.count()), (0, 1));
        let c = Config::from_toml_str("[devices]\ntcp = [\"r:1\"]\nsim = 2\n", origin()).unwrap();
        assert_eq!((c.devices.sim, c.devices.count()), (2, 3));
        let c = Config::from_toml_str("[devices]\nbaud = 9600\n", origin()).unwrap();
        assert_eq!((c.devices.sim, c.devices.baud), (1, 9600));
    }

    #[test]
    fn wrong_types_and_bad_link_are_errors() {
        let err = Config::from_toml_str("seed = \"seven\"", origin()).unwrap_err();
        assert!(err.to_string().contains("pendulum.toml:1:"), "{err}");
        let err = Config::from_toml_str("[devices]\nlink = \"usb\"\n", origin()).unwrap_err();
        assert!(err.to_string().contains("usb"), "{err}");
    }

    #[test]
    fn load_names_missing_file() {
        let err = Config::load(Path::new("/nonexistent/tether.toml")).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/tether.toml"));
    }

    #[test]
    fn toml_round_trip_preserves_everything() {
        let mut c = Config {
            plant: "qube".into(),
            seed: i64::MAX as u64,
            ..Config::default()
        };
        c.devices.tcp = vec!["rig:1".into()];
        c.devices.faults = Some("drop=0.1".into());
        c.trpo.max_kl = 0.1 + 0.2; // not a short decimal
        c.timeouts.silence_s = 1e-3;
        let text = c.to_toml_string().unwrap();
        let back = Config::from_toml_str(&text, Path::new("config.toml")).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.trpo.max_kl.to_bits(), c.trpo.max_kl.to_bits());
    }

    #[test]
    fn save_then_load() {
        let dir = crate::run::testdir::TestDir::new("config-save");
        let path = dir.join("config.toml");
        let mut c = Config::default();
        c.devices.sim = 4;
        c.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), c);
    }

    #[test]
    fn validate_names_the_bad_key() {
        let o = Path::new("cli");
        let check = |f: &dyn Fn(&mut Config), key: &str| {
            let mut c = Config::default();
            f(&mut c);
            let err = c.validate(o).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
                "{err}"
            );
        };
        check(&|c| c.plant = " ".into(), "plant");
        check(&|c| c.seed = u64::MAX, "seed");
        check(&|c| c.total_steps = 0, "total_steps");
        check(&|c| c.devices.sim = 0, "devices");
        check(&|c| c.devices.baud = 0, "devices.baud");
        check(&|c| c.devices.tcp = vec!["rig1".into()], "devices.tcp");
        check(
            &|c| c.devices.tcp = vec!["rig1:99999".into()],
            "devices.tcp",
        );
        check(&|c| c.devices.ports = vec!["".into()], "devices.ports");
        check(
            &|c| c.timeouts.handshake_s = f64::NAN,
            "timeouts.handshake_s",
        );
        check(&|c| c.timeouts.silence_s = 0.0, "timeouts.silence_s");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d", 7), (2, 4));
        assert_eq!(line_column("", 5), (1, 1));
    }
}
