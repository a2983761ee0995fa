//! The COM1 16550 UART: the hypervisor's console, as Xen's `console=com1`.

use super::port::{inb, outb};

const COM1: u16 = 0x3f8;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Programs COM1 for 115200 8N1, polled (no interrupts). Returns the bytes that were
/// already waiting, so that input typed before boot (a script piped into QEMU) is kept.
pub fn init() -> arrayvec::ArrayVec<u8, 64> {
    let mut early = arrayvec::ArrayVec::new();
    // Never take a byte there is no room for: it stays in the UART (and QEMU's backend).
    while !early.is_full() {
        let Some(b) = try_get_byte() else {
            break;
        };
        early.push(b);
    }
    // SAFETY: COM1 belongs to the hypervisor; these writes only configure the UART.
    unsafe {
        outb(COM1 + 1, 0x00); // no interrupts
        outb(COM1 + 3, 0x80); // DLAB
        outb(COM1, 0x01); // divisor 1 = 115200
        outb(COM1 + 1, 0x00);
        outb(COM1 + 3, 0x03); // 8N1
                              // The FIFO control register is left alone: toggling FIFO mode clears the
                              // receiver, which would drop input typed before or during boot.
        outb(COM1 + 4, 0x03); // DTR, RTS
    }
    early
}

/// Sends one byte, waiting for the transmitter.
pub fn put_byte(b: u8) {
    // SAFETY: reading LSR and writing THR of the hypervisor's own UART.
    unsafe {
        for _ in 0..100_000 {
            if inb(COM1 + 5) & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        outb(COM1, b);
    }
}

/// Returns a received byte, if one is waiting.
pub fn try_get_byte() -> Option<u8> {
    // SAFETY: reading LSR and RBR of the hypervisor's own UART.
    unsafe {
        if inb(COM1 + 5) & LSR_DATA_READY != 0 {
            Some(inb(COM1))
        } else {
            None
        }
    }
}
