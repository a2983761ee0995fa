//! `RING_IDX`: the free-running 32-bit ring index.

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A free-running ring index (`RING_IDX`, `unsigned int`). Indices count entries since the
/// ring was initialised and wrap at 2³²; entry `i` lives in slot `i & (size - 1)`. Only
/// wrapping arithmetic is offered, because the ring protocol relies on it.
#[doc(alias = "RING_IDX")]
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(transparent)]
pub struct RingIdx(u32);

impl RingIdx {
    /// Wraps a raw index.
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw index.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// `self + n`, wrapping at 2³².
    #[must_use]
    pub const fn wrapping_add(self, n: u32) -> Self {
        Self(self.0.wrapping_add(n))
    }

    /// The next index (`self + 1`, wrapping).
    #[must_use]
    pub const fn next(self) -> Self {
        self.wrapping_add(1)
    }

    /// How far `self` is ahead of `earlier`: `self - earlier` in u32 arithmetic. This is the
    /// number of entries between them if `earlier` really is not after `self`; a huge value
    /// means it is (a peer moved an index backwards).
    pub const fn distance_from(self, earlier: RingIdx) -> u32 {
        self.0.wrapping_sub(earlier.0)
    }

    /// The slot this index maps to in a ring of `size` entries (`size` a power of two).
    pub const fn slot(self, size: u32) -> u32 {
        self.0 & size.wrapping_sub(1)
    }
}

impl fmt::Debug for RingIdx {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RingIdx({:#x})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::RingIdx;

    #[test]
    fn wraps() {
        let a = RingIdx::new(u32::MAX - 1);
        let b = a.wrapping_add(5);
        assert_eq!(b.raw(), 3);
        assert_eq!(b.distance_from(a), 5);
        assert_eq!(a.distance_from(b), u32::MAX - 4);
        assert_eq!(a.slot(32), 30);
        assert_eq!(b.slot(32), 3);
        assert_eq!(RingIdx::new(u32::MAX).next().raw(), 0);
    }
}
