//! Prints the README's fault matrix: one 100k-step pendulum training run per cell, each
//! compared with the clean run's wall time, and the issue-14 goals each cell is held to.
//!
//! `cargo run --release -p tether-hil-tests --example fault_matrix [STEPS] [goals | baud=N]`
//!
//! With `goals`, only the cells issue 14 sets goals for run, between two clean runs (the
//! second shows how much the machine's load moves wall times). With `baud=N`, the same
//! cells on a link limited to `N` baud (`N / 10` bytes per second each way on the board's
//! clock), against a clean run at that rate: the goals are stated for unlimited links, so
//! this reports what holds on a slow one.

use std::time::Duration;

use tether_hil_tests::faults::{CellConfig, CellReport, Fault, run_cell};

/// What a cell is expected to achieve: the largest wall time as a multiple of the clean
/// run's, and the smallest share of the device's transitions the learner uses (`None`:
/// the cell may stop with a clear error).
struct Goal {
    max_slowdown: f64,
    min_used: f64,
}

/// The goals of issue 14 for virtual-time links at the default baud.
fn goal(fault: &Fault) -> Option<Goal> {
    match fault {
        Fault::Corrupt(r) | Fault::Drop(r) | Fault::Duplicate(r) if *r <= 1e-4 => Some(Goal {
            max_slowdown: 1.3,
            min_used: 0.0,
        }),
        Fault::Corrupt(r) | Fault::Drop(r) | Fault::Duplicate(r) | Fault::AllThree(r)
            if *r <= 1e-3 =>
        {
            Some(Goal {
                max_slowdown: 2.0,
                min_used: 0.7,
            })
        }
        Fault::Garbage { .. } => Some(Goal {
            max_slowdown: 1.5,
            min_used: 0.0,
        }),
        _ => None,
    }
}

fn main() {
    let steps = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let config = CellConfig {
        total_steps: steps,
        steps_per_iteration: 4_000,
        hidden: vec![64, 64],
        seed: 1,
        deadline: Duration::from_secs(600),
        resend_attempts: None,
        baud: None,
    };
    let mode = std::env::args().nth(2).unwrap_or_default();
    let baud = mode.strip_prefix("baud=").and_then(|b| b.parse().ok());
    let goals_only = mode == "goals" || baud.is_some();
    let config = CellConfig { baud, ..config };
    let rates: &[f64] = if goals_only {
        &[1e-4, 1e-3]
    } else {
        &[1e-5, 1e-4, 1e-3, 1e-2]
    };
    let mut cells = vec![Fault::None];
    for &rate in rates {
        cells.push(Fault::Corrupt(rate));
        cells.push(Fault::Drop(rate));
        cells.push(Fault::Duplicate(rate));
    }
    cells.push(Fault::AllThree(1e-3));
    cells.push(Fault::Garbage {
        probability: 0.05,
        len: 64,
    });
    if goals_only {
        cells.push(Fault::None);
        return run_cells(&cells, config, false);
    }
    cells.push(Fault::Stall {
        at_s: 301.3,
        for_s: 1e7,
    });
    cells.push(Fault::Reset { at_s: 301.3 });
    cells.push(Fault::Disconnect {
        after_bytes: vec![500_000, 1_500_000],
    });
    run_cells(&cells, config, true);
}

/// Runs `cells` in order, printing the table (wall times against the first cell's), and,
/// with `cut_only`, the resend-off comparison; exits non-zero if a check failed.
fn run_cells(cells: &[Fault], config: CellConfig, cut_only: bool) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let link = config
        .baud
        .map_or("no rate limit".to_string(), |b| format!("{b} baud"));
    println!(
        "{} steps per cell, {link}; load average at the start: {}\n",
        config.total_steps,
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("{}", CellReport::table_header());
    let mut clean_wall = None;
    let mut bad = 0;
    for fault in cells {
        let r = run_cell(fault, &config);
        let clean = *clean_wall.get_or_insert(r.wall);
        println!("{}", r.table_row(clean));
        let slowdown = r.wall.as_secs_f64() / clean.as_secs_f64().max(1e-9);
        eprintln!(
            "  {} {}: {:.1} s ({slowdown:.2}x, CPU {:.1} s), {:.1} % used, {} resets, {} cuts, {} lost episodes, load {}",
            r.fault,
            r.rate,
            r.wall.as_secs_f64(),
            r.cpu_s,
            100.0 * r.used_fraction(),
            r.resets,
            r.cuts,
            r.lost_episodes,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        if r.hung
            || !r.mismatches.is_empty()
            || r.lost_episodes as u64 > r.episodes_discarded
            || r.lost_inside_kept > r.lost_steps
        {
            eprintln!("  CHECK FAILED: {:?}", r.mismatches);
            bad += 1;
        }
        if let Some(goal) = goal(fault) {
            let met =
                r.finished && slowdown <= goal.max_slowdown && r.used_fraction() >= goal.min_used;
            eprintln!(
                "  goal (finish, <= {:.1}x clean, >= {:.0} % used): {}",
                goal.max_slowdown,
                100.0 * goal.min_used,
                if met { "met" } else { "NOT met" }
            );
        }
    }
    if !cut_only {
        std::process::exit(if bad == 0 { 0 } else { 1 });
    }
    // The measurement behind combining selective repeat with cutting at gaps: the same
    // 1e-3 line with resend requests off (every gap cut at once).
    let cut_only = CellConfig {
        resend_attempts: Some(0),
        ..config
    };
    let r = run_cell(&Fault::Corrupt(1e-3), &cut_only);
    let clean = clean_wall.unwrap_or(r.wall);
    println!("\nWith resend requests off (`resend_attempts = 0`, cut at every gap):\n");
    println!("{}", CellReport::table_header());
    println!("{}", r.table_row(clean));
    if r.hung || !r.mismatches.is_empty() {
        eprintln!("  CHECK FAILED: {:?}", r.mismatches);
        bad += 1;
    }
    std::process::exit(if bad == 0 { 0 } else { 1 });
}
