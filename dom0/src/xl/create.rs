//! Building a PV domU from dom0, as libxl + libxc do it (`libxl_create.c`,
//! `libxl_dom.c` `libxl__build_pv`, `xg_dom_boot.c`, `xg_dom_x86.c`):
//!
//! 1. parse the kernel and plan its layout (before touching the hypervisor, so a bad
//!    kernel costs nothing);
//! 2. `createdomain` (paused), `max_mem`, `max_vcpus`;
//! 3. `populate_physmap` the domain's RAM (PFNs in, MFNs back: the p2m);
//! 4. allocate its xenstore and console event channels (`alloc_unbound`, remote dom0);
//! 5. write its start-of-day memory with the shared `domain-builder` through foreign
//!    mappings, pin its L4 on its behalf, fill its hypercall page;
//! 6. set vCPU 0's initial context (ABI.md §1.4);
//! 7. write its xenstore nodes (ABI.md §4.4) and introduce it to xenstored;
//! 8. map its console page and bind its console channel (the console backend);
//! 9. unpause it.
//!
//! Any failure after step 2 unwinds: the xenstore nodes are removed, xenstored releases
//! the domain, the console is unmapped and unbound, and the half-built domain destroyed.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use domain_builder::{BootState, BuildError, KernelImage, LayoutParams, StartInfoParams};
use xen_abi::xen::{VcpuGuestContext, FLAT_KERNEL_CS, FLAT_KERNEL_SS, VGCF_IN_KERNEL, VGCF_ONLINE};
use xen_abi::{EvtchnPort, Mfn};

use super::platform::{Access, Hypervisor, Perm, Store};
use crate::cfg::{format_uuid, DomainConfig};
use crate::HostError;

/// Extents per `populate_physmap` call (bounded so one call stays short).
pub const POPULATE_BATCH: usize = 512;

/// Why a domain could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CreateError {
    /// The kernel image or its layout was refused.
    Kernel(BuildError),
    /// A hypervisor operation failed.
    Hypervisor(&'static str, HostError),
    /// The hypervisor gave fewer frames than asked.
    OutOfMemory { wanted: u64, got: u64 },
    /// Writing the domain's memory failed.
    Build(BuildError),
    /// A xenstore operation failed.
    Store(&'static str, HostError),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Kernel(e) => write!(f, "kernel: {e}"),
            CreateError::Hypervisor(what, e) => write!(f, "{what} failed: {e}"),
            CreateError::OutOfMemory { wanted, got } => {
                write!(f, "out of memory: wanted {wanted} pages, got {got}")
            }
            CreateError::Build(e) => write!(f, "building the domain: {e}"),
            CreateError::Store(what, e) => write!(f, "xenstore {what} failed: {e}"),
        }
    }
}

/// A domain that was built and is ready to be unpaused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Built {
    pub domid: u16,
    pub uuid: [u8; 16],
    pub nr_pages: u64,
    pub store_mfn: Mfn,
    /// The domU's end of the xenstore channel.
    pub store_port: u32,
    pub console_mfn: Mfn,
    /// The domU's end of the console channel.
    pub console_port: u32,
    pub boot: BootState,
}

/// vCPU 0's initial state for a built domain (libxc `vcpu_x86_64`, ABI.md §1.4).
pub fn initial_vcpu_context(boot: &BootState) -> VcpuGuestContext {
    let mut c = VcpuGuestContext::new_zeroed();
    c.flags = VGCF_IN_KERNEL | VGCF_ONLINE;
    c.user_regs.rip = boot.entry;
    c.user_regs.rsp = boot.stack_top;
    c.user_regs.rsi = boot.start_info_va;
    c.user_regs.cs = FLAT_KERNEL_CS;
    c.user_regs.ss = FLAT_KERNEL_SS;
    // IF: hardware interrupts stay on; the guest's virtual IF is its upcall mask.
    c.user_regs.rflags = 1 << 9;
    c.kernel_ss = u64::from(FLAT_KERNEL_SS);
    c.kernel_sp = boot.stack_top;
    // xen_pfn_to_cr3 for a 64-bit guest: the MFN shifted into place.
    c.ctrlreg[3] = boot.l4_mfn.raw() << 12;
    c.debugreg[6] = 0xffff_0ff0;
    c.debugreg[7] = 0x400;
    c
}

