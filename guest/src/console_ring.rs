//! A domU's primary console: Xen's console ring (`struct xencons_interface`,
//! `xen/include/public/io/console.h`, ABI.md §5.4) in the page `start_info.console.domU.mfn`,
//! notified through `console.domU.evtchn`; the console backend in dom0 drains `out[]` and
//! fills `in[]` (Linux `hvc_xen.c`, Mini-OS `console/xencons_ring.c` are the guest-side
//! references).
//!
//! * [`ConsoleRing`]: the portable ring logic (host-tested): output into `out[]`, input from
//!   `in[]`, with the indices checked as Linux does (`out_prod - out_cons` never above 2048).
//! * The kernel console: [`init`] finds the page in the initial mapping; [`write_bytes`]
//!   writes, notifies, and waits (bounded) for the backend while the ring is full;
//!   [`ring_print!`](crate::ring_print) / [`ring_println!`](crate::ring_println) format to
//!   it, turning `\n` into `\r\n` as Mini-OS does so that a terminal attached with
//!   `xl console` shows lines. Before [`init`], or if the ring turns out corrupt, output
//!   goes to the hypervisor console (`console_io`) instead; [`set_mirror`] also copies
//!   every write there.

use core::fmt::{self, Write};

use spin::Mutex;
use xen_abi::xen::StartInfo;

use crate::shared_page::{Consumer, Producer, RingIndexError, SharedPage, StreamLayout};

/// Offset and size of `in[]` (backend → guest).
pub const IN_OFFSET: usize = 0;
/// Size of `in[]`.
pub const IN_SIZE: u32 = 1024;
/// Offset of `out[]` (guest → backend).
pub const OUT_OFFSET: usize = 1024;
/// Size of `out[]`.
pub const OUT_SIZE: u32 = 2048;
/// Offset of `in_cons` (written by the guest).
pub const IN_CONS: usize = 3072;
/// Offset of `in_prod` (written by the backend).
pub const IN_PROD: usize = 3076;
/// Offset of `out_cons` (written by the backend).
pub const OUT_CONS: usize = 3080;
/// Offset of `out_prod` (written by the guest).
pub const OUT_PROD: usize = 3084;

const OUT: StreamLayout = StreamLayout {
    data: OUT_OFFSET,
    size: OUT_SIZE,
    cons: OUT_CONS,
    prod: OUT_PROD,
};
const IN: StreamLayout = StreamLayout {
    data: IN_OFFSET,
    size: IN_SIZE,
    cons: IN_CONS,
    prod: IN_PROD,
};

/// The guest end of a console ring page.
#[derive(Clone, Copy, Debug)]
pub struct ConsoleRing {
    out: Producer,
    input: Consumer,
}

impl ConsoleRing {
    /// The guest end of the ring in `page`, continuing from the indices found there.
    pub fn new(page: SharedPage) -> ConsoleRing {
        ConsoleRing {
            out: Producer::new(page, OUT),
            input: Consumer::new(page, IN),
        }
    }

    /// Queue as much of `data` as fits in `out[]`; returns the number of bytes. Notify the
    /// backend when it is non-zero.
    pub fn write(&mut self, data: &[u8]) -> Result<usize, RingIndexError> {
        self.out.write(data)
    }

    /// Output bytes the backend has not consumed yet.
    pub fn out_queued(&self) -> Result<u32, RingIndexError> {
        self.out.queued()
    }

    /// Take up to `buf.len()` bytes of input from `in[]`; notify the backend when non-zero.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, RingIndexError> {
        self.input.read(buf)
    }
}

// ---------------------------------------------------------------------------------------
// The kernel console.

/// Why [`init`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitError {
    /// start_info names no console page or event channel (dom0, or a builder without one).
    NoConsole,
    /// The page is not in the initial mapping.
    NotMapped,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitError::NoConsole => "start_info has no console ring",
            InitError::NotMapped => "console ring page not in the initial mapping",
        })
    }
}

/// How long a write waits for the backend to make room before the rest is dropped. After
/// one such timeout the console does not wait again until a write completes without
/// waiting, so a missing backend costs one timeout, not one per line.
pub const FULL_WAIT_NS: u64 = 200_000_000;

struct Console {
    ring: ConsoleRing,
    port: u32,
    /// Copy output to `console_io` as well.
    mirror: bool,
    /// The backend did not drain the ring in time: write what fits, don't wait.
    stalled: bool,
    /// The ring's indices were found corrupt: use `console_io` only.
    broken: bool,
    dropped: u64,
}

