//! The core guest interface of `xen/include/public/xen.h`, `arch-x86/xen.h` and
//! `arch-x86/xen-x86_64.h`: `start_info`, `shared_info`/`vcpu_info`, trap table entries,
//! the `iret` frame, the vCPU context, selectors, the address-space split, and the numbers
//! of `mmu_update`/`mmuext_op`/`update_va_mapping`/`vm_assist`/`console_io`/
//! `set_segment_base`.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

// ---------------------------------------------------------------------------------------
// start_info
// ---------------------------------------------------------------------------------------

/// Magic string at the start of [`StartInfo::magic`] for a 64-bit PV guest (NUL-terminated
/// in the structure; Xen writes `"xen-<major>.<minor>-x86_64"`, guests check the prefix).
pub const START_INFO_MAGIC: &[u8] = b"xen-3.0-x86_64";
/// Size of [`StartInfo::cmd_line`] (`MAX_GUEST_CMDLINE`).
pub const MAX_GUEST_CMDLINE: usize = 1024;

/// `SIF_PRIVILEGED`: the domain is privileged.
pub const SIF_PRIVILEGED: u32 = 1 << 0;
/// `SIF_INITDOMAIN`: the domain is the initial control domain (dom0).
pub const SIF_INITDOMAIN: u32 = 1 << 1;
/// `SIF_MULTIBOOT_MOD`: `mod_start` points to a multiboot module list.
pub const SIF_MULTIBOOT_MOD: u32 = 1 << 2;
/// `SIF_MOD_START_PFN`: `mod_start` is a PFN (the initrd is not mapped).
pub const SIF_MOD_START_PFN: u32 = 1 << 3;
/// `SIF_VIRT_P2M_4TOOLS`: the tools understand a virtually mapped p2m list.
pub const SIF_VIRT_P2M_4TOOLS: u32 = 1 << 4;
/// `SIF_PM_MASK`: byte reserved for power-management options.
pub const SIF_PM_MASK: u32 = 0xFF << 8;

/// The domU view of the `start_info.console` union (`console.domU`).
#[doc(alias = "console.domU")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ConsoleDomU {
    /// MFN of the console ring page.
    pub mfn: u64,
    /// Event channel of the console.
    pub evtchn: u32,
    /// Tail padding of the union.
    pub pad: u32,
}
assert_layout!(ConsoleDomU, 16, { mfn: 0, evtchn: 8, pad: 12 });

/// The dom0 view of the `start_info.console` union (`console.dom0`).
#[doc(alias = "console.dom0")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ConsoleDom0 {
    /// Offset of `dom0_vga_console_info` from the start of `start_info`.
    pub info_off: u32,
    /// Size of that structure.
    pub info_size: u32,
    /// Rest of the union (unused in this view).
    pub pad: [u32; 2],
}
assert_layout!(ConsoleDom0, 16, { info_off: 0, info_size: 4, pad: 8 });

/// `struct start_info` (x86_64, 1168 bytes): the page the domain builder hands to a PV
/// guest in RSI at entry. Written by the domain builder / hypervisor, read by the guest.
#[doc(alias = "start_info")]
#[doc(alias = "start_info_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct StartInfo {
    /// NUL-terminated `"xen-<version>-x86_64"` ([`START_INFO_MAGIC`]).
    pub magic: [u8; 32],
    /// Total number of pages of the domain.
    pub nr_pages: u64,
    /// Machine address of the shared_info page.
    pub shared_info: u64,
    /// `SIF_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// MFN of the xenstore ring page.
    pub store_mfn: u64,
    /// Event channel to xenstored.
    pub store_evtchn: u32,
    /// Padding.
    pub pad1: u32,
    /// The `console` union as raw bytes: `domU { mfn u64, evtchn u32 }` or
    /// `dom0 { info_off u32, info_size u32 }`. Use the `console_*` helpers.
    pub console: [u8; 16],
    /// Virtual address of the initial page-table root (L4).
    pub pt_base: u64,
    /// Number of bootstrap page-table frames.
    pub nr_pt_frames: u64,
    /// Virtual address of the initial p2m list (PFN → MFN).
    pub mfn_list: u64,
    /// Virtual address of the initrd, or its first PFN with [`SIF_MOD_START_PFN`].
    pub mod_start: u64,
    /// Size of the initrd in bytes.
    pub mod_len: u64,
    /// NUL-terminated kernel command line.
    pub cmd_line: [u8; MAX_GUEST_CMDLINE],
    /// First PFN of a separately mapped p2m list (`INIT_P2M` note), else 0.
    pub first_p2m_pfn: u64,
    /// Frames of the separately mapped p2m list including its page tables, else 0.
    pub nr_p2m_frames: u64,
}

