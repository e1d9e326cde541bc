//! Prints the README's fault matrix: one 100k-step pendulum training run per cell.
//!
//! `cargo run --release -p tether-hil-tests --example fault_matrix [STEPS]`

use std::time::Duration;

use tether_hil_tests::faults::{CellConfig, CellReport, Fault, run_cell};

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
    };
    let mut cells = vec![Fault::None];
    for rate in [1e-5, 1e-4, 1e-3, 1e-2] {
        cells.push(Fault::Corrupt(rate));
        cells.push(Fault::Drop(rate));
        cells.push(Fault::Duplicate(rate));
    }
    cells.push(Fault::Stall {
        at_s: 301.3,
        for_s: 1e7,
    });
    cells.push(Fault::Reset { at_s: 301.3 });
    cells.push(Fault::Disconnect {
        after_bytes: vec![500_000, 1_500_000],
    });
    println!("{}", CellReport::table_header());
    let mut bad = 0;
    for fault in &cells {
        let r = run_cell(fault, &config);
        println!("{}", r.table_row(std::time::Duration::from_secs(1)));
        eprintln!(
            "  {} {}: {:.1} s, {} resets, {} cuts, {} lost episodes",
            r.fault,
            r.rate,
            r.wall.as_secs_f64(),
            r.resets,
            r.cuts,
            r.lost_episodes
        );
        if r.hung || !r.mismatches.is_empty() || r.lost_episodes as u64 > r.episodes_discarded {
            eprintln!("  CHECK FAILED: {:?}", r.mismatches);
            bad += 1;
        }
    }
    std::process::exit(if bad == 0 { 0 } else { 1 });
}
