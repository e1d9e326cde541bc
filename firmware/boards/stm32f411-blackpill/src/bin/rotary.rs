//! The rotary-pendulum image: tether's runtime on a Black Pill, talking USB CDC-ACM.
//!
//! Tasks: the USB device, the CDC receive and send pumps (`usb_link`), and the control
//! task, which polls the `Device` whenever it has timed work (its next control step,
//! heartbeat, watchdog check or settle tick, from `Device::next_wakeup_us`; embassy-time's
//! timer on TIM2 wakes it) or host bytes arrive.
//!
//! Built with the `deploy` feature (`scripts/cross.sh --deploy RUN`), the image carries a
//! trained policy and runs it from boot, episode after episode, with no host: the firmware
//! core's `deploy` module installs it through the device's own upload checks and starts a
//! deterministic run; each episode's return goes to the defmt log. A host that connects
//! (`tether probe`, `tether train`) takes the device over as usual.
#![no_std]
#![no_main]

use defmt_rtt as _;
use panic_probe as _;

use embassy_executor::Spawner;
use embassy_futures::select::select;
use embassy_stm32::gpio::{Input, Level, Output, OutputType, Pull, Speed};
use embassy_stm32::time::Hertz;
use embassy_stm32::timer::low_level::CountingMode;
use embassy_stm32::timer::qei::{Config as QeiConfig, Qei};
use embassy_stm32::timer::simple_pwm::{PwmPin, SimplePwm};
use embassy_stm32::usb::{self, Driver};
use embassy_stm32::{Config, bind_interrupts, peripherals};
use embassy_time::{Instant, Timer};
use embassy_usb::class::cdc_acm::{CdcAcmClass, State};
use embassy_usb::{Builder, UsbDevice};
use static_cell::StaticCell;
use tether_blackpill_rig::usb_identity::{self, MAX_PACKET};
use tether_board_stm32f411_blackpill::POLICY_CAPACITY;
use tether_board_stm32f411_blackpill::clock::EmbassyClock;
use tether_board_stm32f411_blackpill::encoder::TimerEncoder;
use tether_board_stm32f411_blackpill::usb_link::{self, RX_ARRIVED, UsbLink};
#[cfg(not(feature = "two-pwm"))]
use tether_firmware::plant::rotary_hal::PwmDirectionBridge;
#[cfg(feature = "two-pwm")]
use tether_firmware::plant::rotary_hal::TwoPwmBridge;
use tether_firmware::plant::rotary_hal::{DutyMapping, RotaryConfig, RotaryPendulum};
use tether_firmware::{Device, DeviceConfig};

bind_interrupts!(struct Irqs {
    OTG_FS => usb::InterruptHandler<peripherals::USB_OTG_FS>;
});

/// The motor bridge's supply and deadzone: set them for your rig (README, "Your own rig").
const MAPPING: DutyMapping = DutyMapping {
    supply_voltage: 12.0,
    deadzone_voltage: 0.0,
    reversed: false,
};

/// PWM frequency on the bridge.
const PWM_HZ: u32 = 20_000;

type PwmChannel = embassy_stm32::timer::simple_pwm::SimplePwmChannel<'static, peripherals::TIM1>;
/// PWM/DIR (PH/EN) bridges: PWM on PA8, direction on PB12.
#[cfg(not(feature = "two-pwm"))]
type Bridge = PwmDirectionBridge<PwmChannel, Output<'static>, Output<'static>>;
/// IN1/IN2 bridges (`two-pwm` feature): PWM on PA8 and PA9.
#[cfg(feature = "two-pwm")]
type Bridge = TwoPwmBridge<PwmChannel, PwmChannel, Output<'static>>;
#[cfg(not(feature = "as5600"))]
type PendulumSensor = TimerEncoder<'static, peripherals::TIM4>;
#[cfg(feature = "as5600")]
type PendulumSensor = tether_firmware::plant::rotary_hal::encoder::As5600Encoder<
    embassy_stm32::i2c::I2c<'static, embassy_stm32::mode::Blocking, embassy_stm32::i2c::Master>,