static CONSOLE: Mutex<Option<Console>> = Mutex::new(None);

/// Find the console ring from start_info and send all further output there.
pub fn init(si: &StartInfo) -> Result<(), InitError> {
    let (mfn, port) = si.console_domu();
    if mfn == 0 || port == 0 {
        return Err(InitError::NoConsole);
    }
    let page = crate::shared_page::ring_page(si, mfn).ok_or(InitError::NotMapped)?;
    // Polled only (SCHEDOP_poll) while waiting for room: keep it from raising upcalls.
    crate::events::mask(port);
    *CONSOLE.lock() = Some(Console {
        ring: ConsoleRing::new(page),
        port,
        mirror: false,
        stalled: false,
        broken: false,
        dropped: 0,
    });
    Ok(())
}

/// Whether output goes to the ring.
pub fn is_ready() -> bool {
    CONSOLE.lock().as_ref().is_some_and(|c| !c.broken)
}

/// The console event channel (None before [`init`]).
pub fn port() -> Option<u32> {
    CONSOLE.lock().as_ref().map(|c| c.port)
}

/// Also copy every write to the hypervisor console (`console_io`).
pub fn set_mirror(on: bool) {
    if let Some(c) = CONSOLE.lock().as_mut() {
        c.mirror = on;
    }
}

/// Output bytes dropped because the backend did not make room in time.
pub fn dropped() -> u64 {
    CONSOLE.lock().as_ref().map_or(0, |c| c.dropped)
}

fn wait_for_room(port: u32, deadline: u64) {
    if crate::sched::poll(&[port], deadline).is_err() {
        crate::sched::yield_now();
    }
    crate::shared::test_and_clear_pending(port);
}