/// `/local/domain/N`.
pub fn dom_path(domid: u16) -> String {
    format!("/local/domain/{domid}")
}

/// `/vm/<uuid>`.
pub fn vm_path(uuid: &[u8; 16]) -> String {
    format!("/vm/{}", format_uuid(uuid))
}

/// The console backend's directory for the domain.
pub fn console_backend_path(domid: u16) -> String {
    format!("/local/domain/0/backend/console/{domid}/0")
}

/// The nodes the toolstack writes for a domain, as (path, value); a value of None is a
/// directory. Permissions are given by [`node_perms`].
pub fn xenstore_nodes(cfg: &DomainConfig, b: &Built) -> Vec<(String, Option<String>)> {
    let d = dom_path(b.domid);
    let vm = vm_path(&b.uuid);
    let kib = cfg.memory_mib * 1024;
    let max_kib = cfg.maxmem_mib * 1024;
    let mut n: Vec<(String, Option<String>)> = Vec::new();
    let mut node = |p: String, v: Option<String>| n.push((p, v));
    // libxl__domain_make.
    node(d.clone(), None);
    node(vm.clone(), None);
    node(format!("{vm}/uuid"), Some(format_uuid(&b.uuid)));
    node(format!("{vm}/name"), Some(cfg.name.clone()));
    node(format!("{vm}/image/ostype"), Some("linux".into()));
    node(format!("{vm}/image/kernel"), Some(cfg.kernel.clone()));
    node(format!("{vm}/image/cmdline"), Some(cfg.cmdline.clone()));
    node(format!("{d}/vm"), Some(vm.clone()));
    node(format!("{d}/name"), Some(cfg.name.clone()));
    node(format!("{d}/domid"), Some(format!("{}", b.domid)));
    node(format!("{d}/device"), None);
    node(format!("{d}/control"), None);
    for k in ["shutdown", "sysrq"] {
        node(format!("{d}/control/{k}"), Some(String::new()));
    }
    node(
        format!("{d}/control/platform-feature-multiprocessor-suspend"),
        Some("1".into()),
    );
    node(
        format!("{d}/control/platform-feature-xs_reset_watches"),
        Some("1".into()),
    );
    for k in ["data", "drivers", "feature", "attr", "error"] {
        node(format!("{d}/{k}"), None);
    }
    // libxl__build_post.
    node(format!("{d}/memory/static-max"), Some(format!("{max_kib}")));
    node(format!("{d}/memory/target"), Some(format!("{kib}")));
    for i in 0..cfg.vcpus {
        node(format!("{d}/cpu/{i}/availability"), Some("online".into()));
    }
    node(format!("{d}/store/port"), Some(format!("{}", b.store_port)));
    node(
        format!("{d}/store/ring-ref"),
        Some(format!("{}", b.store_mfn.raw())),
    );
    // The primary console (libxl__device_console_add for a PV console).
    let be = console_backend_path(b.domid);
    node(format!("{d}/console/backend"), Some(be.clone()));
    node(format!("{d}/console/backend-id"), Some("0".into()));
    node(format!("{d}/console/limit"), Some("1048576".into()));
    node(format!("{d}/console/type"), Some("xenconsoled".into()));
    node(format!("{d}/console/output"), Some("pty".into()));
    node(format!("{d}/console/tty"), Some(String::new()));
    node(
        format!("{d}/console/port"),
        Some(format!("{}", b.console_port)),
    );
    node(
        format!("{d}/console/ring-ref"),
        Some(format!("{}", b.console_mfn.raw())),
    );
    node(format!("{be}/frontend"), Some(format!("{d}/console")));
    node(format!("{be}/frontend-id"), Some(format!("{}", b.domid)));
    node(format!("{be}/online"), Some("1".into()));
    node(format!("{be}/state"), Some("1".into()));
    node(format!("{be}/protocol"), Some("vt100".into()));
    n
}

