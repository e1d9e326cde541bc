//! Whole-device behaviour over the simulated board's links (needs feature `sim`).
#![cfg(feature = "sim")]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use heapless::Vec as HVec;
use tether_firmware::DeviceConfig;
use tether_firmware::plant::{Action, Plant, StepOutcome};
use tether_firmware::sim::{FaultSpec, SimBoard, SimConfig, TimeMode};
use tether_shared::frame::{self, FrameDecoder, MAX_FRAME_LEN};
use tether_shared::message::{
    DeviceState, EpisodeEnd, EpisodeEndReason, PolicyUpload, RecordAction, RecordLayout,
    ReleaseMark, RunCommand, RunMode,
};
use tether_shared::{
    ActionSpace, DeviceMessage, HostMessage, PROTOCOL_VERSION, PlantDescription, PolicySpec,
};

/// `x' = u` at 100 Hz, observation `[x, 1]`, `u ∈ [-1, 1]`, reward `−x²`.
struct Integrator {
    x: f32,
    steps: u32,
}

impl Plant for Integrator {
    fn description(&self) -> PlantDescription {
        PlantDescription {
            name: heapless::String::try_from("integrator").unwrap(),
            obs_dim: 2,
            action: ActionSpace::Continuous {
                low: HVec::from_slice(&[-1.0]).unwrap(),
                high: HVec::from_slice(&[1.0]).unwrap(),
            },
            control_rate_hz: 100.0,
            episode_steps: self.steps,
        }
    }
    fn reset(&mut self, seed: u64) {
        self.x = (seed % 100) as f32 / 100.0 - 0.5;
    }
    fn observe(&mut self, obs: &mut [f32]) {
        obs[0] = self.x;
        obs[1] = 1.0;
    }
    fn actuate(&mut self, action: Action<'_>) -> StepOutcome {
        if let Action::Continuous(a) = action {
            self.x += 0.01 * a[0];
        }
        StepOutcome {
            reward: -self.x * self.x,
            terminated: false,
        }
    }
    fn safe_state(&mut self) {}
}

struct Host<S> {
    port: S,
    decoder: FrameDecoder<MAX_FRAME_LEN>,
    inbox: std::collections::VecDeque<DeviceMessage>,
}

impl<S: Read + Write> Host<S> {
    fn new(port: S) -> Self {
        Host {
            port,
            decoder: FrameDecoder::new(),
            inbox: Default::default(),
        }
    }

