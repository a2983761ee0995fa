//! `domctl`: rxen's domain-control interface (hypercall 36), used by dom0's toolstack.
//!
//! Xen leaves domctl to the implementation (it is versioned and unstable even in Xen).
//! rxen keeps Xen's command numbers and names but defines its own, smaller layouts,
//! documented here. Every command is refused with -EPERM unless the caller is dom0.
//!
//! The argument is one [`Domctl`] in guest memory: the hypervisor reads it, acts on
//! `domain`, and writes it back (outputs in `domain` and `u`).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `interface_version` every caller must pass ("rx" + 1).
pub const DOMCTL_INTERFACE_VERSION: u32 = 0x7278_0001;

/// Create a domain. In: [`DomctlCreateDomain`]. Out: `domain` = the new id. The domain
/// starts paused, with no memory beyond its shared_info page.
pub const DOMCTL_CREATEDOMAIN: u32 = 1;
/// Destroy a domain: every frame, event channel and timer it held is released.
pub const DOMCTL_DESTROYDOMAIN: u32 = 2;
/// Pause a domain (its vCPUs stop being scheduled).
pub const DOMCTL_PAUSEDOMAIN: u32 = 3;
/// Unpause a domain.
pub const DOMCTL_UNPAUSEDOMAIN: u32 = 4;
/// Information on the first existing domain with id >= `domain`. Out:
/// [`DomctlGetDomainInfo`] (and `domain` = that domain's id); -ESRCH if none.
pub const DOMCTL_GETDOMAININFO: u32 = 5;
/// Set the memory limit. In: [`DomctlMaxMem`].
pub const DOMCTL_MAX_MEM: u32 = 11;
/// Set a vCPU's initial register state. In: [`DomctlVcpuContext`] pointing at a
/// `vcpu_guest_context` (5168 bytes, `xen::VcpuGuestContext`).
pub const DOMCTL_SETVCPUCONTEXT: u32 = 12;
/// Read a vCPU's register state into a `vcpu_guest_context`. In/out: [`DomctlVcpuContext`].
pub const DOMCTL_GETVCPUCONTEXT: u32 = 13;
/// Set the number of vCPUs (before the first is started). In: [`DomctlMaxVcpus`].
pub const DOMCTL_MAX_VCPUS: u32 = 15;
/// Fill the domain's hypercall page. In: [`DomctlHypercallInit`].
pub const DOMCTL_HYPERCALL_INIT: u32 = 22;
/// Grant or revoke an interrupt. In: [`DomctlIrqPermission`].
pub const DOMCTL_IRQ_PERMISSION: u32 = 24;
/// Grant or revoke machine frames as I/O memory. In: [`DomctlIomemPermission`].
pub const DOMCTL_IOMEM_PERMISSION: u32 = 26;
/// Grant or revoke I/O ports. In: [`DomctlIoportPermission`].
pub const DOMCTL_IOPORT_PERMISSION: u32 = 27;
/// Ask a running domain to shut down with a reason (`SHUTDOWN_*`), as if it had called
/// `SCHEDOP_shutdown`: used to apply on_crash / on_poweroff handling. In: [`DomctlShutdown`].
pub const DOMCTL_SHUTDOWN: u32 = 0x7201;

/// `DomctlGetDomainInfo.flags`: the domain is being destroyed.
pub const DOMINF_DYING: u32 = 1 << 0;
/// The domain has shut down (reason in bits 16..24).
pub const DOMINF_SHUTDOWN: u32 = 1 << 2;
/// Paused by the toolstack.
pub const DOMINF_PAUSED: u32 = 1 << 3;
/// Every vCPU is blocked.
pub const DOMINF_BLOCKED: u32 = 1 << 4;
/// A vCPU is running or runnable.
pub const DOMINF_RUNNING: u32 = 1 << 5;
/// It crashed (reason SHUTDOWN_crash).
pub const DOMINF_CRASHED: u32 = 1 << 6;
/// Privileged (dom0).
pub const DOMINF_PRIVILEGED: u32 = 1 << 7;
/// Shift of the shutdown reason in `flags`.
pub const DOMINF_SHUTDOWNSHIFT: u32 = 16;

/// The domctl argument (144 bytes).
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Domctl {
    /// `DOMCTL_*`.
    pub cmd: u32,
    /// Must be [`DOMCTL_INTERFACE_VERSION`] (else -EACCES).
    pub interface_version: u32,
    /// The domain acted on (in), or the domain created / found (out).
    pub domain: u16,
    /// Zero.
    pub pad: [u16; 3],
    /// Command-specific payload.
    pub u: [u64; 16],
}
const _: () = assert!(core::mem::size_of::<Domctl>() == 144);

