//! A polling driver for the CMSDK APB UART (ARM's Cortex-M System Design Kit), as on the
//! MPS2 boards: the byte link of the `embedded-io` seam, never blocking once its
//! `*_ready` methods said yes.
//!
//! Registers (32 bits each, from the base address):
//!
//! | offset | name | use here |
//! | --- | --- | --- |
//! | 0x00 | DATA | read: the received byte; write: the byte to send |
//! | 0x04 | STATE | bit 0 TX buffer full, bit 1 RX buffer full (bits 2–3 overruns, write 1 to clear) |
//! | 0x08 | CTRL | bit 0 TX enable, bit 1 RX enable (interrupts stay off: polled) |
//! | 0x10 | BAUDDIV | baud divisor, at least 16 |
//!
//! The hardware holds one byte each way. QEMU's model transmits nothing unless both
//! enables are set and `BAUDDIV ≥ 16` (it checks the divisor, though it does not pace the
//! bytes), and it keeps received bytes in its character device until the guest has read
//! the previous one, so polling loses nothing on the receive side.

use core::ptr::{read_volatile, write_volatile};

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};

/// Base address of UART0 on QEMU's mps2-an385/an386 machines (the one `-serial` connects).
pub const UART0_BASE: usize = 0x4000_4000;

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const BAUDDIV: usize = 0x10;

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const STATE_OVERRUNS: u32 = (1 << 2) | (1 << 3);
const CTRL_TX_RX_ENABLE: u32 = 0b11;

/// The smallest divisor the CMSDK UART accepts.
pub const MIN_BAUDDIV: u32 = 16;

/// One CMSDK APB UART, polled.
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// Enables transmit and receive at `baud` bits per second from a `clock_hz` peripheral
    /// clock (the divisor is clamped to at least [`MIN_BAUDDIV`]).
    ///
    /// # Safety
    ///
    /// `base` must be the address of a CMSDK APB UART that nothing else uses for as long as
    /// the returned value lives.
    pub unsafe fn new(base: usize, clock_hz: u32, baud: u32) -> Self {
        let uart = CmsdkUart { base };
        let divisor = (clock_hz / baud.max(1)).max(MIN_BAUDDIV);
        uart.write_reg(CTRL, 0);
        uart.write_reg(BAUDDIV, divisor);
        uart.write_reg(STATE, STATE_OVERRUNS);
        uart.write_reg(CTRL, CTRL_TX_RX_ENABLE);
        uart
    }

    fn read_reg(&self, offset: usize) -> u32 {
        // SAFETY: `new`'s contract: `base` is this UART's register block.
        unsafe { read_volatile((self.base + offset) as *const u32) }
    }

    fn write_reg(&self, offset: usize, value: u32) {
        // SAFETY: as in `read_reg`.
        unsafe { write_volatile((self.base + offset) as *mut u32, value) }
    }

    fn rx_full(&self) -> bool {
        self.read_reg(STATE) & STATE_RX_FULL != 0
    }

    fn tx_full(&self) -> bool {
        self.read_reg(STATE) & STATE_TX_FULL != 0
    }
}

impl ErrorType for CmsdkUart {
    type Error = core::convert::Infallible;
}

impl ReadReady for CmsdkUart {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(self.rx_full())
    }
}

impl Read for CmsdkUart {
    /// Takes the bytes waiting now (at least one: it waits for the first, as `Read`
    /// requires, which never happens after `read_ready` said yes).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.rx_full() {
            core::hint::spin_loop();
        }
        let mut n = 0;
        for slot in buf.iter_mut() {
            if !self.rx_full() {
                break;
            }
            *slot = self.read_reg(DATA) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl WriteReady for CmsdkUart {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.tx_full())
    }
}

impl Write for CmsdkUart {
    /// Hands over the bytes the transmitter takes now (at least one: it waits for room for
    /// the first, which never happens after `write_ready` said yes).
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.tx_full() {
            core::hint::spin_loop();
        }
        let mut n = 0;
        for &byte in buf {
            if self.tx_full() {
                break;
            }
            self.write_reg(DATA, u32::from(byte));
            n += 1;
        }
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        while self.tx_full() {
            core::hint::spin_loop();
        }
        Ok(())
    }
}
