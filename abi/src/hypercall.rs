//! Hypercall numbers (`__HYPERVISOR_*` in `xen/include/public/xen.h`) and the multicall
//! entry.
//!
//! A 64-bit PV guest issues hypercall `n` with `syscall`, RAX = `n`, arguments in RDI, RSI,
//! RDX, R10, R8; the result comes back in RAX (negative errno on failure).

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `set_trap_table(trap_info *table)`: install the virtual IDT.
pub const SET_TRAP_TABLE: u64 = 0;
/// `mmu_update(mmu_update *reqs, u32 count, u32 *done, domid foreigndom)`.
pub const MMU_UPDATE: u64 = 1;
/// `set_gdt(u64 *frame_list, u32 entries)`.
pub const SET_GDT: u64 = 2;
/// `stack_switch(ss, sp)`: set the kernel stack used when entering from user mode.
pub const STACK_SWITCH: u64 = 3;
/// `set_callbacks(event, failsafe, syscall)` (64-bit form).
pub const SET_CALLBACKS: u64 = 4;
/// `fpu_taskswitch(int set)`: set or clear the virtual CR0.TS.
pub const FPU_TASKSWITCH: u64 = 5;
/// Old form of `sched_op` (compat since interface 0x00030101).
pub const SCHED_OP_COMPAT: u64 = 6;
/// `platform_op` (dom0 only; formerly `dom0_op`).
pub const PLATFORM_OP: u64 = 7;
/// `set_debugreg(int reg, u64 value)`.
pub const SET_DEBUGREG: u64 = 8;
/// `get_debugreg(int reg)`.
pub const GET_DEBUGREG: u64 = 9;
/// `update_descriptor(u64 maddr, u64 desc)`: write one GDT/LDT entry.
pub const UPDATE_DESCRIPTOR: u64 = 10;
/// `memory_op(cmd, void *arg)`: see [`crate::memory`].
pub const MEMORY_OP: u64 = 12;
/// `multicall(multicall_entry *list, u32 nr)`: see [`MulticallEntry`].
pub const MULTICALL: u64 = 13;
/// `update_va_mapping(u64 va, u64 new_pte, u64 flags)`.
pub const UPDATE_VA_MAPPING: u64 = 14;
/// `set_timer_op(u64 timeout_abs_ns)`.
pub const SET_TIMER_OP: u64 = 15;
/// Old form of `event_channel_op` (compat since 0x00030202).
pub const EVENT_CHANNEL_OP_COMPAT: u64 = 16;
/// `xen_version(cmd, void *arg)`: see [`crate::version`].
pub const XEN_VERSION: u64 = 17;
/// `console_io(cmd, u32 count, char *buf)`.
pub const CONSOLE_IO: u64 = 18;
/// Old form of `physdev_op` (compat since 0x00030202).
pub const PHYSDEV_OP_COMPAT: u64 = 19;
/// `grant_table_op(cmd, void *ops, u32 count)`: see [`crate::grant_table`].
pub const GRANT_TABLE_OP: u64 = 20;
/// `vm_assist(u32 cmd, u32 type)`.
pub const VM_ASSIST: u64 = 21;
/// `update_va_mapping_otherdomain(va, new_pte, flags, domid)`.
pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u64 = 22;
/// `iret`: return from a bounce frame (x86 only); see [`crate::xen::IretContext`].
pub const IRET: u64 = 23;
/// `vcpu_op(cmd, u32 vcpuid, void *arg)`: see [`crate::vcpu`].
pub const VCPU_OP: u64 = 24;
/// `set_segment_base(u32 which, u64 base)` (x86_64 only).
pub const SET_SEGMENT_BASE: u64 = 25;
/// `mmuext_op(mmuext_op *ops, u32 count, u32 *done, domid foreigndom)`.
pub const MMUEXT_OP: u64 = 26;
/// `xsm_op` (security module).
pub const XSM_OP: u64 = 27;
/// `nmi_op`.
pub const NMI_OP: u64 = 28;
/// `sched_op(cmd, void *arg)`: see [`crate::sched`].
pub const SCHED_OP: u64 = 29;
/// `callback_op(cmd, void *arg)`: see [`crate::callback`].
pub const CALLBACK_OP: u64 = 30;
/// `xenoprof_op` (dropped in Xen 4.22).
pub const XENOPROF_OP: u64 = 31;
/// `event_channel_op(cmd, void *arg)`: see [`crate::event_channel`].
pub const EVENT_CHANNEL_OP: u64 = 32;
/// `physdev_op(cmd, void *arg)`.
pub const PHYSDEV_OP: u64 = 33;
/// `hvm_op`.
pub const HVM_OP: u64 = 34;
/// `sysctl(xen_sysctl *op)`: see [`crate::sysctl`].
pub const SYSCTL: u64 = 35;
/// `domctl(xen_domctl *op)`.
pub const DOMCTL: u64 = 36;
/// `kexec_op`.
pub const KEXEC_OP: u64 = 37;
/// `tmem_op` (removed).
pub const TMEM_OP: u64 = 38;
/// `argo_op`.
pub const ARGO_OP: u64 = 39;
/// `xenpmu_op`.
pub const XENPMU_OP: u64 = 40;
/// `dm_op`.
pub const DM_OP: u64 = 41;
/// `hypfs_op`.
pub const HYPFS_OP: u64 = 42;

/// Size of Xen's hypercall dispatch table (`NR_hypercalls`).
pub const NR_HYPERCALLS: usize = 64;

/// Size of one hypercall-page slot in bytes: slot `n` (at `32 * n`) issues hypercall `n`.
pub const HYPERCALL_SLOT_SIZE: usize = 32;

/// One element of the `multicall` array (`struct multicall_entry`, 64 bytes).
///
/// Written by the guest (`op`, `args`); `result` is written by the hypervisor.
#[doc(alias = "multicall_entry")]
#[doc(alias = "multicall_entry_t")]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct MulticallEntry {
    /// Hypercall number (guest writes).
    pub op: u64,
    /// Return value of that hypercall (hypervisor writes).
    pub result: u64,
    /// Arguments (guest writes); Xen passes `args[0..5]` to the hypercall.
    pub args: [u64; 6],
}

assert_layout!(MulticallEntry, 64, { op: 0, result: 8, args: 16 });
