/* Multiboot (v1) entry of the hypervisor: 32-bit protected mode to long mode.
 *
 * The loader enters _start32 at its physical address with paging off, EAX = the
 * multiboot magic and EBX = the physical address of the multiboot information. The
 * boot page tables below are static: they identity-map the first GiB (so the code can
 * keep running after paging is switched on) and map the first GiB of physical
 * memory again at XEN_VIRT_START, where the image is linked. Rust code later replaces
 * them with the idle page table (direct map, M2P, hypervisor slots).
 */
.set XEN_VIRT_START, 0xffff82d040000000
.set MB_MAGIC,  0x1BADB002
/* page-align modules, memory map, address fields valid */
.set MB_FLAGS,  (1 << 0) | (1 << 1) | (1 << 16)

.section .multiboot, "a"
.balign 4
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long multiboot_header - XEN_VIRT_START  /* header_addr */
    .long __image_start - XEN_VIRT_START     /* load_addr */
    .long __load_end - XEN_VIRT_START        /* load_end_addr */
    .long __bss_end - XEN_VIRT_START         /* bss_end_addr */
    .long _start32 - XEN_VIRT_START          /* entry_addr */

.section .text.boot, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    mov $(boot_stack_top - XEN_VIRT_START), %esp
    mov %eax, %esi                  /* multiboot magic */
    mov %ebx, %edi                  /* multiboot info (physical) */

    /* Long mode needs PAE paging. */
    mov %cr4, %eax
    or $(1 << 5), %eax              /* PAE */
    mov %eax, %cr4

    mov $(boot_l4 - XEN_VIRT_START), %eax
    mov %eax, %cr3

    mov $0xC0000080, %ecx           /* EFER */
    rdmsr
    or $((1 << 8) | (1 << 11) | (1 << 0)), %eax  /* LME, NXE, SCE */
    wrmsr

    mov %cr0, %eax
    or $((1 << 31) | (1 << 16) | (1 << 0)), %eax /* PG, WP, PE */
    mov %eax, %cr0

    lgdt (boot_gdtr - XEN_VIRT_START)
    ljmp $0x08, $(start64_low - XEN_VIRT_START)

.code64
start64_low:
    movabs $start64_high, %rax
    jmp *%rax

start64_high:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $boot_stack_top, %rsp
    /* rdi = multiboot info (physical), rsi = magic: already in place. */
    xor %ebp, %ebp
    movabs $xen_start, %rax
    call *%rax
1:  hlt
    jmp 1b

.section .rodata
.balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit ring-0 code */
    .quad 0x00cf92000000ffff        /* 0x10: ring-0 data */
boot_gdt_end:
.balign 16
boot_gdtr:
    .word boot_gdt_end - boot_gdt - 1
    .quad boot_gdt - XEN_VIRT_START

.section .data.pagetables, "aw"
.balign 4096
.global boot_l4
boot_l4:
    .quad boot_l3_ident - XEN_VIRT_START + 0x3
    .fill 260, 8, 0
    .quad boot_l3_high - XEN_VIRT_START + 0x3  /* slot 261: XEN_VIRT_START */
    .fill 250, 8, 0
.balign 4096
boot_l3_ident:
    .quad boot_l2_ident - XEN_VIRT_START + 0x3
    .fill 511, 8, 0
.balign 4096
.global boot_l3_high
boot_l3_high:
    .fill 321, 8, 0
    .quad boot_l2_high - XEN_VIRT_START + 0x3  /* 0xffff82d040000000 is in L3 slot 321 */
    .fill 190, 8, 0
.balign 4096
boot_l2_ident:
    .set i, 0
    .rept 512
    .quad (i << 21) + 0x83
    .set i, i + 1
    .endr
.balign 4096
.global boot_l2_high
boot_l2_high:
    /* XEN_VIRT_START is GiB-aligned: slot 0 maps physical 0. */
    .set i, 0
    .rept 512
    .quad (i << 21) + 0x83
    .set i, i + 1
    .endr

.section .bss.stack, "aw", @nobits
.balign 4096
.global boot_stack_bottom
boot_stack_bottom:
    .skip 65536
.global boot_stack_top
boot_stack_top:
