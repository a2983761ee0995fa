//! Guest user mode (ABI.md §1.9-1.11; Xen `pv/iret.c`, `x86_64/entry.S`): the entry stubs
//! for the syscall callback and for software interrupts (`int $n`), a dedicated kernel stack
//! for entries from user mode (`stack_switch`), and a fixed user-mode probe program that a
//! test kernel runs with the `iret` hypercall.
//!
//! The probe program, started at [`UserProbe::entry`] in guest-user mode with RSP at the top
//! of a dedicated user stack and RDI = an unmapped address, executes:
//! 1. `syscall` with RAX = [`USER_PROBE_PING`] (→ the syscall callback);
//! 2. `int $0x80` (→ trap-table entry 0x80, if its DPL is 3);
//! 3. `mov rax, [rdi]` (→ #PF with the U bit in the error code);
//! 4. `syscall` with RAX = [`USER_PROBE_EXIT`]: the kernel's syscall hook ends the probe
//!    with [`return_to_kernel`], which resumes [`run_probe`]'s caller in kernel mode.
//!
//! The kernel handles each entry through the hooks of [`crate::traps`]; every path back to
//! user mode is the `iret` hypercall of the common stub with the frame's CS (RPL 3).

use core::sync::atomic::{AtomicBool, Ordering};

use xen_abi::xen::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

use super::{hypercall, TrapFrame};

/// RAX of the probe's first `syscall`.
pub const USER_PROBE_PING: u64 = 0x1234;
/// RAX of the probe's last `syscall`, which asks the kernel to end the probe.
pub const USER_PROBE_EXIT: u64 = 0x900d;

/// Size of the dedicated kernel stack and of the user stack.
pub const STACK_SIZE: u64 = 32 * 1024;

const RFLAGS_IF: u64 = 1 << 9;
/// RFLAGS the probe starts with: IF set (events enabled in user mode), reserved bit 1.
const USER_RFLAGS: u64 = RFLAGS_IF | 2;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .bss.pv_user_stacks, "aw", @nobits
    .balign 4096
pv_user_kernel_stack:
    .skip 32768
pv_user_kernel_stack_top:
pv_user_stack:
    .skip 32768
pv_user_stack_top:

    .section .bss.pv_user_saved_rsp, "aw", @nobits
    .balign 8
    .globl pv_user_saved_rsp
pv_user_saved_rsp:
    .skip 8

    .text
    /* Same frames as exceptions without an error code: [rcx, r11, rip, cs, rflags, rsp, ss]. */
    .balign 16
pv_int80_entry:
    pop %rcx
    pop %r11
    push $0
    push $0x80
    jmp pv_trap_common

    .balign 16
pv_int81_entry:
    pop %rcx
    pop %r11
    push $0
    push $0x81
    jmp pv_trap_common

    /* Syscall callback: RCX/R11 slots hold the user's return RIP and RFLAGS. */
    .balign 16
pv_syscall_entry:
    pop %rcx
    pop %r11
    push $0
    push $257
    jmp pv_trap_common

    /*
     * u64 pv_user_enter(rip, rsp, rflags, rdi_for_user): save the callee-saved registers and
     * RSP, then `iret` (hypercall 23) to guest-user mode. `return_to_kernel` makes the last
     * `iret` land on pv_user_resume with RAX = the result.
     */
    .balign 16
    .globl pv_user_enter
pv_user_enter:
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rsp, pv_user_saved_rsp(%rip)
    /* iret frame (ABI.md 1.9): rax, r11, rcx, flags, rip, cs, rflags, rsp, ss. */
    push ${ss}
    push %rsi
    push %rdx
    push ${cs}
    push %rdi
    push $0
    push $0
    push $0
    push $0
    mov %rcx, %rdi
    mov $23, %eax
    syscall
    ud2
pv_user_resume:
    mov pv_user_saved_rsp(%rip), %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret

    /* The user-mode probe program (see the module docs). */
    .balign 16
pv_user_probe:
    mov ${ping}, %eax
    syscall
pv_user_probe_after_syscall:
    .byte 0xcd, 0x80
pv_user_probe_after_int80:
    mov (%rdi), %rax
    mov ${exit}, %eax
    syscall
pv_user_probe_after_exit:
    ud2

    .section .rodata.pv_user_table, "a", @progbits
    .balign 8
    .globl pv_user_table
pv_user_table:
    .quad pv_int80_entry, pv_int81_entry, pv_syscall_entry
    .quad pv_user_kernel_stack_top, pv_user_stack_top
    .quad pv_user_probe, pv_user_probe_after_syscall, pv_user_probe_after_int80
    .quad pv_user_probe_after_exit, pv_user_resume
    "#,
    ss = const xen_abi::xen::FLAT_USER_SS,
    cs = const xen_abi::xen::FLAT_USER_CS,
    ping = const USER_PROBE_PING,
    exit = const USER_PROBE_EXIT,
    options(att_syntax)
);

/// Number of words in `pv_user_table`.
const TABLE_LEN: usize = 10;

#[cfg(target_os = "none")]
extern "C" {
    /// Stub and label addresses emitted above.
    static pv_user_table: [u64; TABLE_LEN];
    /// Kernel RSP saved by `pv_user_enter`.
    static pv_user_saved_rsp: u64;
    /// Enter user mode; returns the value given to [`return_to_kernel`].
    fn pv_user_enter(rip: u64, rsp: u64, rflags: u64, rdi: u64) -> u64;
}

fn table() -> [u64; TABLE_LEN] {
    #[cfg(target_os = "none")]
    {
        // SAFETY: `pv_user_table` is an initialised, read-only table of TABLE_LEN quads
        // defined in the global_asm above.
        unsafe { core::ptr::read(&raw const pv_user_table) }
    }
    #[cfg(not(target_os = "none"))]
    {
        [0; TABLE_LEN]
    }
}

fn saved_kernel_rsp() -> u64 {
    #[cfg(target_os = "none")]
    {
        // SAFETY: an initialised .bss quad written only by `pv_user_enter`; volatile because
        // assembly wrote it behind the compiler's back.
        unsafe { core::ptr::read_volatile(&raw const pv_user_saved_rsp) }
    }
    #[cfg(not(target_os = "none"))]
    {
        0
    }
}

/// Address of the syscall-callback stub (register it as `CALLBACKTYPE_syscall`); it
/// dispatches to the hook of [`crate::traps::set_syscall_hook`] with
/// [`super::SYSCALL_VECTOR`].
pub fn syscall_entry_va() -> u64 {
    table()[2]
}

/// Address of the entry stub of software-interrupt vector `vector` (one of
/// [`super::SOFT_INT_VECTORS`]), for a trap-table entry.
pub fn soft_int_entry_va(vector: u8) -> Option<u64> {
    match vector {
        0x80 => Some(table()[0]),
        0x81 => Some(table()[1]),
        _ => None,
    }
}

/// Top of the dedicated kernel stack for entries from user mode (16-byte aligned).
pub fn kernel_stack_top() -> u64 {
    table()[3]
}

/// Top of the user stack the probe runs on.
pub fn user_stack_top() -> u64 {
    table()[4]
}

/// `stack_switch(FLAT_KERNEL_SS, kernel_stack_top())`.
pub fn switch_kernel_stack() -> hypercall::Result<u64> {
    hypercall::stack_switch(FLAT_KERNEL_SS, kernel_stack_top())
}

/// Addresses inside the user-mode probe program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserProbe {
    /// First instruction (user-mode entry point).
    pub entry: u64,
    /// After the first `syscall` (RIP of its callback frame).
    pub after_syscall: u64,
    /// After `int $0x80`; also the address of the faulting load (`mov rax, [rdi]`).
    pub after_int80: u64,
    /// Length of the faulting load (what a #PF hook adds to RIP to skip it).
    pub load_len: u64,
    /// After the final `syscall` (RIP of its callback frame).
    pub after_exit: u64,
}

/// Where the probe's instructions are.
pub fn probe_sites() -> UserProbe {
    let t = table();
    UserProbe {
        entry: t[5],
        after_syscall: t[6],
        after_int80: t[7],
        load_len: 3,
        after_exit: t[8],
    }
}

/// A probe is running (between [`run_probe`] entering user mode and [`return_to_kernel`]).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The upcall mask [`run_probe`] was called with, restored on the way back.
static KERNEL_MASKED: AtomicBool = AtomicBool::new(true);

/// Run the user-mode probe: set the kernel stack for entries from user mode
/// ([`switch_kernel_stack`]), then `iret` to user mode at [`UserProbe::entry`] with CS
/// `FLAT_USER_CS` (RPL 3), SS `FLAT_USER_SS`, RSP = [`user_stack_top`], RFLAGS.IF set and
/// RDI = `load_addr`. Returns the value the kernel's syscall hook passed to
/// [`return_to_kernel`].
///
/// Requirements the hypervisor checks (Xen crashes the domain otherwise): a user page table
/// (`MMUEXT_NEW_USER_BASEPTR`). For the probe to come back the kernel must have registered
/// [`syscall_entry_va`] as its syscall callback and a syscall hook that calls
/// [`return_to_kernel`] for [`USER_PROBE_EXIT`]; the `int $0x80` and #PF need handlers too.
///
/// Returns `None` without entering user mode if `load_addr` is not a non-zero lower-half
/// address (the ones rxen's kernels never map), if a probe is already running, or if
/// `stack_switch` fails.
pub fn run_probe(load_addr: u64) -> Option<u64> {
    if load_addr == 0 || load_addr >= 0x0000_8000_0000_0000 {
        return None;
    }
    switch_kernel_stack().ok()?;
    if ACTIVE.swap(true, Ordering::SeqCst) {
        return None;
    }
    KERNEL_MASKED.store(crate::shared::upcall_mask(), Ordering::SeqCst);
    let entry = probe_sites().entry;
    #[cfg(target_os = "none")]
    {
        // SAFETY: `pv_user_enter` saves our callee-saved registers and RSP and comes back
        // only through `pv_user_resume`, which restores them and returns like a function.
        // The user program touches no memory except the load from `load_addr` (lower half,
        // unmapped: it faults), and the hypervisor writes entry frames only on the dedicated
        // kernel stack set just above, which nothing else uses.
        let v = unsafe { pv_user_enter(entry, user_stack_top(), USER_RFLAGS, load_addr) };
        Some(v)
    }
    #[cfg(not(target_os = "none"))]
    {
        let _ = (entry, USER_RFLAGS);
        ACTIVE.store(false, Ordering::SeqCst);
        None
    }
}

/// From a hook that handles an entry from the probe: make the hook's return (the `iret`
/// hypercall) resume [`run_probe`]'s caller in guest-kernel mode (CS with RPL 0, so the
/// hypervisor stays in kernel mode), with `value` as `run_probe`'s result and the event
/// mask `run_probe` was called with. Returns false (frame untouched) if no probe is running.
pub fn return_to_kernel(frame: &mut TrapFrame, value: u64) -> bool {
    if !ACTIVE.swap(false, Ordering::SeqCst) {
        return false;
    }
    frame.rip = table()[9];
    frame.cs = u64::from(FLAT_KERNEL_CS & !3);
    frame.ss = u64::from(FLAT_KERNEL_SS);
    // pv_user_resume reloads RSP itself; until then an upcall may use this stack.
    frame.rsp = saved_kernel_rsp();
    frame.rflags &= !RFLAGS_IF;
    if !KERNEL_MASKED.load(Ordering::SeqCst) {
        frame.rflags |= RFLAGS_IF;
    }
    frame.rax = value;
    true
}
