//! `physdev.h`: physical-device operations (hypercall 33, `physdev_op`): I/O privilege,
//! physical IRQs (PIRQs) for the hardware domain — mapping a device's MSI/MSI-X vector or
//! an IO-APIC pin to a PIRQ, querying and acknowledging it — and PCI device reporting.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `PHYSDEVOP_irq_status_query` ([`PhysdevIrqStatusQuery`]).
pub const PHYSDEVOP_IRQ_STATUS_QUERY: u32 = 5;
/// `PHYSDEVOP_set_iopl`: set the vCPU's virtual I/O privilege level.
pub const PHYSDEVOP_SET_IOPL: u32 = 6;
/// `PHYSDEVOP_set_iobitmap`.
pub const PHYSDEVOP_SET_IOBITMAP: u32 = 7;
/// `PHYSDEVOP_apic_read`.
pub const PHYSDEVOP_APIC_READ: u32 = 8;
/// `PHYSDEVOP_apic_write`.
pub const PHYSDEVOP_APIC_WRITE: u32 = 9;
/// `PHYSDEVOP_alloc_irq_vector`.
pub const PHYSDEVOP_ALLOC_IRQ_VECTOR: u32 = 10;
/// `PHYSDEVOP_free_irq_vector`.
pub const PHYSDEVOP_FREE_IRQ_VECTOR: u32 = 11;
/// `PHYSDEVOP_eoi` ([`PhysdevEoi`]).
pub const PHYSDEVOP_EOI: u32 = 12;
/// `PHYSDEVOP_map_pirq` ([`PhysdevMapPirq`]).
pub const PHYSDEVOP_MAP_PIRQ: u32 = 13;
/// `PHYSDEVOP_unmap_pirq` ([`PhysdevUnmapPirq`]).
pub const PHYSDEVOP_UNMAP_PIRQ: u32 = 14;
/// `PHYSDEVOP_manage_pci_add` ([`PhysdevManagePci`]).
pub const PHYSDEVOP_MANAGE_PCI_ADD: u32 = 15;
/// `PHYSDEVOP_manage_pci_remove` ([`PhysdevManagePci`]).
pub const PHYSDEVOP_MANAGE_PCI_REMOVE: u32 = 16;
/// `PHYSDEVOP_restore_msi` ([`PhysdevManagePci`] layout: bus, devfn).
pub const PHYSDEVOP_RESTORE_MSI: u32 = 19;
/// `PHYSDEVOP_manage_pci_add_ext`.
pub const PHYSDEVOP_MANAGE_PCI_ADD_EXT: u32 = 20;
/// `PHYSDEVOP_setup_gsi`.
pub const PHYSDEVOP_SETUP_GSI: u32 = 21;
/// `PHYSDEVOP_get_free_pirq` ([`PhysdevGetFreePirq`]).
pub const PHYSDEVOP_GET_FREE_PIRQ: u32 = 23;
/// `PHYSDEVOP_pci_mmcfg_reserved`.
pub const PHYSDEVOP_PCI_MMCFG_RESERVED: u32 = 24;
/// `PHYSDEVOP_pci_device_add` ([`PhysdevPciDeviceAdd`]).
pub const PHYSDEVOP_PCI_DEVICE_ADD: u32 = 25;
/// `PHYSDEVOP_pci_device_remove` ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_PCI_DEVICE_REMOVE: u32 = 26;
/// `PHYSDEVOP_restore_msi_ext` ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_RESTORE_MSI_EXT: u32 = 27;
/// `PHYSDEVOP_pirq_eoi_gmfn_v2` ([`PhysdevPirqEoiGmfn`]).
pub const PHYSDEVOP_PIRQ_EOI_GMFN_V2: u32 = 28;
/// `PHYSDEVOP_dbgp_op`.
pub const PHYSDEVOP_DBGP_OP: u32 = 29;
/// `PHYSDEVOP_prepare_msix` ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_PREPARE_MSIX: u32 = 30;
/// `PHYSDEVOP_release_msix` ([`PhysdevPciDevice`]).
pub const PHYSDEVOP_RELEASE_MSIX: u32 = 31;

/// `XENIRQSTAT_needs_eoi`: the guest must issue `PHYSDEVOP_eoi` after handling the PIRQ.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// `XENIRQSTAT_shared`: the IRQ is shared with another domain.
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;

/// `MAP_PIRQ_TYPE_MSI`: an MSI, or an MSI-X entry when `table_base` is non-zero.
pub const MAP_PIRQ_TYPE_MSI: i32 = 0;
/// `MAP_PIRQ_TYPE_GSI`: an IO-APIC pin (`index` = the GSI).
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
/// `MAP_PIRQ_TYPE_UNKNOWN`.
pub const MAP_PIRQ_TYPE_UNKNOWN: i32 = 2;
/// `MAP_PIRQ_TYPE_MSI_SEG`: as MSI, the PCI segment in the high 16 bits of `bus`.
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 3;
/// `MAP_PIRQ_TYPE_MULTI_MSI`: a block of MSI vectors (`entry_nr` of them).
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 4;