    fn send(&mut self, m: &HostMessage) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let frame = frame::encode(m, &mut buf).unwrap();
        self.port.write_all(frame).unwrap();
        self.port.flush().unwrap();
    }

    /// Next message within `timeout` (None on timeout); bad frames are skipped.
    fn next(&mut self, timeout: Duration) -> Option<DeviceMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(m) = self.inbox.pop_front() {
                return Some(m);
            }
            if Instant::now() > deadline {
                return None;
            }
            let mut buf = [0u8; 512];
            let n = match self.port.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("read failed: {e}"),
            };
            let mut input = &buf[..n];
            let mut release = None;
            while let Some(r) = self.decoder.decode_next::<DeviceMessage>(&mut input) {
                if let Ok(m) = r {
                    release = release_after(&m).or(release);
                    self.inbox.push_back(m);
                }
            }
            if let Some(mark) = release {
                self.send(&HostMessage::Release(mark));
            }
        }
    }

    /// Waits for a message matching `pick`, feeding the watchdog with heartbeats.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&DeviceMessage) -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + timeout;
        let mut seq = 0;
        let mut last_beat = Instant::now();
        while Instant::now() < deadline {
            if last_beat.elapsed() > Duration::from_millis(50) {
                seq += 1;
                self.send(&HostMessage::Heartbeat { sequence: seq });
                last_beat = Instant::now();
            }
            if let Some(m) = self.next(Duration::from_millis(20))
                && let Some(t) = pick(&m)
            {
                return t;
            }
        }
        panic!("timed out waiting for a device message");
    }

    fn hello(&mut self) -> Option<u32> {
        self.send(&HostMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        });
        self.wait_for(Duration::from_secs(5), |m| match m {
            DeviceMessage::Hello(info) => Some(info.active_policy),
            _ => None,
        })
    }

    fn upload(&mut self, version: u32, spec: &PolicySpec) {
        let params: Vec<f32> = (0..spec.param_count())
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.5)
            .collect();
        for message in PolicyUpload::new(version, spec, &params).messages() {
            self.send(&message);
        }
        self.wait_for(Duration::from_secs(5), |m| match m {
            DeviceMessage::Ack(tether_shared::message::AckTopic::PolicyCommit { version: v })
                if *v == version =>
            {
                Some(())
            }
            DeviceMessage::Refused(r) => panic!("upload refused: {r:?}"),
            _ => None,
        });
    }

    fn run(&mut self, episodes: u32) {
        self.send(&HostMessage::Run(RunCommand {
            first_episode: 0,
            episodes,
            seed: 3,
            mode: RunMode::Explore,
        }));
    }

    /// Collects episode ends and checks transitions are contiguous per episode.
    fn collect_episodes(&mut self, count: usize, timeout: Duration) -> Vec<EpisodeEnd> {
        // The integrator's records: observation [x, 1], one action value.
        let layout = RecordLayout::new(2, RecordAction::Continuous { dim: 1 });
        self.collect_episodes_of_layout(count, timeout, layout)
    }

    fn collect_episodes_of_layout(
        &mut self,
        count: usize,
        timeout: Duration,
        layout: RecordLayout,
    ) -> Vec<EpisodeEnd> {
        let mut ends = Vec::new();
        let mut next_step = std::collections::HashMap::<u32, u32>::new();
        self.wait_for(timeout, |m| {
            match m {
                DeviceMessage::Transitions(b) => {
                    let expected = next_step.entry(b.episode).or_insert(0);
                    assert_eq!(b.first_step, *expected, "contiguous steps");
                    *expected += b.records(layout).expect("valid records").len() as u32;
                }
                DeviceMessage::EpisodeEnd(e) => {
                    if e.reason != EpisodeEndReason::Overrun {
                        assert_eq!(next_step.get(&e.episode).copied().unwrap_or(0), e.length);
                    }
                    ends.push(e.clone());
                }
                _ => {}
            }
            (ends.len() >= count).then_some(())
        });
        ends
    }
}

/// What a host that received `message` may release (protocol 2: the device keeps sent data
/// until released, and a virtual-time board waits for the release once its retransmit ring
/// is full): everything before a batch's first step (the batch itself stays kept, which
/// needs no record count), or the whole episode after its end report.
fn release_after(message: &DeviceMessage) -> Option<ReleaseMark> {
    match message {
        DeviceMessage::Transitions(b) => Some(ReleaseMark {
            episode: b.episode,
            step: b.first_step,
        }),
        DeviceMessage::EpisodeEnd(e) => Some(ReleaseMark {
            episode: e.episode.wrapping_add(1),
            step: 0,
        }),
        _ => None,
    }
}

fn spec() -> PolicySpec {
    PolicySpec::for_plant(
        &Integrator { x: 0.0, steps: 1 }.description(),
        &[16, 16],
        true,
    )
}

fn board(steps: u32, config: SimConfig) -> SimBoard<Integrator> {
    SimBoard::new(Integrator { x: 0.0, steps }, config)
}

#[test]
fn memory_link_runs_episodes_in_virtual_time() {
    let (host_end, handle) = board(200, SimConfig::default()).spawn_memory();
    let mut host = Host::new(host_end);
    assert_eq!(host.hello(), None);
    host.upload(1, &spec());
    let started = Instant::now();
    host.run(5);
    let ends = host.collect_episodes(5, Duration::from_secs(10));
    assert!(
        ends.iter()
            .all(|e| e.reason == EpisodeEndReason::Truncated && e.length == 200)
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "virtual time runs fast"
    );
    let report = handle.stop();
    assert_eq!(report.episodes, 5);
    assert!(
        report.clock_us >= (5 * 200 - 1) * 10_000,
        "10 s of virtual time"
    );
}