impl Domctl {
    /// A request for `cmd` on `domain` with a zeroed payload.
    pub fn new(cmd: u32, domain: u16) -> Domctl {
        Domctl {
            cmd,
            interface_version: DOMCTL_INTERFACE_VERSION,
            domain,
            pad: [0; 3],
            u: [0; 16],
        }
    }

    /// The payload viewed as `T` (a prefix of `u`).
    pub fn payload<T: FromBytes + KnownLayout + Immutable + Copy>(&self) -> Option<T> {
        T::read_from_prefix(self.u.as_bytes()).ok().map(|(t, _)| t)
    }

    /// Stores `t` at the start of the payload.
    pub fn set_payload<T: IntoBytes + Immutable>(&mut self, t: &T) {
        let b = t.as_bytes();
        let n = b.len().min(128);
        self.u.as_mut_bytes()[..n].copy_from_slice(&b[..n]);
    }
}

/// `DOMCTL_CREATEDOMAIN` input (16 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlCreateDomain {
    /// vCPUs (1..=32).
    pub max_vcpus: u32,
    /// Reserved, zero.
    pub flags: u32,
    /// Memory limit in KiB.
    pub max_memkb: u64,
}

/// `DOMCTL_GETDOMAININFO` output (56 bytes).
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlGetDomainInfo {
    /// The domain found.
    pub domain: u16,
    /// Zero.
    pub pad: u16,
    /// `DOMINF_*`, shutdown reason in bits 16..24.
    pub flags: u32,
    /// Frames it owns.
    pub tot_pages: u64,
    /// Its limit.
    pub max_pages: u64,
    /// Machine frame of its shared_info.
    pub shared_info_frame: u64,
    /// CPU time used, ns.
    pub cpu_time: u64,
    /// vCPUs online.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id.
    pub max_vcpu_id: u32,
    /// `SCHEDOP_shutdown_code` value, or u32::MAX.
    pub shutdown_code: u32,
    /// Zero.
    pub pad2: u32,
}

/// `DOMCTL_MAX_MEM` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlMaxMem {
    /// Limit in KiB.
    pub max_memkb: u64,
}

/// `DOMCTL_SETVCPUCONTEXT` / `DOMCTL_GETVCPUCONTEXT` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlVcpuContext {
    /// vCPU index.
    pub vcpu: u32,
    /// Zero.
    pub pad: u32,
    /// Guest VA (in dom0) of a `vcpu_guest_context`.
    pub ctxt: u64,
}

/// `DOMCTL_MAX_VCPUS` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlMaxVcpus {
    /// Number of vCPUs.
    pub max: u32,
    /// Zero.
    pub pad: u32,
}

/// `DOMCTL_HYPERCALL_INIT` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlHypercallInit {
    /// Machine frame (of the target domain) to fill with the hypercall page.
    pub gmfn: u64,
}

/// `DOMCTL_IRQ_PERMISSION` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlIrqPermission {
    /// Physical IRQ.
    pub pirq: u32,
    /// 1 grant, 0 revoke.
    pub allow: u32,
}

/// `DOMCTL_IOMEM_PERMISSION` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlIomemPermission {
    /// First machine frame.
    pub first_mfn: u64,
    /// Number of frames.
    pub nr_mfns: u64,
    /// 1 grant, 0 revoke.
    pub allow: u32,
    /// Zero.
    pub pad: u32,
}

/// `DOMCTL_IOPORT_PERMISSION` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlIoportPermission {
    /// First port.
    pub first_port: u32,
    /// Number of ports.
    pub nr_ports: u32,
    /// 1 grant, 0 revoke.
    pub allow: u32,
    /// Zero.
    pub pad: u32,
}

/// `DOMCTL_SHUTDOWN` input.
#[derive(Clone, Copy, Debug, Default, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct DomctlShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
    /// Zero.
    pub pad: u32,
}

const _: () = assert!(core::mem::size_of::<DomctlCreateDomain>() == 16);
const _: () = assert!(core::mem::size_of::<DomctlGetDomainInfo>() == 56);
const _: () = assert!(core::mem::size_of::<DomctlVcpuContext>() == 16);
const _: () = assert!(core::mem::size_of::<DomctlIomemPermission>() == 24);
