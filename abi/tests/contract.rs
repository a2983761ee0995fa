//! Compile-time check that every name listed in the inter-crate contract
//! (`notes/abi-names.md`) exists with the agreed path and type.

#![allow(clippy::no_effect, clippy::unnecessary_operation)]

use xen_abi::callback::*;
use xen_abi::elfnote::*;
use xen_abi::event_channel::*;
use xen_abi::grant_table::*;
use xen_abi::hypercall::*;
use xen_abi::memory::*;
use xen_abi::sched::*;
use xen_abi::sysctl::*;
use xen_abi::vcpu::*;
use xen_abi::version::*;
use xen_abi::xen::*;
use xen_abi::*;

#[test]
fn types_and_errno() {
    let _: (Mfn, Pfn, Gfn, MachineAddr) =
        (Mfn::new(1), Pfn::new(1), Gfn::new(1), MachineAddr::new(1));
    let _: (DomId, EvtchnPort, VcpuId, GrantRef) = (
        DomId::new(1),
        EvtchnPort::new(1),
        VcpuId::new(1),
        GrantRef::new(1),
    );
    let _: u64 = Mfn::new(1).raw();
    let _: MachineAddr = Mfn::new(1).base();
    let _: Mfn = Mfn::containing(MachineAddr::new(0));
    let _ = MachineAddr::new(0).page_offset();
    let _: [DomId; 7] = [
        DomId::SELF,
        DomId::IO,
        DomId::XEN,
        DomId::COW,
        DomId::INVALID,
        DomId::ANY,
        DomId::IDLE,
    ];
    let _: bool = DomId::SELF.is_reserved();
    let _: usize = PAGE_SIZE;
    let _ = PAGE_SHIFT;
    let _: i64 = Errno::EINVAL.to_ret();
    let _: Option<Errno> = Errno::from_ret(-1);
    let _: &'static str = Errno::ENOSYS.name();
    let _: Errno = xen_abi::errno::Errno::EOPNOTSUPP;
}

#[test]
fn hypercalls() {
    let _: [u64; 42] = [
        SET_TRAP_TABLE,
        MMU_UPDATE,
        SET_GDT,
        STACK_SWITCH,
        SET_CALLBACKS,
        FPU_TASKSWITCH,
        SCHED_OP_COMPAT,
        PLATFORM_OP,
        SET_DEBUGREG,
        GET_DEBUGREG,
        UPDATE_DESCRIPTOR,
        MEMORY_OP,
        MULTICALL,
        UPDATE_VA_MAPPING,
        SET_TIMER_OP,
        EVENT_CHANNEL_OP_COMPAT,
        XEN_VERSION,
        CONSOLE_IO,
        PHYSDEV_OP_COMPAT,
        GRANT_TABLE_OP,
        VM_ASSIST,
        UPDATE_VA_MAPPING_OTHERDOMAIN,
        IRET,
        VCPU_OP,
        SET_SEGMENT_BASE,
        MMUEXT_OP,
        XSM_OP,
        NMI_OP,
        SCHED_OP,
        CALLBACK_OP,
        XENOPROF_OP,
        EVENT_CHANNEL_OP,
        PHYSDEV_OP,
        HVM_OP,
        SYSCTL,
        DOMCTL,
        KEXEC_OP,
        TMEM_OP,
        ARGO_OP,
        XENPMU_OP,
        DM_OP,
        HYPFS_OP,
    ];
    let _: usize = NR_HYPERCALLS;
    let _ = MulticallEntry {
        op: 0,
        result: 0,
        args: [0; 6],
    };
}