>;
type Rig = RotaryPendulum<
    Bridge,
    TimerEncoder<'static, peripherals::TIM3>,
    PendulumSensor,
    Input<'static>,
    EmbassyClock,
>;
/// The link the device talks through: the USB pipes, read for episode ends in a deploy
/// image (which reports them without a host).
#[cfg(not(feature = "deploy"))]
type RigLink = UsbLink;
#[cfg(feature = "deploy")]
type RigLink = tether_firmware::deploy::EpisodeTap<UsbLink>;
type RigDevice = Device<Rig, RigLink, EmbassyClock, POLICY_CAPACITY>;
type UsbDriver = Driver<'static, peripherals::USB_OTG_FS>;

/// 96 MHz from the 25 MHz crystal (PLL: /25, ×192, /2), 48 MHz for USB (/4).
fn clocks() -> Config {
    use embassy_stm32::rcc::{
        AHBPrescaler, APBPrescaler, Hse, HseMode, Pll, PllMul, PllPDiv, PllPreDiv, PllQDiv,
        PllSource, Sysclk,
    };
    let mut config = Config::default();
    config.rcc.hse = Some(Hse {
        freq: Hertz(25_000_000),
        mode: HseMode::Oscillator,
    });
    config.rcc.pll_src = PllSource::HSE;
    config.rcc.pll = Some(Pll {
        prediv: PllPreDiv::DIV25,
        mul: PllMul::MUL192,
        divp: Some(PllPDiv::DIV2),
        divq: Some(PllQDiv::DIV4),
        divr: None,
    });
    config.rcc.ahb_pre = AHBPrescaler::DIV1;
    config.rcc.apb1_pre = APBPrescaler::DIV2;
    config.rcc.apb2_pre = APBPrescaler::DIV1;
    config.rcc.sys = Sysclk::PLL1_P;
    config
}

#[embassy_executor::main]
async fn main(spawner: Spawner) {
    let p = embassy_stm32::init(clocks());
    defmt::info!("tether rotary pendulum, Black Pill");

    // The bridge first, off: enable low before anything else can happen.
    let enable = Output::new(p.PB13, Level::Low, Speed::Low);
    #[cfg(not(feature = "two-pwm"))]
    let bridge = {
        let direction = Output::new(p.PB12, Level::Low, Speed::Low);
        let pwm = SimplePwm::new(
            p.TIM1,
            Some(PwmPin::new(p.PA8, OutputType::PushPull)),
            None,
            None,
            None,
            Hertz(PWM_HZ),
            CountingMode::EdgeAlignedUp,
        );
        let mut channels = pwm.split();
        channels.ch1.enable();
        PwmDirectionBridge::new(channels.ch1, direction, enable, MAPPING)
    };
    #[cfg(feature = "two-pwm")]
    let bridge = {
        let pwm = SimplePwm::new(
            p.TIM1,
            Some(PwmPin::new(p.PA8, OutputType::PushPull)),
            Some(PwmPin::new(p.PA9, OutputType::PushPull)),
            None,
            None,
            Hertz(PWM_HZ),
            CountingMode::EdgeAlignedUp,
        );
        let mut channels = pwm.split();
        channels.ch1.enable();
        channels.ch2.enable();
        TwoPwmBridge::new(channels.ch1, channels.ch2, enable, MAPPING)
    };
    let arm = TimerEncoder::new(Qei::new(p.TIM3, p.PA6, p.PA7, QeiConfig::default()));
    #[cfg(not(feature = "as5600"))]
    let pendulum = TimerEncoder::new(Qei::new(p.TIM4, p.PB6, p.PB7, QeiConfig::default()));
    #[cfg(feature = "as5600")]
    let pendulum = {
        use embassy_stm32::i2c::{Config as I2cConfig, I2c};
        let mut config = I2cConfig::default();
        config.frequency = Hertz(400_000);
        tether_firmware::plant::rotary_hal::encoder::As5600Encoder::new(I2c::new_blocking(
            p.I2C1, p.PB8, p.PB9, config,
        ))
    };
    let switch = Input::new(p.PB14, Pull::Up);
    let config = rig_config();
    let Ok(rig) = RotaryPendulum::new(bridge, arm, pendulum, Some(switch), EmbassyClock, config)
    else {
        defmt::panic!("the rig's configuration cannot be used");
    };

    let (usb, class) = usb_device(p.USB_OTG_FS, p.PA12, p.PA11);
    let (sender, receiver) = class.split();
    spawner.spawn(usb_run(usb).expect("one USB task"));
    spawner.spawn(usb_rx(receiver).expect("one receive task"));
    spawner.spawn(usb_tx(sender).expect("one send task"));

    static DEVICE: StaticCell<RigDevice> = StaticCell::new();
    let device = DEVICE.init_with(|| Device::new(rig, rig_link(), EmbassyClock, device_config()));
    #[cfg(feature = "deploy")]
    let deployed = deployed::boot(device);
    #[cfg(not(feature = "deploy"))]
    let deployed = NoDeploy;
    control(device, deployed).await
}

