//! Xen's shared I/O rings (`xen/include/public/io/ring.h`, ABI.md §5.1) and the split-driver
//! wire formats that travel on them (blkif §5.2, netif §5.3, the console ring §5.4).
//!
//! A split driver's frontend and backend share one or more pages (granted by the frontend).
//! The first 64 bytes are the [`SharedRingHeader`]; the rest is an array of slots, each the
//! union of one request and one response. The frontend produces requests and consumes
//! responses ([`FrontRing`]); the backend consumes requests and produces responses in the
//! same slots ([`BackRing`]). Each side keeps private copies of its own indices and only
//! publishes them with the barriers `ring.h` prescribes (write barrier before a producer
//! index, full barrier before reading an event index).
//!
//! # Notification rule
//!
//! A producer notifies (sends an event) only if the consumer's event index lies inside the
//! range just published ([`FrontRing::push_requests_and_check_notify`],
//! [`BackRing::push_responses_and_check_notify`]); a consumer that has drained the ring
//! re-arms its event index and looks once more before it sleeps
//! ([`BackRing::final_check_for_requests`], [`FrontRing::final_check_for_responses`]).
//! Under load this batches many messages per notification; no wake-up is ever lost.
//!
//! # Hostile peers
//!
//! Every value read from shared memory is under the peer's control. Each entry is copied out
//! exactly once (`RING_COPY_REQUEST`) into a local value the caller then validates; every
//! peer index is checked against the ring size before it is used
//! (`RING_REQUEST_PROD_OVERFLOW`, `RING_RESPONSE_PROD_OVERFLOW`), and slot offsets are always
//! masked, so a bad peer yields [`RingError`]s, never an out-of-bounds access or a panic.
//!
//! # Memory access
//!
//! The crate has no `unsafe`: it reaches the shared pages only through [`RingMemory`], whose
//! implementor (the owner of the mapping) provides volatile/atomic loads and stores and the
//! barriers. With the `test-utils` feature, [`VecRingMemory`] is a safe implementation backed
//! by atomics that two host threads can share.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Everything here parses peer-controlled data: no unchecked arithmetic, no panicking indexing.
#![deny(clippy::arithmetic_side_effects, clippy::indexing_slicing)]

#[cfg(feature = "test-utils")]
extern crate alloc;

/// Compile-time check of a structure's size and of the offset of each listed field against
/// the value Xen's C headers give on x86_64.
macro_rules! assert_layout {
    ($t:ty, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(core::mem::size_of::<$t>() == $size);
            $( assert!(core::mem::offset_of!($t, $field) == $off); )*
        };
    };
}

mod back;
pub mod blkif;
pub mod console;
mod front;
mod idx;
mod memory;
pub mod netif;
// ringtest: rxen's dom0<->domU ring test protocol (ring/src/ringtest.rs)
pub mod ringtest;
mod sring;
#[cfg(feature = "test-utils")]
mod vec_memory;

pub use back::BackRing;
pub use front::FrontRing;
pub use idx::RingIdx;
pub use memory::{Fence, RingMemory};
pub use sring::{
    entry_size, ring_bytes, ring_size, RingGeometry, RingMessage, SharedRingHeader, HEADER_SIZE,
    MAX_RING_BYTES, MAX_RING_ORDER,
};
#[cfg(feature = "test-utils")]
pub use vec_memory::VecRingMemory;

/// Why a ring operation failed. A peer's misbehaviour shows up as one of these, never as a
/// panic or an access outside the shared area.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The shared area cannot hold the 64-byte header and at least one slot, or is larger
    /// than [`MAX_RING_BYTES`] (16 pages, `XENBUS_MAX_RING_GRANT_ORDER` 4).
    BadGeometry,
    /// The frontend already has `size` requests outstanding: no free slot.
    Full,
    /// The peer's producer index claims more entries than can exist: more than the ring
    /// holds, more responses than requests were published, or it moved backwards
    /// (`RING_REQUEST_PROD_OVERFLOW` / `RING_RESPONSE_PROD_OVERFLOW`). The connection is
    /// broken; Linux shuts the device down at this point.
    ProducerOverflow {
        /// The producer index read from the shared page.
        prod: RingIdx,
        /// The local consumer index it was checked against.
        cons: RingIdx,
    },
    /// A byte ring's consumer index (written by the peer) is ahead of the producer or more
    /// than the ring size behind it.
    ConsumerOverrun {
        /// The producer index.
        prod: RingIdx,
        /// The consumer index read from the shared page.
        cons: RingIdx,
    },
    /// A backend tried to push a response while every consumed request already has one: the
    /// slot it would write still holds an unconsumed request.
    NoPendingRequest,
}