#[test]
fn xen_h() {
    let mut si = StartInfo::new_zeroed();
    let _: ([u8; 32], u64, u64, u32, u64, u32, [u8; 16]) = (
        si.magic,
        si.nr_pages,
        si.shared_info,
        si.flags,
        si.store_mfn,
        si.store_evtchn,
        si.console,
    );
    let _ = (
        si.pt_base,
        si.nr_pt_frames,
        si.mfn_list,
        si.mod_start,
        si.mod_len,
        si.cmd_line,
    );
    let _ = (si.first_p2m_pfn, si.nr_p2m_frames);
    let _: (u64, u32) = si.console_domu();
    si.set_console_domu(1, 2);
    si.set_console_dom0(3, 4);
    let _: &[u8] = START_INFO_MAGIC;
    let _ = MAX_GUEST_CMDLINE;
    let _ = [
        SIF_PRIVILEGED,
        SIF_INITDOMAIN,
        SIF_MULTIBOOT_MOD,
        SIF_MOD_START_PFN,
        SIF_VIRT_P2M_4TOOLS,
    ];
    let vi = VcpuInfo::default();
    let _: (u8, u8, [u8; 6], u64, ArchVcpuInfo, VcpuTimeInfo) = (
        vi.evtchn_upcall_pending,
        vi.evtchn_upcall_mask,
        vi.pad,
        vi.evtchn_pending_sel,
        vi.arch,
        vi.time,
    );
    let _ = (vi.arch.cr2, vi.arch.pad);
    let sh = SharedInfo::new_zeroed();
    let _: ([VcpuInfo; 32], [u64; 64], [u64; 64]) =
        (sh.vcpu_info, sh.evtchn_pending, sh.evtchn_mask);
    let _: (u32, u32, u32, u32, ArchSharedInfo) =
        (sh.wc_version, sh.wc_sec, sh.wc_nsec, sh.wc_sec_hi, sh.arch);
    let a = sh.arch;
    let _ = (
        a.max_pfn,
        a.pfn_to_mfn_frame_list_list,
        a.nmi_reason,
        a.p2m_cr3,
        a.p2m_vaddr,
        a.p2m_generation,
    );
    let _ = (
        XEN_LEGACY_MAX_VCPUS,
        NR_EVENT_CHANNELS,
        XEN_PVCLOCK_TSC_STABLE_BIT,
    );
    let _: [u32; 14] = [
        VIRQ_TIMER,
        VIRQ_DEBUG,
        VIRQ_CONSOLE,
        VIRQ_DOM_EXC,
        VIRQ_TBUF,
        VIRQ_DEBUGGER,
        VIRQ_XENOPROF,
        VIRQ_CON_RING,
        VIRQ_PCPU_STATE,
        VIRQ_MEM_EVENT,
        VIRQ_ARGO,
        VIRQ_ENOMEM,
        VIRQ_XENPMU,
        NR_VIRQS,
    ];
    let _: [u16; 11] = [
        FLAT_RING3_CS32,
        FLAT_RING3_CS64,
        FLAT_RING3_DS32,
        FLAT_RING3_SS32,
        FLAT_RING3_SS64,
        FLAT_RING3_DS64,
        FLAT_KERNEL_CS,
        FLAT_KERNEL_SS,
        FLAT_KERNEL_DS,
        FLAT_USER_CS,
        FLAT_USER_SS,
    ];
    let _: [u64; 4] = [
        HYPERVISOR_VIRT_START,
        HYPERVISOR_VIRT_END,
        MACH2PHYS_VIRT_START,
        MACH2PHYS_VIRT_END,
    ];
    let _ = TrapInfo {
        vector: 0u8,
        flags: 0u8,
        cs: 0u16,
        pad: 0u32,
        address: 0u64,
    };
    let _ = IretContext {
        rax: 0,
        r11: 0,
        rcx: 0,
        flags: 0,
        rip: 0,
        cs: 0,
        rflags: 0,
        rsp: 0,
        ss: 0,
    };
    let _ = [
        VGCF_I387_VALID,
        VGCF_IN_KERNEL,
        VGCF_FAILSAFE_DISABLES_EVENTS,
        VGCF_SYSCALL_DISABLES_EVENTS,
        VGCF_ONLINE,
        VGCF_IN_SYSCALL,
    ];
    let _ = (CpuUserRegs::default(), VcpuGuestContext::new_zeroed());
    let _ = [
        SEGBASE_FS,
        SEGBASE_GS_USER,
        SEGBASE_GS_KERNEL,
        SEGBASE_GS_USER_SEL,
    ];
    let _ = [CONSOLEIO_WRITE, CONSOLEIO_READ];
    let _ = [
        VMASST_CMD_ENABLE,
        VMASST_CMD_DISABLE,
        VMASST_TYPE_4GB_SEGMENTS,
        VMASST_TYPE_4GB_SEGMENTS_NOTIFY,
        VMASST_TYPE_WRITABLE_PAGETABLES,
        VMASST_TYPE_PAE_EXTENDED_CR3,
        VMASST_TYPE_ARCHITECTURAL_IOPL,
        VMASST_TYPE_RUNSTATE_UPDATE_FLAG,
        VMASST_TYPE_M2P_STRICT,
    ];
    let _ = [
        MMU_NORMAL_PT_UPDATE,
        MMU_MACHPHYS_UPDATE,
        MMU_PT_UPDATE_PRESERVE_AD,
        MMU_PT_UPDATE_NO_TRANSLATE,
    ];
    let _ = MmuUpdate { ptr: 0, val: 0 };
    let _ = MmuextOp {
        cmd: 0u32,
        pad: 0u32,
        arg1: 0u64,
        arg2: 0u64,
    };
    let _ = [
        MMUEXT_PIN_L1_TABLE,
        MMUEXT_PIN_L2_TABLE,
        MMUEXT_PIN_L3_TABLE,
        MMUEXT_PIN_L4_TABLE,
        MMUEXT_UNPIN_TABLE,
        MMUEXT_NEW_BASEPTR,
        MMUEXT_TLB_FLUSH_LOCAL,
        MMUEXT_INVLPG_LOCAL,
        MMUEXT_TLB_FLUSH_MULTI,
        MMUEXT_INVLPG_MULTI,
        MMUEXT_TLB_FLUSH_ALL,
        MMUEXT_INVLPG_ALL,
        MMUEXT_FLUSH_CACHE,
        MMUEXT_SET_LDT,
        MMUEXT_NEW_USER_BASEPTR,
        MMUEXT_CLEAR_PAGE,
        MMUEXT_COPY_PAGE,
        MMUEXT_FLUSH_CACHE_GLOBAL,
        MMUEXT_MARK_SUPER,
        MMUEXT_UNMARK_SUPER,
    ];
    let _ = [
        UVMF_NONE,
        UVMF_TLB_FLUSH,
        UVMF_INVLPG,
        UVMF_FLUSHTYPE_MASK,
        UVMF_MULTI,
        UVMF_LOCAL,
        UVMF_ALL,
    ];
    let _: u32 = XEN_CPUID_FIRST_LEAF;
    let _: [u8; 12] = XEN_CPUID_SIGNATURE;
    let _: [u8; 5] = XEN_EMULATE_PREFIX;
}

