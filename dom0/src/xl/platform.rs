//! What the toolstack needs from below, as traits: the hypervisor's domain-control
//! interface (libxc's `xc_domain_*`, `xc_evtchn_*`, foreign mapping) and xenstored
//! (libxenstore's `xs_*`). The kernel implements them with hypercalls and the in-process
//! xenstored; the host tests with mocks.

use alloc::string::String;
use alloc::vec::Vec;

use domain_builder::BuildMemory;
use xen_abi::domctl::{
    DOMINF_BLOCKED, DOMINF_CRASHED, DOMINF_DYING, DOMINF_PAUSED, DOMINF_RUNNING, DOMINF_SHUTDOWN,
    DOMINF_SHUTDOWNSHIFT,
};
use xen_abi::xen::VcpuGuestContext;
use xen_abi::Mfn;

use crate::consback::RingMem;
use crate::HostError;

/// `DOMCTL_GETDOMAININFO`, as the toolstack uses it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DomInfo {
    pub domid: u16,
    /// `DOMINF_*`, shutdown reason in bits 16..24.
    pub flags: u32,
    pub tot_pages: u64,
    pub max_pages: u64,
    pub shared_info_frame: u64,
    pub cpu_time_ns: u64,
    pub nr_online_vcpus: u32,
    pub max_vcpu_id: u32,
}

impl DomInfo {
    /// The `SHUTDOWN_*` reason, if the domain has shut down.
    pub fn shutdown_reason(&self) -> Option<u32> {
        (self.flags & DOMINF_SHUTDOWN != 0).then_some((self.flags >> DOMINF_SHUTDOWNSHIFT) & 0xff)
    }

    pub fn dying(&self) -> bool {
        self.flags & DOMINF_DYING != 0
    }

    pub fn paused(&self) -> bool {
        self.flags & DOMINF_PAUSED != 0
    }

    /// xl list's state column: `r b p s c d` or `-` each.
    pub fn state(&self) -> [u8; 6] {
        let f = |bit: u32, c: u8| if self.flags & bit != 0 { c } else { b'-' };
        let crashed = self.flags & DOMINF_CRASHED != 0
            || self.shutdown_reason() == Some(xen_abi::sched::SHUTDOWN_CRASH);
        [
            f(DOMINF_RUNNING, b'r'),
            f(DOMINF_BLOCKED, b'b'),
            f(DOMINF_PAUSED, b'p'),
            f(DOMINF_SHUTDOWN, b's'),
            if crashed { b'c' } else { b'-' },
            f(DOMINF_DYING, b'd'),
        ]
    }
}

/// The hypervisor operations of the toolstack. Every one may fail with the hypervisor's
/// errno.
pub trait Hypervisor {
    /// Access to a domain's frames while it is built.
    type Mem: BuildMemory;
    /// A mapped console page.
    type Ring: RingMem;

