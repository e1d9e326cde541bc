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
//! plant = "pendulum"    # what the devices must report; simulated devices model it
//! preset = "pendulum"   # optional: whose tuned settings the run starts from
//! seed = 7
//! total_steps = 200000
//! steps_per_iteration = 2048
//!
//! [devices]
//! sim = 2
//! link = "memory"       # or "pty", or "qemu" (the board image in QEMU)
//! # firmware = "target/firmware/qemu-mps2-an386/pendulum.elf"   # link = "qemu" only
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
//! rto_floor_s = 0.001   # retransmission timeouts follow the measured round trip,
//! rto_ceiling_s = 5.0   #   within these bounds
//! replug_grace_s = 10.0 # how long a vanished port is waited for
//! resend_attempts = 8   # requests for a lost stretch before its episode is cut there
//!
//! [plant_params]        # simulated plants only: values (see `plant_settings`)
//! [plant_randomize]     # simulated plants only: per-episode [low, high] ranges
//! ```
//!
//! `plant` is a plain name; settings about the plant go in top-level tables of their own,
//! so no key ever changes type. `init` (from `tether train --init`) records the run folder
//! or `policy.bin` a run started from; it is read only when a run starts.
//!
//! Older tether versions kept `seed`, `total_steps` and `steps_per_iteration` inside
//! `[trpo]` (and a run's `config.toml` repeated the first two there). Such a file still
//! loads: [`move_keys_out_of_trpo`] moves them to the top level, where a value given in both
//! places must agree.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use tether_shared::message::PlantParams;

use crate::run::atomic_write::{AtomicWriteError, write_atomic};
use crate::run::plant_settings::{
    InvalidSetting, PlantParamsTable, PlantRandomizeTable, plant_params_message,
};

/// Why a configuration could not be read, written or accepted.
#[derive(Debug, thiserror::Error)]
pub enum RunConfigError {
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
    Write(#[from] AtomicWriteError),
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
    /// The firmware's Cortex-M board image in QEMU, over the pseudo-terminal of its UART
    /// (`trainer/src/device/qemu.rs`): the real instruction set and binary.
    Qemu,
}

/// Simulated devices a run gets when it names no devices at all (rl-zoo3 trains with 2
/// environments).
pub const DEFAULT_SIM_DEVICES: u32 = 2;

/// The `[devices]` table: which devices the run trains against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawDevices")]
pub struct DevicesConfig {
    /// Number of simulated devices (firmware compiled for the host with a plant model).
    /// When the key is absent: [`DEFAULT_SIM_DEVICES`] if no `ports` or `tcp` are listed,
    /// else 0 — so listing real devices does not silently add a simulated one.
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
    /// The action rate limit simulated devices enforce (a safety setting of a device's
    /// firmware; real devices report their own): the largest change of each continuous
    /// action per control step, in action units, one value for every dimension or one
    /// each. Empty (the default): none.
    pub action_rate_limit: Vec<f32>,
    /// With `link = "qemu"`: the board image (ELF) QEMU runs; `None`: the plant's image where
    /// `scripts/cross.sh` writes it, found from the current directory.
    pub firmware: Option<PathBuf>,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            sim: DEFAULT_SIM_DEVICES,
            link: LinkKind::Memory,
            ports: Vec::new(),
            tcp: Vec::new(),
            baud: 115_200,
            emulate_baud: false,
            faults: None,
            action_rate_limit: Vec::new(),
            firmware: None,
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
    action_rate_limit: Vec<f32>,
    firmware: Option<PathBuf>,
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
            action_rate_limit: d.action_rate_limit,
            firmware: d.firmware,
        }
    }
}

impl From<RawDevices> for DevicesConfig {
    fn from(raw: RawDevices) -> Self {
        let real = !raw.ports.is_empty() || !raw.tcp.is_empty();
        DevicesConfig {
            sim: raw
                .sim
                .unwrap_or(if real { 0 } else { DEFAULT_SIM_DEVICES }),
            link: raw.link,
            ports: raw.ports,
            tcp: raw.tcp,
            baud: raw.baud,
            emulate_baud: raw.emulate_baud,
            faults: raw.faults,
            action_rate_limit: raw.action_rate_limit,
            firmware: raw.firmware,
        }
    }
}

