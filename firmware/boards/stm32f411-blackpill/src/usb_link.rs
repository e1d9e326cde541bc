//! The device's byte link over USB CDC-ACM.
//!
//! `Device::poll` reads and writes through blocking `embedded-io` traits, used without ever
//! blocking (it asks `read_ready` / `write_ready` first); embassy-usb's CDC class is async
//! and moves 64-byte packets. Two bounded pipes ([`PIPE_BYTES`] each) sit between them:
//! [`UsbLink`] only ever `try_read`s and `try_write`s them (a full pipe means "not ready",
//! never a wait), and two tasks ([`rx_task`], [`tx_task`]) move packets between the pipes
//! and the endpoints, ending a transfer that fills its last packet with a zero-length packet
//! ([`tether_blackpill_rig::cdc_framing`]). So the control step never waits for USB: a host
//! that does not read fills the outgoing pipe, and the runtime's own queue reports the
//! overrun.

use embassy_stm32::peripherals::USB_OTG_FS;
use embassy_stm32::usb::Driver;
use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::pipe::Pipe;
use embassy_sync::signal::Signal;
use embassy_usb::class::cdc_acm::{Receiver, Sender};
use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};
use tether_blackpill_rig::cdc_framing::TxFraming;
use tether_blackpill_rig::usb_identity::MAX_PACKET;

use crate::PIPE_BYTES;

/// Bytes from the host, waiting for the device.
pub static RX_PIPE: Pipe<CriticalSectionRawMutex, PIPE_BYTES> = Pipe::new();
/// Bytes from the device, waiting for USB.
pub static TX_PIPE: Pipe<CriticalSectionRawMutex, PIPE_BYTES> = Pipe::new();
/// Raised when host bytes arrive, so the control task polls at once.
pub static RX_ARRIVED: Signal<CriticalSectionRawMutex, ()> = Signal::new();

/// The device's end of the pipes.
#[derive(Clone, Copy, Debug, Default)]
pub struct UsbLink;

impl ErrorType for UsbLink {
    type Error = core::convert::Infallible;
}

impl Read for UsbLink {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        Ok(RX_PIPE.try_read(buf).unwrap_or(0))
    }
}

impl ReadReady for UsbLink {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!RX_PIPE.is_empty())
    }
}

impl Write for UsbLink {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(TX_PIPE.try_write(buf).unwrap_or(0))
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

impl WriteReady for UsbLink {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(TX_PIPE.free_capacity() > 0)
    }
}

type UsbDriver = Driver<'static, USB_OTG_FS>;

/// Moves host packets into [`RX_PIPE`]; a host that sends faster than the device reads
/// waits here (USB's flow control: the endpoint NAKs), never the device.
pub async fn rx_task(mut receiver: Receiver<'static, UsbDriver>) -> ! {
    let mut packet = [0u8; MAX_PACKET as usize];
    loop {
        receiver.wait_connection().await;
        defmt::info!("usb: host connected");
        while let Ok(n) = receiver.read_packet(&mut packet).await {
            RX_PIPE.write_all(packet.get(..n).unwrap_or(&[])).await;
            RX_ARRIVED.signal(());
        }
        defmt::info!("usb: host gone");
    }
}

/// Sends [`TX_PIPE`]'s bytes as packets, with a zero-length packet after a transfer that
/// ends on a full one. Without a host (DTR low) the bytes are dropped as they come, so the
/// device's queue never backs up while nobody listens.
pub async fn tx_task(mut sender: Sender<'static, UsbDriver>) -> ! {
    let max = usize::from(MAX_PACKET);
    let mut packet = [0u8; MAX_PACKET as usize];
    let mut framing = TxFraming::default();
    loop {
        if framing.zlp_due(TX_PIPE.len()) {
            let _ = sender.write_packet(&[]).await;
            continue;
        }
        let n = TX_PIPE.read(&mut packet).await;
        if !sender.dtr() {
            framing = TxFraming::default();
            continue;
        }
        framing.sent(n, max);
        if sender
            .write_packet(packet.get(..n).unwrap_or(&[]))
            .await
            .is_err()
        {
            framing = TxFraming::default();
        }
    }
}
