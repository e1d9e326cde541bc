//! The fault matrix in `cargo test` size (small runs; the README table comes from the
//! release example `fault_matrix`): every cell ends within its deadline, finishes or stops
//! with a clear error, never lets a transition the device did not produce into learning,
//! and its metrics count what was lost.

use tether_hil_tests::faults::{CellConfig, CellReport, Fault, run_cell};

/// Checks every cell must pass; returns the report for cell-specific checks.
fn check(fault: Fault, seed: u64) -> CellReport {
    let r = run_cell(&fault, &CellConfig::quick(seed));
    eprintln!("{}  ({:.1} s)", r.table_row(), r.wall.as_secs_f64());
    assert!(!r.hung, "{fault:?} hung");
    assert!(r.mismatches.is_empty(), "{fault:?}: {:?}", r.mismatches);
    assert!(
        r.lost_episodes as u64 <= r.episodes_discarded,
        "{fault:?}: the device completed {} episodes the host lost, but only {} were counted discarded",
        r.lost_episodes,
        r.episodes_discarded
    );
    if r.finished {
        assert!(r.checked > 0, "{fault:?}: nothing was checked");
        assert!(r.final_return.is_finite());
    } else {
        let e = r.error.as_deref().unwrap_or("");
        assert!(!e.is_empty(), "{fault:?}: stopped without a reason");
    }
    if matches!(
        fault,
        Fault::Corrupt(_) | Fault::Drop(_) | Fault::Duplicate(_)
    ) && r.lost_episodes > 0
    {
        assert!(
            r.frames_lost > 0,
            "{fault:?}: episodes lost but no frame counted"
        );
    }
    r
}

/// A clean link loses nothing: no rejected frame, no discarded episode, no reconnect.
#[test]
fn clean_link_loses_nothing() {
    let r = check(Fault::None, 1);
    assert!(r.finished);
    assert_eq!(
        (r.frames_lost, r.episodes_discarded, r.reconnects),
        (0, 0, 0)
    );
}

/// Byte corruption from rare to hostile: rare rates finish; 1e-3 and above certainly hit
/// frames, which are counted; the hostile rate finishes or stops with a clear error.
#[test]
fn corruption_sweep() {
    for (i, rate) in [1e-5, 1e-4, 1e-3, 1e-2].into_iter().enumerate() {
        let r = check(Fault::Corrupt(rate), 10 + i as u64);
        if rate <= 1e-4 {
            assert!(r.finished, "{rate}: {:?}", r.error);
        }
        if rate >= 1e-3 {
            assert!(r.frames_lost > 0, "{rate}: no frame counted lost");
        }
    }
}

/// Byte drops and duplicated bytes, rare to hostile (same rules as corruption).
#[test]
fn drop_and_duplicate_sweep() {
    for (i, rate) in [1e-5, 1e-4, 1e-3, 1e-2].into_iter().enumerate() {
        for fault in [Fault::Drop(rate), Fault::Duplicate(rate)] {
            let r = check(fault, 20 + i as u64);
            if rate <= 1e-4 {
                assert!(r.finished, "{rate}: {:?}", r.error);
            }
            if rate >= 1e-3 {
                assert!(r.frames_lost > 0, "{rate}: no frame counted lost");
            }
        }
    }
}

/// A device reset in the middle of an episode: the host notices (the device reports Idle),
/// reconnects, uploads again and redoes the round; the run finishes and the interrupted
/// round's episodes are counted.
#[test]
fn reset_mid_episode_reconnects() {
    let r = check(Fault::Reset { at_s: 41.3 }, 3);
    assert_eq!(r.resets, 1);
    assert!(r.finished, "{:?}", r.error);
    assert!(r.reconnects >= 1);
    assert!(r.episodes_discarded >= 1);
}

/// A TCP link cut mid-run: the worker reopens the address, re-handshakes and finishes.
#[test]
fn disconnect_reconnects() {
    let r = check(
        Fault::Disconnect {
            after_bytes: vec![60_000],
        },
        4,
    );
    assert_eq!(r.cuts, 1);
    assert!(r.finished, "{:?}", r.error);
    assert!(r.reconnects >= 1);
}

/// A stall far longer than every host timeout: the host gives up on the device after its
/// bounded reconnection attempts and the run stops with a clear error.
#[test]
fn endless_stall_stops_with_a_clear_error() {
    let r = check(
        Fault::Stall {
            at_s: 41.3,
            for_s: 1e7,
        },
        5,
    );
    assert!(!r.finished);
    let e = r.error.unwrap_or_default();
    assert!(
        e.contains("every device was lost") && e.contains("sim0"),
        "{e}"
    );
}
