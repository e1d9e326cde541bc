//! Deploy images: the policy built into the image (`scripts/cross.sh --deploy RUN`) runs
//! with nothing attached to the UART, through the firmware core's [`deploy`] module; each
//! episode's return is printed over semihosting as
//!
//! ```text
//! deploy: episode <id> return <value> bits <0x…> length <steps> <reason>
//! ```
//!
//! and after `episodes=N` of them (if N > 0) `deploy: done`, then QEMU exits with status 0.
//! A deploy image does this from boot (for ever) even without the `deploy` word.
//! A host that connects to the UART takes the device over (handshake, probe, upload, run).
//!
//! [`deploy`]: tether_firmware::deploy

use cortex_m_semihosting::{debug, hprintln};
use tether_firmware::deploy::{BuiltInPolicy, EpisodeTap, Standalone};
use tether_firmware::plant::Plant;
use tether_firmware::{Device, DeviceConfig};

use crate::clock::{BoardClock, TimeSource};
use crate::fault;
use crate::link::BoardLink;
use crate::serve::FreeRunning;
use crate::uart::CmsdkUart;
use crate::{NOISE_CAPACITY, POLICY_CAPACITY};

#[cfg(feature = "deploy")]
mod built_in {
    // The wrapper scripts/cross.sh --deploy writes: `SPEC_POSTCARD` and `PARAMS` from
    // `tether export --format rust`.
    include!(env!("TETHER_DEPLOY_POLICY"));
}

/// The image's built-in policy, if it was built with one.
fn built_in_policy() -> Option<BuiltInPolicy> {
    #[cfg(feature = "deploy")]
    {
        Some(BuiltInPolicy {
            spec_postcard: &built_in::SPEC_POSTCARD,
            params: &built_in::PARAMS,
        })
    }
    #[cfg(not(feature = "deploy"))]
    {
        None
    }
}

/// The run a deploy image starts at boot when its command line names none: episodes for
/// ever, run seed 0. `None` for an image without a built-in policy.
pub fn boot_run() -> Option<(u32, u64)> {
    built_in_policy().map(|_| (0, 0))
}

/// Runs the built-in policy for `episodes` (0: for ever) with run seed `seed`.
pub fn serve<P: Plant>(plant: P, uart: CmsdkUart, real_time: bool, episodes: u32, seed: u64) -> ! {
    let Some(policy) = built_in_policy() else {
        fault::fail(format_args!(
            "this image has no built-in policy: build one with scripts/cross.sh --deploy RUN"
        ))
    };
    let source = if real_time {
        TimeSource::SysTick
    } else {
        TimeSource::Virtual
    };
    let clock = BoardClock::new(source);
    let config = DeviceConfig::default();
    let link = EpisodeTap::new(BoardLink::uart(uart));
    let mut device: Device<
        P,
        EpisodeTap<BoardLink<'_>>,
        &BoardClock,
        POLICY_CAPACITY,
        NOISE_CAPACITY,
    > = Device::new(plant, link, &clock, config);
    let mut standalone = match Standalone::boot(
        &mut device,
        &policy,
        episodes,
        seed,
        config.watchdog_timeout_us,
    ) {
        Ok(s) => s,
        Err(e) => fault::fail(format_args!("the built-in policy cannot run: {:?}", e)),
    };
    let mut free = FreeRunning::new();
    let mut reported = 0u32;
    loop {
        device.poll();
        standalone.after_poll(&mut device);
        while let Some(end) = device.link_io_mut().take_end() {
            hprintln!(
                "deploy: episode {} return {} bits {:#010x} length {} {:?}",
                end.episode,
                end.episode_return,
                end.episode_return.to_bits(),
                end.length,
                end.reason
            );
            reported += 1;
        }
        if episodes != 0 && reported >= episodes && !standalone.host_arrived() {
            hprintln!("deploy: done");
            debug::exit(debug::EXIT_SUCCESS);
        }
        if source == TimeSource::Virtual {
            free.advance(&mut device, &clock);
        }
    }
}
