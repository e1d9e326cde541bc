//! `plant.json`: the plant description the devices sent at the handshake, kept in the run
//! folder.
//!
//! `policy.bin` holds only the network's shape and parameters; exports that clamp the
//! action to the plant's bounds and label the model with the plant's name (ONNX, C) read
//! them from here. JSON, because it is small and people read it: for the simulated pendulum
//!
//! ```json
//! {"name":"pendulum","obs_dim":3,"action":{"Continuous":{"low":[-2.0],"high":[2.0]}},
//!  "control_rate_hz":20.0,"episode_steps":200}
//! ```
//!
//! (on one line). It is written atomically when a run starts and again on every resume (a
//! run started before this file existed gets it then).

use std::path::{Path, PathBuf};

use tether_shared::PlantDescription;

use crate::run::{AtomicWriteError, write_atomic};

/// Why `plant.json` could not be read or written. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum PlantFileError {
    /// The file is not there (a run from before plant descriptions were kept).
    #[error(
        "{} is missing: this run was started before tether kept the plant description; \
         `tether resume` on it (with its devices) writes the file",
        path.display()
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// Reading failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The contents are not a valid plant description.
    #[error("{} is not a valid plant description: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
}

/// Writes `plant` to `path` atomically.
pub fn save_plant(path: &Path, plant: &PlantDescription) -> Result<(), PlantFileError> {
    let mut text = serde_json::to_vec(plant).map_err(|e| PlantFileError::Invalid {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    text.push(b'\n');
    write_atomic(path, &text)?;
    Ok(())
}

/// Reads and checks (with [`PlantDescription::validate`]) the description at `path`.
pub fn load_plant(path: &Path) -> Result<PlantDescription, PlantFileError> {
    let text = std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            PlantFileError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            PlantFileError::Read {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    let invalid = |reason: String| PlantFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let plant: PlantDescription =
        serde_json::from_slice(&text).map_err(|e| invalid(e.to_string()))?;
    plant.validate().map_err(|e| invalid(e.to_string()))?;
    Ok(plant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;
    use tether_firmware::plant::AnyPlant;
    use tether_firmware::plant::Plant;

    #[test]
    fn every_simulated_plant_round_trips() {
        let dir = TestDir::new("plant-file");
        let path = dir.join("plant.json");
        for name in ["pendulum", "cartpole", "qube"] {
            let plant = AnyPlant::by_name(name).unwrap().description();
            save_plant(&path, &plant).unwrap();
            assert_eq!(load_plant(&path).unwrap(), plant, "{name}");
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("{\"name\":\"qube\""), "{text}");
    }

    #[test]
    fn missing_damaged_and_invalid_files_are_named_errors() {
        let dir = TestDir::new("plant-file-bad");
        let path = dir.join("plant.json");
        let err = load_plant(&path).unwrap_err();
        assert!(matches!(err, PlantFileError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("tether resume"), "{err}");
        std::fs::write(&path, "{\"name\":").unwrap();
        let err = load_plant(&path).unwrap_err();
        assert!(matches!(err, PlantFileError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("plant.json"), "{err}");
        let mut plant = AnyPlant::by_name("pendulum").unwrap().description();
        plant.obs_dim = 0;
        save_plant(&path, &plant).unwrap();
        let err = load_plant(&path).unwrap_err();
        assert!(err.to_string().contains("observation dimension"), "{err}");
    }
}