/// The runtime's settings (watchdog, heartbeat), as for any device.
fn device_config() -> DeviceConfig {
    DeviceConfig::default()
}

#[cfg(not(feature = "deploy"))]
fn rig_link() -> RigLink {
    UsbLink
}

#[cfg(feature = "deploy")]
fn rig_link() -> RigLink {
    tether_firmware::deploy::EpisodeTap::new(UsbLink)
}

/// An image without a built-in policy: nothing to do between polls.
#[cfg(not(feature = "deploy"))]
struct NoDeploy;

#[cfg(not(feature = "deploy"))]
impl NoDeploy {
    fn after_poll(&mut self, _device: &mut RigDevice) {}
}

/// The built-in policy (`deploy` feature): boot and per-poll bookkeeping.
#[cfg(feature = "deploy")]
mod deployed {
    use tether_firmware::deploy::{BuiltInPolicy, Standalone};

    use super::{RigDevice, device_config};

    mod built_in {
        // The wrapper scripts/cross.sh --deploy writes: `SPEC_POSTCARD` and `PARAMS` from
        // `tether export --format rust`.
        include!(env!("TETHER_DEPLOY_POLICY"));
    }

    /// Run seed of the built-in run. A deterministic policy on a real rig draws nothing
    /// from it (the rig starts where it is); fixed so a log names one run.
    const SEED: u64 = 0;

    /// The standalone run, or none if the policy was refused (then the device waits for a
    /// host, as an image without one does).
    pub struct Deployed(Option<Standalone>);

    /// Installs the built-in policy and starts it for ever (0 episodes: until a host
    /// speaks).
    pub fn boot(device: &mut RigDevice) -> Deployed {
        let policy = BuiltInPolicy {
            spec_postcard: &built_in::SPEC_POSTCARD,
            params: &built_in::PARAMS,
        };
        match Standalone::boot(
            device,
            &policy,
            0,
            SEED,
            device_config().watchdog_timeout_us,
        ) {
            Ok(run) => Deployed(Some(run)),
            Err(e) => {
                defmt::error!("deploy: the built-in policy cannot run: {}", e);
                Deployed(None)
            }
        }
    }

    impl Deployed {
        /// Hands over to a host once one speaks; logs each finished episode's return.
        pub fn after_poll(&mut self, device: &mut RigDevice) {
            let Some(run) = self.0.as_mut() else {
                return;
            };
            run.after_poll(device);
            while let Some(end) = device.link_io_mut().take_end() {
                defmt::info!(
                    "deploy: episode {} return {} length {} {}",
                    end.episode,
                    end.episode_return,
                    end.length,
                    end.reason
                );
            }
        }
    }
}

