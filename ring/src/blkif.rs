//! Block device wire format (`xen/include/public/io/blkif.h`, ABI.md §5.2).
//!
//! Every request variant is a full 112-byte slot image, so all of them travel on the same
//! ring type ([`BlkifFrontRing`]/[`BlkifBackRing`]) and convert into one another with
//! [`zerocopy::transmute!`] (or the `as_*` helpers) after looking at `operation`.

use xen_abi::GrantRef;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::{ring_size, BackRing, FrontRing};

/// `BLKIF_OP_READ`.
pub const BLKIF_OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const BLKIF_OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`: order against earlier writes, then write.
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`: make earlier writes durable (may carry data segments).
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD` ([`BlkifRequestDiscard`]).
pub const BLKIF_OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT` ([`BlkifRequestIndirect`]).
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments in a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: indirect segment pages in one request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments per indirect page (4096 / 8).
pub const SEGS_PER_INDIRECT_FRAME: usize =
    xen_abi::PAGE_SIZE / core::mem::size_of::<BlkifRequestSegment>();
/// Sector unit of every sector field, in bytes (always 512, whatever `sector-size` says).
pub const SECTOR_SIZE: u64 = 512;
/// Last valid `first_sect`/`last_sect` in a 4 KiB segment.
pub const SECTORS_PER_PAGE: u8 = 8;

/// `BLKIF_DISCARD_SECURE` in [`BlkifRequestDiscard::flag`].
pub const BLKIF_DISCARD_SECURE: u8 = 1;

/// `BLKIF_RSP_OKAY`.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// `BLKIF_RSP_ERROR`.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_EOPNOTSUPP` (the frontend turns the feature off).
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// `VDISK_CDROM` in the `info` node.
pub const VDISK_CDROM: u32 = 1;
/// `VDISK_REMOVABLE`.
pub const VDISK_REMOVABLE: u32 = 2;
/// `VDISK_READONLY`.
pub const VDISK_READONLY: u32 = 4;

/// One data segment: 512-byte sectors `first_sect..=last_sect` (0–7) of a granted frame.
#[doc(alias = "blkif_request_segment")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequestSegment {
    /// \[GST\] Grant of the data frame.
    pub gref: GrantRef,
    /// \[GST\] First sector in the frame.
    pub first_sect: u8,
    /// \[GST\] Last sector in the frame (inclusive).
    pub last_sect: u8,
    /// Padding.
    pub pad: [u8; 2],
}
assert_layout!(BlkifRequestSegment, 8, { gref: 0, first_sect: 4, last_sect: 5, pad: 6 });

/// Read, write, barrier and flush requests (`blkif_request`, the ring's request type).
#[doc(alias = "blkif_request")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifRequest {
    /// \[GST\] `BLKIF_OP_*`.
    pub operation: u8,
    /// \[GST\] Segments used (≤ 11).
    pub nr_segments: u8,
    /// \[GST\] Virtual device (`blkif_vdev_t`).
    pub handle: u16,
    /// Padding.
    pub pad: u32,
    /// \[GST\] Private id, echoed in the response.
    pub id: u64,
    /// \[GST\] Start sector on disk (512-byte units).
    pub sector_number: u64,
    /// \[GST\] Data segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
assert_layout!(BlkifRequest, 112, {
    operation: 0, nr_segments: 1, handle: 2, pad: 4, id: 8, sector_number: 16, seg: 24,
});

/// `BLKIF_OP_DISCARD` request (`blkif_request_discard`), padded to the slot's 112 bytes.
#[doc(alias = "blkif_request_discard")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlkifRequestDiscard {
    /// \[GST\] [`BLKIF_OP_DISCARD`].
    pub operation: u8,
    /// \[GST\] [`BLKIF_DISCARD_SECURE`] or 0.
    pub flag: u8,
    /// \[GST\] Virtual device.
    pub handle: u16,
    /// Padding.
    pub pad: u32,
    /// \[GST\] Private id.
    pub id: u64,
    /// \[GST\] Start sector.
    pub sector_number: u64,
    /// \[GST\] Number of sectors.
    pub nr_sectors: u64,
    /// Rest of the slot (unused by this variant).
    pub rest: [u8; 80],
}
assert_layout!(BlkifRequestDiscard, 112, {
    operation: 0, flag: 1, handle: 2, pad: 4, id: 8, sector_number: 16, nr_sectors: 24,
    rest: 32,
});