assert_layout!(StartInfo, 1168, {
    magic: 0,
    nr_pages: 32,
    shared_info: 40,
    flags: 48,
    pad0: 52,
    store_mfn: 56,
    store_evtchn: 64,
    pad1: 68,
    console: 72,
    pt_base: 88,
    nr_pt_frames: 96,
    mfn_list: 104,
    mod_start: 112,
    mod_len: 120,
    cmd_line: 128,
    first_p2m_pfn: 1152,
    nr_p2m_frames: 1160,
});

impl StartInfo {
    /// The domU view of the console union: `(mfn, evtchn)` of the console ring.
    pub fn console_domu(&self) -> (u64, u32) {
        let c = self.console_domu_struct();
        (c.mfn, c.evtchn)
    }

    /// The domU view of the console union as a structure.
    pub fn console_domu_struct(&self) -> ConsoleDomU {
        ConsoleDomU::read_from_bytes(&self.console).unwrap_or_default()
    }

    /// Sets the domU view of the console union (clearing the rest of the union).
    pub fn set_console_domu(&mut self, mfn: u64, evtchn: u32) {
        let c = ConsoleDomU {
            mfn,
            evtchn,
            pad: 0,
        };
        self.console.copy_from_slice(c.as_bytes());
    }

    /// The dom0 view of the console union: `(info_off, info_size)`.
    pub fn console_dom0(&self) -> (u32, u32) {
        let c = ConsoleDom0::read_from_bytes(&self.console).unwrap_or_default();
        (c.info_off, c.info_size)
    }

    /// Sets the dom0 view of the console union (clearing the rest of the union).
    pub fn set_console_dom0(&mut self, info_off: u32, info_size: u32) {
        let c = ConsoleDom0 {
            info_off,
            info_size,
            pad: [0; 2],
        };
        self.console.copy_from_slice(c.as_bytes());
    }

    /// Writes [`START_INFO_MAGIC`] (NUL-padded) into `magic`.
    pub fn set_magic(&mut self) {
        self.magic = [0; 32];
        self.magic[..START_INFO_MAGIC.len()].copy_from_slice(START_INFO_MAGIC);
    }

    /// Copies `cmdline` into `cmd_line`, truncated so that a terminating NUL always fits.
    /// Returns `false` if it had to be truncated.
    pub fn set_cmd_line(&mut self, cmdline: &[u8]) -> bool {
        let n = cmdline.len().min(MAX_GUEST_CMDLINE - 1);
        self.cmd_line = [0; MAX_GUEST_CMDLINE];
        self.cmd_line[..n].copy_from_slice(&cmdline[..n]);
        n == cmdline.len()
    }

    /// The command line up to (not including) its first NUL.
    pub fn cmd_line_bytes(&self) -> &[u8] {
        let end = self
            .cmd_line
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_GUEST_CMDLINE);
        &self.cmd_line[..end]
    }
}

// ---------------------------------------------------------------------------------------
// shared_info / vcpu_info
// ---------------------------------------------------------------------------------------

/// `XEN_LEGACY_MAX_VCPUS`: vCPUs that have a `vcpu_info` slot inside `shared_info`.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Number of 2-level event channels for a 64-bit guest (64 words × 64 bits).
pub const NR_EVENT_CHANNELS: usize = 4096;
/// `vcpu_time_info.flags` bit: the TSC is stable across vCPUs.
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `vcpu_time_info.flags` bit: the vCPU was stopped (paused) by the toolstack.
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (32 bytes): per-vCPU system time parameters. Written by the
/// hypervisor (`version` odd while an update is in progress), read by the guest.
#[doc(alias = "vcpu_time_info")]
#[doc(alias = "vcpu_time_info_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Update counter: incremented before and after each update (odd = updating).
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// System time (ns since boot) at `tsc_timestamp`.
    pub system_time: u64,
    /// 32.32 fixed-point multiplier from shifted TSC ticks to ns.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying (left if positive).
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}
assert_layout!(VcpuTimeInfo, 32, {
    version: 0,
    pad0: 4,
    tsc_timestamp: 8,
    system_time: 16,
    tsc_to_system_mul: 24,
    tsc_shift: 28,
    flags: 29,
    pad1: 30,
});

/// `struct arch_vcpu_info` (x86_64, 16 bytes).
#[doc(alias = "arch_vcpu_info")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// Faulting address of the last page fault delivered (hypervisor writes).
    pub cr2: u64,
    /// Padding (keeps `vcpu_info` at 64 bytes).
    pub pad: u64,
}
assert_layout!(ArchVcpuInfo, 16, { cr2: 0, pad: 8 });

/// `struct vcpu_info` (64 bytes): per-vCPU event and time state, in `shared_info` or at
/// the address registered with `VCPUOP_register_vcpu_info`.
#[doc(alias = "vcpu_info")]
#[doc(alias = "vcpu_info_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by the hypervisor when an upcall is wanted; cleared by the guest before it
    /// scans for pending events.
    pub evtchn_upcall_pending: u8,
    /// Written by the guest: its virtual "interrupts disabled" flag; non-zero blocks
    /// upcalls. The hypervisor sets it when it delivers an upcall or masking trap.
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub pad: [u8; 6],
    /// Selector of `evtchn_pending` words with work: set by the hypervisor, cleared by the
    /// guest.
    pub evtchn_pending_sel: u64,
    /// Architecture-specific part.
    pub arch: ArchVcpuInfo,
    /// System time parameters (hypervisor writes).
    pub time: VcpuTimeInfo,
}
assert_layout!(VcpuInfo, 64, {
    evtchn_upcall_pending: 0,
    evtchn_upcall_mask: 1,
    pad: 2,
    evtchn_pending_sel: 8,
    arch: 16,
    time: 32,
});

/// `struct arch_shared_info` (x86_64, 48 bytes). Apart from `nmi_reason` (hypervisor
/// writes) these are written by the guest for the benefit of the toolstack.
#[doc(alias = "arch_shared_info")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Guest writes: number of valid entries in its p2m.
    pub max_pfn: u64,
    /// Guest writes: MFN of the 3-level p2m frame list list (0 = not set up, ~0 = invalid).
    pub pfn_to_mfn_frame_list_list: u64,
    /// Hypervisor writes: NMI reason bits (dom0).
    pub nmi_reason: u64,
    /// Guest writes: CR3 (folded MFN) of the address space where `p2m_vaddr` is valid.
    pub p2m_cr3: u64,
    /// Guest writes: virtual address of the linear p2m list.
    pub p2m_vaddr: u64,
    /// Guest writes: generation count of the p2m mapping (odd = update in progress).
    pub p2m_generation: u64,
}
assert_layout!(ArchSharedInfo, 48, {
    max_pfn: 0,
    pfn_to_mfn_frame_list_list: 8,
    nmi_reason: 16,
    p2m_cr3: 24,
    p2m_vaddr: 32,
    p2m_generation: 40,
});

/// `struct shared_info` (x86_64, 3136 bytes, in its own page): legacy `vcpu_info` slots,
/// the 2-level event channel bitmaps and the wall clock.
#[doc(alias = "shared_info")]
#[doc(alias = "shared_info_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU info of vCPUs 0..32.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// Pending bit per port: set by the hypervisor, cleared by the guest.
    pub evtchn_pending: [u64; 64],
    /// Mask bit per port: written by the guest (and cleared by `EVTCHNOP_unmask`).
    pub evtchn_mask: [u64; 64],
    /// Wall-clock seqlock counter (hypervisor writes; odd = update in progress).
    pub wc_version: u32,
    /// Wall-clock seconds at system time 0, low 32 bits (hypervisor writes).
    pub wc_sec: u32,
    /// Wall-clock nanoseconds at system time 0 (hypervisor writes).
    pub wc_nsec: u32,
    /// Wall-clock seconds, high 32 bits (hypervisor writes).
    pub wc_sec_hi: u32,
    /// Architecture-specific part.
    pub arch: ArchSharedInfo,
}
assert_layout!(SharedInfo, 3136, {
    vcpu_info: 0,
    evtchn_pending: 2048,
    evtchn_mask: 2560,
    wc_version: 3072,
    wc_sec: 3076,
    wc_nsec: 3080,
    wc_sec_hi: 3084,
    arch: 3088,
});

// ---------------------------------------------------------------------------------------
// VIRQs
// ---------------------------------------------------------------------------------------

/// Per-vCPU: timer tick / requested timeout.
pub const VIRQ_TIMER: u32 = 0;
/// Per-vCPU: request to dump debug info.
pub const VIRQ_DEBUG: u32 = 1;
/// Global: bytes received on the emergency console.
pub const VIRQ_CONSOLE: u32 = 2;
/// Global: exceptional event for some domain.
pub const VIRQ_DOM_EXC: u32 = 3;
/// Global: trace buffer has records.
pub const VIRQ_TBUF: u32 = 4;
/// Global: a domain has paused for debugging.
pub const VIRQ_DEBUGGER: u32 = 6;
/// Per-vCPU: xenoprof sample available.
pub const VIRQ_XENOPROF: u32 = 7;
/// Global: bytes received on the console ring.
pub const VIRQ_CON_RING: u32 = 8;
/// Global: physical CPU state changed.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// Global: a memory event occurred.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// Per-domain: Argo message notification.
pub const VIRQ_ARGO: u32 = 11;
/// Global: hypervisor low on heap memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// Per-vCPU: PMC interrupt.
pub const VIRQ_XENPMU: u32 = 13;
/// Number of VIRQs (`NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;

// ---------------------------------------------------------------------------------------
// Selectors and address space (xen-x86_64.h)
// ---------------------------------------------------------------------------------------

/// Flat 32-bit ring-3 code selector (GDT index 0xE020/8, hypervisor's reserved GDT page).
pub const FLAT_RING3_CS32: u16 = 0xE023;
/// Flat 64-bit ring-3 code selector.
pub const FLAT_RING3_CS64: u16 = 0xE033;
/// Flat 32-bit ring-3 data selector.
pub const FLAT_RING3_DS32: u16 = 0xE02B;
/// 64-bit ring-3 data selector: the null selector.
pub const FLAT_RING3_DS64: u16 = 0x0000;
/// Flat 32-bit ring-3 stack selector.
pub const FLAT_RING3_SS32: u16 = 0xE02B;
/// Flat 64-bit ring-3 stack selector.
pub const FLAT_RING3_SS64: u16 = 0xE02B;
/// Guest kernel code selector (= [`FLAT_RING3_CS64`]).
pub const FLAT_KERNEL_CS: u16 = FLAT_RING3_CS64;
/// Guest kernel stack selector (= [`FLAT_RING3_SS64`]).
pub const FLAT_KERNEL_SS: u16 = FLAT_RING3_SS64;
/// Guest kernel data selector (= [`FLAT_RING3_DS64`]).
pub const FLAT_KERNEL_DS: u16 = FLAT_RING3_DS64;
/// Guest user code selector (= [`FLAT_RING3_CS64`]).
pub const FLAT_USER_CS: u16 = FLAT_RING3_CS64;
/// Guest user stack selector (= [`FLAT_RING3_SS64`]).
pub const FLAT_USER_SS: u16 = FLAT_RING3_SS64;
/// Guest user data selector (= [`FLAT_RING3_DS64`]).
pub const FLAT_USER_DS: u16 = FLAT_RING3_DS64;

/// Start of the hypervisor-reserved virtual range (L4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// End (exclusive) of the hypervisor-reserved virtual range (L4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xffff_8800_0000_0000;
/// Start of the read-only machine-to-phys table mapped into every guest.
pub const MACH2PHYS_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// End (exclusive) of the machine-to-phys table.
pub const MACH2PHYS_VIRT_END: u64 = 0xffff_8040_0000_0000;
/// Number of u64 entries in the machine-to-phys table.
pub const MACH2PHYS_NR_ENTRIES: u64 = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) >> 3;

// ---------------------------------------------------------------------------------------
// Trap table, iret, vCPU context
// ---------------------------------------------------------------------------------------

/// `TI_GET_DPL` mask of [`TrapInfo::flags`]: the DPL checked for `int $n`.
pub const TI_DPL_MASK: u8 = 3;
/// `TI_GET_IF` bit of [`TrapInfo::flags`]: mask events on entry (an "interrupt gate").
pub const TI_IF_FLAG: u8 = 4;

/// `struct trap_info` (16 bytes): one entry of the virtual IDT given to `set_trap_table`
/// (written by the guest). A table ends at the first entry whose `address` is 0.
#[doc(alias = "trap_info")]
#[doc(alias = "trap_info_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct TrapInfo {
    /// Exception or interrupt vector.
    pub vector: u8,
    /// Bits 0-1: DPL; bit 2: disable events on entry.
    pub flags: u8,
    /// Code selector (ignored for 64-bit frames).
    pub cs: u16,
    /// Padding.
    pub pad: u32,
    /// Handler address (0 = no handler).
    pub address: u64,
}
assert_layout!(TrapInfo, 16, { vector: 0, flags: 1, cs: 2, pad: 4, address: 8 });

impl TrapInfo {
    /// `TI_GET_DPL`: the privilege level needed to reach this vector with `int $n`.
    pub const fn dpl(&self) -> u8 {
        self.flags & TI_DPL_MASK
    }

    /// `TI_GET_IF`: whether events are masked when the handler is entered.
    pub const fn disables_events(&self) -> bool {
        self.flags & TI_IF_FLAG != 0
    }
}

/// `VGCF_i387_valid`: the FPU context is valid.
pub const VGCF_I387_VALID: u64 = 1 << 0;
/// `VGCF_in_kernel`: the vCPU starts in guest-kernel mode.
pub const VGCF_IN_KERNEL: u64 = 1 << 2;
/// `VGCF_failsafe_disables_events`: mask events when entering the failsafe callback.
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = 1 << 3;
/// `VGCF_syscall_disables_events`: mask events when entering the syscall callback.
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = 1 << 4;
/// `VGCF_online`: the vCPU is online.
pub const VGCF_ONLINE: u64 = 1 << 5;
/// `VGCF_in_syscall` ([`IretContext::flags`]): R11/RCX in the frame are not to be
/// restored (the return may use `sysret`).
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

/// `struct iret_context` (72 bytes): the frame a guest builds on its stack before the
/// `iret` hypercall (lowest address first = RSP at the hypercall). Guest writes.
#[doc(alias = "iret_context")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct IretContext {
    /// RAX to restore.
    pub rax: u64,
    /// R11 to restore (unless [`VGCF_IN_SYSCALL`]).
    pub r11: u64,
    /// RCX to restore (unless [`VGCF_IN_SYSCALL`]).
    pub rcx: u64,
    /// `VGCF_in_syscall` or 0.
    pub flags: u64,
    /// Return RIP.
    pub rip: u64,
    /// Return CS (RPL 3 = return to user mode).
    pub cs: u64,
    /// Return RFLAGS (IF gives the new event mask).
    pub rflags: u64,
    /// Return RSP.
    pub rsp: u64,
    /// Return SS.
    pub ss: u64,
}
assert_layout!(IretContext, 72, {
    rax: 0,
    r11: 8,
    rcx: 16,
    flags: 24,
    rip: 32,
    cs: 40,
    rflags: 48,
    rsp: 56,
    ss: 64,
});

/// `struct cpu_user_regs` (x86_64, 200 bytes): guest general-purpose and segment registers
/// as found in [`VcpuGuestContext::user_regs`].
#[doc(alias = "cpu_user_regs")]
#[doc(alias = "cpu_user_regs_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
#[allow(missing_docs)] // register fields are named after the registers
pub struct CpuUserRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Hypervisor-private: error code of the exception.
    pub error_code: u32,
    /// Hypervisor-private: vector of the exception.
    pub entry_vector: u32,
    pub rip: u64,
    pub cs: u16,
    /// Padding.
    pub pad0: u16,
    /// Event mask saved across an exception (`rflags.IF == !saved_upcall_mask`).
    pub saved_upcall_mask: u8,
    /// Padding.
    pub pad1: [u8; 3],
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u16,
    /// Padding.
    pub pad2: [u16; 3],
    pub es: u16,
    /// Padding.
    pub pad3: [u16; 3],
    pub ds: u16,
    /// Padding.
    pub pad4: [u16; 3],
    pub fs: u16,
    /// Padding.
    pub pad5: [u16; 3],
    pub gs: u16,
    /// Padding.
    pub pad6: [u16; 3],
}
assert_layout!(CpuUserRegs, 200, {
    r15: 0,
    r14: 8,
    r13: 16,
    r12: 24,
    rbp: 32,
    rbx: 40,
    r11: 48,
    r10: 56,
    r9: 64,
    r8: 72,
    rax: 80,
    rcx: 88,
    rdx: 96,
    rsi: 104,
    rdi: 112,
    error_code: 120,
    entry_vector: 124,
    rip: 128,
    cs: 136,
    pad0: 138,
    saved_upcall_mask: 140,
    pad1: 141,
    rflags: 144,
    rsp: 152,
    ss: 160,
    pad2: 162,
    es: 168,
    pad3: 170,
    ds: 176,
    pad4: 178,
    fs: 184,
    pad5: 186,
    gs: 192,
    pad6: 194,
});

/// `struct vcpu_guest_context` (x86_64, 5168 bytes): the full initial state of a vCPU,
/// given by the guest to `VCPUOP_initialise` (and by the builder for vCPU 0).
#[doc(alias = "vcpu_guest_context")]
#[doc(alias = "vcpu_guest_context_t")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct VcpuGuestContext {
    /// FXSAVE image of the FPU/SSE state (valid with [`VGCF_I387_VALID`]).
    pub fpu_ctxt: [u8; 512],
    /// `VGCF_*` flags.
    pub flags: u64,
    /// General-purpose and segment registers.
    pub user_regs: CpuUserRegs,
    /// Virtual IDT.
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT linear address.
    pub ldt_base: u64,
    /// Number of LDT entries.
    pub ldt_ents: u64,
    /// GDT machine frames.
    pub gdt_frames: [u64; 16],
    /// Number of GDT entries.
    pub gdt_ents: u64,
    /// Kernel stack selector (virtual TSS SS1).
    pub kernel_ss: u64,
    /// Kernel stack pointer (virtual TSS SP1).
    pub kernel_sp: u64,
    /// CR0-CR7; CR3 is the kernel page-table root and `ctrlreg[1]` the user one, both as
    /// folded MFNs (`xen_pfn_to_cr3`).
    pub ctrlreg: [u64; 8],
    /// DR0-DR7.
    pub debugreg: [u64; 8],
    /// Event upcall callback address.
    pub event_callback_eip: u64,
    /// Failsafe callback address.
    pub failsafe_callback_eip: u64,
    /// Syscall callback address.
    pub syscall_callback_eip: u64,
    /// `VMASST_TYPE_*` bitmap.
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// Kernel GS base.
    pub gs_base_kernel: u64,
    /// User GS base.
    pub gs_base_user: u64,
}
assert_layout!(VcpuGuestContext, 5168, {
    fpu_ctxt: 0,
    flags: 512,
    user_regs: 520,
    trap_ctxt: 720,
    ldt_base: 4816,
    ldt_ents: 4824,
    gdt_frames: 4832,
    gdt_ents: 4960,
    kernel_ss: 4968,
    kernel_sp: 4976,
    ctrlreg: 4984,
    debugreg: 5048,
    event_callback_eip: 5112,
    failsafe_callback_eip: 5120,
    syscall_callback_eip: 5128,
    vm_assist: 5136,
    fs_base: 5144,
    gs_base_kernel: 5152,
    gs_base_user: 5160,
});

zeroed_default!(StartInfo, SharedInfo, VcpuGuestContext);

/// `xen_pfn_to_cr3`: the CR3 value Xen uses for a page-table root MFN.
pub const fn xen_pfn_to_cr3(pfn: u64) -> u64 {
    pfn << 12
}

/// `xen_cr3_to_pfn`: the root MFN of a CR3 value.
pub const fn xen_cr3_to_pfn(cr3: u64) -> u64 {
    cr3 >> 12
}

// ---------------------------------------------------------------------------------------
// set_segment_base, console_io, vm_assist
// ---------------------------------------------------------------------------------------

/// `set_segment_base`: set the FS base.
pub const SEGBASE_FS: u32 = 0;
/// `set_segment_base`: set the user GS base.
pub const SEGBASE_GS_USER: u32 = 1;
/// `set_segment_base`: set the kernel GS base.
pub const SEGBASE_GS_KERNEL: u32 = 2;
/// `set_segment_base`: load the user GS selector given in `base[15:0]`.
pub const SEGBASE_GS_USER_SEL: u32 = 3;

/// `console_io`: write `count` bytes from `buf` to the console.
pub const CONSOLEIO_WRITE: u32 = 0;
/// `console_io`: read up to `count` bytes into `buf`.
pub const CONSOLEIO_READ: u32 = 1;