/// Permissions of the nodes that need their own (libxl's `roperm` for the domain's
/// directory, `rwperm` for the guest-writable areas; everything else inherits).
pub fn node_perms(domid: u16, uuid: &[u8; 16]) -> Vec<(String, [Perm; 2])> {
    let d = dom_path(domid);
    // Owned by dom0, readable by the domain.
    let ro = [
        Perm {
            domid: 0,
            access: Access::None,
        },
        Perm {
            domid,
            access: Access::Read,
        },
    ];
    // Owned by the domain (an owner may always read and write).
    let rw = [
        Perm {
            domid,
            access: Access::None,
        },
        Perm {
            domid,
            access: Access::None,
        },
    ];
    let mut p = alloc::vec![(d.clone(), ro), (vm_path(uuid), ro)];
    for k in ["device", "memory", "cpu", "store", "console"] {
        p.push((format!("{d}/{k}"), ro));
    }
    for k in [
        "control",
        "control/shutdown",
        "control/sysrq",
        "data",
        "drivers",
        "feature",
        "attr",
        "error",
    ] {
        p.push((format!("{d}/{k}"), rw));
    }
    p.push((
        format!("/local/domain/0/backend/console/{domid}"),
        [
            Perm {
                domid: 0,
                access: Access::None,
            },
            Perm {
                domid,
                access: Access::Read,
            },
        ],
    ));
    p
}

/// Removes everything the toolstack wrote for a domain (errors ignored: best effort, as
/// libxl's destroy path).
pub fn remove_nodes<S: Store>(xs: &mut S, domid: u16, uuid: &[u8; 16]) {
    let _ = xs.rm(&dom_path(domid));
    let _ = xs.rm(&vm_path(uuid));
    let _ = xs.rm(&format!("/local/domain/0/backend/console/{domid}"));
}

/// Writes a domain's xenstore nodes and permissions, then introduces it.
pub fn write_store<S: Store>(xs: &mut S, cfg: &DomainConfig, b: &Built) -> Result<(), CreateError> {
    // A stale tree from an earlier domain with this id must not leak into this one.
    remove_nodes(xs, b.domid, &b.uuid);
    // Directories with their own permissions first (as libxl does), so that the nodes
    // written below them inherit the right owner.
    for (path, perms) in node_perms(b.domid, &b.uuid) {
        let perms: &[Perm] = if perms[0] == perms[1] {
            &perms[..1]
        } else {
            &perms
        };
        xs.mkdir(&path)
            .map_err(|e| CreateError::Store("mkdir", e))?;
        xs.set_perms(&path, perms)
            .map_err(|e| CreateError::Store("set_perms", e))?;
    }
    for (path, value) in xenstore_nodes(cfg, b) {
        match value {
            Some(v) => xs.write(&path, &v),
            None => xs.mkdir(&path),
        }
        .map_err(|e| CreateError::Store("write", e))?;
    }
    xs.introduce(b.domid, b.store_mfn.raw(), b.store_port)
        .map_err(|e| CreateError::Store("introduce", e))
}

fn hv<T>(what: &'static str, r: Result<T, HostError>) -> Result<T, CreateError> {
    r.map_err(|e| CreateError::Hypervisor(what, e))
}

