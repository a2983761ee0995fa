//! The console backend's ring logic (Xen's `xenconsoled`, `tools/console/daemon/io.c`):
//! a domU's console page is a `struct xencons_interface` (`public/io/console.h`, ABI.md
//! §5.4) with an `in` ring (backend → guest, 1024 bytes) and an `out` ring (guest →
//! backend, 2048 bytes) and free-running u32 indices.
//!
//! The backend drains `out` into a per-domain [`ConsoleLog`] (kept while nobody is
//! attached, bounded, oldest bytes dropped first) and pushes typed bytes into `in`. The
//! guest controls the indices: a producer that runs more than a ring's size ahead of the
//! consumer is a corrupt ring, which is resynchronised (its bytes dropped), never read out
//! of bounds.
//!
//! Page access goes through [`RingMem`] so that the logic runs on the host against a plain
//! buffer; the kernel maps the guest's page.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{fence, Ordering};

/// Offset and size of `in[]`.
pub const IN_OFF: usize = 0;
pub const IN_SIZE: u32 = 1024;
/// Offset and size of `out[]`.
pub const OUT_OFF: usize = 1024;
pub const OUT_SIZE: u32 = 2048;
/// Offsets of the indices.
pub const IN_CONS: usize = 3072;
pub const IN_PROD: usize = 3076;
pub const OUT_CONS: usize = 3080;
pub const OUT_PROD: usize = 3084;

/// Access to a console page (the implementation does volatile accesses on a mapping).
pub trait RingMem {
    fn load32(&self, off: usize) -> u32;
    fn store32(&mut self, off: usize, v: u32);
    fn load8(&self, off: usize) -> u8;
    fn store8(&mut self, off: usize, v: u8);
}

/// What one drain of the `out` ring found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    /// Bytes consumed.
    pub bytes: usize,
    /// The indices were inconsistent and were resynchronised.
    pub corrupt: bool,
}

/// Consumes everything in `out`, passing each byte to `sink`; then publishes `out_cons`.
/// The caller notifies the guest if anything was consumed (it may wait for room).
pub fn drain_out(ring: &mut impl RingMem, mut sink: impl FnMut(u8)) -> Drained {
    let cons = ring.load32(OUT_CONS);
    let prod = ring.load32(OUT_PROD);
    // Read the producer index before the bytes it covers (the guest wrote the bytes, then
    // a write barrier, then the index).
    fence(Ordering::Acquire);
    let avail = prod.wrapping_sub(cons);
    if avail > OUT_SIZE {
        ring.store32(OUT_CONS, prod);
        return Drained {
            bytes: 0,
            corrupt: true,
        };
    }
    let mut c = cons;
    while c != prod {
        sink(ring.load8(OUT_OFF + (c & (OUT_SIZE - 1)) as usize));
        c = c.wrapping_add(1);
    }
    // Finish reading the bytes before giving their space back.
    fence(Ordering::Release);
    ring.store32(OUT_CONS, prod);
    Drained {
        bytes: avail as usize,
        corrupt: false,
    }
}

/// Pushes as much of `bytes` into `in` as fits; returns how many were queued. The caller
/// notifies the guest if any were.
pub fn push_in(ring: &mut impl RingMem, bytes: &[u8]) -> usize {
    let cons = ring.load32(IN_CONS);
    let mut prod = ring.load32(IN_PROD);
    fence(Ordering::Acquire);
    let used = prod.wrapping_sub(cons);
    if used > IN_SIZE {
        // Corrupt indices (the guest owns in_cons): start again from the guest's view.
        ring.store32(IN_PROD, cons);
        return 0;
    }
    let room = (IN_SIZE - used) as usize;
    let n = room.min(bytes.len());
    for &b in &bytes[..n] {
        ring.store8(IN_OFF + (prod & (IN_SIZE - 1)) as usize, b);
        prod = prod.wrapping_add(1);
    }
    // The bytes must be visible before the index that publishes them.
    fence(Ordering::Release);
    ring.store32(IN_PROD, prod);
    n
}

/// Bytes of a domain's console output kept while nobody is attached (xenconsoled's
/// default `buffer-size` is larger, but dom0's heap is small).
pub const LOG_LIMIT: usize = 64 * 1024;

/// A domain's console output: a bounded buffer plus how much of it the attached terminal
/// has already seen.
#[derive(Clone, Debug, Default)]
pub struct ConsoleLog {
    buf: VecDeque<u8>,
    /// Bytes at the front of `buf` already shown to an attached terminal.
    shown: usize,
    /// Bytes dropped because the buffer was full.
    pub dropped: u64,
    /// Total bytes received.
    pub total: u64,
}