impl DevicesConfig {
    /// Total number of devices of all kinds.
    pub fn count(&self) -> usize {
        self.sim as usize + self.ports.len() + self.tcp.len()
    }
}

/// The `[timeouts]` table: how long the host waits before declaring a device faulty, and
/// how it recovers what a lossy link loses.
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
    /// Shortest retransmission timeout in seconds: acknowledgement and resend timeouts
    /// follow the measured round-trip time (TCP's rule), never below this. Default 0.001 (a fast link's losses cost about a millisecond
    /// each: a virtual-time board or a USB link answers in well under that).
    pub rto_floor_s: f64,
    /// Longest retransmission timeout in seconds, backoff included. Default 5.0.
    pub rto_ceiling_s: f64,
    /// Seconds a device whose port vanished (unplugged, rebooting) is waited for — at the
    /// same path, or a USB device at any path with the same serial number — before it is
    /// dropped from the run. Default 10.0.
    pub replug_grace_s: f64,
    /// Requests for a lost stretch of transitions before its episode is cut there; 0 cuts
    /// at every gap without asking. Default 8.
    pub resend_attempts: u32,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            handshake_s: 2.0,
            silence_s: 2.0,
            upload_retries: 3,
            rto_floor_s: 0.001,
            rto_ceiling_s: 5.0,
            replug_grace_s: 10.0,
            resend_attempts: 8,
        }
    }
}

/// The `[evaluation]` table: deterministic evaluation episodes between iterations, and the
/// best policy they found (Stable-Baselines3's `EvalCallback`). Off by default: on a rig
/// every evaluation episode is rig time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluationConfig {
    /// Evaluate after every this many iterations, and after the last one; 0: never.
    /// Default 0.
    pub every: u64,
    /// Deterministic episodes per evaluation, split over the devices. The same episodes
    /// each time (starts, and on randomised simulated plants the plants, come from the
    /// run's seed), so evaluations of one run compare policies, not luck. Default 20.
    pub episodes: u32,
    /// Evaluate only the policies of iterations that end at or past this many environment
    /// steps (the last one always), so a long run spends its evaluation episodes where it
    /// chooses between policies that already work. Default 0: from the start.
    pub after_steps: u64,
    /// How many of the best-evaluated policies `best_policy.bin` is the element-wise mean
    /// of (network and normaliser parameters; see [`crate::training::best_candidates`]).
    /// One evaluation ranks a run's late policies only roughly; the mean of a few of the
    /// best is steadier than the single best. Default 1: the single best policy.
    pub average_best: u32,
}

impl Default for EvaluationConfig {
    fn default() -> Self {
        EvaluationConfig {
            every: 0,
            episodes: 20,
            after_steps: 0,
            average_best: 1,
        }
    }
}

impl EvaluationConfig {
    /// Whether the policy after iteration `iteration` (0-based), which ended at `env_steps`,
    /// is evaluated; `last`: that iteration ends the run.
    pub fn due(&self, iteration: u64, env_steps: u64, last: bool) -> bool {
        self.every > 0
            && (last
                || ((iteration + 1).is_multiple_of(self.every) && env_steps >= self.after_steps))
    }
}

