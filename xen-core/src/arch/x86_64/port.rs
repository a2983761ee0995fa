//! x86 I/O port access.

/// Writes a byte to an I/O port.
///
/// # Safety
/// The caller must own the device behind `port` and know the write has no effect on
/// memory safety (e.g. it is not a DMA-programming register).
pub unsafe fn outb(port: u16, value: u8) {
    // SAFETY: the caller guarantees the port write is harmless (see above).
    unsafe {
        core::arch::asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// As for [`outb`]: reading may have device side effects the caller must own.
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: the caller guarantees the port read is harmless (see above).
    unsafe {
        core::arch::asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Writes a 16-bit word to an I/O port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    // SAFETY: the caller guarantees the port write is harmless (see above).
    unsafe {
        core::arch::asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}