#[test]
fn pty_link_works_like_a_serial_port() {
    let (path, handle) = board(50, SimConfig::default()).spawn_pty().unwrap();
    let port = serialport::new(path.to_string_lossy(), 115_200)
        .timeout(Duration::from_millis(20))
        .open_native()
        .unwrap();
    let mut host = Host::new(port);
    assert_eq!(host.hello(), None);
    host.upload(4, &spec());
    host.run(2);
    let ends = host.collect_episodes(2, Duration::from_secs(10));
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[1].policy_version, 4);
    handle.stop();
}

#[test]
fn slow_baud_rate_overruns_fast_one_does_not() {
    let slow = SimConfig {
        baud: Some(9_600),
        ..SimConfig::default()
    };
    let (host_end, handle) = board(2_000, slow).spawn_memory();
    let mut host = Host::new(host_end);
    host.hello();
    host.upload(1, &spec());
    host.run(1);
    let ends = host.collect_episodes(1, Duration::from_secs(20));
    assert_eq!(ends[0].reason, EpisodeEndReason::Overrun);
    handle.stop();

    let fast = SimConfig {
        baud: Some(115_200),
        ..SimConfig::default()
    };
    let (host_end, handle) = board(500, fast).spawn_memory();
    let mut host = Host::new(host_end);
    host.hello();
    host.upload(1, &spec());
    host.run(1);
    let ends = host.collect_episodes(1, Duration::from_secs(20));
    assert_eq!(ends[0].reason, EpisodeEndReason::Truncated);
    handle.stop();
}

/// Bytes of transition batches a board sends a host that never releases anything, until it
/// falls silent (in virtual time it then waits for the release).
fn data_sent_without_release(config: SimConfig) -> usize {
    let config = SimConfig {
        device: DeviceConfig {
            watchdog_timeout_us: 0,
            ..DeviceConfig::default()
        },
        ..config
    };
    let (host_end, handle) = board(1_000_000, config).spawn_memory();
    let mut host = Host::new(host_end);
    host.hello();
    host.upload(1, &spec());
    host.run(1);
    let mut data = 0;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_millis(300) {
        let mut buf = [0u8; 4096];
        let n = match host.port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
            Err(e) => panic!("read failed: {e}"),
        };
        let mut input = &buf[..n];
        while let Some(frame) = host.decoder.decode_next::<DeviceMessage>(&mut input) {
            if let Ok(DeviceMessage::Transitions(batch)) = frame {
                data += 4 * batch.values.len();
                quiet_since = Instant::now();
            }
        }
    }
    handle.stop();
    data
}

/// On a link that delivers every byte (virtual time, no rate limit, no faults) the board
/// runs further ahead of the host's releases than the device's own ring allows; with any
/// fault in the spec (a stall long after the test) it keeps the device's ring.
#[test]
fn a_lossless_link_lets_the_board_run_further_ahead() {
    use tether_firmware::link::TX_CAPACITY;
    use tether_firmware::sim::SIM_DEEP_TX_CAPACITY;

    let deep = data_sent_without_release(SimConfig::default());
    assert!(
        deep > TX_CAPACITY && deep <= SIM_DEEP_TX_CAPACITY,
        "{deep} bytes of records"
    );
    let faulty = SimConfig {
        faults: "stall=1ms@1000s".parse().unwrap(),
        ..SimConfig::default()
    };
    let shallow = data_sent_without_release(faulty);
    assert!(
        shallow > 0 && shallow <= TX_CAPACITY,
        "{shallow} bytes of records"
    );
}

