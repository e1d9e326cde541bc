//! The device's byte link: UART0 both ways, or, for the benchmark, host messages replayed
//! from a [`Script`] in place of what UART0 receives while replies still go out on UART0.
//!
//! One type for both uses, so the image holds one copy of the device runtime.

use embedded_io::{ErrorType, Read, ReadReady, Write, WriteReady};

use crate::script::Script;
use crate::uart::CmsdkUart;

/// UART0, with its receive side optionally replaced by a script.
pub struct BoardLink<'s> {
    uart: CmsdkUart,
    script: Option<&'s mut Script>,
}

impl<'s> BoardLink<'s> {
    /// The UART both ways.
    pub fn uart(uart: CmsdkUart) -> Self {
        BoardLink { uart, script: None }
    }

    /// Gives the UART back.
    pub fn into_uart(self) -> CmsdkUart {
        self.uart
    }

    /// Host messages from `script`, device messages to the UART.
    pub fn scripted(uart: CmsdkUart, script: &'s mut Script) -> Self {
        BoardLink {
            uart,
            script: Some(script),
        }
    }
}

impl ErrorType for BoardLink<'_> {
    type Error = core::convert::Infallible;
}

impl ReadReady for BoardLink<'_> {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        match self.script.as_deref_mut() {
            Some(script) => Ok(!script.is_done()),
            None => self.uart.read_ready(),
        }
    }
}

impl Read for BoardLink<'_> {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        match self.script.as_deref_mut() {
            Some(script) => Ok(script.read(buf)),
            None => self.uart.read(buf),
        }
    }
}

impl WriteReady for BoardLink<'_> {
    fn write_ready(&mut self) -> Result<bool, Self::Error> {
        self.uart.write_ready()
    }
}

impl Write for BoardLink<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.uart.write(buf)
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        self.uart.flush()
    }
}