    /// `DOMCTL_CREATEDOMAIN`: a new, paused, empty domain.
    fn create_domain(&mut self, max_vcpus: u32, max_memkb: u64) -> Result<u16, HostError>;
    /// `DOMCTL_DESTROYDOMAIN`.
    fn destroy_domain(&mut self, domid: u16) -> Result<(), HostError>;
    /// `DOMCTL_PAUSEDOMAIN`.
    fn pause_domain(&mut self, domid: u16) -> Result<(), HostError>;
    /// `DOMCTL_UNPAUSEDOMAIN`.
    fn unpause_domain(&mut self, domid: u16) -> Result<(), HostError>;
    /// `DOMCTL_GETDOMAININFO`: the first domain with id >= `first`, None if there is none.
    fn domain_info(&mut self, first: u16) -> Result<Option<DomInfo>, HostError>;
    /// `DOMCTL_MAX_MEM`.
    fn set_max_mem(&mut self, domid: u16, max_memkb: u64) -> Result<(), HostError>;
    /// `DOMCTL_MAX_VCPUS`.
    fn set_max_vcpus(&mut self, domid: u16, max: u32) -> Result<(), HostError>;
    /// `XENMEM_populate_physmap` for `domid`: `frames` holds PFNs in, MFNs out. Returns
    /// how many were populated.
    fn populate_physmap(&mut self, domid: u16, frames: &mut [u64]) -> Result<usize, HostError>;
    /// Foreign access to the domain's frames (`p2m[pfn]` = MFN) while it is built.
    fn map_foreign(&mut self, domid: u16, p2m: Vec<Mfn>) -> Result<Self::Mem, HostError>;
    /// Ends the foreign access (unmaps whatever it still maps); an error reports a
    /// mapping that failed during the build ([`BuildMemory`] cannot return errors).
    fn unmap_foreign(&mut self, mem: Self::Mem) -> Result<(), HostError>;
    /// `MMUEXT_PIN_L4_TABLE` of `mfn` on behalf of `domid`.
    fn pin_l4(&mut self, domid: u16, mfn: Mfn) -> Result<(), HostError>;
    /// `EVTCHNOP_alloc_unbound { dom: domid, remote_dom }`: the domU's port.
    fn alloc_unbound(&mut self, domid: u16, remote_dom: u16) -> Result<u32, HostError>;
    /// `DOMCTL_SETVCPUCONTEXT`.
    fn set_vcpu_context(
        &mut self,
        domid: u16,
        vcpu: u32,
        ctx: &VcpuGuestContext,
    ) -> Result<(), HostError>;
    /// `DOMCTL_HYPERCALL_INIT`.
    fn hypercall_init(&mut self, domid: u16, gmfn: Mfn) -> Result<(), HostError>;
    /// `DOMCTL_SHUTDOWN`.
    fn shutdown_domain(&mut self, domid: u16, reason: u32) -> Result<(), HostError>;
    /// The `XENFEAT_*` bits (submap 0) a kernel may rely on.
    fn offered_features(&mut self) -> u32;
    /// Maps a domain's console page.
    fn map_ring(&mut self, domid: u16, mfn: Mfn) -> Result<Self::Ring, HostError>;
    /// Unmaps it.
    fn unmap_ring(&mut self, ring: Self::Ring);
    /// `EVTCHNOP_bind_interdomain` to the domain's port: our local port.
    fn bind_interdomain(&mut self, domid: u16, remote_port: u32) -> Result<u32, HostError>;
    /// `EVTCHNOP_send`.
    fn notify(&mut self, local_port: u32);
    /// `EVTCHNOP_close`.
    fn unbind(&mut self, local_port: u32);
    /// System time (ns), for uuids.
    fn now_ns(&mut self) -> u64;
    /// The names of dom0's block devices (`vda`, ...), which `disk=` targets name.
    fn block_devices(&mut self) -> Vec<String>;
}

/// A xenstore permission (`XS_PERM_*`): `n` none, `r` read, `w` write, `b` both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    Write,
    Both,
}

impl Access {
    /// The letter of xenstore's wire format.
    pub fn letter(self) -> char {
        match self {
            Access::None => 'n',
            Access::Read => 'r',
            Access::Write => 'w',
            Access::Both => 'b',
        }
    }
}

/// One entry of a node's permission list: the first names the owner and the access of
/// everyone not listed; the others grant `access` to `domid`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Perm {
    pub domid: u16,
    pub access: Access,
}

/// The xenstore operations of the toolstack (as dom0, which may do anything).
pub trait Store {
    /// Writes a node (creating missing parents, as xenstored does).
    fn write(&mut self, path: &str, value: &str) -> Result<(), HostError>;
    /// Reads a node.
    fn read(&mut self, path: &str) -> Result<Option<alloc::string::String>, HostError>;
    /// Creates a directory node.
    fn mkdir(&mut self, path: &str) -> Result<(), HostError>;
    /// Removes a node and everything below it (absent is fine).
    fn rm(&mut self, path: &str) -> Result<(), HostError>;
    /// Sets a node's permissions.
    fn set_perms(&mut self, path: &str, perms: &[Perm]) -> Result<(), HostError>;
    /// `XS_INTRODUCE`: xenstored starts serving the domain's ring.
    fn introduce(&mut self, domid: u16, store_mfn: u64, store_port: u32) -> Result<(), HostError>;
    /// `XS_RELEASE`: xenstored forgets the domain.
    fn release(&mut self, domid: u16) -> Result<(), HostError>;
}
