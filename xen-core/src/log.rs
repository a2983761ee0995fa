//! The hypervisor's log ring: every console line is also kept here so that dom0 can read
//! it later (Xen's console ring, read with `XEN_SYSCTL_readconsole` / `xl dmesg`).

/// Log verbosity, as Xen's `loglvl=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Something went wrong in the hypervisor or a domain.
    Error = 0,
    /// Unusual but handled.
    Warning = 1,
    /// Normal progress messages.
    Info = 2,
    /// Developer detail.
    Debug = 3,
}

impl LogLevel {
    /// Parses a `loglvl=` value as Xen names them.
    pub fn parse(s: &str) -> Option<LogLevel> {
        match s {
            "none" | "error" => Some(LogLevel::Error),
            "warning" => Some(LogLevel::Warning),
            "info" => Some(LogLevel::Info),
            "all" | "debug" => Some(LogLevel::Debug),
            _ => None,
        }
    }
}

/// A byte ring holding the most recent `N` bytes of console output. Positions are
/// absolute byte counts since boot, so a reader can ask for "everything after `index`"
/// and learn when the ring has overwritten what it had not read yet.
pub struct LogRing<const N: usize> {
    buf: [u8; N],
    /// Total bytes ever written.
    written: u64,
    /// Position before which content was cleared.
    floor: u64,
}

impl<const N: usize> LogRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        LogRing {
            buf: [0; N],
            written: 0,
            floor: 0,
        }
    }

    /// Appends bytes, overwriting the oldest ones when full.
    pub fn push(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let pos = (self.written % N as u64) as usize;
            if let Some(slot) = self.buf.get_mut(pos) {
                *slot = b;
            }
            self.written = self.written.wrapping_add(1);
        }
    }

    /// Oldest absolute position still held.
    pub fn start(&self) -> u64 {
        self.written.saturating_sub(N as u64).max(self.floor)
    }

    /// Absolute position one past the newest byte.
    pub fn end(&self) -> u64 {
        self.written
    }

    /// Copies bytes from absolute position `from` (clamped to what the ring still holds)
    /// into `out`. Returns (bytes copied, next position).
    pub fn read(&self, from: u64, out: &mut [u8]) -> (usize, u64) {
        let mut pos = from.max(self.start());
        let mut n = 0;
        for slot in out.iter_mut() {
            if pos >= self.written {
                break;
            }
            *slot = self
                .buf
                .get((pos % N as u64) as usize)
                .copied()
                .unwrap_or(0);
            pos += 1;
            n += 1;
        }
        (n, pos)
    }

    /// Forgets everything written so far (`xl dmesg -c`).
    pub fn clear(&mut self) {
        self.floor = self.written;
    }
}

impl<const N: usize> Default for LogRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_back_in_order_and_wraps() {
        let mut r = LogRing::<8>::new();
        r.push(b"abcdef");
        let mut out = [0u8; 16];
        let (n, next) = r.read(0, &mut out);
        assert_eq!(&out[..n], b"abcdef");
        assert_eq!(next, 6);
        r.push(b"ghijk");
        let (n, next) = r.read(0, &mut out);
        // Only the newest 8 bytes are kept.
        assert_eq!(&out[..n], b"defghijk");
        assert_eq!(next, 11);
        let (n, _) = r.read(9, &mut out);
        assert_eq!(&out[..n], b"jk");
        let (n, next) = r.read(11, &mut out);
        assert_eq!(n, 0);
        assert_eq!(next, 11);
    }

    #[test]
    fn read_is_bounded_by_the_output_buffer() {
        let mut r = LogRing::<64>::new();
        r.push(b"0123456789");
        let mut out = [0u8; 4];
        let (n, next) = r.read(2, &mut out);
        assert_eq!((n, next), (4, 6));
        assert_eq!(&out, b"2345");
    }

    #[test]
    fn clear_hides_old_content() {
        let mut r = LogRing::<64>::new();
        r.push(b"old");
        r.clear();
        r.push(b"new");
        let mut out = [0u8; 8];
        let (n, _) = r.read(0, &mut out);
        assert_eq!(&out[..n], b"new");
    }

    #[test]
    fn levels_parse_as_xen_names_them() {
        assert_eq!(LogLevel::parse("all"), Some(LogLevel::Debug));
        assert_eq!(LogLevel::parse("warning"), Some(LogLevel::Warning));
        assert_eq!(LogLevel::parse("loud"), None);
    }
}
