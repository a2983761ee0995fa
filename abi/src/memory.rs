//! `memory_op` hypercall (`xen/include/public/memory.h`): sub-command numbers and the
//! argument structures of the sub-commands a PV guest uses (reservations, M2P queries,
//! physmap, memory map).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Add frames to the domain's reservation.
pub const XENMEM_INCREASE_RESERVATION: u32 = 0;
/// Return frames to the hypervisor (balloon out).
pub const XENMEM_DECREASE_RESERVATION: u32 = 1;
/// Highest machine frame number in the system.
pub const XENMEM_MAXIMUM_RAM_PAGE: u32 = 2;
/// Current number of pages of a domain.
pub const XENMEM_CURRENT_RESERVATION: u32 = 3;
/// Maximum number of pages of a domain.
pub const XENMEM_MAXIMUM_RESERVATION: u32 = 4;
/// List the MFNs backing the machine-to-phys table.
pub const XENMEM_MACHPHYS_MFN_LIST: u32 = 5;
/// Populate guest physical frames.
pub const XENMEM_POPULATE_PHYSMAP: u32 = 6;
/// Map a special frame (shared_info, grant table) into the physmap.
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
/// The domain's pseudo-physical E820 map.
pub const XENMEM_MEMORY_MAP: u32 = 9;
/// The machine E820 map (dom0).
pub const XENMEM_MACHINE_MEMORY_MAP: u32 = 10;
/// Exchange frames for others with different constraints.
pub const XENMEM_EXCHANGE: u32 = 11;
/// Virtual range and size of the machine-to-phys mapping.
pub const XENMEM_MACHPHYS_MAPPING: u32 = 12;
/// Set a domain's pseudo-physical E820 map (toolstack).
pub const XENMEM_SET_MEMORY_MAP: u32 = 13;
/// Highest guest frame number of a domain.
pub const XENMEM_MAXIMUM_GPFN: u32 = 14;
/// Remove a frame from the physmap.
pub const XENMEM_REMOVE_FROM_PHYSMAP: u32 = 15;
/// Add several frames to the physmap.
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u32 = 23;
/// Claim pages for a domain being built.
pub const XENMEM_CLAIM_PAGES: u32 = 24;
/// vNUMA information.
pub const XENMEM_GET_VNUMAINFO: u32 = 26;
/// Reserved device memory map.
pub const XENMEM_RESERVED_DEVICE_MEMORY_MAP: u32 = 27;
/// Map a resource (grant table, ioreq server) of a domain.
pub const XENMEM_ACQUIRE_RESOURCE: u32 = 28;

/// `XENMAPSPACE_shared_info`: map the shared_info page.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`: map a grant table frame.
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// `XENMAPSPACE_gmfn`: move a guest frame.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// `XENMAPSPACE_gmfn_range`: move a range of guest frames.
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// `XENMAPSPACE_gmfn_foreign`: map a frame of another domain.
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// `XENMAPSPACE_dev_mmio`: map device MMIO (ARM).
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;

/// `struct xen_memory_reservation` (32 bytes): argument of increase/decrease reservation
/// and populate_physmap (guest writes; the frame array is written back).
#[doc(alias = "xen_memory_reservation")]
#[doc(alias = "xen_memory_reservation_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMemoryReservation {
    /// Guest virtual address of an array of frame numbers (in/out).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: u64,
    /// log2 of the pages per extent.
    pub extent_order: u32,
    /// `XENMEMF_*` flags (address bits, node).
    pub mem_flags: u32,
    /// Target domain (`DOMID_SELF` usually).
    pub domid: u16,
    /// Tail padding.
    pub pad: [u16; 3],
}
assert_layout!(XenMemoryReservation, 32, {
    extent_start: 0,
    nr_extents: 8,
    extent_order: 16,
    mem_flags: 20,
    domid: 24,
    pad: 26,
});

/// `struct xen_machphys_mfn_list` (24 bytes): argument of `XENMEM_machphys_mfn_list`.
#[doc(alias = "xen_machphys_mfn_list")]
#[doc(alias = "xen_machphys_mfn_list_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMachphysMfnList {
    /// IN: size of the array.
    pub max_extents: u32,
    /// Padding.
    pub pad0: u32,
    /// IN: guest virtual address of the array of MFNs (filled by the hypervisor).
    pub extent_start: u64,
    /// OUT: number of entries written.
    pub nr_extents: u32,
    /// Tail padding.
    pub pad1: u32,
}
assert_layout!(XenMachphysMfnList, 24, {
    max_extents: 0,
    pad0: 4,
    extent_start: 8,
    nr_extents: 16,
    pad1: 20,
});

/// `struct xen_machphys_mapping` (24 bytes): result of `XENMEM_machphys_mapping`
/// (hypervisor writes).
#[doc(alias = "xen_machphys_mapping")]
#[doc(alias = "xen_machphys_mapping_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMachphysMapping {
    /// Start of the M2P virtual range.
    pub v_start: u64,
    /// End (exclusive) of the M2P virtual range.
    pub v_end: u64,
    /// Highest MFN with an M2P entry.
    pub max_mfn: u64,
}
assert_layout!(XenMachphysMapping, 24, { v_start: 0, v_end: 8, max_mfn: 16 });

/// `struct xen_add_to_physmap` (24 bytes): argument of `XENMEM_add_to_physmap`.
#[doc(alias = "xen_add_to_physmap")]
#[doc(alias = "xen_add_to_physmap_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// Domain whose physmap changes.
    pub domid: u16,
    /// Number of frames for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (e.g. grant frame number).
    pub idx: u64,
    /// Guest frame to map at.
    pub gpfn: u64,
}
assert_layout!(XenAddToPhysmap, 24, { domid: 0, size: 2, space: 4, idx: 8, gpfn: 16 });

/// `struct xen_memory_map` (16 bytes): argument of `XENMEM_memory_map` and friends.
#[doc(alias = "xen_memory_map")]
#[doc(alias = "xen_foreign_memory_map")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct XenMemoryMap {
    /// IN: entries the buffer holds; OUT: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub pad: u32,
    /// Guest virtual address of an array of 20-byte E820 entries.
    pub buffer: u64,
}
assert_layout!(XenMemoryMap, 16, { nr_entries: 0, pad: 4, buffer: 8 });

/// One E820 entry as returned by `XENMEM_memory_map` (packed, 20 bytes).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C, packed)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_*` type (1 = RAM).
    pub kind: u32,
}
assert_layout!(E820Entry, 20, { addr: 0, size: 8, kind: 16 });

/// E820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type: reserved.
pub const E820_RESERVED: u32 = 2;
