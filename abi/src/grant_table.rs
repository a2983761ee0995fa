//! Grant tables (`xen/include/public/grant_table.h`): `grant_table_op` sub-command numbers,
//! v1 grant entries and flags, and the argument structures of map/unmap/setup/copy/query.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Map granted frames.
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// Unmap granted frames.
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// Set up the caller's grant table and get its frames.
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// Dump a grant table to the console (debug).
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// Transfer a frame to another domain.
pub const GNTTABOP_TRANSFER: u32 = 4;
/// Copy between granted frames.
pub const GNTTABOP_COPY: u32 = 5;
/// Current and maximum size of the grant table.
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// Unmap and replace with another mapping.
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
/// Select grant table version 1 or 2.
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// Get the status frames (v2).
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
/// Current grant table version.
pub const GNTTABOP_GET_VERSION: u32 = 10;
/// Swap two grant entries.
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
/// Cache maintenance on granted frames (ARM).
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: `domid` may map `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer`: `domid` may transfer a frame into `frame`.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive`: transitive grant (v2 only).
pub const GTF_TRANSITIVE: u16 = 3;
/// Mask of the type bits.
pub const GTF_TYPE_MASK: u16 = 3;
/// `GTF_readonly`: the grant is read-only.
pub const GTF_READONLY: u16 = 1 << 2;
/// `GTF_reading`: the hypervisor has a mapping for reading (hypervisor writes).
pub const GTF_READING: u16 = 1 << 3;
/// `GTF_writing`: the hypervisor has a writable mapping (hypervisor writes).
pub const GTF_WRITING: u16 = 1 << 4;
/// `GTF_PWT`: map with write-through caching (x86).
pub const GTF_PWT: u16 = 1 << 5;
/// `GTF_PCD`: map with caching disabled (x86).
pub const GTF_PCD: u16 = 1 << 6;
/// `GTF_PAT`: map with the PAT bit set (x86).
pub const GTF_PAT: u16 = 1 << 7;
/// `GTF_sub_page`: only a sub-range of the page is granted (v2 only; such an entry can
/// never be mapped).
pub const GTF_SUB_PAGE: u16 = 1 << 8;
/// `GTF_transfer_committed` (hypervisor writes).
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << 2;
/// `GTF_transfer_completed` (hypervisor writes).
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << 3;

/// `GNTMAP_device_map`: map for device access (`dev_bus_addr`).
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// `GNTMAP_host_map`: map into the host address space at `host_addr`.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`: map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// `GNTMAP_application_map`: user-accessible mapping.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `GNTMAP_contains_pte`: `host_addr` is the machine address of a PTE to write.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;

/// `_GNTMAP_guest_avail0`: map flag bits 16.. are copied into the PTE's available bits
/// 9-11 (`XENFEAT_gnttab_map_avail_bits`).
pub const GNTMAP_GUEST_AVAIL0_SHIFT: u32 = 16;
/// `GNTMAP_guest_avail_mask`.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = !0 << GNTMAP_GUEST_AVAIL0_SHIFT;

/// `GNTTAB_NR_RESERVED_ENTRIES`: entries 0..8 are reserved for the toolstack.
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// `GNTTAB_RESERVED_CONSOLE`: the console ring's grant (filled by the builder).
pub const GNTTAB_RESERVED_CONSOLE: u32 = 0;
/// `GNTTAB_RESERVED_XENSTORE`: the xenstore ring's grant (filled by the builder).
pub const GNTTAB_RESERVED_XENSTORE: u32 = 1;
/// v1 entries per 4 KiB grant-table frame.
pub const GRANT_ENTRIES_V1_PER_FRAME: u32 = 512;

/// `GNTCOPY_source_gref`: the source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

/// Grant status: success.
pub const GNTST_OKAY: i16 = 0;
/// Grant status: general error.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// Grant status: unknown domain.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// Grant status: bad grant reference.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// Grant status: bad handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// Grant status: bad virtual address.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// Grant status: bad device address.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// Grant status: no I/O MMU space.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// Grant status: permission denied.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// Grant status: bad page.
pub const GNTST_BAD_PAGE: i16 = -9;
/// Grant status: copy crosses a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// Grant status: address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// Grant status: try again.
pub const GNTST_EAGAIN: i16 = -12;
/// Grant status: out of space (handles).
pub const GNTST_NO_SPACE: i16 = -13;

