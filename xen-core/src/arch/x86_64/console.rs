//! The hypervisor console: serial output with the "(XEN) " prefix, a log ring dom0 can
//! read (`dmesg`), and a small input buffer that feeds `CONSOLEIO_read`.

use crate::log::{LogLevel, LogRing};
use core::fmt::{self, Write};
use spin::Mutex;

/// Size of the log ring (Xen's default `conring_size` is 16 KiB; rxen keeps more).
pub const LOG_RING_SIZE: usize = 64 * 1024;

/// The console state, shared by every writer.
pub struct Console {
    /// Everything printed, for `dmesg`.
    pub ring: LogRing<LOG_RING_SIZE>,
    at_line_start: bool,
    /// Messages above this level are not printed (but still kept in the ring).
    pub level: LogLevel,
    /// Serial input not yet read by dom0.
    pub input: arrayvec::ArrayVec<u8, 1024>,
}

/// The one console.
pub static CONSOLE: Mutex<Console> = Mutex::new(Console {
    ring: LogRing::new(),
    at_line_start: true,
    level: LogLevel::Debug,
    input: arrayvec::ArrayVec::new_const(),
});

struct Writer<'a> {
    c: &'a mut Console,
    prefix: &'static str,
    to_serial: bool,
}

impl Write for Writer<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.c.at_line_start && !self.prefix.is_empty() {
                for &p in self.prefix.as_bytes() {
                    self.emit(p);
                }
            }
            self.c.at_line_start = b == b'\n';
            self.emit(b);
        }
        Ok(())
    }
}

impl Writer<'_> {
    fn emit(&mut self, b: u8) {
        self.c.ring.push(&[b]);
        if self.to_serial {
            if b == b'\n' {
                super::serial::put_byte(b'\r');
            }
            super::serial::put_byte(b);
        }
    }
}

/// Prints a hypervisor message at `level` (prefixed "(XEN) " on each line).
pub fn log(level: LogLevel, args: fmt::Arguments) {
    let mut c = CONSOLE.lock();
    let to_serial = level <= c.level;
    let mut w = Writer {
        c: &mut c,
        prefix: "(XEN) ",
        to_serial,
    };
    let _ = w.write_fmt(args);
}

/// Writes a guest's console output (`CONSOLEIO_write`) to the serial line as is. It is
/// not kept in the log ring: `dmesg` shows the hypervisor's own messages, and dom0's
/// shell output (prompts included) would otherwise come back in every `dmesg`.
pub fn guest_write(bytes: &[u8]) {
    let mut c = CONSOLE.lock();
    for &b in bytes {
        // Keep the console readable: drop control bytes a terminal does not need.
        let printable = matches!(b, b'\n' | b'\r' | b'\t' | 0x08 | 0x1b | 0x07) || b >= 0x20;
        if printable && b != 0x7f {
            c.at_line_start = b == b'\n';
            if b == b'\n' {
                super::serial::put_byte(b'\r');
            }
            super::serial::put_byte(b);
        }
    }
}

/// Moves bytes waiting in the UART into the input buffer. Returns true if any arrived.
pub fn poll_input() -> bool {
    let mut got = false;
    let mut c = CONSOLE.lock();
    // Leave bytes in the UART (and QEMU's backend) while dom0 has not read the buffer.
    while !c.input.is_full() {
        let Some(b) = super::serial::try_get_byte() else {
            break;
        };
        c.input.push(b);
        got = true;
    }
    got
}

/// Takes up to `out.len()` bytes of serial input.
pub fn read_input(out: &mut [u8]) -> usize {
    let mut c = CONSOLE.lock();
    let n = out.len().min(c.input.len());
    for (i, b) in c.input.drain(..n).enumerate() {
        if let Some(o) = out.get_mut(i) {
            *o = b;
        }
    }
    n
}

/// `printk!`-style macros.
#[macro_export]
macro_rules! xinfo { ($($a:tt)*) => { $crate::arch::x86_64::console::log($crate::log::LogLevel::Info, format_args!($($a)*)) } }
/// Warning-level message.
#[macro_export]
macro_rules! xwarn { ($($a:tt)*) => { $crate::arch::x86_64::console::log($crate::log::LogLevel::Warning, format_args!($($a)*)) } }
/// Error-level message.
#[macro_export]
macro_rules! xerr { ($($a:tt)*) => { $crate::arch::x86_64::console::log($crate::log::LogLevel::Error, format_args!($($a)*)) } }
/// Debug-level message.
#[macro_export]
macro_rules! xdebug { ($($a:tt)*) => { $crate::arch::x86_64::console::log($crate::log::LogLevel::Debug, format_args!($($a)*)) } }
