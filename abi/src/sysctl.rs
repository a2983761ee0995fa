//! `sysctl` hypercall (`xen/include/public/sysctl.h`) — rxen's own argument layout.
//!
//! The command numbers are Xen's, but the structure is rxen's: a 136-byte [`Sysctl`] with a
//! small payload area, and payloads reduced to what rxen's dom0 tools use. Xen's own
//! `xen_sysctl` is larger and versioned with `XEN_SYSCTL_INTERFACE_VERSION`; rxen's
//! [`SYSCTL_INTERFACE_VERSION`] deliberately differs so a Xen tool is rejected cleanly.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// rxen's sysctl interface version (`"rx"` in the high half); a mismatch yields `-EACCES`.
pub const SYSCTL_INTERFACE_VERSION: u32 = 0x7278_0001;

/// Read the hypervisor console ring ([`SysctlReadconsole`]); Xen's `XEN_SYSCTL_readconsole`.
pub const SYSCTL_READCONSOLE: u32 = 1;
/// Physical machine information ([`SysctlPhysinfo`]); Xen's `XEN_SYSCTL_physinfo`.
pub const SYSCTL_PHYSINFO: u32 = 3;

/// The `sysctl` argument (rxen layout, 136 bytes).
#[doc(alias = "xen_sysctl")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct Sysctl {
    /// `SYSCTL_*` command (caller writes).
    pub cmd: u32,
    /// Must be [`SYSCTL_INTERFACE_VERSION`] (caller writes).
    pub interface_version: u32,
    /// Command payload (in/out); view it with [`Sysctl::payload`]/[`Sysctl::set_payload`].
    pub u: [u64; 16],
}
assert_layout!(Sysctl, 136, { cmd: 0, interface_version: 4, u: 8 });

impl Sysctl {
    /// A request for `cmd` with the current interface version and `payload`.
    pub fn new<T: IntoBytes + Immutable>(cmd: u32, payload: &T) -> Sysctl {
        let mut s = Sysctl {
            cmd,
            interface_version: SYSCTL_INTERFACE_VERSION,
            u: [0; 16],
        };
        s.set_payload(payload);
        s
    }

    /// Reads the payload as a `T` (from the start of `u`); `None` if `T` is larger than the
    /// payload area.
    pub fn payload<T: FromBytes>(&self) -> Option<T> {
        T::read_from_prefix(self.u.as_bytes()).ok().map(|(v, _)| v)
    }

    /// Writes `v` at the start of the payload area, zeroing the rest. Returns `false` (and
    /// leaves the payload zeroed) if `T` does not fit.
    pub fn set_payload<T: IntoBytes + Immutable>(&mut self, v: &T) -> bool {
        self.u = [0; 16];
        v.write_to_prefix(self.u.as_mut_bytes()).is_ok()
    }

    /// The payload as [`SysctlReadconsole`].
    pub fn readconsole(&self) -> SysctlReadconsole {
        self.payload().unwrap_or_default()
    }

    /// Stores a [`SysctlReadconsole`] payload.
    pub fn set_readconsole(&mut self, v: &SysctlReadconsole) {
        // Cannot fail: the size is checked at compile time below.
        self.set_payload(v);
    }

    /// The payload as [`SysctlPhysinfo`].
    pub fn physinfo(&self) -> SysctlPhysinfo {
        self.payload().unwrap_or_default()
    }

    /// Stores a [`SysctlPhysinfo`] payload.
    pub fn set_physinfo(&mut self, v: &SysctlPhysinfo) {
        // Cannot fail: the size is checked at compile time below.
        self.set_payload(v);
    }
}

/// `SYSCTL_READCONSOLE` payload (rxen layout, 24 bytes).
///
/// In: `buffer`/`count` (and with `incremental = 1`, `index` = where to start reading).
/// Out: `count` = bytes written, `index` = where the next incremental read starts.
#[doc(alias = "xen_sysctl_readconsole")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SysctlReadconsole {
    /// In: clear the ring after reading.
    pub clear: u8,
    /// In: read from `index` rather than the oldest byte.
    pub incremental: u8,
    /// Padding.
    pub pad: [u8; 2],
    /// In/out: ring index (see above).
    pub index: u32,
    /// In: guest virtual address of the buffer.
    pub buffer: u64,
    /// In: buffer size; out: bytes written.
    pub count: u32,
    /// Padding.
    pub pad2: u32,
}
assert_layout!(SysctlReadconsole, 24, {
    clear: 0,
    incremental: 1,
    pad: 2,
    index: 4,
    buffer: 8,
    count: 16,
    pad2: 20,
});

/// `SYSCTL_PHYSINFO` payload (rxen layout, 72 bytes; hypervisor writes).
#[doc(alias = "xen_sysctl_physinfo")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct SysctlPhysinfo {
    /// Threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// Number of physical CPUs.
    pub nr_cpus: u32,
    /// Highest CPU id.
    pub max_cpu_id: u32,
    /// Number of NUMA nodes.
    pub nr_nodes: u32,
    /// Highest node id.
    pub max_node_id: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// `XEN_SYSCTL_PHYSCAP_*` bits.
    pub capabilities: u32,
    /// Total machine pages.
    pub total_pages: u64,
    /// Free machine pages.
    pub free_pages: u64,
    /// Pages awaiting scrubbing.
    pub scrub_pages: u64,
    /// Pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// Highest machine frame number.
    pub max_mfn: u64,
}
assert_layout!(SysctlPhysinfo, 72, {
    threads_per_core: 0,
    cores_per_socket: 4,
    nr_cpus: 8,
    max_cpu_id: 12,
    nr_nodes: 16,
    max_node_id: 20,
    cpu_khz: 24,
    capabilities: 28,
    total_pages: 32,
    free_pages: 40,
    scrub_pages: 48,
    outstanding_pages: 56,
    max_mfn: 64,
});

// Both payloads fit the payload area, so the typed setters cannot fail.
const _: () = {
    assert!(core::mem::size_of::<SysctlReadconsole>() <= core::mem::size_of::<[u64; 16]>());
    assert!(core::mem::size_of::<SysctlPhysinfo>() <= core::mem::size_of::<[u64; 16]>());
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip() {
        let rc = SysctlReadconsole {
            incremental: 1,
            index: 77,
            buffer: 0xdead_b000,
            count: 4096,
            ..Default::default()
        };
        let s = Sysctl::new(SYSCTL_READCONSOLE, &rc);
        assert_eq!(s.interface_version, SYSCTL_INTERFACE_VERSION);
        assert_eq!(s.readconsole(), rc);

        let mut s = Sysctl::default();
        let pi = SysctlPhysinfo {
            nr_cpus: 2,
            max_mfn: 0x12345,
            ..Default::default()
        };
        s.set_physinfo(&pi);
        assert_eq!(s.physinfo(), pi);
        assert_eq!(s.payload::<SysctlPhysinfo>(), Some(pi));
        assert!(s.payload::<[u64; 17]>().is_none());
        assert!(!s.set_payload(&[1u64; 17]));
    }
}