/// Steps 1-7: builds the domain described by `cfg` from `kernel` (and `ramdisk`), leaves
/// it paused with its xenstore nodes written and introduced. On error nothing is left
/// behind.
pub fn build_domain<V: Hypervisor, S: Store>(
    hvm: &mut V,
    xs: &mut S,
    cfg: &DomainConfig,
    kernel: &[u8],
    ramdisk: &[u8],
    uuid: [u8; 16],
) -> Result<Built, CreateError> {
    let offered = hvm.offered_features();
    // An xz-compressed bzImage payload is decompressed into an owned buffer.
    let elf = domain_builder::unpack_kernel(kernel).map_err(CreateError::Kernel)?;
    let image = KernelImage::parse(&elf, offered).map_err(CreateError::Kernel)?;
    let nr_pages = cfg.memory_mib * 256;
    let layout = domain_builder::plan(
        &image,
        &LayoutParams {
            nr_pages,
            ramdisk_len: ramdisk.len() as u64,
            with_store_and_console: true,
        },
    )
    .map_err(CreateError::Kernel)?;

    let max_kib = cfg.maxmem_mib * 1024;
    let domid = hv("createdomain", hvm.create_domain(cfg.vcpus, max_kib))?;
    let mut stored = false;
    let r = (|| {
        hv("max_mem", hvm.set_max_mem(domid, max_kib))?;
        hv("max_vcpus", hvm.set_max_vcpus(domid, cfg.vcpus))?;
        let mut p2m: Vec<u64> = (0..nr_pages).collect();
        for chunk in p2m.chunks_mut(POPULATE_BATCH) {
            let want = chunk.len();
            let got = hv("populate_physmap", hvm.populate_physmap(domid, chunk))?;
            if got != want {
                return Err(CreateError::OutOfMemory {
                    wanted: nr_pages,
                    got: got as u64,
                });
            }
        }
        let p2m: Vec<Mfn> = p2m.into_iter().map(Mfn::new).collect();
        let info = hv("getdomaininfo", hvm.domain_info(domid))?
            .filter(|i| i.domid == domid)
            .ok_or(CreateError::Hypervisor(
                "getdomaininfo",
                HostError(xen_abi::Errno::ESRCH.to_ret()),
            ))?;
        let store_port = hv("alloc_unbound (store)", hvm.alloc_unbound(domid, 0))?;
        let console_port = hv("alloc_unbound (console)", hvm.alloc_unbound(domid, 0))?;
        let mut mem = hv("foreign mapping", hvm.map_foreign(domid, p2m.clone()))?;
        let boot = domain_builder::build(
            &image,
            &layout,
            &mut mem,
            &StartInfoParams {
                shared_info: Mfn::new(info.shared_info_frame),
                flags: 0,
                store_evtchn: EvtchnPort::new(store_port),
                console_evtchn: EvtchnPort::new(console_port),
                cmdline: cfg.cmdline.as_bytes(),
                ramdisk,
            },
        );
        let mapped = hvm.unmap_foreign(mem);
        let boot = boot.map_err(CreateError::Build)?;
        hv("foreign mapping", mapped)?;
        hv("pin L4", hvm.pin_l4(domid, boot.l4_mfn))?;
        if let Some(pfn) = boot.hypercall_page {
            let mfn = p2m
                .get(pfn.raw() as usize)
                .copied()
                .ok_or(CreateError::Build(BuildError::LayoutMismatch))?;
            hv("hypercall_init", hvm.hypercall_init(domid, mfn))?;
        }
        let ctx = alloc::boxed::Box::new(initial_vcpu_context(&boot));
        hv("setvcpucontext", hvm.set_vcpu_context(domid, 0, &ctx))?;
        let (Some(store_mfn), Some(console_mfn)) = (boot.store_mfn, boot.console_mfn) else {
            return Err(CreateError::Build(BuildError::LayoutMismatch));
        };
        let built = Built {
            domid,
            uuid,
            nr_pages,
            store_mfn,
            store_port,
            console_mfn,
            console_port,
            boot,
        };
        stored = true;
        write_store(xs, cfg, &built)?;
        Ok(built)
    })();
    if r.is_err() {
        if stored {
            let _ = xs.release(domid);
            remove_nodes(xs, domid, &uuid);
        }
        let _ = hvm.destroy_domain(domid);
    }
    r
}
