//! The fault matrix in `cargo test` size (small runs; the README table comes from the
//! release example `fault_matrix`): every cell ends within its deadline, finishes or stops
//! with a clear error, never lets a transition the device did not produce into learning,
//! and its metrics count what was lost. Timings are the example's business, not these
//! tests'.

use std::time::Duration;

use tether_hil_tests::faults::{CellConfig, CellReport, Fault, run_cell};

/// Checks every cell must pass; returns the report for cell-specific checks.
fn check(fault: Fault, seed: u64) -> CellReport {
    check_with(fault, CellConfig::quick(seed))
}

fn check_with(fault: Fault, config: CellConfig) -> CellReport {
    let r = run_cell(&fault, &config);
    eprintln!("{}", r.table_row(Duration::from_secs(1)));
    assert!(!r.hung, "{fault:?} hung");
    assert!(r.mismatches.is_empty(), "{fault:?}: {:?}", r.mismatches);
    assert!(
        r.lost_episodes as u64 <= r.episodes_discarded,
        "{fault:?}: the device completed {} episodes the host lost, but only {} were counted discarded",
        r.lost_episodes,
        r.episodes_discarded
    );
    assert!(
        r.lost_inside_kept <= r.lost_steps,
        "{fault:?}: {} steps missing inside kept episodes, {} counted lost",
        r.lost_inside_kept,
        r.lost_steps
    );
    if r.finished {
        assert!(r.checked > 0, "{fault:?}: nothing was checked");
        assert!(r.final_return.is_finite());
        assert!(r.checked as u64 <= r.produced, "{fault:?}");
    } else {
        let e = r.error.as_deref().unwrap_or("");
        assert!(!e.is_empty(), "{fault:?}: stopped without a reason");
    }
    r
}

/// A bad line must finish and give the learner at least 70 % of what the device produced.
fn check_recovered(fault: Fault, seed: u64) -> CellReport {
    let r = check(fault.clone(), seed);
    assert!(r.finished, "{fault:?}: {:?}", r.error);
    assert!(
        r.used_fraction() >= 0.7,
        "{fault:?}: {:.1} % of the transitions used",
        100.0 * r.used_fraction()
    );
    r
}

/// A clean link loses nothing: no rejected frame, no request, no cut, no discarded episode,
/// no reconnect; every transition produced is used.
#[test]
fn clean_link_loses_nothing() {
    let r = check(Fault::None, 1);
    assert!(r.finished);
    assert_eq!(
        (
            r.frames_lost,
            r.episodes_discarded,
            r.reconnects,
            r.resend_requests,
            r.cut_episodes,
            r.lost_steps
        ),
        (0, 0, 0, 0, 0, 0)
    );
    assert_eq!(r.checked as u64, r.produced);
}

/// One byte in ten thousand damaged, either way: frames are lost, asked for again and
/// recovered; the run finishes.
#[test]
fn rare_faults_are_recovered() {
    for (i, fault) in [
        Fault::Corrupt(1e-4),
        Fault::Drop(1e-4),
        Fault::Duplicate(1e-4),
    ]
    .into_iter()
    .enumerate()
    {
        let r = check_recovered(fault, 10 + i as u64);
        assert!(r.frames_lost > 0 && r.resend_requests > 0, "{r:?}");
    }
}

/// One byte in a thousand corrupted both ways: a full frame rarely arrives whole, yet the
/// upload gets through, lost transitions are recovered, and the run finishes with most of
/// the data.
#[test]
fn corruption_at_1e3_finishes_with_most_transitions() {
    let r = check_recovered(Fault::Corrupt(1e-3), 20);
    assert!(r.recovered_steps > 0, "{r:?}");
}

/// Drops and duplicated bytes at 1e-3, both ways.
#[test]
fn drops_and_duplicates_at_1e3_finish_with_most_transitions() {
    check_recovered(Fault::Drop(1e-3), 21);
    check_recovered(Fault::Duplicate(1e-3), 22);
}

/// All three faults at 1e-3 at once.
#[test]
fn all_three_at_1e3_finish_with_most_transitions() {
    check_recovered(Fault::AllThree(1e-3), 23);
}

/// On a rate-limited line (230400 baud: the line, not the host, paces the run), all three
/// faults at 1e-3 still finish with most of the data and nothing corrupted accepted.
#[test]
fn a_rate_limited_line_at_1e3_finishes_with_most_transitions() {
    let config = CellConfig {
        total_steps: 2_000,
        baud: Some(230_400),
        ..CellConfig::quick(25)
    };
    let r = check_with(Fault::AllThree(1e-3), config);
    assert!(r.finished, "{:?}", r.error);
    assert!(r.used_fraction() >= 0.7, "{r:?}");
    assert!(r.frames_lost > 0 && r.resend_requests > 0, "{r:?}");
}

/// With no resend requests allowed, every gap is cut at once: the run still finishes, every
/// loss inside a kept episode is counted, and no lost stretch is asked for. (The tail probe
/// still goes out when the line is quiet for a retransmission timeout — it is how a lost
/// tail is noticed at all — and when it races frames still in flight, the device's answer
/// may fill a gap already cut: counted in `recovered_steps`, never more than was lost.)
#[test]
fn cutting_at_gaps_alone_keeps_what_arrived() {
    let config = CellConfig {
        resend_attempts: Some(0),
        ..CellConfig::quick(24)
    };
    let r = check_with(Fault::Corrupt(1e-3), config);
    assert!(r.finished, "{:?}", r.error);
    assert_eq!(r.resend_requests, 0);
    assert!(r.cut_episodes > 0 && r.lost_steps > 0, "{r:?}");
    assert!(r.recovered_steps < r.lost_steps, "{r:?}");
}

/// A hostile line (one byte in a hundred): the run finishes or stops with a clear error,
/// never hangs and never learns from a damaged transition.
#[test]
fn hostile_lines_finish_or_stop_clearly() {
    for (i, fault) in [
        Fault::Corrupt(1e-2),
        Fault::Drop(1e-2),
        Fault::Duplicate(1e-2),
    ]
    .into_iter()
    .enumerate()
    {
        // One iteration: a hostile line is slow, and the checks are the same.
        let config = CellConfig {
            total_steps: 2_000,
            ..CellConfig::quick(30 + i as u64)
        };
        let r = check_with(fault, config);
        assert!(r.frames_lost > 0);
    }
}

/// Bursts of 64 random bytes before one transfer in twenty.
#[test]
fn garbage_bursts_are_survived() {
    let r = check_recovered(
        Fault::Garbage {
            probability: 0.05,
            len: 64,
        },
        40,
    );
    assert!(r.frames_lost > 0, "{r:?}");
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
