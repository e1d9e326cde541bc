//! The `tether` command line. Errors reach the user as one sentence with a hint, never a
//! backtrace.

use std::process::ExitCode;

use clap::Parser;
use tether_trainer::cli::{Cli, run};

fn main() -> ExitCode {
    keep_freed_memory_in_the_heap();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every TRPO update allocates and frees the same few dozen batch-sized matrices (20 000
/// samples × 64 features is 5 MB in f32). glibc's malloc serves blocks that large with a
/// fresh `mmap` and gives them back with `munmap` on free (and trims the heap's top above
/// 128 KiB), so the kernel zeroed and faulted in every page again on every update: 9 of a
/// 63 s CPU budget in system time on the shipped randomised run. Serving them from the heap
/// and keeping freed memory there (the run's peak working set is a few hundred MB) took
/// that to under 3 s. Only the allocator's policy changes, never a computed value.
fn keep_freed_memory_in_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        /// glibc's ceiling for the mmap threshold on 64-bit targets.
        const MMAP_THRESHOLD_BYTES: libc::c_int = 32 << 20;
        /// Free memory at the heap's top is returned to the system only above this.
        const TRIM_THRESHOLD_BYTES: libc::c_int = 1 << 30;
        // SAFETY: mallopt only sets allocator parameters; it is called before any other
        // thread exists. A refused setting (return 0) leaves glibc's default, which is
        // slower but correct, so the result needs no handling.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES);
        }
    }
}
