//! blkfront: the guest side of Xen's block split driver (Linux `xen-blkfront`), as
//! portable, host-tested logic.
//!
//! A virtual block device (`vbd`) is a disk that a backend domain (usually dom0's blkback)
//! serves to this guest over a shared ring of `blkif` requests
//! (`xen/include/public/io/blkif.h`, ABI.md §5.2). This crate implements:
//!
//! - [`xenbus`]: the XenBus handshake as Linux blkfront performs it — read the device
//!   directory the toolstack wrote (`device/vbd/<devid>`), wait for the backend to reach
//!   `InitWait`, grant the ring, allocate an event channel, publish `ring-ref`,
//!   `event-channel`, `protocol` and `feature-persistent` together with state `Initialised`
//!   (in one transaction), wait for the backend's `Connected`, read the disk's geometry and
//!   features, and switch to `Connected`; and the orderly close (`Closing` → `Closed`, then
//!   revoking every grant, which fails cleanly if the backend still maps one).
//! - [`BlkFront`]: the request engine. Reads and writes of up to 11 direct segments, or up
//!   to the backend's `feature-max-indirect-segments` with `BLKIF_OP_INDIRECT`; flushes and
//!   discards; as many requests in flight as the ring has slots; one `push` (and at most one
//!   notification) per batch; completions matched by `id` in any order. Without persistent
//!   grants the caller's own pages are granted for each request (copyless) and revoked when
//!   it completes; when both ends agree on `feature-persistent`, data is copied through a
//!   pool of pages that stay granted, as Linux does.
//!
//! Everything that touches the machine goes through small traits ([`GrantAccess`],
//! [`PageMemory`], [`Notify`], [`xenbus::Store`] and the ring crate's
//! [`ring::RingMemory`]), so that the same code runs in rxen's domU kernel and against
//! the test doubles of this crate's host tests.
//!
//! # A hostile backend
//!
//! Everything the backend writes is checked: its ring indices (by the ring crate), each
//! response's `id` (unknown or already completed ids), its `operation`, and its status
//! (surfaced as [`IoError`]). A broken backend turns into an [`Error`] and the device is
//! marked broken — never into a panic.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![deny(clippy::indexing_slicing)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod engine;
mod host;
pub mod xenbus;

#[cfg(test)]
mod tests;

pub use engine::{
    BlkFront, Completion, Disk, Error, IoError, Request, RunError, Seg, Stats,
    DEFAULT_MAX_POOL_PAGES, MAX_INDIRECT_SEGMENTS,
};
pub use host::{GrantAccess, GrantError, Host, Notify, PageMemory, StillInUse};

/// The byte at `offset` of 512-byte sector `sector` in the test pattern with `seed`.
///
/// rxen's block tests write this pattern from one side (the domU's `blk=verify`
/// exerciser, dom0's disk tools, host tests) and check it from another, so all of them
/// use this one definition: a cheap 64-bit mix of the three inputs whose top byte is
/// the result. Different seeds, sectors and offsets give unrelated-looking bytes, so a
/// sector written to the wrong place or a stale buffer is caught.
pub fn pattern_byte(seed: u64, sector: u64, offset: u32) -> u8 {
    ((seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ sector.wrapping_mul(0xff51_afd7_ed55_8ccd)
        ^ u64::from(offset))
    .wrapping_mul(0x2545_f491_4f6c_dd1d)
        >> 56) as u8
}

/// Fills `buf` (whole 512-byte sectors, starting at disk sector `sector`) with the
/// [`pattern_byte`] pattern of `seed`.
pub fn fill_pattern(seed: u64, sector: u64, buf: &mut [u8]) {
    for (i, chunk) in buf.chunks_mut(512).enumerate() {
        let s = sector.wrapping_add(i as u64);
        for (o, b) in chunk.iter_mut().enumerate() {
            *b = pattern_byte(seed, s, o as u32);
        }
    }
}

/// Checks `buf` against the pattern [`fill_pattern`] would write there; the byte offset
/// of the first difference, if any.
pub fn check_pattern(seed: u64, sector: u64, buf: &[u8]) -> Option<usize> {
    for (i, chunk) in buf.chunks(512).enumerate() {
        let s = sector.wrapping_add(i as u64);
        for (o, &b) in chunk.iter().enumerate() {
            if b != pattern_byte(seed, s, o as u32) {
                return Some(i.wrapping_mul(512).wrapping_add(o));
            }
        }
    }
    None
}
