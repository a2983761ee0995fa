//! The hypervisor console (`console_io`, hypercall 18): output for every kernel, input for
//! dom0 (serial input is announced with VIRQ_CONSOLE and read with `CONSOLEIO_read`).

use core::fmt::{self, Write};

use crate::arch::hypercall;

/// Write bytes to the hypervisor console (errors are ignored: there is nowhere to report).
pub fn write_bytes(mut bytes: &[u8]) {
    // Bounded chunks keep each hypercall short.
    while !bytes.is_empty() {
        let n = bytes.len().min(1024);
        let _ = hypercall::console_write(&bytes[..n]);
        bytes = &bytes[n..];
    }
}

/// Read pending console input into `buf`; returns the number of bytes (0 if none).
pub fn read(buf: &mut [u8]) -> usize {
    hypercall::console_read(buf).unwrap_or(0)
}

/// A stack buffer that collects one `print!` and flushes it with as few hypercalls as
/// possible (a hypervisor may prefix each write of a domU's output).
pub struct BufWriter {
    buf: [u8; 256],
    len: usize,
}

impl BufWriter {
    /// An empty buffer.
    pub const fn new() -> BufWriter {
        BufWriter {
            buf: [0; 256],
            len: 0,
        }
    }

    /// Write out what is buffered.
    pub fn flush(&mut self) {
        write_bytes(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Default for BufWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl Write for BufWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut b = s.as_bytes();
        while !b.is_empty() {
            if self.len == self.buf.len() {
                self.flush();
            }
            let n = b.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&b[..n]);
            self.len += n;
            b = &b[n..];
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut w = BufWriter::new();
    let _ = w.write_fmt(args);
    w.flush();
}

/// Print to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::_print(format_args!($($arg)*)) };
}

/// Print a line to the hypervisor console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
