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

/// Reads 1, 2 or 4 bytes from a port (zero-extended).
///
/// # Safety
/// As for [`inb`].
pub unsafe fn inl_sized(port: u16, size: u16) -> u32 {
    // SAFETY: the caller guarantees the access is harmless.
    unsafe {
        match size {
            1 => u32::from(inb(port)),
            2 => {
                let v: u16;
                core::arch::asm!("in ax, dx", in("dx") port, out("ax") v, options(nomem, nostack, preserves_flags));
                u32::from(v)
            }
            _ => {
                let v: u32;
                core::arch::asm!("in eax, dx", in("dx") port, out("eax") v, options(nomem, nostack, preserves_flags));
                v
            }
        }
    }
}

/// Writes 1, 2 or 4 bytes (the low bytes of `value`) to a port.
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outl_sized(port: u16, size: u16, value: u32) {
    // SAFETY: the caller guarantees the access is harmless.
    unsafe {
        match size {
            1 => outb(port, value as u8),
            2 => outw(port, value as u16),
            _ => {
                core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
            }
        }
    }
}
