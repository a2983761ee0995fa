//! Basic Xen types (`xen/include/public/xen.h`: `xen_pfn_t`, `domid_t`, `evtchn_port_t`,
//! `grant_ref_t`, ...) as newtypes, so frame numbers, addresses and ids cannot be mixed up.
//!
//! Every newtype is `#[repr(transparent)]` over the C type Xen uses, so it can also appear
//! inside ABI structures and be read from guest memory with zerocopy.

use core::fmt;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Size of a (small) page on x86_64, in bytes (`XEN_PAGE_SIZE`).
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`] (`XEN_PAGE_SHIFT`).
pub const PAGE_SHIFT: u32 = 12;

/// Declares a transparent newtype with `new`/`raw`, hex `Debug`, ordering, hashing and the
/// zerocopy derives.
macro_rules! newtype {
    ($(#[$meta:meta])* $name:ident($raw:ty)) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default,
            FromBytes, IntoBytes, KnownLayout, Immutable,
        )]
        #[repr(transparent)]
        pub struct $name($raw);

        impl $name {
            /// Wraps a raw value.
            pub const fn new(raw: $raw) -> Self {
                Self(raw)
            }

            /// Returns the raw value.
            pub const fn raw(self) -> $raw {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }

        impl From<$name> for $raw {
            fn from(v: $name) -> $raw {
                v.0
            }
        }
    };
}

newtype!(
    /// Machine frame number: index of a 4 KiB frame of host physical memory (`xen_pfn_t`
    /// used as an MFN).
    #[doc(alias = "xen_pfn_t")]
    Mfn(u64)
);
newtype!(
    /// Pseudo-physical frame number of a PV guest: index into the guest's p2m table.
    Pfn(u64)
);
newtype!(
    /// Guest frame number: the frame number a guest passes to a hypercall (for a PV guest
    /// this is an MFN unless the call says otherwise; for translated guests a PFN).
    Gfn(u64)
);
newtype!(
    /// Machine (host physical) byte address (`maddr_t`).
    #[doc(alias = "maddr_t")]
    MachineAddr(u64)
);
newtype!(
    /// Domain id (`domid_t`). Ids from 0x7FF0 upwards are reserved ([`DomId::is_reserved`]).
    #[doc(alias = "domid_t")]
    DomId(u16)
);
newtype!(
    /// Event channel port number (`evtchn_port_t`). Port 0 is never allocated.
    #[doc(alias = "evtchn_port_t")]
    EvtchnPort(u32)
);
newtype!(
    /// Virtual CPU index within a domain.
    VcpuId(u32)
);
newtype!(
    /// Grant reference: index into a domain's grant table (`grant_ref_t`).
    #[doc(alias = "grant_ref_t")]
    GrantRef(u32)
);

impl Mfn {
    /// Machine address of the first byte of this frame.
    pub const fn base(self) -> MachineAddr {
        MachineAddr(self.0 << PAGE_SHIFT)
    }

    /// The frame containing machine address `addr`.
    pub const fn containing(addr: MachineAddr) -> Mfn {
        Mfn(addr.0 >> PAGE_SHIFT)
    }
}

impl MachineAddr {
    /// Offset of this address within its 4 KiB frame.
    pub const fn page_offset(self) -> u64 {
        self.0 & (PAGE_SIZE as u64 - 1)
    }

    /// Whether the address is the start of a frame.
    pub const fn is_page_aligned(self) -> bool {
        self.page_offset() == 0
    }

    /// The frame containing this address (same as [`Mfn::containing`]).
    pub const fn mfn(self) -> Mfn {
        Mfn::containing(self)
    }
}

impl DomId {
    /// `DOMID_FIRST_RESERVED`: ids at or above this are not real domains.
    pub const FIRST_RESERVED: DomId = DomId(0x7FF0);
    /// `DOMID_SELF`: the calling domain.
    pub const SELF: DomId = DomId(0x7FF0);
    /// `DOMID_IO`: owner of I/O memory (used as foreign domain for MMIO mappings).
    pub const IO: DomId = DomId(0x7FF1);
    /// `DOMID_XEN`: owner of pages belonging to the hypervisor (may be mapped by privileged
    /// domains).
    pub const XEN: DomId = DomId(0x7FF2);
    /// `DOMID_COW`: owner of shared copy-on-write pages.
    pub const COW: DomId = DomId(0x7FF3);
    /// `DOMID_INVALID`: "no domain"; e.g. owner of unallocated frames.
    pub const INVALID: DomId = DomId(0x7FF4);
    /// `DOMID_ANY`: wildcard domain (e.g. unbound event channel accepting any peer).
    pub const ANY: DomId = DomId(0x7FF5);
    /// `DOMID_IDLE`: the idle domain.
    pub const IDLE: DomId = DomId(0x7FFF);

    /// Whether this id is one of Xen's reserved pseudo-domain ids (>= 0x7FF0).
    pub const fn is_reserved(self) -> bool {
        self.0 >= Self::FIRST_RESERVED.0
    }
}

const _: () = {
    assert!(core::mem::size_of::<Mfn>() == 8);
    assert!(core::mem::size_of::<Pfn>() == 8);
    assert!(core::mem::size_of::<Gfn>() == 8);
    assert!(core::mem::size_of::<MachineAddr>() == 8);
    assert!(core::mem::size_of::<DomId>() == 2);
    assert!(core::mem::size_of::<EvtchnPort>() == 4);
    assert!(core::mem::size_of::<VcpuId>() == 4);
    assert!(core::mem::size_of::<GrantRef>() == 4);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mfn_address_round_trip() {
        let mfn = Mfn::new(0x1234);
        assert_eq!(mfn.base(), MachineAddr::new(0x123_4000));
        assert_eq!(Mfn::containing(MachineAddr::new(0x123_4abc)), mfn);
        assert_eq!(MachineAddr::new(0x123_4abc).page_offset(), 0xabc);
        assert!(MachineAddr::new(0x5000).is_page_aligned());
        assert!(!MachineAddr::new(0x5001).is_page_aligned());
        assert_eq!(mfn.raw(), 0x1234);
        assert_eq!(u64::from(mfn), 0x1234);
    }

    #[test]
    fn domid_reserved() {
        assert!(!DomId::new(0).is_reserved());
        assert!(!DomId::new(0x7FEF).is_reserved());
        assert!(DomId::SELF.is_reserved());
        assert!(DomId::IDLE.is_reserved());
        assert_eq!(DomId::INVALID.raw(), 0x7FF4);
    }

    #[test]
    fn debug_is_hex() {
        extern crate std;
        use std::format;
        assert_eq!(format!("{:?}", Mfn::new(255)), "Mfn(0xff)");
        assert_eq!(format!("{:?}", DomId::SELF), "DomId(0x7ff0)");
    }
}
