//! Assembly entry points: `_start`, the boot stack, the hypercall page, the page reserved
//! for the shared_info mapping, the exception stubs, the event upcall and the failsafe
//! callback. Bare metal only.
//!
//! Frames (ABI.md §1.11): Xen enters a handler with `[rcx, r11, (error code), rip, cs, rflags,
//! rsp, ss]` at RSP (lowest first). Every stub pops RCX/R11 back into their registers,
//! pushes a zero error code if the vector has none, pushes its vector number, and jumps to
//! `pv_trap_common`, which saves the GPRs (forming a `TrapFrame`) and calls Rust. The way
//! back is always the `iret` hypercall (ABI.md §1.9), never a plain `iretq`: the frame's CS
//! has RPL 0 when we interrupted kernel mode, and `iret` also restores the upcall mask from
//! RFLAGS.IF.

use super::{EntryPoints, NR_EXCEPTION_VECTORS};

core::arch::global_asm!(
    r#"
    .section .text.boot, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    cld
    lea pv_boot_stack_top(%rip), %rsp
    mov %rsi, %rdi
    call pv_guest_rust_start
    ud2
    .size _start, . - _start

    .section .bss.pv_boot_stack, "aw", @nobits
    .balign 4096
pv_boot_stack:
    .skip 65536
pv_boot_stack_top:

    .section .bss.pv_shared_info_page, "aw", @nobits
    .balign 4096
    .globl pv_shared_info_page
pv_shared_info_page:
    .skip 4096

    .section .bss.pv_spare_page, "aw", @nobits
    .balign 4096
    .globl pv_spare_page
pv_spare_page:
    .skip 4096

    /* Poisoned with `ret` so an unfilled page is detectable (as XTF does). */
    .section .text.pv_hypercall_page, "ax", @progbits
    .balign 4096
    .globl hypercall_page
    .type hypercall_page, @object
hypercall_page:
    .fill 4096, 1, 0xc3
    .size hypercall_page, 4096

    .text
    .macro PV_EXC_NOERR vec
    .balign 16
pv_exc_\vec:
    pop %rcx
    pop %r11
    push $0
    push $\vec
    jmp pv_trap_common
    .endm

    .macro PV_EXC_ERR vec
    .balign 16
pv_exc_\vec:
    pop %rcx
    pop %r11
    push $\vec
    jmp pv_trap_common
    .endm

    PV_EXC_NOERR 0
    PV_EXC_NOERR 1
    PV_EXC_NOERR 2
    PV_EXC_NOERR 3
    PV_EXC_NOERR 4
    PV_EXC_NOERR 5
    PV_EXC_NOERR 6
    PV_EXC_NOERR 7
    PV_EXC_ERR 8
    PV_EXC_NOERR 9
    PV_EXC_ERR 10
    PV_EXC_ERR 11
    PV_EXC_ERR 12
    PV_EXC_ERR 13
    PV_EXC_ERR 14
    PV_EXC_NOERR 15
    PV_EXC_NOERR 16
    PV_EXC_ERR 17
    PV_EXC_NOERR 18
    PV_EXC_NOERR 19

    /* Event upcall: frame [rcx, r11, rip, cs, rflags, rsp, ss], events masked by Xen. */
    .balign 16
pv_upcall_entry:
    pop %rcx
    pop %r11
    push $0
    push $256
    jmp pv_trap_common

    /*
     * Failsafe callback: [rcx, r11, ds, es, fs, gs, rip, cs, rflags, rsp, ss]. Nothing to
     * recover for our kernels (they never load data selectors): report and crash.
     */
    .balign 16
pv_failsafe_entry:
    mov %rsp, %rdi
    and $-16, %rsp
    call pv_guest_rust_failsafe
    ud2

    /*
     * Common path. Xen aligned the interrupted RSP to 16 before pushing; after the stub the
     * frame is 7 words + 15 GPRs = 22 words below that, so RSP is 16-aligned at the call.
     */
    .balign 16
    /* Global so that the stubs of `arch::user` (another asm block) can share it. */
    .globl pv_trap_common
pv_trap_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    cld
    mov %rsp, %rdi
    call pv_guest_rust_trap
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp
    /* iret hypercall frame: [rax, r11, rcx, flags=0] on top of [rip, cs, rflags, rsp, ss]. */
    push $0
    push %rcx
    push %r11
    push %rax
    mov $23, %eax
    syscall
    ud2

    .section .rodata.pv_entry_table, "a", @progbits
    .balign 8
    .globl pv_entry_table
pv_entry_table:
    .quad pv_exc_0, pv_exc_1, pv_exc_2, pv_exc_3, pv_exc_4
    .quad pv_exc_5, pv_exc_6, pv_exc_7, pv_exc_8, pv_exc_9
    .quad pv_exc_10, pv_exc_11, pv_exc_12, pv_exc_13, pv_exc_14
    .quad pv_exc_15, pv_exc_16, pv_exc_17, pv_exc_18, pv_exc_19
    .quad pv_upcall_entry
    .quad pv_failsafe_entry
    .quad pv_shared_info_page
    .quad pv_spare_page
    .quad hypercall_page
    "#,
    options(att_syntax)
);

/// Number of words in `pv_entry_table`.
const ENTRY_TABLE_LEN: usize = NR_EXCEPTION_VECTORS + 5;

extern "C" {
    /// Table of stub and page addresses emitted above.
    static pv_entry_table: [u64; ENTRY_TABLE_LEN];
}

fn table() -> [u64; ENTRY_TABLE_LEN] {
    // SAFETY: `pv_entry_table` is an initialised, read-only table of ENTRY_TABLE_LEN quads
    // defined in the global_asm above.
    unsafe { core::ptr::read(&raw const pv_entry_table) }
}

pub(super) fn entry_points() -> EntryPoints {
    let t = table();
    let mut exceptions = [0u64; NR_EXCEPTION_VECTORS];
    exceptions.copy_from_slice(&t[..NR_EXCEPTION_VECTORS]);
    EntryPoints {
        exceptions,
        upcall: t[NR_EXCEPTION_VECTORS],
        failsafe: t[NR_EXCEPTION_VECTORS + 1],
    }
}

pub(super) fn shared_info_va() -> u64 {
    table()[NR_EXCEPTION_VECTORS + 2]
}

pub(super) fn spare_page_va() -> u64 {
    table()[NR_EXCEPTION_VECTORS + 3]
}

pub(super) fn hypercall_page_va() -> u64 {
    table()[NR_EXCEPTION_VECTORS + 4]
}
