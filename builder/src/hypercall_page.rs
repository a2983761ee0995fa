//! The 64-bit PV hypercall page (ABI.md 1.8; Xen `pv_ring3_init_hypercall_page` in
//! `xen/arch/x86/pv/hypercall.c`): 128 stubs of 32 bytes, stub *n* issuing hypercall *n*
//! with `syscall`. Guests that have a HYPERCALL_PAGE note (XTF, Mini-OS) `call
//! hypercall_page + 32 * n`; the `iret` stub (23) is jumped to and never returns.

use xen_abi::hypercall::IRET;

/// Number of stubs in the page.
pub const HYPERCALL_SLOTS: usize = 128;
/// Size of one stub.
pub const HYPERCALL_SLOT_SIZE: usize = 32;
/// Filler for the bytes no stub uses: `int3`, so stray jumps trap (as in Xen).
pub const HYPERCALL_PAGE_FILL: u8 = 0xcc;

/// Writes the hypercall page into `page`.
pub fn fill_hypercall_page(page: &mut [u8; 4096]) {
    page.fill(HYPERCALL_PAGE_FILL);
    for (n, slot) in (0u32..).zip(page.chunks_exact_mut(HYPERCALL_SLOT_SIZE)) {
        let nr = n.to_le_bytes();
        if u64::from(n) == IRET {
            // push %rcx; push %r11; push %rax; mov $23, %eax; syscall
            let stub = [
                0x51, 0x41, 0x53, 0x50, 0xb8, nr[0], nr[1], nr[2], nr[3], 0x0f, 0x05,
            ];
            write_stub(slot, &stub);
        } else {
            // push %rcx; push %r11; mov $n, %eax; syscall; pop %r11; pop %rcx; ret
            let stub = [
                0x51, 0x41, 0x53, 0xb8, nr[0], nr[1], nr[2], nr[3], 0x0f, 0x05, 0x41, 0x5b, 0x59,
                0xc3,
            ];
            write_stub(slot, &stub);
        }
    }
}

fn write_stub(slot: &mut [u8], stub: &[u8]) {
    for (dst, src) in slot.iter_mut().zip(stub) {
        *dst = *src;
    }
}

/// The hypercall page's bytes.
pub fn hypercall_page() -> [u8; 4096] {
    let mut page = [0u8; 4096];
    fill_hypercall_page(&mut page);
    page
}