/// `BIND_PIRQ__WILL_SHARE` in `evtchn_bind_pirq.flags`.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// `struct physdev_set_iopl` (4 bytes).
#[doc(alias = "physdev_set_iopl")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevSetIopl {
    /// IN: the new I/O privilege level (0..=3).
    pub iopl: u32,
}
assert_layout!(PhysdevSetIopl, 4, { iopl: 0 });

/// `struct physdev_eoi` (4 bytes).
#[doc(alias = "physdev_eoi")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevEoi {
    /// IN: the PIRQ.
    pub irq: u32,
}
assert_layout!(PhysdevEoi, 4, { irq: 0 });

/// `struct physdev_pirq_eoi_gmfn` (8 bytes).
#[doc(alias = "physdev_pirq_eoi_gmfn")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPirqEoiGmfn {
    /// IN: the guest frame of the PIRQ EOI bitmap.
    pub gmfn: u64,
}
assert_layout!(PhysdevPirqEoiGmfn, 8, { gmfn: 0 });

/// `struct physdev_irq_status_query` (8 bytes).
#[doc(alias = "physdev_irq_status_query")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevIrqStatusQuery {
    /// IN: the PIRQ.
    pub irq: u32,
    /// OUT: `XENIRQSTAT_*`.
    pub flags: u32,
}
assert_layout!(PhysdevIrqStatusQuery, 8, { irq: 0, flags: 4 });

/// `struct physdev_map_pirq` (40 bytes).
#[doc(alias = "physdev_map_pirq")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevMapPirq {
    /// IN: the domain the PIRQ is for (`DOMID_SELF`).
    pub domid: u16,
    /// Padding (C alignment of `type`).
    pub pad: u16,
    /// IN: `MAP_PIRQ_TYPE_*`.
    pub kind: i32,
    /// IN: the GSI (`MAP_PIRQ_TYPE_GSI`), or -1 / an existing IRQ for MSI.
    pub index: i32,
    /// IN: a requested PIRQ, or -1 for any; OUT: the PIRQ.
    pub pirq: i32,
    /// IN: PCI bus (segment in the high 16 bits for `MSI_SEG` and `MULTI_MSI`).
    pub bus: i32,
    /// IN: PCI device and function.
    pub devfn: i32,
    /// IN: MSI-X table entry (also OUT for `MULTI_MSI`: the number of vectors).
    pub entry_nr: i32,
    /// Padding (C alignment of `table_base`).
    pub pad2: u32,
    /// IN: machine address of the MSI-X table (0: plain MSI).
    pub table_base: u64,
}
assert_layout!(PhysdevMapPirq, 40, {
    domid: 0, kind: 4, index: 8, pirq: 12, bus: 16, devfn: 20, entry_nr: 24, table_base: 32
});

/// `struct physdev_unmap_pirq` (8 bytes).
#[doc(alias = "physdev_unmap_pirq")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevUnmapPirq {
    /// IN: the domain (`DOMID_SELF`).
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// IN: the PIRQ.
    pub pirq: i32,
}
assert_layout!(PhysdevUnmapPirq, 8, { domid: 0, pirq: 4 });

/// `struct physdev_manage_pci` (2 bytes; also `physdev_restore_msi`).
#[doc(alias = "physdev_manage_pci")]
#[doc(alias = "physdev_restore_msi")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevManagePci {
    /// IN: PCI bus.
    pub bus: u8,
    /// IN: PCI device and function.
    pub devfn: u8,
}
assert_layout!(PhysdevManagePci, 2, { bus: 0, devfn: 1 });

/// `struct physdev_get_free_pirq` (8 bytes).
#[doc(alias = "physdev_get_free_pirq")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevGetFreePirq {
    /// IN: `MAP_PIRQ_TYPE_*`.
    pub kind: i32,
    /// OUT: a free PIRQ.
    pub pirq: u32,
}
assert_layout!(PhysdevGetFreePirq, 8, { kind: 0, pirq: 4 });

/// `struct physdev_pci_device` (4 bytes): `pci_device_remove`, `restore_msi_ext`,
/// `prepare_msix`, `release_msix`.
#[doc(alias = "physdev_pci_device")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPciDevice {
    /// IN: PCI segment.
    pub seg: u16,
    /// IN: PCI bus.
    pub bus: u8,
    /// IN: PCI device and function.
    pub devfn: u8,
}
assert_layout!(PhysdevPciDevice, 4, { seg: 0, bus: 2, devfn: 3 });

/// The fixed part of `struct physdev_pci_device_add` (12 bytes; an `optarr[]` of `u32`
/// follows when `flags` asks for it).
#[doc(alias = "physdev_pci_device_add")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct PhysdevPciDeviceAdd {
    /// IN: PCI segment.
    pub seg: u16,
    /// IN: PCI bus.
    pub bus: u8,
    /// IN: PCI device and function.
    pub devfn: u8,
    /// IN: `XEN_PCI_DEV_*`.
    pub flags: u32,
    /// IN: the physical function of a virtual function (bus).
    pub physfn_bus: u8,
    /// IN: the physical function of a virtual function (devfn).
    pub physfn_devfn: u8,
    /// Padding.
    pub pad: u16,
}
assert_layout!(PhysdevPciDeviceAdd, 12, {
    seg: 0, bus: 2, devfn: 3, flags: 4, physfn_bus: 8, physfn_devfn: 9
});