/// The most policies `[evaluation] average_best` may average: each is a file in the run
/// folder and a parameter vector in memory.
pub const MAX_AVERAGE_BEST: u32 = 64;

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
    /// The plant the run trains: the name its devices report in their handshake, and the
    /// model simulated devices run. Names the run folder. Default `"pendulum"`.
    pub plant: String,
    /// Whose tuned settings the run started from (a plant's name or `"generic"`); `None`:
    /// the plant's own. Only consulted when a run starts: a run's `config.toml` holds every
    /// resolved value.
    pub preset: Option<String>,
    /// The run folder or `policy.bin` the run's learner started from (`tether train
    /// --init`); `None`: a fresh learner. Only consulted when a run starts.
    pub init: Option<String>,
    /// Which policy of a run folder `init` starts from (`tether train --init-policy`):
    /// its last one or its `best_policy.bin`. Default `"last"`.
    pub init_policy: InitPolicy,
    /// Seed of every random stream in the run; a fixed seed reproduces the run bit for bit.
    /// At most `i64::MAX` (TOML integers are signed 64-bit). Default 0.
    pub seed: u64,
    /// Environment steps to train for, summed over devices. Default 1 000 000.
    pub total_steps: u64,
    /// Environment steps per iteration (per policy update), summed over devices. Default
    /// 2048.
    pub steps_per_iteration: u64,
    /// Devices to train against.
    pub devices: DevicesConfig,
    /// The learner's hyperparameters.
    pub trpo: T,
    /// Link timeouts.
    pub timeouts: TimeoutsConfig,
    /// Evaluation between iterations.
    pub evaluation: EvaluationConfig,
    /// Simulated plants' parameter values (`[plant_params]`, SI units); empty: the models'
    /// defaults. Sent to every device, which refuses them unless it simulates its plant.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plant_params: PlantParamsTable,
    /// Simulated plants' per-episode ranges (`[plant_randomize]`, `[low, high]`: physical
    /// parameters as multipliers of their nominal value, imperfections absolute).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub plant_randomize: PlantRandomizeTable,
    /// The share of `[plant_randomize]` draws, in [0, 1], that land on an end of their
    /// range instead of uniformly inside it (half on each end; every ranged parameter of
    /// every episode draws on its own). Default 0: uniform.
    #[serde(skip_serializing_if = "is_zero")]
    pub range_end_share: f64,
}

/// Whether a share is 0 (the default, left out of a run's `config.toml`).
fn is_zero(share: &f64) -> bool {
    *share == 0.0
}

impl<T: Default> Default for RunConfig<T> {
    fn default() -> Self {
        RunConfig {
            plant: "pendulum".to_owned(),
            preset: None,
            init: None,
            init_policy: InitPolicy::Last,
            seed: 0,
            total_steps: 1_000_000,
            steps_per_iteration: 2048,
            devices: DevicesConfig::default(),
            trpo: T::default(),
            timeouts: TimeoutsConfig::default(),
            evaluation: EvaluationConfig::default(),
            plant_params: PlantParamsTable::new(),
            plant_randomize: PlantRandomizeTable::new(),
            range_end_share: 0.0,
        }
    }
}

/// Which policy of a run folder a warm start (`init`) takes. The value function, its
/// optimiser state and the normaliser's sample count come from the folder's checkpoint
/// either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InitPolicy {
    /// The checkpoint's policy and normaliser statistics: where training stopped.
    #[default]
    Last,
    /// `best_policy.bin` (the policy a run deploys when it evaluates: `tether export
    /// --best`) and its normaliser's mean and scale.
    Best,
}

/// Run-level keys older layouts kept in the `[trpo]` table.
const KEYS_ONCE_IN_TRPO: [&str; 3] = ["seed", "total_steps", "steps_per_iteration"];

/// Moves the run-level keys an older layout kept in `[trpo]` (see the module
/// documentation) to the top level of a configuration table, and returns the keys it moved
/// or dropped. A key present in both places must have the same value in both (an old run's
/// `config.toml` repeats them); otherwise the error names the key and both values.
pub fn move_keys_out_of_trpo(table: &mut toml::Table) -> Result<Vec<&'static str>, String> {
    let Some(toml::Value::Table(trpo)) = table.get_mut("trpo") else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    for key in KEYS_ONCE_IN_TRPO {
        if let Some(value) = trpo.remove(key) {
            found.push((key, value));
        }
    }
    for (key, value) in &found {
        match table.get(*key) {
            Some(top) if top != value => {
                return Err(format!(
                    "`trpo.{key}` = {value} and `{key}` = {top} disagree; `{key}` belongs at \
                     the top level only"
                ));
            }
            Some(_) => {}
            None => {
                table.insert((*key).to_owned(), value.clone());
            }
        }
    }
    Ok(found.into_iter().map(|(key, _)| key).collect())
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

/// A TOML parse error of `text` (from `origin`) with its line and column.
fn located(text: &str, origin: &Path, e: &toml::de::Error) -> RunConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let (l, c) = line_column(text, span.start);
            (Some(l), Some(c))
        }
        None => (None, None),
    };
    RunConfigError::Parse {
        origin: origin.to_path_buf(),
        line,
        column,
        message: e.message().trim_end().to_owned(),
    }
}

