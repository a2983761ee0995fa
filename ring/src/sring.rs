//! The shared ring page (`DEFINE_RING_TYPES`' `struct *_sring`): header layout and ring
//! geometry (`__RING_SIZE`).

use core::mem::{align_of, offset_of, size_of};

use xen_abi::PAGE_SIZE;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{RingError, RingIdx, RingMemory};

/// A type that can travel in a ring slot: plain bytes in both directions, no padding holes
/// (zerocopy-checked), so it can be copied out of shared memory whatever the peer wrote.
pub trait RingMessage: FromBytes + IntoBytes + Immutable {}
impl<T: FromBytes + IntoBytes + Immutable> RingMessage for T {}

/// The first 64 bytes of a shared ring (ABI.md §5.1). The slots follow at
/// [`HEADER_SIZE`].
#[doc(alias = "sring")]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SharedRingHeader {
    /// \[GST: frontend\] Requests published.
    pub req_prod: RingIdx,
    /// \[XEN: backend\] "Notify me when `req_prod` passes this."
    pub req_event: RingIdx,
    /// \[XEN: backend\] Responses published.
    pub rsp_prod: RingIdx,
    /// \[GST: frontend\] "Notify me when `rsp_prod` passes this."
    pub rsp_event: RingIdx,
    /// Protocol-private bytes (netif: `smartpoll_active`); zero otherwise.
    pub pvt: [u8; 4],
    /// Zero.
    pub pad: [u8; 44],
}
assert_layout!(SharedRingHeader, 64, {
    req_prod: 0, req_event: 4, rsp_prod: 8, rsp_event: 12, pvt: 16, pad: 20,
});

/// Size of the shared header; slot 0 starts here.
pub const HEADER_SIZE: usize = size_of::<SharedRingHeader>();
pub(crate) const REQ_PROD: usize = offset_of!(SharedRingHeader, req_prod);
pub(crate) const REQ_EVENT: usize = offset_of!(SharedRingHeader, req_event);
pub(crate) const RSP_PROD: usize = offset_of!(SharedRingHeader, rsp_prod);
pub(crate) const RSP_EVENT: usize = offset_of!(SharedRingHeader, rsp_event);

/// Largest ring order (log2 of pages) a multi-page ring may use: Linux's
/// `XENBUS_MAX_RING_GRANT_ORDER`, i.e. 16 pages.
pub const MAX_RING_ORDER: u32 = 4;
/// Largest shared area a ring may span, in bytes (16 pages).
pub const MAX_RING_BYTES: usize = PAGE_SIZE << MAX_RING_ORDER;

/// Bytes of a ring of `2^order` pages, or `None` if `order > MAX_RING_ORDER`.
pub const fn ring_bytes(order: u32) -> Option<usize> {
    if order > MAX_RING_ORDER {
        None
    } else {
        Some(PAGE_SIZE << order)
    }
}

/// Size of one slot: `sizeof(union { Req req; Rsp rsp; })` as C computes it (the larger
/// member, rounded up to the stricter alignment).
pub const fn entry_size<Req, Rsp>() -> usize {
    let size = if size_of::<Req>() > size_of::<Rsp>() {
        size_of::<Req>()
    } else {
        size_of::<Rsp>()
    };
    let align = if align_of::<Req>() > align_of::<Rsp>() {
        align_of::<Req>()
    } else {
        align_of::<Rsp>()
    };
    size.next_multiple_of(align)
}

/// Number of slots (`__RING_SIZE`) in `bytes` of shared memory with slots of `entry` bytes:
/// the slots that fit after the header, rounded down to a power of two. 0 if none fits.
pub const fn ring_size(bytes: usize, entry: usize) -> u32 {
    if entry == 0 || bytes <= HEADER_SIZE || bytes > MAX_RING_BYTES {
        return 0;
    }
    // Cannot underflow (checked above) and fits in u32 (bytes <= MAX_RING_BYTES).
    let fit = match bytes.wrapping_sub(HEADER_SIZE).checked_div(entry) {
        Some(fit) => fit as u32,
        None => 0,
    };
    if fit == 0 {
        0
    } else {
        // fit > 0, so leading_zeros() <= 31: the highest set bit of `fit`.
        1u32.wrapping_shl(31u32.wrapping_sub(fit.leading_zeros()))
    }
}

/// Where the slots of one ring are: a power-of-two `size` and the slot size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingGeometry {
    size: u32,
    entry: usize,
}

