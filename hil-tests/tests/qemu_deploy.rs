//! Deploy: the pendulum image with a trained policy built in (`scripts/cross.sh` builds
//! `pendulum-deploy.elf` from `hil-tests/fixtures/deploy-pendulum/`) boots in QEMU with
//! nothing on its UART, runs 20 episodes on its own and prints their returns over
//! semihosting; they are bit for bit the returns `tether eval --sim 1 --seed 1000` gets
//! from the host build for the same policy.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use tether_firmware::deploy::evaluation_run_seed;
use tether_hil_tests::child::ChildGuard;
use tether_hil_tests::qemu::{BOARD, image_path};
use tether_trainer::run::policy_file::PolicyFile;
use tether_trainer::run::{DevicesConfig, TimeoutsConfig};
use tether_trainer::training::FleetSpec;
use tether_trainer::training::evaluation::evaluate;

const EVAL_SEED: u64 = 1000;
const EPISODES: u32 = 20;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/deploy-pendulum")
}

/// The committed Rust export is the committed policy's (`tether export --format rust`),
/// so the image's policy is the one the host evaluates below.
#[test]
fn fixture_export_matches_its_policy() {
    let policy = PolicyFile::read_bin(&fixture().join("policy.bin")).expect("the fixture policy");
    let exported = std::fs::read_to_string(fixture().join("policy.rs")).expect("policy.rs");
    assert_eq!(exported, policy.to_rust_source("policy"));
}

/// The returns `deploy: episode <id> return <v> bits <0x…> …` lines carry, by episode id.
fn deployed_returns(output: &str) -> Vec<(u32, u32)> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("deploy: episode ")?;
            let words: Vec<&str> = rest.split_whitespace().collect();
            let id = words.first()?.parse().ok()?;
            let bits = u32::from_str_radix(words.get(4)?.trim_start_matches("0x"), 16).ok()?;
            Some((id, bits))
        })
        .collect()
}

#[test]
fn deployed_policy_runs_alone_in_qemu_and_matches_tether_eval() {
    let image = image_path(BOARD, "pendulum-deploy");
    assert!(
        image.is_file(),
        "no {}: run scripts/cross.sh (scripts/test.sh does)",
        image.display()
    );
    let seed_word = format!("seed={}", evaluation_run_seed(EVAL_SEED));
    let child = Command::new("qemu-system-arm")
        .args([
            "-M",
            "mps2-an386",
            "-display",
            "none",
            "-monitor",
            "none",
            "-serial",
            "null",
        ])
        .args(["-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(&image)
        .args([
            "-append",
            &format!("deploy episodes={EPISODES} {seed_word}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-arm starts (scripts/setup.sh installs it)");
    let mut guard = ChildGuard::new(child, "qemu deploy image");
    let (mut stdout, mut stderr) = (
        guard.stdout.take().expect("piped"),
        guard.stderr.take().expect("piped"),
    );
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let started = std::time::Instant::now();
    while guard.is_running() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "QEMU did not finish its episodes in 120 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = guard.wait().expect("QEMU's exit status");
    let text = out_reader.join().unwrap_or_default() + &err_reader.join().unwrap_or_default();
    assert!(
        status.success(),
        "the image exits 0 after its episodes: {text}"
    );
    assert!(text.contains("deploy: done"), "{text}");
    let device = deployed_returns(&text);
    assert_eq!(device.len(), EPISODES as usize, "{text}");

    let policy = PolicyFile::read_bin(&fixture().join("policy.bin")).expect("the fixture policy");
    let devices = DevicesConfig {
        sim: 1,
        ..DevicesConfig::default()
    };
    let spec = FleetSpec::new(
        &devices,
        &TimeoutsConfig::default(),
        EVAL_SEED,
        Some("pendulum"),
    )
    .expect("a fleet");
    let host = evaluate(&spec, &policy, EPISODES, EVAL_SEED).expect("the host evaluates");
    assert_eq!(host.returns.len(), EPISODES as usize);
    for (i, ((id, bits), host_return)) in device.iter().zip(&host.returns).enumerate() {
        assert_eq!(*id, i as u32, "episodes in order");
        assert_eq!(
            *bits,
            (*host_return as f32).to_bits(),
            "episode {i}: QEMU {} vs host {host_return}",
            f32::from_bits(*bits)
        );
    }
}