/// A failed grant operation's status: the `GNTST_*` codes other than `GNTST_okay`, as
/// a type (an operation returns `Result<_, Gntst>`; [`Gntst::code`] is what goes into
/// the guest's `status` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i16)]
pub enum Gntst {
    /// `GNTST_general_error` (-1).
    GeneralError = GNTST_GENERAL_ERROR,
    /// `GNTST_bad_domain` (-2).
    BadDomain = GNTST_BAD_DOMAIN,
    /// `GNTST_bad_gntref` (-3).
    BadGntref = GNTST_BAD_GNTREF,
    /// `GNTST_bad_handle` (-4).
    BadHandle = GNTST_BAD_HANDLE,
    /// `GNTST_bad_virt_addr` (-5).
    BadVirtAddr = GNTST_BAD_VIRT_ADDR,
    /// `GNTST_bad_dev_addr` (-6).
    BadDevAddr = GNTST_BAD_DEV_ADDR,
    /// `GNTST_no_device_space` (-7).
    NoDeviceSpace = GNTST_NO_DEVICE_SPACE,
    /// `GNTST_permission_denied` (-8).
    PermissionDenied = GNTST_PERMISSION_DENIED,
    /// `GNTST_bad_page` (-9).
    BadPage = GNTST_BAD_PAGE,
    /// `GNTST_bad_copy_arg` (-10).
    BadCopyArg = GNTST_BAD_COPY_ARG,
    /// `GNTST_address_too_big` (-11).
    AddressTooBig = GNTST_ADDRESS_TOO_BIG,
    /// `GNTST_eagain` (-12).
    Eagain = GNTST_EAGAIN,
    /// `GNTST_no_space` (-13).
    NoSpace = GNTST_NO_SPACE,
}

impl Gntst {
    /// The `GNTST_*` value.
    pub const fn code(self) -> i16 {
        self as i16
    }

    /// The status field for an operation's result: `GNTST_okay` or the error's code.
    pub fn status<T>(r: &Result<T, Gntst>) -> i16 {
        match r {
            Ok(_) => GNTST_OKAY,
            Err(e) => e.code(),
        }
    }
}

/// Grant handle (`grant_handle_t`): names one mapping in the mapping domain's maptrack
/// table; returned by `map_grant_ref`, given back to `unmap_grant_ref`.
#[doc(alias = "grant_handle_t")]
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
)]
#[repr(transparent)]
pub struct GrantHandle(u32);

impl GrantHandle {
    /// Wraps a raw handle.
    pub const fn new(raw: u32) -> Self {
        Self(raw)
    }

    /// The raw handle.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

impl core::fmt::Debug for GrantHandle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GrantHandle({:#x})", self.0)
    }
}

/// `struct grant_entry_v1` (8 bytes): one entry of a v1 grant table (in the granting
/// domain's memory).
#[doc(alias = "grant_entry_v1")]
#[doc(alias = "grant_entry_v1_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and flags (guest writes type/readonly; hypervisor reading/writing).
    pub flags: u16,
    /// Domain being granted access (guest writes).
    pub domid: u16,
    /// Frame granted (guest writes), or MFN after a completed transfer (hypervisor).
    pub frame: u32,
}
assert_layout!(GrantEntryV1, 8, { flags: 0, domid: 2, frame: 4 });

/// `struct gnttab_map_grant_ref` (32 bytes).
#[doc(alias = "gnttab_map_grant_ref")]
#[doc(alias = "gnttab_map_grant_ref_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// IN: virtual address (or PTE machine address with `GNTMAP_contains_pte`).
    pub host_addr: u64,
    /// IN: `GNTMAP_*`.
    pub flags: u32,
    /// IN: grant reference in the granting domain's table.
    pub gref: u32,
    /// IN: granting domain.
    pub dom: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: u32,
    /// OUT: bus address for `GNTMAP_device_map`.
    pub dev_bus_addr: u64,
}
assert_layout!(GnttabMapGrantRef, 32, {
    host_addr: 0,
    flags: 8,
    gref: 12,
    dom: 16,
    status: 18,
    handle: 20,
    dev_bus_addr: 24,
});