/// `BLKIF_OP_INDIRECT` request (`blkif_request_indirect`): the segments are in up to 8
/// granted pages of 512 [`BlkifRequestSegment`]s each. Padded to the slot's 112 bytes.
#[doc(alias = "blkif_request_indirect")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct BlkifRequestIndirect {
    /// \[GST\] [`BLKIF_OP_INDIRECT`].
    pub operation: u8,
    /// \[GST\] The real operation: [`BLKIF_OP_READ`] or [`BLKIF_OP_WRITE`] only.
    pub indirect_op: u8,
    /// \[GST\] Total segments over all indirect pages.
    pub nr_segments: u16,
    /// Padding.
    pub pad: u32,
    /// \[GST\] Private id.
    pub id: u64,
    /// \[GST\] Start sector.
    pub sector_number: u64,
    /// \[GST\] Virtual device.
    pub handle: u16,
    /// Padding.
    pub pad2: u16,
    /// \[GST\] Grants of the pages holding the segments; `ceil(nr_segments / 512)` used.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Rest of the slot (the C struct is 64 bytes; 4 bytes of its tail padding included).
    pub rest: [u8; 52],
}
assert_layout!(BlkifRequestIndirect, 112, {
    operation: 0, indirect_op: 1, nr_segments: 2, pad: 4, id: 8, sector_number: 16,
    handle: 24, pad2: 26, indirect_grefs: 28, rest: 60,
});

impl BlkifRequestIndirect {
    /// Indirect pages `nr_segments` needs (`ceil(nr_segments / 512)`), or `None` if that is
    /// more than [`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`].
    pub fn indirect_pages(&self) -> Option<usize> {
        let pages = usize::from(self.nr_segments).div_ceil(SEGS_PER_INDIRECT_FRAME);
        (pages <= BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST).then_some(pages)
    }
}

impl BlkifRequest {
    /// This slot seen as a discard request (check `operation` first).
    pub fn as_discard(&self) -> BlkifRequestDiscard {
        zerocopy::transmute!(*self)
    }

    /// This slot seen as an indirect request (check `operation` first).
    pub fn as_indirect(&self) -> BlkifRequestIndirect {
        zerocopy::transmute!(*self)
    }

    /// The segments the request claims to use, or `None` if `nr_segments` exceeds 11.
    pub fn segments(&self) -> Option<&[BlkifRequestSegment]> {
        self.seg.get(..usize::from(self.nr_segments))
    }
}

impl From<BlkifRequestDiscard> for BlkifRequest {
    fn from(r: BlkifRequestDiscard) -> Self {
        zerocopy::transmute!(r)
    }
}

impl From<BlkifRequestIndirect> for BlkifRequest {
    fn from(r: BlkifRequestIndirect) -> Self {
        zerocopy::transmute!(r)
    }
}

/// A completion (`blkif_response`), 16 bytes; may come in any order, matched by `id`.
#[doc(alias = "blkif_response")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct BlkifResponse {
    /// \[XEN: backend\] The request's `id`.
    pub id: u64,
    /// \[XEN\] The request's `operation`.
    pub operation: u8,
    /// Padding.
    pub pad: u8,
    /// \[XEN\] `BLKIF_RSP_*`.
    pub status: i16,
    /// Tail padding.
    pub pad2: u32,
}
assert_layout!(BlkifResponse, 16, { id: 0, operation: 8, pad: 9, status: 10, pad2: 12 });

/// Slots in a one-page blkif ring (32).
pub const BLKIF_RING_SIZE: u32 = ring_size(xen_abi::PAGE_SIZE, 112);
const _: () = assert!(BLKIF_RING_SIZE == 32);

/// Frontend end of a blkif ring.
pub type BlkifFrontRing<M> = FrontRing<BlkifRequest, BlkifResponse, M>;
/// Backend end of a blkif ring.
pub type BlkifBackRing<M> = BackRing<BlkifRequest, BlkifResponse, M>;
