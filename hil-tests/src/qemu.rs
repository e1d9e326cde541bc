//! QEMU devices for the tests: the plant's board image (built by `scripts/cross.sh`) in
//! `qemu-system-arm`, started by the trainer's own launcher ([`QemuDevice`]), with a
//! handshaken client on its UART, and what the board reports over semihosting.
//!
//! A test that needs an image fails without it, naming `scripts/cross.sh` (`scripts/test.sh`
//! builds the images before the tests, so none is ever skipped). The [`QemuDevice`] kills
//! QEMU when dropped, also when the test fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tether_trainer::device::qemu::{
    QemuDevice, QemuExtras, QemuTiming, checkout_root, default_image, image_for,
};
use tether_trainer::device::{ClientConfig, DeviceAddress, DeviceClient, DeviceLink, transport};

/// `plant`'s board image where `scripts/cross.sh` writes it in this checkout; panics naming
/// the script when it is missing.
pub fn image(plant: &str) -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root =
        checkout_root(here).unwrap_or_else(|| panic!("{} is in no checkout", here.display()));
    image_for(plant, Some(&default_image(root, plant))).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `plant`'s image in QEMU with `extras` on its command line; panics with QEMU's
/// words when it does not start.
pub fn start(plant: &str, timing: QemuTiming, extras: QemuExtras<'_>) -> QemuDevice {
    QemuDevice::spawn_with(&image(plant), timing, extras, &format!("qemu:{plant}"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Starts `plant`'s image in QEMU and handshakes with it. The handshake may take 10 s: in
/// real-time mode QEMU's clock alignment (`-icount align=on`) often holds the emulated core
/// for about 2 s after start (measured: 2.1–2.3 s in 5 of 8 starts, never longer), so the
/// board answers nothing before.
pub fn connect(plant: &str, timing: QemuTiming) -> (DeviceClient, QemuDevice) {
    let qemu = start(plant, timing, QemuExtras::default());
    let address = DeviceAddress::Serial {
        path: qemu.pty().to_string_lossy().into_owned(),
        baud: 115_200,
    };
    let stream = transport::open(&address).expect("the pty opens");
    let link = DeviceLink::new(format!("qemu:{plant}"), stream);
    let config = ClientConfig {
        handshake_timeout: Duration::from_secs(10),
        ..ClientConfig::default()
    };
    let started = Instant::now();
    let client = DeviceClient::connect(link, config)
        .unwrap_or_else(|e| panic!("handshake with QEMU: {e}; output: {:?}", qemu.output()));
    eprintln!(
        "qemu:{plant} ({timing:?}) answered its handshake after {:.2} s",
        started.elapsed().as_secs_f64()
    );
    (client, qemu)
}

/// Panics, with the board's last words, when QEMU has ended: a panic or a fault on the
/// board stops the emulation with a failure status.
pub fn assert_running(qemu: &mut QemuDevice) {
    if let Some(status) = qemu.exit_status() {
        panic!("QEMU ended with {status}; output: {:?}", qemu.output());
    }
    // The board's fatal messages (its `fault.rs`) are its only other lines.
    let fatal: Vec<String> = qemu
        .output()
        .into_iter()
        .filter(|line| line.starts_with(BOARD_PREFIX) && bad_frame_report(line).is_none())
        .collect();
    assert!(fatal.is_empty(), "the board reported: {fatal:?}");
}

/// Waits up to `timeout` for a line of QEMU's output that `wanted` accepts (QEMU's output is
/// read by threads, so a line can arrive after QEMU has ended); the line.
pub fn wait_for_line(
    qemu: &QemuDevice,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let line = qemu.output().into_iter().find(|line| wanted(line));
        if line.is_some() || Instant::now() >= deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How the board starts what it prints.
pub const BOARD_PREFIX: &str = "tether board: ";

/// The count in the board's `tether board: <n> bad frames from the host`.
fn bad_frame_report(line: &str) -> Option<u32> {
    line.strip_prefix(BOARD_PREFIX)?
        .strip_suffix(" bad frames from the host")?
        .parse()
        .ok()
}

/// The board's last report of host frames it refused (see the board's `serve.rs`); 0
/// before any.
pub fn reported_bad_frames(qemu: &QemuDevice) -> u32 {
    qemu.output()
        .iter()
        .rev()
        .find_map(|line| bad_frame_report(line))
        .unwrap_or(0)
}

/// Waits up to `timeout` for the board to report `expected` refused frames; the last
/// report.
pub fn wait_for_bad_frames(qemu: &QemuDevice, expected: u32, timeout: Duration) -> u32 {
    let deadline = Instant::now() + timeout;
    loop {
        let reported = reported_bad_frames(qemu);
        if reported == expected || Instant::now() >= deadline {
            return reported;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
