//! The freestanding image: a `Device` over every plant model with a dummy link and clock,
//! polled forever. It is linked, never run.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use tether_firmware::plant::AnyPlant;
use tether_firmware::{Clock, Device, DeviceConfig};

/// Policy capacity: a [64, 64] Gaussian policy with observation normaliser on the qube.
const CAP: usize = 4_700;

/// A link with nothing to read that accepts and discards every byte.
struct NullLink;

impl ErrorType for NullLink {
    type Error = ErrorKind;
}
impl Read for NullLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ErrorKind> {
        // Keep the decoder linked: hand out whatever the optimiser cannot see.
        let n = black_box(0usize).min(buf.len());
        Ok(n)
    }
}
impl ReadReady for NullLink {
    fn read_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(black_box(false))
    }
}
impl Write for NullLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ErrorKind> {
        Ok(black_box(buf).len())
    }
    fn flush(&mut self) -> Result<(), ErrorKind> {
        Ok(())
    }
}
impl WriteReady for NullLink {
    fn write_ready(&mut self) -> Result<bool, ErrorKind> {
        Ok(true)
    }
}

/// A clock that moves 1 ms per read.
struct TickClock(AtomicU64);

impl Clock for TickClock {
    fn now_us(&self) -> u64 {
        self.0.fetch_add(1_000, Ordering::Relaxed)
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {
        core::hint::spin_loop();
    }
}

/// Referenced by the precompiled `core`; never called with `panic = "abort"`.
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

#[unsafe(no_mangle)]
pub extern "C" fn _start() -> ! {
    let names = ["pendulum", "cartpole", "qube"];
    let name = names[black_box(2usize) % names.len()];
    let Some(plant) = AnyPlant::by_name(name) else {
        panic!("unknown plant")
    };
    let mut device: Device<_, _, _, CAP> = Device::new(
        plant,
        NullLink,
        TickClock(AtomicU64::new(0)),
        DeviceConfig::default(),
    );
    loop {
        device.poll();
        black_box(device.stats());
    }
}
