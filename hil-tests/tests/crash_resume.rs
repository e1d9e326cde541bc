//! A checkpoint cut short at any byte is refused, never loaded half.
//!
//! (The SIGKILL-and-resume scenario runs the real `tether` binary, so it lives with the
//! binary's other tests in `trainer/tests/crash_resume.rs`.)

use tether_hil_tests::runs;
use tether_hil_tests::scratch::ScratchDir;
use tether_trainer::run::{CheckpointError, LinkKind, RunFolder};
use tether_trainer::training::Session;
use tether_trainer::training::session::SessionError;

/// Byte counts to cut `len` bytes at: every count within 64 bytes of either end, and about
/// 200 in between spread over the whole file.
fn cut_points(len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = (0..64.min(len)).collect();
    points.extend(len.saturating_sub(64)..len);
    let step = (len / 200).max(1);
    points.extend((64..len.saturating_sub(64)).step_by(step));
    // A few primes off the grid so the sample does not only land on multiples of `step`.
    points.extend([97, 1009, 4099, 12_289].into_iter().filter(|&p| p < len));
    points.sort_unstable();
    points.dedup();
    points
}

/// A real checkpoint from a two-iteration run, truncated at every sampled length, is
/// refused by `Session::resume` (what `tether resume` calls) as truncated, with an error
/// naming the file, before any device is touched; the run's other files stay byte for byte
/// as they were. The intact checkpoint then resumes — the refusals were about the cut.
#[test]
fn truncated_checkpoint_is_refused_at_every_cut() {
    let dir = ScratchDir::new("truncate");
    let root = dir.join("run");
    let config = runs::config("pendulum", 1, LinkKind::Memory, 2, 2 * 512, 512);
    let run = runs::train(&root, config, |_| {});
    assert_eq!(run.metrics.len(), 2);

    let folder = RunFolder::open(&root).expect("the run folder");
    let checkpoint = folder.checkpoint_path();
    let intact = std::fs::read(&checkpoint).expect("checkpoint.bin");
    let metrics = std::fs::read(folder.metrics_path()).expect("metrics.jsonl");
    let config_toml = std::fs::read(folder.config_path()).expect("config.toml");
    let points = cut_points(intact.len());
    assert!(points.len() > 300, "{} cut points", points.len());

    for &cut in &points {
        std::fs::write(&checkpoint, &intact[..cut]).expect("write the cut checkpoint");
        let result = Session::resume(folder.clone(), None);
        let err = match result {
            Ok(_) => panic!(
                "a checkpoint cut at {cut} of {} bytes was loaded",
                intact.len()
            ),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                SessionError::Checkpoint(CheckpointError::Truncated { .. })
            ),
            "cut at {cut}: refused, but not as truncated: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&checkpoint.display().to_string()),
            "cut at {cut}: the error names the file: {message}"
        );
        assert_eq!(
            std::fs::read(folder.metrics_path()).unwrap(),
            metrics,
            "cut at {cut}"
        );
        assert_eq!(
            std::fs::read(folder.config_path()).unwrap(),
            config_toml,
            "cut at {cut}"
        );
    }

    std::fs::write(&checkpoint, &intact).expect("restore the checkpoint");
    let session = Session::resume(folder, None).expect("the intact checkpoint resumes");
    assert_eq!(session.progress().iteration, 2);
    assert_eq!(session.progress().env_steps, 2 * 512);
}
