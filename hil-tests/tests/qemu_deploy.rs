//! Deploy: the pendulum image with a trained policy built in (`scripts/cross.sh` builds
//! `pendulum-deploy.elf` from `hil-tests/fixtures/deploy-pendulum/`) boots in QEMU with
//! nothing on its UART, runs 20 episodes on its own and prints their returns over
//! semihosting; they are bit for bit the returns `tether eval --sim 1 --seed 1000` gets
//! from the host build for the same policy (the image's `eval-seed=1000` picks those
//! episodes). Booted with no command line at all, it runs the policy too.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tether_hil_tests::child::ChildGuard;
use tether_hil_tests::qemu::image;
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

/// The fixture's deploy image (built by scripts/cross.sh; a missing one fails naming it).
fn deploy_image() -> std::path::PathBuf {
    image("pendulum-deploy")
}

/// Starts the deploy image in QEMU with nothing on its UART and `extra` arguments; its
/// semihosting output on stdout and stderr, both piped.
fn start_qemu(extra: &[&str]) -> Child {
    Command::new("qemu-system-arm")
        .args(["-M", "mps2-an386", "-display", "none", "-monitor", "none"])
        .args([
            "-serial",
            "null",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .arg("-kernel")
        .arg(deploy_image())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qemu-system-arm starts (scripts/setup.sh installs it)")
}

/// With no `-append` at all, the deploy image starts its episodes on its own: the first
/// two episode-return lines arrive (it runs for ever; the guard stops it).
#[test]
fn deploy_image_runs_its_policy_from_boot_without_a_command_line() {
    let mut guard = ChildGuard::new(start_qemu(&[]), "qemu deploy image, no command line");
    let stdout = guard.stdout.take().expect("piped");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut episodes = Vec::new();
    let mut seen = Vec::new();
    while episodes.len() < 2 {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no episode line within 60 s ({e}); output: {seen:?}"));
        episodes.extend(deployed_returns(&line));
        seen.push(line);
    }
    assert_eq!(
        episodes.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [0, 1],
        "{seen:?}"
    );
    assert!(guard.is_running(), "it keeps running episodes: {seen:?}");
}

#[test]
fn deployed_policy_runs_alone_in_qemu_and_matches_tether_eval() {
    let command_line = format!("deploy episodes={EPISODES} eval-seed={EVAL_SEED}");
    let mut guard = ChildGuard::new(start_qemu(&["-append", &command_line]), "qemu deploy image");
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