/// `vm_assist` command: enable an assist.
pub const VMASST_CMD_ENABLE: u32 = 0;
/// `vm_assist` command: disable an assist.
pub const VMASST_CMD_DISABLE: u32 = 1;
/// Assist: emulate 4GB segments (x86_32 only).
pub const VMASST_TYPE_4GB_SEGMENTS: u32 = 0;
/// Assist: notify on 4GB segment emulation (x86_32 only).
pub const VMASST_TYPE_4GB_SEGMENTS_NOTIFY: u32 = 1;
/// Assist: writable page tables (emulate writes to L1 page tables).
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u32 = 2;
/// Assist: PAE L3 above 4GB (x86_32 only).
pub const VMASST_TYPE_PAE_EXTENDED_CR3: u32 = 3;
/// Assist: IOPL in RFLAGS follows architectural behaviour.
pub const VMASST_TYPE_ARCHITECTURAL_IOPL: u32 = 4;
/// Assist: set `XEN_RUNSTATE_UPDATE` in the runstate area while updating it.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u32 = 5;
/// Assist: strict M2P (user mode cannot see M2P entries of other domains' pages).
pub const VMASST_TYPE_M2P_STRICT: u32 = 32;

// ---------------------------------------------------------------------------------------
// mmu_update / mmuext_op / update_va_mapping
// ---------------------------------------------------------------------------------------

/// `mmu_update` command in `ptr[1:0]`: checked `*ptr = val` (ptr is a machine address).
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// `mmu_update` command: `ptr` = machine address of a frame; set its M2P entry to `val`.
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
/// `mmu_update` command: like normal update but preserve the A/D bits of the old entry.
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
/// `mmu_update` command: checked update without translating `val` (translated guests).
pub const MMU_PT_UPDATE_NO_TRANSLATE: u64 = 3;
/// Flag Xen ORs into the `count` argument of a continued `mmu_update`/`mmuext_op`
/// (not in the public headers: `xen/arch/x86/include/asm/hypercall.h`).
pub const MMU_UPDATE_PREEMPTED: u32 = 1 << 31;

/// `struct mmu_update` (16 bytes): one request of `mmu_update` (guest writes).
#[doc(alias = "mmu_update")]
#[doc(alias = "mmu_update_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the entry to update; bits 1:0 hold the `MMU_*` command.
    pub ptr: u64,
    /// New contents.
    pub val: u64,
}
assert_layout!(MmuUpdate, 16, { ptr: 0, val: 8 });

/// `mmuext_op`: pin an L1 table.
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// `mmuext_op`: pin an L2 table.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// `mmuext_op`: pin an L3 table.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// `mmuext_op`: pin an L4 table.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `mmuext_op`: unpin a table.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// `mmuext_op`: switch the kernel page-table root.
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// `mmuext_op`: flush the local TLB.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// `mmuext_op`: invalidate one local TLB entry.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// `mmuext_op`: flush the TLBs of a vCPU set.
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// `mmuext_op`: invalidate one entry on a vCPU set.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// `mmuext_op`: flush all TLBs of the domain.
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
/// `mmuext_op`: invalidate one entry on all vCPUs.
pub const MMUEXT_INVLPG_ALL: u32 = 11;
/// `mmuext_op`: write back and invalidate the local cache.
pub const MMUEXT_FLUSH_CACHE: u32 = 12;
/// `mmuext_op`: set the LDT (linear address, entries).
pub const MMUEXT_SET_LDT: u32 = 13;
/// `mmuext_op`: switch the user page-table root.
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
/// `mmuext_op`: zero a frame.
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
/// `mmuext_op`: copy a frame.
pub const MMUEXT_COPY_PAGE: u32 = 17;
/// `mmuext_op`: write back and invalidate all caches.
pub const MMUEXT_FLUSH_CACHE_GLOBAL: u32 = 18;
/// `mmuext_op`: mark a superpage (removed in newer Xen).
pub const MMUEXT_MARK_SUPER: u32 = 19;
/// `mmuext_op`: unmark a superpage (removed in newer Xen).
pub const MMUEXT_UNMARK_SUPER: u32 = 20;