#[test]
fn device_reset_is_survived_by_a_fresh_hello() {
    let config = SimConfig {
        faults: "reset@1s".parse::<FaultSpec>().unwrap(),
        ..SimConfig::default()
    };
    let (host_end, handle) = board(1_000, config).spawn_memory();
    let mut host = Host::new(host_end);
    host.hello();
    host.upload(1, &spec());
    host.run(0);
    // After the power cycle the device reports itself idle.
    let mut saw_running = false;
    host.wait_for(Duration::from_secs(10), |m| match m {
        DeviceMessage::Heartbeat(h) if h.state == DeviceState::Running => {
            saw_running = true;
            None
        }
        DeviceMessage::Heartbeat(h) if saw_running && h.state == DeviceState::Idle => Some(()),
        _ => None,
    });
    assert_eq!(host.hello(), None, "the reset lost the policy");
    host.upload(2, &spec());
    host.run(1);
    let ends = host.collect_episodes(1, Duration::from_secs(10));
    assert_eq!(ends[0].policy_version, 2);
    assert_eq!(handle.stop().resets, 1);
}

#[test]
fn corrupted_bytes_cost_frames_not_the_session() {
    let config = SimConfig {
        faults: "corrupt=0.0005,drop=0.0002,dup=0.0001".parse().unwrap(),
        seed: 11,
        ..SimConfig::default()
    };
    let (host_end, handle) = board(100, config).spawn_memory();
    let mut host = Host::new(host_end);
    // Commands may be lost: retry the handshake until it answers.
    let mut answered = false;
    for _ in 0..5 {
        host.send(&HostMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        });
        let deadline = Instant::now() + Duration::from_millis(300);
        while let Some(m) = host.next(deadline.saturating_duration_since(Instant::now())) {
            if matches!(m, DeviceMessage::Hello(_)) {
                answered = true;
                break;
            }
        }
        if answered {
            break;
        }
    }
    assert!(answered);
    handle.stop();
}

#[test]
fn virtual_time_watchdog_waits_for_a_silent_host_in_real_time() {
    let config = SimConfig {
        time: TimeMode::Virtual,
        device: DeviceConfig {
            watchdog_timeout_us: 300_000,
            heartbeat_period_us: 500_000,
            action_rate_limit: None,
        },
        ..SimConfig::default()
    };
    let (host_end, handle) = board(100_000, config).spawn_memory();
    let mut host = Host::new(host_end);
    host.hello();
    host.upload(1, &spec());
    host.run(0);
    // A live host (heartbeats every 50 ms real) keeps it running for many virtual seconds.
    let started = Instant::now();
    let mut last = 0;
    host.wait_for(Duration::from_secs(10), |m| match m {
        DeviceMessage::Transitions(b) => {
            last = b.first_step;
            (b.first_step > 1_000).then_some(())
        }
        DeviceMessage::EpisodeEnd(e) => panic!("ended early: {e:?}"),
        _ => None,
    });
    assert!(last > 1_000);
    // Now the host falls silent (but keeps reading): the watchdog fires.
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        assert!(Instant::now() < deadline, "watchdog never fired");
        if let Some(DeviceMessage::EpisodeEnd(e)) = host.next(Duration::from_millis(20)) {
            break e;
        }
    };
    assert_eq!(end.reason, EpisodeEndReason::Fault);
    assert!(started.elapsed() >= Duration::from_millis(300));
    handle.stop();
}

#[test]
fn pendulum_model_runs_on_the_simulated_board() {
    let plant = tether_firmware::plant::AnyPlant::by_name("pendulum").unwrap();
    let description = plant.description();
    let spec = PolicySpec::for_plant(&description, &[32, 32], true);
    let (host_end, handle) = SimBoard::new(plant, SimConfig::default()).spawn_memory();
    let mut host = Host::new(host_end);
    assert_eq!(host.hello(), None);
    host.upload(1, &spec);
    host.run(2);
    let ends = host.collect_episodes_of_layout(
        2,
        Duration::from_secs(10),
        RecordLayout::of_plant(&description),
    );
    for e in &ends {
        assert_eq!(e.reason, EpisodeEndReason::Truncated);
        assert_eq!(e.length, description.episode_steps);
        assert_eq!(e.final_obs.len(), description.obs_dim as usize);
        assert!(e.episode_return.is_finite() && e.episode_return < 0.0);
    }
    handle.stop();
}