/// A plant setting the check refused, as an error of the file `origin`.
fn invalid_at(origin: &Path, invalid: InvalidSetting) -> RunConfigError {
    RunConfigError::Invalid {
        origin: origin.to_path_buf(),
        key: invalid.key,
        reason: invalid.reason,
    }
}

/// The plant part of a configuration file — `plant`, `[plant_params]`, `[plant_randomize]`,
/// `range_end_share` — with every other key ignored: what `tether eval --config` and `tether sim --config`
/// read.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct PlantSection {
    /// The file's `plant`, if any.
    pub plant: Option<String>,
    /// `[plant_params]`.
    pub plant_params: PlantParamsTable,
    /// `[plant_randomize]`.
    pub plant_randomize: PlantRandomizeTable,
    /// `range_end_share`.
    pub range_end_share: f64,
}

impl PlantSection {
    /// Reads the plant part of the TOML file at `path` (the whole file must be TOML).
    pub fn read(path: &Path) -> Result<Self, RunConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| located(&text, path, &e))
    }

    /// The message setting `plant` (the values and, with `randomize`, the ranges), checked
    /// like a run's; `origin` labels errors.
    pub fn message(
        &self,
        plant: &str,
        randomize: bool,
        origin: &Path,
    ) -> Result<Option<PlantParams>, RunConfigError> {
        let no_ranges = PlantRandomizeTable::new();
        let (ranges, share) = if randomize {
            (&self.plant_randomize, self.range_end_share)
        } else {
            (&no_ranges, 0.0)
        };
        plant_params_message(plant, &self.plant_params, ranges, share)
            .map_err(|invalid| invalid_at(origin, invalid))
    }
}

impl<T: Serialize + DeserializeOwned + Default> RunConfig<T> {
    /// Reads and parses a TOML file (missing keys take their defaults). Does not validate:
    /// call [`RunConfig::validate`] after applying overrides.
    pub fn load(path: &Path) -> Result<Self, RunConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| RunConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses TOML text in the current layout or an older one (see
    /// [`move_keys_out_of_trpo`]); `origin` (usually the file's path) labels errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Self, RunConfigError> {
        let parse_error = |e: toml::de::Error| located(text, origin, &e);
        let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        let moved =
            move_keys_out_of_trpo(&mut table).map_err(|reason| RunConfigError::Invalid {
                origin: origin.to_path_buf(),
                key: "trpo".into(),
                reason,
            })?;
        if moved.is_empty() {
            // Parse the text itself, so errors carry their line and column.
            return toml::from_str(text).map_err(parse_error);
        }
        toml::Value::Table(table).try_into().map_err(parse_error)
    }

    /// The configuration as TOML text that [`RunConfig::from_toml_str`] reads back equal.
    pub fn to_toml_string(&self) -> Result<String, RunConfigError> {
        Ok(toml::to_string_pretty(self)?)
    }

    /// Writes the configuration as TOML to `path` atomically (the run folder's
    /// `config.toml`).
    pub fn save(&self, path: &Path) -> Result<(), RunConfigError> {
        let text = self.to_toml_string()?;
        write_atomic(path, text.as_bytes())?;
        Ok(())
    }
}

impl<T> RunConfig<T> {
    /// The plant settings simulated devices receive (`None`: nothing set), checked against
    /// `plant`'s model; an error names the key.
    pub fn plant_params_message(
        &self,
        origin: &Path,
    ) -> Result<Option<PlantParams>, RunConfigError> {
        self.plant_settings()
            .map_err(|invalid| invalid_at(origin, invalid))
    }

    /// [`RunConfig::plant_params_message`] with the error as the plant settings' check
    /// gives it (the key and the reason, no file).
    pub fn plant_settings(&self) -> Result<Option<PlantParams>, InvalidSetting> {
        plant_params_message(
            &self.plant,
            &self.plant_params,
            &self.plant_randomize,
            self.range_end_share,
        )
    }