impl Console {
    fn write(&mut self, mut data: &[u8]) {
        let mut deadline = None;
        while !data.is_empty() {
            let n = match self.ring.write(data) {
                Ok(n) => n,
                Err(e) => {
                    self.broken = true;
                    crate::println!(
                        "console ring: corrupt indices (prod {:#x} cons {:#x}); using console_io",
                        e.prod,
                        e.cons
                    );
                    crate::console::write_bytes(data);
                    return;
                }
            };
            if n > 0 {
                let _ = crate::events::send(self.port);
                data = &data[n..];
                continue;
            }
            let now = crate::time::now_ns();
            let until = *deadline.get_or_insert(now.saturating_add(FULL_WAIT_NS));
            if self.stalled || now >= until {
                self.stalled = true;
                self.dropped += data.len() as u64;
                return;
            }
            wait_for_room(self.port, until);
        }
        if deadline.is_none() {
            self.stalled = false;
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> usize {
        match self.ring.read(buf) {
            Ok(n) => {
                if n > 0 {
                    let _ = crate::events::send(self.port);
                }
                n
            }
            Err(_) => 0,
        }
    }
}

/// Write bytes to the console ring (or to `console_io` before [`init`] or if the ring is
/// unusable).
pub fn write_bytes(data: &[u8]) {
    // try_lock: a panic while printing must still get its message out.
    match CONSOLE.try_lock() {
        Some(mut g) => match g.as_mut() {
            Some(c) if !c.broken => {
                if c.mirror {
                    crate::console::write_bytes(data);
                }
                c.write(data);
            }
            _ => crate::console::write_bytes(data),
        },
        None => crate::console::write_bytes(data),
    }
}

/// Wait up to `timeout_ns` until the backend has consumed all output (before shutting
/// down, so the last lines are not lost with the ring). True if it did.
pub fn drain(timeout_ns: u64) -> bool {
    let mut g = CONSOLE.lock();
    let Some(c) = g.as_mut().filter(|c| !c.broken) else {
        return false;
    };
    let deadline = crate::time::now_ns().saturating_add(timeout_ns);
    loop {
        match c.ring.out_queued() {
            Ok(0) => return true,
            Ok(_) if crate::time::now_ns() < deadline => wait_for_room(c.port, deadline),
            _ => return false,
        }
    }
}

/// Read pending console input (0 if none or before [`init`]).
pub fn read(buf: &mut [u8]) -> usize {
    CONSOLE.lock().as_mut().map_or(0, |c| c.read(buf))
}

/// Collects one `ring_print!` (with `\n` → `\r\n`) and writes it with few notifications.
struct LineWriter {
    buf: [u8; 256],
    len: usize,
}

impl LineWriter {
    fn push(&mut self, b: u8) {
        if self.len == self.buf.len() {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn flush(&mut self) {
        write_bytes(&self.buf[..self.len]);
        self.len = 0;
    }
}

impl Write for LineWriter {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if b == b'\n' {
                self.push(b'\r');
            }
            self.push(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut w = LineWriter {
        buf: [0; 256],
        len: 0,
    };
    let _ = w.write_fmt(args);
    w.flush();
}

/// Print to the console ring (see [`console_ring`](crate::console_ring)).
#[macro_export]
macro_rules! ring_print {
    ($($arg:tt)*) => { $crate::console_ring::_print(format_args!($($arg)*)) };
}

/// Print a line to the console ring (see [`console_ring`](crate::console_ring)).
#[macro_export]
macro_rules! ring_println {
    () => { $crate::ring_print!("\n") };
    ($($arg:tt)*) => {
        $crate::console_ring::_print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend's view of the same page.
    struct Backend {
        out: Consumer,
        input: Producer,
    }

    fn setup() -> (SharedPage, ConsoleRing, Backend) {
        let p = SharedPage::leak_host_page();
        let b = Backend {
            out: Consumer::new(p, OUT),
            input: Producer::new(p, IN),
        };
        (p, ConsoleRing::new(p), b)
    }

    fn drain(b: &mut Backend) -> Vec<u8> {
        let mut v = vec![0; 4096];
        let n = b.out.read(&mut v).unwrap();
        v.truncate(n);
        v
    }

    #[test]
    fn layout_matches_console_h() {
        assert_eq!((OUT_OFFSET, OUT_SIZE as usize), (1024, 2048));
        assert_eq!(
            (IN_CONS, IN_PROD, OUT_CONS, OUT_PROD),
            (3072, 3076, 3080, 3084)
        );
        let (p, mut r, _) = setup();
        r.write(b"hi").unwrap();
        let mut b = [0; 2];
        p.read_bytes(1024, &mut b);
        assert_eq!(&b, b"hi");
        assert_eq!(p.load_u32(3084), 2);
    }

    #[test]
    fn output_wraps_and_fills() {
        let (_, mut r, mut b) = setup();
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for i in 0..5000u32 {
            let line = format!("line {i}\r\n");
            let n = r.write(line.as_bytes()).unwrap();
            sent.extend_from_slice(&line.as_bytes()[..n]);
            if n < line.len() || i % 97 == 0 {
                got.extend(drain(&mut b));
                let m = r.write(&line.as_bytes()[n..]).unwrap();
                assert_eq!(m, line.len() - n);
                sent.extend_from_slice(&line.as_bytes()[n..]);
            }
        }
        got.extend(drain(&mut b));
        assert_eq!(got, sent);
    }

    #[test]
    fn full_ring_accepts_nothing_more() {
        let (_, mut r, mut b) = setup();
        assert_eq!(r.write(&[b'a'; 3000]), Ok(2048));
        assert_eq!(r.out_queued(), Ok(2048));
        assert_eq!(r.write(b"b"), Ok(0));
        assert_eq!(drain(&mut b).len(), 2048);
        assert_eq!(r.write(b"b"), Ok(1));
    }

    #[test]
    fn input_is_read_in_order() {
        let (_, mut r, mut b) = setup();
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf), Ok(0));
        for round in 0..300u32 {
            let s = format!("k{round}");
            assert_eq!(b.input.write(s.as_bytes()), Ok(s.len()));
            let n = r.read(&mut buf).unwrap();
            assert_eq!(&buf[..n], s.as_bytes());
        }
    }

    #[test]
    fn hostile_backend_indices() {
        let (p, mut r, _) = setup();
        // out_cons beyond out_prod: Linux gives up on such a ring; so do we.
        p.store_u32(OUT_CONS, 10);
        assert!(r.write(b"x").is_err());
        assert!(r.out_queued().is_err());
        // in_prod more than 1024 ahead of in_cons.
        p.store_u32(IN_PROD, 1025);
        let mut buf = [0u8; 16];
        assert_eq!(
            r.read(&mut buf),
            Err(RingIndexError {
                prod: 1025,
                cons: 0
            })
        );
        // A backend that rewinds in_cons/out_prod cannot confuse us: we own those.
        p.store_u32(OUT_CONS, 0);
        p.store_u32(OUT_PROD, 2000);
        p.store_u32(IN_PROD, 3);
        p.store_u32(IN_CONS, 77);
        assert_eq!(r.write(b"yz"), Ok(2));
        assert_eq!(p.load_u32(OUT_PROD), 2);
        assert_eq!(r.read(&mut buf), Ok(3));
        assert_eq!(p.load_u32(IN_CONS), 3);
    }
}
