//! Runs N control steps of a qube device with a [64, 64] Gaussian policy, for instruction
//! counting: `valgrind --tool=callgrind target/release/examples/step_count N`. Run it with
//! two values of N and divide the difference in instructions by the difference in steps,
//! which cancels the setup (upload, first episode reset).
//!
//! Also prints the multiply-accumulate count per step and the device's static RAM.

#[path = "../benches/support/mod.rs"]
mod support;

fn main() {
    let steps: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let (mut device, clock) = support::running_device();
    let before = device.stats().steps;
    for _ in 0..steps {
        support::step(&mut device, &clock);
    }
    let spec = support::spec();
    println!(
        "steps={} macs_per_step={} params={} device_bytes={}",
        device.stats().steps - before,
        spec.macs(),
        spec.param_count(),
        core::mem::size_of::<support::BenchDevice>()
    );
}