impl RingGeometry {
    /// Geometry for `Req`/`Rsp` messages in a shared area of `bytes` bytes.
    pub const fn new<Req, Rsp>(bytes: usize) -> Result<Self, RingError> {
        let entry = entry_size::<Req, Rsp>();
        match ring_size(bytes, entry) {
            0 => Err(RingError::BadGeometry),
            size => Ok(Self { size, entry }),
        }
    }

    /// Geometry for the shared area `mem`.
    pub fn for_memory<Req, Rsp, M: RingMemory>(mem: &M) -> Result<Self, RingError> {
        Self::new::<Req, Rsp>(mem.len())
    }

    /// Number of slots (`RING_SIZE`), a power of two.
    pub const fn size(&self) -> u32 {
        self.size
    }

    /// Bytes per slot.
    pub const fn entry_size(&self) -> usize {
        self.entry
    }

    /// Byte offset of the slot holding entry `idx`. Always in bounds: the slot number is
    /// masked, and `HEADER_SIZE + size * entry <= bytes` by construction.
    pub(crate) const fn offset(&self, idx: RingIdx) -> usize {
        // slot < size <= 2^16 / 1 and entry <= MAX_RING_BYTES, so neither operation wraps.
        HEADER_SIZE.wrapping_add((idx.slot(self.size) as usize).wrapping_mul(self.entry))
    }
}

/// Reads a header index.
pub(crate) fn load_idx<M: RingMemory>(mem: &M, offset: usize) -> RingIdx {
    RingIdx::new(mem.load_u32(offset))
}

/// Writes a header index.
pub(crate) fn store_idx<M: RingMemory>(mem: &M, offset: usize, idx: RingIdx) {
    mem.store_u32(offset, idx.raw());
}

/// Copies entry `idx` out of the ring, once (`RING_COPY_REQUEST`/`RING_COPY_RESPONSE`).
pub(crate) fn copy_entry<T: RingMessage, M: RingMemory>(
    mem: &M,
    geo: &RingGeometry,
    idx: RingIdx,
) -> T {
    let mut value = T::new_zeroed();
    mem.read_bytes(geo.offset(idx), value.as_mut_bytes());
    value
}

/// Writes entry `idx` into the ring (not yet published).
pub(crate) fn write_entry<T: RingMessage, M: RingMemory>(
    mem: &M,
    geo: &RingGeometry,
    idx: RingIdx,
    value: &T,
) {
    mem.write_bytes(geo.offset(idx), value.as_bytes());
}

/// The notification test of `RING_PUSH_*_AND_CHECK_NOTIFY`: did this push move the producer
/// index from `old` to `new` across the consumer's `event`, i.e. is `event` in `(old, new]`?
pub(crate) const fn needs_notify(old: RingIdx, new: RingIdx, event: RingIdx) -> bool {
    new.distance_from(event) < new.distance_from(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xen_ring_sizes() {
        // ABI.md §5.1: blkif 4032/112 = 36 -> 32; netif TX 4032/12 -> 256; RX 4032/8 -> 256.
        assert_eq!(ring_size(PAGE_SIZE, 112), 32);
        assert_eq!(ring_size(PAGE_SIZE, 12), 256);
        assert_eq!(ring_size(PAGE_SIZE, 8), 256);
        // Multi-page blkif: 4 pages = (16384-64)/112 = 145 -> 128.
        assert_eq!(ring_size(PAGE_SIZE * 4, 112), 128);
        assert_eq!(ring_size(MAX_RING_BYTES, 112), 512);
        assert_eq!(ring_size(MAX_RING_BYTES * 2, 112), 0);
        assert_eq!(ring_size(64, 8), 0);
        assert_eq!(ring_size(72, 8), 1);
        assert_eq!(ring_bytes(4), Some(65536));
        assert_eq!(ring_bytes(5), None);
    }

    #[test]
    fn union_size() {
        #[repr(C, align(8))]
        struct A([u8; 8]);
        assert_eq!(entry_size::<[u8; 12], A>(), 16);
        assert_eq!(entry_size::<[u32; 3], u32>(), 12);
        assert_eq!(entry_size::<u8, u8>(), 1);
    }

    #[test]
    fn notify_window() {
        let i = RingIdx::new;
        assert!(needs_notify(i(0), i(1), i(1)));
        assert!(needs_notify(i(0), i(5), i(3)));
        assert!(!needs_notify(i(0), i(5), i(6)));
        assert!(!needs_notify(i(3), i(5), i(3)));
        assert!(!needs_notify(i(5), i(5), i(5)));
        // Across the wrap.
        assert!(needs_notify(i(u32::MAX - 1), i(2), i(0)));
        assert!(!needs_notify(i(u32::MAX - 1), i(2), i(u32::MAX - 1)));
    }
}
