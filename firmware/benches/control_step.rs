//! Host time per control step of a qube device running a [64, 64] Gaussian policy (explore
//! mode: forward pass, sampling, clamping, plant model, record, batch framing).

use criterion::{Criterion, criterion_group, criterion_main};

mod support;

fn control_step(c: &mut Criterion) {
    let spec = support::spec();
    println!(
        "qube [64, 64] Gaussian: {} parameters, {} multiply-accumulates per step, Device = {} bytes",
        spec.param_count(),
        spec.macs(),
        core::mem::size_of::<support::BenchDevice>()
    );
    let (mut device, clock) = support::running_device();
    c.bench_function("control_step/qube_64x64_gaussian", |b| {
        b.iter(|| support::step(&mut device, &clock))
    });
    assert!(device.stats().steps > 0);
}

criterion_group!(benches, control_step);
criterion_main!(benches);
