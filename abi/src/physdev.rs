//! `physdev.h`: physical-device operations (hypercall 33, `physdev_op`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `PHYSDEVOP_eoi`.
pub const PHYSDEVOP_EOI: u32 = 12;
/// `PHYSDEVOP_irq_status_query`.
pub const PHYSDEVOP_IRQ_STATUS_QUERY: u32 = 5;
/// `PHYSDEVOP_set_iopl`: set the vCPU's virtual I/O privilege level.
pub const PHYSDEVOP_SET_IOPL: u32 = 6;
/// `PHYSDEVOP_set_iobitmap`.
pub const PHYSDEVOP_SET_IOBITMAP: u32 = 7;
/// `PHYSDEVOP_map_pirq`.
pub const PHYSDEVOP_MAP_PIRQ: u32 = 13;
/// `PHYSDEVOP_unmap_pirq`.
pub const PHYSDEVOP_UNMAP_PIRQ: u32 = 14;

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

const _: () = assert!(core::mem::size_of::<PhysdevSetIopl>() == 4);
