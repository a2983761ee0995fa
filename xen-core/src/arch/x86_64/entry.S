/* Entry and exit paths between guests and the hypervisor.
 *
 * Every entry builds a `TrapFrame` (trap.rs) on the hypervisor stack: the general
 * registers in Xen's cpu_user_regs order, then vector and error code, then the
 * hardware iret frame. Exceptions and interrupts arrive through the 256 IDT stubs;
 * `syscall` from a guest (hypercall, or a guest user's system call) arrives at
 * syscall_entry, which synthesises the same frame. All exits go through
 * return_to_frame, which restores the frame (possibly rewritten by Rust: a bounce to a
 * guest handler, a different vCPU) and executes iretq. The hypervisor runs with
 * interrupts disabled; it enables them only in its idle loop.
 */

/* Pushes the general registers in cpu_user_regs order (rdi highest, r15 lowest). */
.macro SAVE_GPRS
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %rax
    push %r8
    push %r9
    push %r10
    push %r11
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
.endm

.section .text
.balign 16
.global trap_stubs
trap_stubs:
.set vec, 0
.rept 256
    .balign 16
    .if vec == 8
        pushq $vec
    .elseif vec >= 10 && vec <= 14
        pushq $vec
    .elseif vec == 17
        pushq $vec
    .elseif vec == 21
        pushq $vec
    .elseif vec == 29
        pushq $vec
    .elseif vec == 30
        pushq $vec
    .else
        pushq $0
        pushq $vec
    .endif
    jmp trap_common
    .set vec, vec + 1
.endr

/* Stack: vector below the error code (pushed by the CPU, or a 0 from the stub). */
trap_common:
    SAVE_GPRS
    cld
    mov %rsp, %rdi
    call trap_dispatch
    jmp return_to_frame

.balign 16
.global syscall_entry
syscall_entry:
    /* rcx = guest RIP, r11 = guest RFLAGS, rsp = guest RSP; IF masked by FMASK. */
    mov %rsp, syscall_saved_rsp(%rip)
    movabs $hv_stack_top, %rsp
    pushq $0xe02b                      /* ss */
    pushq syscall_saved_rsp(%rip)      /* rsp */
    push %r11                          /* rflags */
    pushq $0xe033                      /* cs */
    push %rcx                          /* rip */
    pushq $0                           /* error code */
    pushq $0x100                       /* vector: syscall */
    SAVE_GPRS
    cld
    mov %rsp, %rdi
    call syscall_dispatch
    jmp return_to_frame

.global return_to_frame
return_to_frame:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rax
    pop %rcx
    pop %rdx
    pop %rsi
    pop %rdi
    add $16, %rsp
    iretq

/* size_t guest_copy(void *dst, const void *src, size_t len): returns the number of
 * bytes NOT copied. A #PF at guest_copy_insn resumes at guest_copy_fixup (trap.rs). */
.balign 16
.global guest_copy
.global guest_copy_insn
.global guest_copy_fixup
guest_copy:
    mov %rdx, %rcx
guest_copy_insn:
    rep movsb
guest_copy_fixup:
    mov %rcx, %rax
    ret

.section .bss
.balign 16
syscall_saved_rsp:
    .quad 0

.section .bss.stack, "aw", @nobits
.balign 4096
.global hv_stack_bottom
hv_stack_bottom:
    .skip 65536
.global hv_stack_top
hv_stack_top:
