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
    BoardLine, QemuDevice, QemuError, QemuExtras, QemuTiming, checkout_root, default_image,
    image_for,
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

/// Starts `plant`'s image in QEMU with `extras` on its command line, until the board
/// serves.
pub fn start(
    plant: &str,
    timing: QemuTiming,
    extras: QemuExtras<'_>,
) -> Result<QemuDevice, QemuError> {
    QemuDevice::spawn_with(&image(plant), timing, extras, &format!("qemu:{plant}"))
}

/// Starts `plant`'s image in QEMU and handshakes with it, once the board serves (QEMU's
/// start takes longer on a loaded host). In real time the handshake may take 10 s: QEMU's
/// clock alignment (`-icount align=on`) often holds the emulated core for about 2 s after
/// the board has printed its serving line (measured 2.1–2.3 s in 5 of 8 starts), and the
/// board answers nothing meanwhile.
pub fn connect(plant: &str, timing: QemuTiming) -> (DeviceClient, QemuDevice) {
    let started = Instant::now();
    let qemu = start(plant, timing, QemuExtras::default()).unwrap_or_else(|e| panic!("{e}"));
    let serving = started.elapsed();
    let address = DeviceAddress::Serial {
        path: qemu.pty().to_string_lossy().into_owned(),
        baud: 115_200,
    };
    let stream = transport::open(&address).expect("the pty opens");
    let link = DeviceLink::new(format!("qemu:{plant}"), stream);
    let config = ClientConfig {
        handshake_timeout: match timing {
            QemuTiming::RealTime => Duration::from_secs(10),
            QemuTiming::FreeRunning => ClientConfig::default().handshake_timeout,
        },
        ..ClientConfig::default()
    };
    let client = DeviceClient::connect(link, config)
        .unwrap_or_else(|e| panic!("handshake with QEMU: {e}; output: {:?}", qemu.output()));
    eprintln!(
        "qemu:{plant} ({timing:?}): serving after {:.2} s, handshaken after {:.2} s",
        serving.as_secs_f64(),
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
    let fatal: Vec<String> = qemu
        .output()
        .into_iter()
        .filter(|line| matches!(BoardLine::parse(line), Some(BoardLine::Fatal(_))))
        .collect();
    assert!(fatal.is_empty(), "the board reported: {fatal:?}");
}

/// The board's last report of host frames it refused (see the board's `serve.rs`); 0
/// before any.
pub fn reported_bad_frames(qemu: &QemuDevice) -> u32 {
    qemu.output()
        .iter()
        .rev()
        .find_map(|line| match BoardLine::parse(line) {
            Some(BoardLine::BadFrames(n)) => Some(n),
            _ => None,
        })
        .unwrap_or(0)
}

/// Waits up to `timeout` for the board to report `expected` refused frames (QEMU's output
/// is read by threads, so a report can arrive after the frames were handled); the last
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