#[test]
fn sub_ops() {
    let _ = [
        CALLBACKTYPE_EVENT,
        CALLBACKTYPE_FAILSAFE,
        CALLBACKTYPE_SYSCALL,
        CALLBACKTYPE_NMI,
        CALLBACKTYPE_SYSCALL32,
        CALLBACKTYPE_SYSENTER,
    ];
    let _ = (
        CALLBACKF_MASK_EVENTS,
        CALLBACKOP_REGISTER,
        CALLBACKOP_UNREGISTER,
    );
    let _ = CallbackRegister {
        kind: 0u16,
        flags: 0u16,
        pad: 0u32,
        address: 0u64,
    };
    let _ = CallbackUnregister {
        kind: 0u16,
        ..Default::default()
    };
    let _ = [
        SCHEDOP_YIELD,
        SCHEDOP_BLOCK,
        SCHEDOP_SHUTDOWN,
        SCHEDOP_POLL,
        SCHEDOP_REMOTE_SHUTDOWN,
        SCHEDOP_SHUTDOWN_CODE,
        SCHEDOP_WATCHDOG,
        SCHEDOP_PIN_OVERRIDE,
    ];
    let _ = [
        SHUTDOWN_POWEROFF,
        SHUTDOWN_REBOOT,
        SHUTDOWN_SUSPEND,
        SHUTDOWN_CRASH,
        SHUTDOWN_WATCHDOG,
        SHUTDOWN_SOFT_RESET,
    ];
    let _ = SchedShutdown { reason: 0u32 };
    let _ = SchedPoll {
        ports: 0u64,
        nr_ports: 0u32,
        pad: 0u32,
        timeout: 0u64,
    };
    let _ = SchedRemoteShutdown {
        domain_id: 0u16,
        pad: 0u16,
        reason: 0u32,
    };
    let _ = [
        EVTCHNOP_BIND_INTERDOMAIN,
        EVTCHNOP_BIND_VIRQ,
        EVTCHNOP_BIND_PIRQ,
        EVTCHNOP_CLOSE,
        EVTCHNOP_SEND,
        EVTCHNOP_STATUS,
        EVTCHNOP_ALLOC_UNBOUND,
        EVTCHNOP_BIND_IPI,
        EVTCHNOP_BIND_VCPU,
        EVTCHNOP_UNMASK,
        EVTCHNOP_RESET,
        EVTCHNOP_INIT_CONTROL,
        EVTCHNOP_EXPAND_ARRAY,
        EVTCHNOP_SET_PRIORITY,
        EVTCHNOP_RESET_CONT,
    ];
    let _ = EvtchnAllocUnbound {
        dom: 0u16,
        remote_dom: 0u16,
        port: 0u32,
    };
    let _ = EvtchnBindInterdomain {
        remote_dom: 0u16,
        pad: 0u16,
        remote_port: 0u32,
        local_port: 0u32,
    };
    let _ = EvtchnBindVirq {
        virq: 0u32,
        vcpu: 0u32,
        port: 0u32,
    };
    let _ = EvtchnBindIpi {
        vcpu: 0u32,
        port: 0u32,
    };
    let _ = (
        EvtchnClose { port: 0u32 },
        EvtchnSend { port: 0u32 },
        EvtchnUnmask { port: 0u32 },
    );
    let _ = EvtchnStatus {
        dom: 0u16,
        pad: 0u16,
        port: 0u32,
        status: 0u32,
        vcpu: 0u32,
        u: [0u32; 2],
    };
    let _ = EvtchnBindVcpu {
        port: 0u32,
        vcpu: 0u32,
    };
    let _ = EvtchnReset { dom: 0u16 };
    let _ = [
        EVTCHNSTAT_CLOSED,
        EVTCHNSTAT_UNBOUND,
        EVTCHNSTAT_INTERDOMAIN,
        EVTCHNSTAT_PIRQ,
        EVTCHNSTAT_VIRQ,
        EVTCHNSTAT_IPI,
    ];
    let _ = [
        XENVER_VERSION,
        XENVER_EXTRAVERSION,
        XENVER_COMPILE_INFO,
        XENVER_CAPABILITIES,
        XENVER_CHANGESET,
        XENVER_PLATFORM_PARAMETERS,
        XENVER_GET_FEATURES,
        XENVER_PAGESIZE,
        XENVER_GUEST_HANDLE,
        XENVER_COMMANDLINE,
        XENVER_BUILD_ID,
    ];
    let _: XenExtraversion = [0u8; 16];
    let _ = XenCompileInfo {
        compiler: [0; 64],
        compile_by: [0; 16],
        compile_domain: [0; 32],
        compile_date: [0; 32],
    };
    let _: XenCapabilitiesInfo = [0u8; 1024];
    let _: XenChangesetInfo = [0u8; 64];
    let _ = XenPlatformParameters { virt_start: 0u64 };
    let _ = XenFeatureInfo {
        submap_idx: 0u32,
        submap: 0u32,
    };
    let _: XenDomainHandle = [0u8; 16];
    let _: XenCommandline = [0u8; 1024];
    let _: [u32; 19] = [
        XENFEAT_WRITABLE_PAGE_TABLES,
        XENFEAT_WRITABLE_DESCRIPTOR_TABLES,
        XENFEAT_AUTO_TRANSLATED_PHYSMAP,
        XENFEAT_SUPERVISOR_MODE_KERNEL,
        XENFEAT_PAE_PGDIR_ABOVE_4GB,
        XENFEAT_MMU_PT_UPDATE_PRESERVE_AD,
        XENFEAT_HIGHMEM_ASSIST,
        XENFEAT_GNTTAB_MAP_AVAIL_BITS,
        XENFEAT_HVM_CALLBACK_VECTOR,
        XENFEAT_HVM_SAFE_PVCLOCK,
        XENFEAT_HVM_PIRQS,
        XENFEAT_DOM0,
        XENFEAT_GRANT_MAP_IDENTITY,
        XENFEAT_MEMORY_OP_VNODE_SUPPORTED,
        XENFEAT_ARM_SMCCC_SUPPORTED,
        XENFEAT_LINUX_RSDP_UNRESTRICTED,
        XENFEAT_DIRECT_MAPPED,
        XENFEAT_NOT_DIRECT_MAPPED,
        XENFEAT_NR_SUBMAPS,
    ];
    let _: Option<u32> = feature_from_name("dom0");
    let _: Option<u32> = xen_abi::features::feature_from_name("dom0");
    let _ = [
        VCPUOP_INITIALISE,
        VCPUOP_UP,
        VCPUOP_DOWN,
        VCPUOP_IS_UP,
        VCPUOP_GET_RUNSTATE_INFO,
        VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA,
        VCPUOP_SET_PERIODIC_TIMER,
        VCPUOP_STOP_PERIODIC_TIMER,
        VCPUOP_SET_SINGLESHOT_TIMER,
        VCPUOP_STOP_SINGLESHOT_TIMER,
        VCPUOP_REGISTER_VCPU_INFO,
        VCPUOP_SEND_NMI,
        VCPUOP_GET_PHYSID,
        VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA,
    ];
    let _ = VcpuRunstateInfo {
        state: 0i32,
        pad: 0u32,
        state_entry_time: 0u64,
        time: [0u64; 4],
    };
    let _ = [
        RUNSTATE_RUNNING,
        RUNSTATE_RUNNABLE,
        RUNSTATE_BLOCKED,
        RUNSTATE_OFFLINE,
    ];
    let _ = VcpuSetPeriodicTimer { period_ns: 0u64 };
    let _ = VcpuSetSingleshotTimer {
        timeout_abs_ns: 0u64,
        flags: VCPU_SSHOTTMR_FUTURE,
        pad: 0u32,
    };
    let _ = VcpuRegisterVcpuInfo {
        mfn: 0u64,
        offset: 0u32,
        rsvd: 0u32,
    };
    let _ = VcpuRegisterRunstateMemoryArea { addr: 0u64 };
    let _: [u32; 20] = [
        XEN_ELFNOTE_INFO,
        XEN_ELFNOTE_ENTRY,
        XEN_ELFNOTE_HYPERCALL_PAGE,
        XEN_ELFNOTE_VIRT_BASE,
        XEN_ELFNOTE_PADDR_OFFSET,
        XEN_ELFNOTE_XEN_VERSION,
        XEN_ELFNOTE_GUEST_OS,
        XEN_ELFNOTE_GUEST_VERSION,
        XEN_ELFNOTE_LOADER,
        XEN_ELFNOTE_PAE_MODE,
        XEN_ELFNOTE_FEATURES,
        XEN_ELFNOTE_BSD_SYMTAB,
        XEN_ELFNOTE_HV_START_LOW,
        XEN_ELFNOTE_L1_MFN_VALID,
        XEN_ELFNOTE_SUSPEND_CANCEL,
        XEN_ELFNOTE_INIT_P2M,
        XEN_ELFNOTE_MOD_START_PFN,
        XEN_ELFNOTE_SUPPORTED_FEATURES,
        XEN_ELFNOTE_PHYS32_ENTRY,
        XEN_ELFNOTE_PHYS32_RELOC,
    ];
    let _ = [
        XENMEM_INCREASE_RESERVATION,
        XENMEM_DECREASE_RESERVATION,
        XENMEM_MAXIMUM_RAM_PAGE,
        XENMEM_CURRENT_RESERVATION,
        XENMEM_MAXIMUM_RESERVATION,
        XENMEM_MACHPHYS_MFN_LIST,
        XENMEM_POPULATE_PHYSMAP,
        XENMEM_ADD_TO_PHYSMAP,
        XENMEM_MEMORY_MAP,
        XENMEM_MACHINE_MEMORY_MAP,
        XENMEM_EXCHANGE,
        XENMEM_MACHPHYS_MAPPING,
        XENMEM_SET_MEMORY_MAP,
        XENMEM_MAXIMUM_GPFN,
    ];
    let _ = [
        GNTTABOP_MAP_GRANT_REF,
        GNTTABOP_UNMAP_GRANT_REF,
        GNTTABOP_SETUP_TABLE,
        GNTTABOP_DUMP_TABLE,
        GNTTABOP_TRANSFER,
        GNTTABOP_COPY,
        GNTTABOP_QUERY_SIZE,
        GNTTABOP_UNMAP_AND_REPLACE,
        GNTTABOP_SET_VERSION,
        GNTTABOP_GET_STATUS_FRAMES,
        GNTTABOP_GET_VERSION,
        GNTTABOP_SWAP_GRANT_REF,
        GNTTABOP_CACHE_FLUSH,
    ];
    let _: u32 = SYSCTL_INTERFACE_VERSION;
    let mut s = Sysctl {
        cmd: SYSCTL_READCONSOLE,
        interface_version: 0u32,
        u: [0u64; 16],
    };
    let _ = SYSCTL_PHYSINFO;
    s.set_readconsole(&SysctlReadconsole {
        clear: 0u8,
        incremental: 0u8,
        pad: [0u8; 2],
        index: 0u32,
        buffer: 0u64,
        count: 0u32,
        pad2: 0u32,
    });
    s.set_physinfo(&SysctlPhysinfo {
        threads_per_core: 0,
        cores_per_socket: 0,
        nr_cpus: 0,
        max_cpu_id: 0,
        nr_nodes: 0,
        max_node_id: 0,
        cpu_khz: 0,
        capabilities: 0,
        total_pages: 0u64,
        free_pages: 0,
        scrub_pages: 0,
        outstanding_pages: 0,
        max_mfn: 0,
    });
    let _: SysctlPhysinfo = s.physinfo();
    let _: SysctlReadconsole = s.readconsole();
}