    /// Checks the values the run loop relies on; `origin` labels errors. The learner's `T`
    /// is validated by the learner.
    pub fn validate(&self, origin: &Path) -> Result<(), RunConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(RunConfigError::Invalid {
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
        for (key, steps) in [
            ("total_steps", self.total_steps),
            ("steps_per_iteration", self.steps_per_iteration),
        ] {
            if steps == 0 || steps > i64::MAX as u64 {
                return invalid(key, format!("must be 1..={}", i64::MAX));
            }
        }
        if self.devices.count() == 0 {
            return invalid(
                "devices",
                "no devices: set `devices.sim` ≥ 1 or list `devices.ports` / `devices.tcp`".into(),
            );
        }
        if self.evaluation.every > 0 && self.evaluation.episodes == 0 {
            return invalid(
                "evaluation.episodes",
                "must be at least 1 when `evaluation.every` is set".into(),
            );
        }
        if !(1..=MAX_AVERAGE_BEST).contains(&self.evaluation.average_best) {
            return invalid(
                "evaluation.average_best",
                format!(
                    "{} is not 1..={MAX_AVERAGE_BEST}: the number of best-evaluated policies \
                     best_policy.bin averages (1: the single best)",
                    self.evaluation.average_best
                ),
            );
        }
        if self.devices.baud == 0 {
            return invalid("devices.baud", "must be positive, e.g. 115200".into());
        }
        let limit = &self.devices.action_rate_limit;
        if !limit.is_empty()
            && let Err(e) = tether_firmware::rate_limit::ActionRateLimit::new(limit)
        {
            return invalid("devices.action_rate_limit", format!("{limit:?}: {e}"));
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
            ("timeouts.rto_floor_s", self.timeouts.rto_floor_s),
            ("timeouts.rto_ceiling_s", self.timeouts.rto_ceiling_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return invalid(key, format!("{v} s: must be a positive number of seconds"));
            }
        }
        let grace = self.timeouts.replug_grace_s;
        if !(grace.is_finite() && grace >= 0.0) {
            return invalid(
                "timeouts.replug_grace_s",
                format!("{grace} s: must be zero or a positive number of seconds"),
            );
        }
        if self.timeouts.rto_ceiling_s < self.timeouts.rto_floor_s {
            return invalid(
                "timeouts.rto_ceiling_s",
                format!(
                    "{} s is below rto_floor_s ({} s)",
                    self.timeouts.rto_ceiling_s, self.timeouts.rto_floor_s
                ),
            );
        }
        self.plant_params_message(origin)?;
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
        assert_eq!(c.devices.sim, DEFAULT_SIM_DEVICES);
        assert_eq!((c.total_steps, c.steps_per_iteration), (1_000_000, 2048));
        assert_eq!(c.preset, None);
        assert_eq!(c.timeouts.handshake_s, 2.0);
        assert_eq!(c.timeouts.upload_retries, 3);
        assert_eq!(c.trpo.max_kl, 0.01);
        c.validate(origin()).unwrap();
    }

    #[test]
    fn full_file_parses_every_section() {
        let text = r#"
plant = "cartpole"
preset = "generic"
seed = 7
total_steps = 5000
steps_per_iteration = 500

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
        assert_eq!(c.preset.as_deref(), Some("generic"));
        assert_eq!(c.steps_per_iteration, 500);
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
                matches!(err, RunConfigError::Parse { line: Some(l), .. } if l == line),
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
        assert_eq!((c.devices.sim, c.devices.baud), (DEFAULT_SIM_DEVICES, 9600));
    }

    /// The layout of older versions: `steps_per_iteration` (and, in a run's own
    /// `config.toml`, copies of `seed` and `total_steps`) inside `[trpo]`.
    #[test]
    fn older_layout_with_run_keys_in_trpo_still_loads() {
        let old_run = "plant = \"pendulum\"\nseed = 5\ntotal_steps = 2048\n\
                       [trpo]\nmax_kl = 0.02\nsteps_per_iteration = 1024\n\
                       total_steps = 2048\nseed = 5\n";
        let c = Config::from_toml_str(old_run, origin()).unwrap();
        assert_eq!(
            (c.seed, c.total_steps, c.steps_per_iteration),
            (5, 2048, 1024)
        );
        assert_eq!(c.trpo.max_kl, 0.02);
        let user = "[trpo]\nsteps_per_iteration = 4000\n";
        assert_eq!(
            Config::from_toml_str(user, origin())
                .unwrap()
                .steps_per_iteration,
            4000
        );
        let err = Config::from_toml_str("seed = 1\n[trpo]\nseed = 2\n", origin()).unwrap_err();
        assert!(
            matches!(&err, RunConfigError::Invalid { key, .. } if key == "trpo"),
            "{err}"
        );
        assert!(
            err.to_string().contains("`trpo.seed` = 2 and `seed` = 1"),
            "{err}"
        );
        // Saved again, the configuration is in the current layout.
        let text = c.to_toml_string().unwrap();
        let table: toml::Table = text.parse().unwrap();
        assert!(table.contains_key("steps_per_iteration"));
        assert!(!table["trpo"].as_table().unwrap().contains_key("seed"));
    }

    #[test]
    fn moving_keys_out_of_trpo_reports_what_it_moved() {
        let mut table: toml::Table = "seed = 3\n[trpo]\nseed = 3\ntotal_steps = 9\nmax_kl = 1.0\n"
            .parse()
            .unwrap();
        assert_eq!(
            move_keys_out_of_trpo(&mut table),
            Ok(vec!["seed", "total_steps"])
        );
        assert_eq!(table["total_steps"].as_integer(), Some(9));
        assert_eq!(table["trpo"].as_table().unwrap().len(), 1);
        let mut current: toml::Table = "seed = 3\n[trpo]\nmax_kl = 1.0\n".parse().unwrap();
        assert_eq!(move_keys_out_of_trpo(&mut current), Ok(vec![]));
    }

    #[test]
    fn wrong_types_and_bad_link_are_errors() {
        let err = Config::from_toml_str("seed = \"seven\"", origin()).unwrap_err();
        assert!(err.to_string().contains("pendulum.toml:1:"), "{err}");
        let err = Config::from_toml_str("[devices]\nlink = \"usb\"\n", origin()).unwrap_err();
        assert!(err.to_string().contains("usb"), "{err}");
        let qemu = "[devices]\nlink = \"qemu\"\nfirmware = \"cart.elf\"\n";
        let c = Config::from_toml_str(qemu, origin()).unwrap();
        assert_eq!(c.devices.link, LinkKind::Qemu);
        assert_eq!(c.devices.firmware, Some(PathBuf::from("cart.elf")));
    }

    #[test]
    fn load_names_missing_file() {
        let err = Config::load(Path::new("/nonexistent/tether.toml")).unwrap_err();
        assert!(matches!(err, RunConfigError::Read { .. }));
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
        c.devices.link = LinkKind::Qemu;
        c.devices.firmware = Some("/images/qube.elf".into());
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
                matches!(&err, RunConfigError::Invalid { key: k, .. } if k == key),
                "{err}"
            );
        };
        check(&|c| c.plant = " ".into(), "plant");
        check(&|c| c.seed = u64::MAX, "seed");
        check(&|c| c.total_steps = 0, "total_steps");
        check(&|c| c.steps_per_iteration = 0, "steps_per_iteration");
        check(&|c| c.devices.sim = 0, "devices");
        check(
            &|c| c.devices.action_rate_limit = vec![0.5, f32::NAN],
            "devices.action_rate_limit",
        );
        check(
            &|c| c.devices.action_rate_limit = vec![0.1; 5],
            "devices.action_rate_limit",
        );
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
        check(
            &|c| c.evaluation.average_best = 0,
            "evaluation.average_best",
        );
        check(
            &|c| c.evaluation.average_best = MAX_AVERAGE_BEST + 1,
            "evaluation.average_best",
        );
        check(
            &|c| {
                c.evaluation.every = 5;
                c.evaluation.episodes = 0;
            },
            "evaluation.episodes",
        );
    }

    /// `every = N` evaluates after iterations N−1, 2N−1, … (0-based) and after the last;
    /// 0 never.
    #[test]
    fn evaluations_fall_every_n_iterations_and_on_the_last() {
        let every = |n| EvaluationConfig {
            every: n,
            episodes: 4,
            after_steps: 0,
            average_best: 1,
        };
        // 100 steps per iteration.
        let due = |c: &EvaluationConfig| -> Vec<u64> {
            (0..7)
                .filter(|&i| c.due(i, 100 * (i + 1), i == 6))
                .collect()
        };
        assert_eq!(due(&every(3)), [2, 5, 6]);
        assert!((0..7).all(|i| !every(0).due(i, 100 * (i + 1), true)));
        // Not before 400 steps (iteration 3 ends there), the last one always.
        let late = EvaluationConfig {
            after_steps: 400,
            ..every(2)
        };
        assert_eq!(due(&late), [3, 5, 6]);
        let text = "[evaluation]\nevery = 10\nepisodes = 40\nafter_steps = 6_500_000\n";
        let c = Config::from_toml_str(text, origin()).unwrap();
        assert_eq!(
            c.evaluation,
            EvaluationConfig {
                every: 10,
                episodes: 40,
                after_steps: 6_500_000,
                average_best: 1,
            }
        );
        let text = "[evaluation]\nevery = 10\naverage_best = 5\n";
        let c = Config::from_toml_str(text, origin()).unwrap();
        assert_eq!(c.evaluation.average_best, 5);
        assert!(Config::from_toml_str("[evaluation]\nevry = 1\n", origin()).is_err());
    }

    #[test]
    fn plant_tables_parse_record_and_are_checked() {
        let text = "plant = \"qube\"\ninit = \"runs/dr\"\nrange_end_share = 0.25\n\
                    [plant_params]\narm_mass = 0.1\nlatency_steps = 1\n[plant_randomize]\n\
                    pendulum_length = [0.9, 1.1]\nlatency_steps = [0, 2]\n";
        let c = Config::from_toml_str(text, origin()).unwrap();
        assert_eq!(c.range_end_share, 0.25);
        assert_eq!(c.plant_params["latency_steps"], 1.0);
        assert_eq!(c.plant_randomize["latency_steps"], [0.0, 2.0]);
        assert_eq!(c.init.as_deref(), Some("runs/dr"));
        c.validate(origin()).unwrap();
        let message = c.plant_params_message(origin()).unwrap().expect("settings");
        assert_eq!(message.settings.len(), 3);
        assert_eq!(message.range_end_share, 0.25);
        // Written out and read back: the run's config.toml records them.
        let back = Config::from_toml_str(&c.to_toml_string().unwrap(), origin()).unwrap();
        assert_eq!(back, c);
        // Nothing set: nothing written, nothing sent.
        let plain = Config::default();
        assert!(!plain.to_toml_string().unwrap().contains("plant_params"));
        assert!(!plain.to_toml_string().unwrap().contains("range_end_share"));
        assert_eq!(plain.plant_params_message(origin()).unwrap(), None);

        for (text, key) in [
            (
                "plant = \"qube\"\n[plant_params]\narm_mass = -1\n",
                "plant_params.arm_mass",
            ),
            (
                "plant = \"qube\"\n[plant_params]\nlatency_steps = 9\n",
                "plant_params.latency_steps",
            ),
            (
                "plant = \"qube\"\n[plant_randomize]\narm_mass = [1.1, 0.9]\n",
                "plant_randomize.arm_mass",
            ),
            ("[plant_params]\nbogus = 1\n", "plant_params.bogus"),
            (
                "plant = \"qube\"\nrange_end_share = 1.5\n[plant_randomize]\narm_mass = [0.9, 1.1]\n",
                "range_end_share",
            ),
            (
                "plant = \"qube\"\nrange_end_share = 0.3\n[plant_params]\narm_mass = 0.1\n",
                "range_end_share",
            ),
        ] {
            let c = Config::from_toml_str(text, origin()).unwrap();
            let err = c.validate(origin()).unwrap_err();
            assert!(
                matches!(&err, RunConfigError::Invalid { key: k, .. } if k == key),
                "{text}: {err}"
            );
        }
        let err = Config::from_toml_str("[plant_randomize]\nmass = [1.0]\n", origin()).unwrap_err();
        assert!(err.to_string().contains("pendulum.toml:2"), "{err}");
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncé d", 7), (2, 4));
        assert_eq!(line_column("", 5), (1, 1));
    }
}
