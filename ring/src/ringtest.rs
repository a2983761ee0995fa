//! `ringtest`: rxen's own two-domain ring protocol, used to prove and measure grant-mapped
//! rings and interdomain event channels between dom0 and a domU (not a Xen protocol; it
//! travels on a standard `io/ring.h` shared ring of one page).
//!
//! Set-up, as a xenbus split driver does it (all nodes relative to the domU's home,
//! `/local/domain/<domid>/`):
//!
//! 1. the domU (frontend) initialises a ring page, grants it to dom0, allocates an unbound
//!    event channel for dom0, writes [`NODE_CONNECTED`] = `0`, the counts
//!    ([`NODE_COUNT`], [`NODE_PINGPONG`], [`NODE_RTT`]), [`NODE_PORT`] and last
//!    [`NODE_RING_REF`];
//! 2. dom0 (backend) maps the grant, binds the port and writes [`NODE_CONNECTED`] = `1`;
//! 3. the frontend streams `count` [`OP_BULK`] requests (notifying only when the ring
//!    says so), then `pingpong` [`OP_PING`] requests one at a time, then one [`OP_RTT`]
//!    request after which both ends bounce bare events `rtt` times;
//! 4. every response echoes the request's sequence number and [`checksum`].
//!
//! The event round trips use two counters in the ring page past the slots
//! ([`RTT_PING_OFFSET`], [`RTT_PONG_OFFSET`]) so that a stale or coalesced pending bit
//! can never be mistaken for an answer.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{ring_size, HEADER_SIZE};
use xen_abi::PAGE_SIZE;

/// Streamed request (phase 1).
pub const OP_BULK: u32 = 1;
/// Ping-pong request: the frontend waits for its response before the next (phase 2).
pub const OP_PING: u32 = 2;
/// Last request: after its response both ends bounce events (phase 3).
pub const OP_RTT: u32 = 3;

/// Grant reference of the ring page (decimal).
pub const NODE_RING_REF: &str = "data/ring-ref";
/// The frontend's unbound event-channel port (decimal).
pub const NODE_PORT: &str = "data/port";
/// Number of [`OP_BULK`] requests.
pub const NODE_COUNT: &str = "data/count";
/// Number of [`OP_PING`] requests.
pub const NODE_PINGPONG: &str = "data/pingpong";
/// Number of event round trips after [`OP_RTT`].
pub const NODE_RTT: &str = "data/rtt";
/// `0` (written by the frontend), `1` once the backend is connected.
pub const NODE_CONNECTED: &str = "data/connected";

/// Default number of streamed messages.
pub const DEFAULT_COUNT: u32 = 100_000;
/// Default number of ping-pong messages.
pub const DEFAULT_PINGPONG: u32 = 1_000;
/// Default number of event round trips.
pub const DEFAULT_RTT: u32 = 1_000;

/// Byte offset of the frontend's round-trip counter (u32, written by the frontend only).
pub const RTT_PING_OFFSET: usize = PAGE_SIZE - 8;
/// Byte offset of the backend's round-trip counter (u32, written by the backend only).
pub const RTT_PONG_OFFSET: usize = PAGE_SIZE - 4;

/// One request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Request {
    /// Sequence number, from 0 across all phases.
    pub seq: u64,
    /// `OP_*`.
    pub op: u32,
    /// Zero.
    pub pad: u32,
    /// Payload words ([`payload`] of `seq`).
    pub payload: [u64; 2],
}
assert_layout!(Request, 32, { seq: 0, op: 8, pad: 12, payload: 16 });

/// One response.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Response {
    /// The request's `seq`.
    pub seq: u64,
    /// [`checksum`] of the request as the backend read it.
    pub checksum: u64,
}
assert_layout!(Response, 16, { seq: 0, checksum: 8 });

/// Slots of the one-page ring.
pub const RING_SLOTS: u32 = ring_size(PAGE_SIZE, 32);
// The counters must lie past the slots.
const _: () = assert!(HEADER_SIZE + RING_SLOTS as usize * 32 <= RTT_PING_OFFSET);
const _: () = assert!(RING_SLOTS == 64);

/// The payload the frontend sends with `seq` (a cheap, seq-dependent pattern).
pub const fn payload(seq: u64) -> [u64; 2] {
    let a = seq.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5249_4e47_5445_5354;
    [a, a.rotate_left(17) ^ seq]
}

/// The request with sequence number `seq`.
pub const fn request(seq: u64, op: u32) -> Request {
    Request {
        seq,
        op,
        pad: 0,
        payload: payload(seq),
    }
}

/// Checksum of a request (FNV-1a over its words, then a final mix).
pub const fn checksum(r: &Request) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let words = [
        r.seq,
        (r.op as u64) | ((r.pad as u64) << 32),
        r.payload[0],
        r.payload[1],
    ];
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < words.len() {
        // `i < words.len()`: in bounds.
        #[allow(clippy::indexing_slicing)]
        let w = words[i];
        h = (h ^ w).wrapping_mul(PRIME);
        i = i.wrapping_add(1);
    }
    h ^ (h >> 29)
}

/// The backend's answer to `r`.
pub const fn respond(r: &Request) -> Response {
    Response {
        seq: r.seq,
        checksum: checksum(r),
    }
}

/// An order-sensitive digest of a stream of checksums, printed by both ends so that a
/// test can compare them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest(pub u64);

impl Digest {
    /// Folds in one checksum.
    pub fn add(&mut self, checksum: u64) {
        self.0 = self.0.rotate_left(5) ^ checksum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_differ() {
        let a = checksum(&request(1, OP_BULK));
        let b = checksum(&request(2, OP_BULK));
        let c = checksum(&request(1, OP_PING));
        assert!(a != b && a != c && b != c);
        let mut bad = request(1, OP_BULK);
        bad.payload[1] ^= 1;
        assert_ne!(checksum(&bad), a);
        assert_eq!(respond(&request(7, OP_BULK)).seq, 7);
    }

    #[test]
    fn digest_is_order_sensitive() {
        let (mut x, mut y) = (Digest::default(), Digest::default());
        x.add(1);
        x.add(2);
        y.add(2);
        y.add(1);
        assert_ne!(x, y);
    }
}
