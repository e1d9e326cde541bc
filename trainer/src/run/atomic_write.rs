//! [`write_atomic`]: replacing a file so a crash leaves the old or the new content, never a
//! mix. Every file a run writes whole (checkpoint, config, policy, curves, a rewritten
//! metrics file) goes through it.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an atomic write failed; `path` is the file or directory concerned.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct AtomicWriteError {
    /// What was being done ("write", "fsync", "rename ... to", ...).
    pub action: String,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// The underlying error.
    #[source]
    pub source: std::io::Error,
}

fn io_err(action: impl Into<String>, path: &Path, source: std::io::Error) -> AtomicWriteError {
    AtomicWriteError {
        action: action.into(),
        path: path.to_path_buf(),
        source,
    }
}

/// Distinguishes temporary files of concurrent writers within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` atomically and durably.
///
/// Writes a temporary file next to `path` (same directory, hence same filesystem), fsyncs
/// it, renames it over `path`, then fsyncs the directory so the rename itself survives a
/// power loss. Readers see either the previous content or `bytes`, never a partial file. On
/// error the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), AtomicWriteError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_err("create temporary file", &tmp, e))?;
        file.write_all(bytes)
            .map_err(|e| io_err("write", &tmp, e))?;
        file.sync_all().map_err(|e| io_err("fsync", &tmp, e))?;
        drop(file);
        fs::rename(&tmp, path)
            .map_err(|e| io_err(format!("rename {} to", tmp.display()), path, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(&dir)
}

/// Fsyncs a directory so a rename or creation inside it is durable (no-op off Unix, where
/// directories cannot be opened as files).
fn sync_dir(dir: &Path) -> Result<(), AtomicWriteError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_err("fsync directory", dir, e))?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::testdir::TestDir;

    #[test]
    fn replaces_the_content_and_leaves_no_temporary_file() {
        let dir = TestDir::new("atomic-replace");
        let path = dir.join("file.txt");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file.txt"]);
    }

    #[test]
    fn a_missing_directory_fails_naming_the_file_and_leaves_nothing() {
        let dir = TestDir::new("atomic-nodir");
        let path = dir.join("missing/sub/file.bin");
        let err = write_atomic(&path, b"abc").unwrap_err();
        assert_eq!(err.action, "create temporary file");
        assert!(err.to_string().contains("missing/sub"), "{err}");
        assert!(!path.exists());
    }
}