impl ConsoleLog {
    /// Appends output, dropping the oldest bytes past [`LOG_LIMIT`].
    pub fn push(&mut self, b: u8) {
        if self.buf.len() >= LOG_LIMIT {
            self.buf.pop_front();
            self.shown = self.shown.saturating_sub(1);
            self.dropped += 1;
        }
        self.buf.push_back(b);
        self.total += 1;
    }

    /// Everything buffered.
    pub fn contents(&self) -> Vec<u8> {
        self.buf.iter().copied().collect()
    }

    /// Bytes not yet shown; marks them shown.
    pub fn take_unshown(&mut self) -> Vec<u8> {
        let out: Vec<u8> = self.buf.iter().skip(self.shown).copied().collect();
        self.shown = self.buf.len();
        out
    }

    /// On attach, xl console shows what was buffered: mark everything unshown.
    pub fn replay(&mut self) {
        self.shown = 0;
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The byte that detaches `xl console` (Ctrl-], as xl's escape).
pub const ESCAPE: u8 = 0x1d;

#[cfg(test)]
mod tests {
    use super::*;

    struct Page(Vec<u8>);

    impl RingMem for Page {
        fn load32(&self, off: usize) -> u32 {
            u32::from_le_bytes(self.0[off..off + 4].try_into().unwrap())
        }
        fn store32(&mut self, off: usize, v: u32) {
            self.0[off..off + 4].copy_from_slice(&v.to_le_bytes());
        }
        fn load8(&self, off: usize) -> u8 {
            self.0[off]
        }
        fn store8(&mut self, off: usize, v: u8) {
            self.0[off] = v;
        }
    }

    fn page() -> Page {
        Page(vec![0; 4096])
    }

    /// The guest side of `out`.
    fn guest_write(p: &mut Page, s: &[u8]) {
        let mut prod = p.load32(OUT_PROD);
        for &b in s {
            p.store8(OUT_OFF + (prod & (OUT_SIZE - 1)) as usize, b);
            prod = prod.wrapping_add(1);
        }
        p.store32(OUT_PROD, prod);
    }

    #[test]
    fn drains_output_across_wrap() {
        let mut p = page();
        // Start near the u32 wrap and the ring's end.
        p.store32(OUT_CONS, u32::MAX - 3);
        p.store32(OUT_PROD, u32::MAX - 3);
        guest_write(&mut p, b"hello, world\n");
        let mut got = Vec::new();
        let d = drain_out(&mut p, |b| got.push(b));
        assert_eq!(got, b"hello, world\n");
        assert_eq!(
            d,
            Drained {
                bytes: 13,
                corrupt: false
            }
        );
        assert_eq!(p.load32(OUT_CONS), p.load32(OUT_PROD));
        assert_eq!(drain_out(&mut p, |_| panic!()).bytes, 0);
    }

    #[test]
    fn corrupt_indices_resync() {
        let mut p = page();
        p.store32(OUT_PROD, 5000);
        let d = drain_out(&mut p, |_| panic!("must not read"));
        assert!(d.corrupt);
        assert_eq!(p.load32(OUT_CONS), 5000);
        p.store32(IN_CONS, 7000);
        assert_eq!(push_in(&mut p, b"x"), 0);
        assert_eq!(p.load32(IN_PROD), 7000);
    }

    #[test]
    fn input_fills_up_to_room() {
        let mut p = page();
        let big = vec![b'a'; 1500];
        assert_eq!(push_in(&mut p, &big), 1024);
        assert_eq!(push_in(&mut p, b"b"), 0);
        // The guest consumes 10 bytes.
        p.store32(IN_CONS, 10);
        assert_eq!(push_in(&mut p, b"0123456789abc"), 10);
        assert_eq!(p.load32(IN_PROD), 1034);
        assert_eq!(p.load8(IN_OFF), b'0');
    }

    #[test]
    fn log_is_bounded_and_tracks_shown() {
        let mut l = ConsoleLog::default();
        for &b in b"abc" {
            l.push(b);
        }
        assert_eq!(l.take_unshown(), b"abc");
        l.push(b'd');
        assert_eq!(l.take_unshown(), b"d");
        l.replay();
        assert_eq!(l.take_unshown(), b"abcd");
        for i in 0..LOG_LIMIT + 10 {
            l.push(i as u8);
        }
        assert_eq!(l.len(), LOG_LIMIT);
        assert_eq!(l.dropped, 14);
        assert_eq!(l.take_unshown().len(), LOG_LIMIT);
    }
}