/// `struct gnttab_unmap_grant_ref` (24 bytes).
#[doc(alias = "gnttab_unmap_grant_ref")]
#[doc(alias = "gnttab_unmap_grant_ref_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// IN: mapped virtual address (or PTE address).
    pub host_addr: u64,
    /// IN: device bus address.
    pub dev_bus_addr: u64,
    /// IN: handle from the map.
    pub handle: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Tail padding.
    pub pad: u16,
}
assert_layout!(GnttabUnmapGrantRef, 24, {
    host_addr: 0,
    dev_bus_addr: 8,
    handle: 16,
    status: 20,
    pad: 22,
});

/// `struct gnttab_setup_table` (24 bytes).
#[doc(alias = "gnttab_setup_table")]
#[doc(alias = "gnttab_setup_table_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// IN: domain (`DOMID_SELF`).
    pub dom: u16,
    /// Padding.
    pub pad0: u16,
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Padding.
    pub pad1: [u16; 3],
    /// IN: guest virtual address of an array of `nr_frames` u64 frame numbers (filled).
    pub frame_list: u64,
}
assert_layout!(GnttabSetupTable, 24, {
    dom: 0,
    pad0: 2,
    nr_frames: 4,
    status: 8,
    pad1: 10,
    frame_list: 16,
});

/// `struct gnttab_query_size` (16 bytes).
#[doc(alias = "gnttab_query_size")]
#[doc(alias = "gnttab_query_size_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// IN: domain.
    pub dom: u16,
    /// Padding.
    pub pad0: u16,
    /// OUT: current frames.
    pub nr_frames: u32,
    /// OUT: maximum frames.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Tail padding.
    pub pad1: u16,
}
assert_layout!(GnttabQuerySize, 16, {
    dom: 0,
    pad0: 2,
    nr_frames: 4,
    max_nr_frames: 8,
    status: 12,
    pad1: 14,
});

/// `struct gnttab_copy_ptr` (16 bytes): one side of a [`GnttabCopy`].
#[doc(alias = "gnttab_copy_ptr")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// Union: grant reference (low 32 bits, with `GNTCOPY_*_gref`) or frame number.
    pub u: u64,
    /// Domain owning the reference or frame.
    pub domid: u16,
    /// Byte offset within the page.
    pub offset: u16,
    /// Tail padding.
    pub pad: u32,
}
assert_layout!(GnttabCopyPtr, 16, { u: 0, domid: 8, offset: 10, pad: 12 });

/// `struct gnttab_copy` (40 bytes).
#[doc(alias = "gnttab_copy")]
#[doc(alias = "gnttab_copy_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabCopy {
    /// IN: source.
    pub source: GnttabCopyPtr,
    /// IN: destination.
    pub dest: GnttabCopyPtr,
    /// IN: bytes to copy.
    pub len: u16,
    /// IN: `GNTCOPY_*`.
    pub flags: u16,
    /// OUT: `GNTST_*`.
    pub status: i16,
    /// Tail padding.
    pub pad: u16,
}
assert_layout!(GnttabCopy, 40, { source: 0, dest: 16, len: 32, flags: 34, status: 36, pad: 38 });

/// `struct gnttab_set_version` (4 bytes).
#[doc(alias = "gnttab_set_version")]
#[doc(alias = "gnttab_set_version_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabSetVersion {
    /// IN: requested version; OUT: version in force.
    pub version: u32,
}
assert_layout!(GnttabSetVersion, 4, { version: 0 });

/// `struct gnttab_get_version` (8 bytes).
#[doc(alias = "gnttab_get_version")]
#[doc(alias = "gnttab_get_version_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct GnttabGetVersion {
    /// IN: domain.
    pub dom: u16,
    /// Padding.
    pub pad: u16,
    /// OUT: grant table version.
    pub version: u32,
}
assert_layout!(GnttabGetVersion, 8, { dom: 0, pad: 2, version: 4 });
