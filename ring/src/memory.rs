//! Access to the shared ring pages: the [`RingMemory`] trait.

/// A barrier the ring asks for, mirroring `ring.h`'s `virt_rmb`/`virt_wmb`/`virt_mb`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// Read barrier (`rmb`): loads before it (a producer index) complete before loads after
    /// it (the entries that index published). Acquire ordering.
    Read,
    /// Write barrier (`wmb`): stores before it (entries) are visible before stores after it
    /// (the producer index that publishes them). Release ordering.
    Write,
    /// Full barrier (`mb`): stores before it (a producer or event index) are visible before
    /// loads after it (the peer's event or producer index). Sequentially consistent; on
    /// x86_64 this is the only one that needs an instruction (`mfence` or a locked op).
    Full,
}

/// The shared pages of one ring, as seen by one side.
///
/// Implementations own the mapping: they perform every access as a single volatile (or
/// atomic) load or store of shared memory, never hold references into it, and make
/// [`fence`](Self::fence) order those accesses as described by [`Fence`]. The peer may change
/// any byte at any time; implementations must tolerate that (no reference, no caching).
///
/// The ring types in this crate only ever pass `offset + len <= self.len()`, with `u32`
/// accesses 4-byte aligned; an implementation may panic if that contract is broken, since
/// it would be a bug in this crate, not something a peer can cause.
pub trait RingMemory {
    /// Size of the shared area in bytes (one or more 4 KiB pages for a real ring).
    fn len(&self) -> usize;

    /// Whether the area is empty (never true for a usable ring).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads the `u32` at byte `offset` (4-byte aligned) in one access.
    fn load_u32(&self, offset: usize) -> u32;

    /// Stores `value` at byte `offset` (4-byte aligned) in one access.
    fn store_u32(&self, offset: usize, value: u32);

    /// Copies `dst.len()` bytes starting at `offset` out of the shared area.
    fn read_bytes(&self, offset: usize, dst: &mut [u8]);

    /// Copies `src` into the shared area starting at `offset`.
    fn write_bytes(&self, offset: usize, src: &[u8]);

    /// Issues a barrier.
    fn fence(&self, fence: Fence);
}

impl<M: RingMemory + ?Sized> RingMemory for &M {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn load_u32(&self, offset: usize) -> u32 {
        (**self).load_u32(offset)
    }
    fn store_u32(&self, offset: usize, value: u32) {
        (**self).store_u32(offset, value)
    }
    fn read_bytes(&self, offset: usize, dst: &mut [u8]) {
        (**self).read_bytes(offset, dst)
    }
    fn write_bytes(&self, offset: usize, src: &[u8]) {
        (**self).write_bytes(offset, src)
    }
    fn fence(&self, fence: Fence) {
        (**self).fence(fence)
    }
}