/// The rig's settings (README, "Your own rig": arm limit, speeds, zeroing).
fn rig_config() -> RotaryConfig {
    RotaryConfig {
        // 2048-count encoders on both axes (512 lines, ×4), as on the QUBE-Servo 2.
        #[cfg(feature = "as5600")]
        pendulum_counts_per_rev: tether_firmware::plant::rotary_hal::encoder::AS5600_COUNTS_PER_REV,
        ..RotaryConfig::qube_class()
    }
}

/// The control loop: poll, then sleep until the device's next timed work or host bytes.
async fn control(
    device: &'static mut RigDevice,
    #[cfg(feature = "deploy")] mut deployed: deployed::Deployed,
    #[cfg(not(feature = "deploy"))] mut deployed: NoDeploy,
) -> ! {
    loop {
        device.poll();
        deployed.after_poll(device);
        let mut wake = device.next_wakeup_us();
        if device.tx_pending() > 0 {
            // Bytes wait for room in the USB pipe: look again soon.
            wake = wake.min(Instant::now().as_micros() + 1_000);
        }
        select(Timer::at(Instant::from_micros(wake)), RX_ARRIVED.wait()).await;
    }
}

/// The USB device with one CDC-ACM interface; serial number = the chip's unique ID.
fn usb_device(
    otg: embassy_stm32::Peri<'static, peripherals::USB_OTG_FS>,
    dp: embassy_stm32::Peri<'static, peripherals::PA12>,
    dm: embassy_stm32::Peri<'static, peripherals::PA11>,
) -> (
    UsbDevice<'static, UsbDriver>,
    CdcAcmClass<'static, UsbDriver>,
) {
    static EP_OUT: StaticCell<[u8; 256]> = StaticCell::new();
    static SERIAL: StaticCell<[u8; usb_identity::SERIAL_LEN]> = StaticCell::new();
    static CONFIG_DESC: StaticCell<[u8; 256]> = StaticCell::new();
    static BOS_DESC: StaticCell<[u8; 256]> = StaticCell::new();
    static CONTROL_BUF: StaticCell<[u8; 64]> = StaticCell::new();
    static CDC_STATE: StaticCell<State> = StaticCell::new();

    let mut otg_config = usb::Config::default();
    // The Black Pill does not wire VBUS to PA9: the board is bus-powered, so it is present.
    otg_config.vbus_detection = false;
    let driver = Driver::new_fs(otg, Irqs, dp, dm, EP_OUT.init([0; 256]), otg_config);

    let serial = SERIAL.init(usb_identity::serial_number(&embassy_stm32::uid::uid()));
    let mut config = embassy_usb::Config::new(usb_identity::VENDOR_ID, usb_identity::PRODUCT_ID);
    config.manufacturer = Some(usb_identity::MANUFACTURER);
    config.product = Some(usb_identity::PRODUCT);
    config.serial_number = Some(usb_identity::serial_str(serial));
    config.max_power = usb_identity::MAX_POWER_MA;
    config.max_packet_size_0 = MAX_PACKET as u8;

    let mut builder = Builder::new(
        driver,
        config,
        CONFIG_DESC.init([0; 256]),
        BOS_DESC.init([0; 256]),
        &mut [],
        CONTROL_BUF.init([0; 64]),
    );
    let class = CdcAcmClass::new(&mut builder, CDC_STATE.init(State::new()), MAX_PACKET);
    (builder.build(), class)
}

#[embassy_executor::task]
async fn usb_run(mut usb: UsbDevice<'static, UsbDriver>) -> ! {
    usb.run().await
}

#[embassy_executor::task]
async fn usb_rx(receiver: embassy_usb::class::cdc_acm::Receiver<'static, UsbDriver>) -> ! {
    usb_link::rx_task(receiver).await
}

#[embassy_executor::task]
async fn usb_tx(sender: embassy_usb::class::cdc_acm::Sender<'static, UsbDriver>) -> ! {
    usb_link::tx_task(sender).await
}