/// `struct mmuext_op` (24 bytes): one request of `mmuext_op` (guest writes).
#[doc(alias = "mmuext_op")]
#[doc(alias = "mmuext_op_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MmuextOp {
    /// `MMUEXT_*` command.
    pub cmd: u32,
    /// Padding.
    pub pad: u32,
    /// Union `arg1`: MFN (pin/unpin/baseptr/clear/copy) or linear address (invlpg, LDT).
    pub arg1: u64,
    /// Union `arg2`: number of LDT entries, guest VA of a vCPU bitmap (`*_MULTI`), or
    /// source MFN (`COPY_PAGE`).
    pub arg2: u64,
}
assert_layout!(MmuextOp, 24, { cmd: 0, pad: 4, arg1: 8, arg2: 16 });

/// `update_va_mapping` flags: no flush.
pub const UVMF_NONE: u64 = 0;
/// Flush the entire TLB(s).
pub const UVMF_TLB_FLUSH: u64 = 1;
/// Flush only the one entry.
pub const UVMF_INVLPG: u64 = 2;
/// Mask of the flush type.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;
/// Flush a subset of TLBs (bitmap pointer in the upper bits).
pub const UVMF_MULTI: u64 = 0;
/// Flush the local TLB.
pub const UVMF_LOCAL: u64 = 0;
/// Flush all TLBs of the domain.
pub const UVMF_ALL: u64 = 1 << 2;

// ---------------------------------------------------------------------------------------
// CPUID / forced emulation
// ---------------------------------------------------------------------------------------

/// First hypervisor CPUID leaf (Xen's leaves may be shifted by 0x100 steps).
pub const XEN_CPUID_FIRST_LEAF: u32 = 0x4000_0000;
/// Signature in EBX/ECX/EDX of the first hypervisor leaf.
pub const XEN_CPUID_SIGNATURE: [u8; 12] = *b"XenVMMXenVMM";
/// Forced-emulation prefix (`ud2; .ascii "xen"`): a PV guest puts it before `cpuid` to
/// get the virtualised result.
pub const XEN_EMULATE_PREFIX: [u8; 5] = [0x0f, 0x0b, b'x', b'e', b'n'];

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromZeros;

    #[test]
    fn console_union_domu() {
        let mut si = StartInfo::new_zeroed();
        si.set_console_domu(0x1234_5678_9abc, 7);
        assert_eq!(si.console_domu(), (0x1234_5678_9abc, 7));
        assert_eq!(&si.as_bytes()[72..80], &0x1234_5678_9abcu64.to_le_bytes());
        assert_eq!(&si.as_bytes()[80..84], &7u32.to_le_bytes());
    }

    #[test]
    fn console_union_dom0() {
        let mut si = StartInfo::new_zeroed();
        si.set_console_domu(u64::MAX, u32::MAX);
        si.set_console_dom0(0x600, 0x40);
        assert_eq!(si.console_dom0(), (0x600, 0x40));
        assert_eq!(&si.as_bytes()[72..76], &0x600u32.to_le_bytes());
        assert_eq!(&si.as_bytes()[76..80], &0x40u32.to_le_bytes());
        // the rest of the union is cleared
        assert!(si.as_bytes()[80..88].iter().all(|&b| b == 0));
    }

    #[test]
    fn magic_and_cmdline() {
        let mut si = StartInfo::default();
        si.set_magic();
        assert!(si.magic.starts_with(START_INFO_MAGIC));
        assert_eq!(si.magic[START_INFO_MAGIC.len()], 0);
        assert!(si.set_cmd_line(b"console=hvc0"));
        assert_eq!(si.cmd_line_bytes(), b"console=hvc0");
        let long = [b'a'; 2000];
        assert!(!si.set_cmd_line(&long));
        assert_eq!(si.cmd_line_bytes().len(), MAX_GUEST_CMDLINE - 1);
    }

    #[test]
    fn zeroed_structs() {
        let sh = SharedInfo::new_zeroed();
        assert!(sh.as_bytes().iter().all(|&b| b == 0));
        let ctx = <VcpuGuestContext as FromZeros>::new_zeroed();
        assert_eq!(ctx.as_bytes().len(), 5168);
    }

    #[test]
    fn trap_info_flags() {
        let ti = TrapInfo {
            vector: 3,
            flags: 3 | TI_IF_FLAG,
            ..Default::default()
        };
        assert_eq!(ti.dpl(), 3);
        assert!(ti.disables_events());
    }

    #[test]
    fn cr3_folding() {
        assert_eq!(xen_pfn_to_cr3(0x1234), 0x123_4000);
        assert_eq!(xen_cr3_to_pfn(0x123_4000), 0x1234);
    }
}
