//! Tiny multiboot kernels for checking the machinery around rxen, not rxen itself.
//!
//! Each probe is a few bytes of 32-bit code behind a multiboot (v1) header that uses the
//! "a.out kludge" (flag bit 16: load addresses in the header), so QEMU's multiboot loader
//! takes it as a flat binary at 1 MiB. They let the harness test itself (serial output and
//! input, power-off, triple fault, timeouts) and let `xtask` check whether KVM works
//! without depending on the hypervisor being able to boot.

use std::io;
use std::path::{Path, PathBuf};

/// Load address of every probe.
const BASE: u32 = 0x10_0000;
/// Size of the multiboot header; the code follows it.
const HEADER_LEN: u32 = 32;

/// The multiboot header for a flat image loaded at [`BASE`], entered just after the header.
fn header() -> Vec<u8> {
    const MAGIC: u32 = 0x1bad_b002;
    const FLAGS: u32 = 1 << 16; // the address fields below are valid
    let checksum = 0u32.wrapping_sub(MAGIC).wrapping_sub(FLAGS);
    [
        MAGIC,
        FLAGS,
        checksum,
        BASE,              // header_addr
        BASE,              // load_addr
        0,                 // load_end_addr: the whole file
        0,                 // bss_end_addr: no bss
        BASE + HEADER_LEN, // entry_addr
    ]
    .iter()
    .flat_map(|w| w.to_le_bytes())
    .collect()
}

/// `mov dx, imm16`
fn mov_dx(port: u16) -> Vec<u8> {
    let [lo, hi] = port.to_le_bytes();
    vec![0x66, 0xba, lo, hi]
}

/// Writes 0x10 to isa-debug-exit: QEMU exits with status 33 ("powered off").
fn power_off() -> Vec<u8> {
    let mut c = mov_dx(crate::qemu::DEBUG_EXIT_PORT);
    c.extend([0xb0, crate::qemu::DEBUG_EXIT_POWEROFF]); // mov al, 0x10
    c.extend([0xee]); // out dx, al
    c.extend(halt_forever());
    c
}

/// `cli; hlt; jmp $-1`
fn halt_forever() -> Vec<u8> {
    vec![0xfa, 0xf4, 0xeb, 0xfd]
}

/// Prints `text` on COM1 (QEMU's UART needs no set-up to transmit).
fn print(text: &[u8]) -> Vec<u8> {
    let mut c = Vec::new();
    for &b in text {
        c.extend(mov_dx(0x3f8));
        c.extend([0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    c
}

/// A probe that powers the machine off at once.
pub fn power_off_probe() -> Vec<u8> {
    let mut image = header();
    image.extend(power_off());
    image
}

/// A probe that prints "rxen probe ready\n", then echoes COM1 input until it reads `q`, then
/// powers off.
pub fn echo_probe() -> Vec<u8> {
    let mut c = print(b"rxen probe ready\n");
    // rx: wait for the line status register's "data ready" bit.
    let rx = c.len();
    c.extend(mov_dx(0x3fd));
    c.extend([0xec, 0xa8, 0x01]); // in al, dx; test al, 1
    let back = i8::try_from(rx as isize - (c.len() as isize + 2)).unwrap_or(0);
    c.extend([0x74, back as u8]); // jz rx
    c.extend(mov_dx(0x3f8));
    c.extend([0xec, 0x3c, b'q']); // in al, dx; cmp al, 'q'
    c.extend([0x74, 3]); // je exit: over the echo's `out` (1 byte) and `jmp` (2 bytes)
    c.extend([0xee]); // out dx, al (dx is still 0x3f8)
    let back = i8::try_from(rx as isize - (c.len() as isize + 2)).unwrap_or(0);
    c.extend([0xeb, back as u8]); // jmp rx
                                  // exit:
    c.extend(power_off());
    let mut image = header();
    image.extend(c);
    image
}

/// A probe that prints "rxen probe\n" and then spins forever with interrupts off.
pub fn hang_probe() -> Vec<u8> {
    let mut image = header();
    image.extend(print(b"rxen probe\n"));
    image.extend(halt_forever());
    image
}

/// A probe that triple-faults: it loads an empty IDT and executes `int3`.
pub fn triple_fault_probe() -> Vec<u8> {
    let mut image = header();
    let code_start = BASE + HEADER_LEN;
    // lidt [idtr]; int3; then the 6-byte IDTR (limit 0, base 0) right after.
    let lidt_len = 7u32;
    let idtr = code_start + lidt_len + 1;
    image.extend([0x0f, 0x01, 0x1d]);
    image.extend(idtr.to_le_bytes());
    image.push(0xcc);
    image.extend([0u8; 6]);
    image.extend(halt_forever());
    image
}

/// Writes `image` to a fresh file under `dir` named `name` and returns its path.
pub fn write(dir: &Path, name: &str, image: &[u8]) -> io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, image)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_valid_multiboot() {
        let h = header();
        assert_eq!(h.len(), HEADER_LEN as usize);
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        assert_eq!(word(0), 0x1bad_b002);
        assert_eq!(word(0).wrapping_add(word(4)).wrapping_add(word(8)), 0);
        assert_eq!(word(28), BASE + HEADER_LEN);
    }

    #[test]
    fn echo_probe_jumps_land_on_the_exit() {
        let image = echo_probe();
        let code = &image[HEADER_LEN as usize..];
        // Find `je rel8` after `cmp al, 'q'` and check it lands on the power-off sequence.
        let cmp = code
            .windows(2)
            .position(|w| w == [0x3c, b'q'])
            .expect("cmp al, 'q'");
        let je = cmp + 2;
        assert_eq!(code[je], 0x74);
        let target = je + 2 + code[je + 1] as usize;
        assert_eq!(&code[target..target + 4], &mov_dx(0xf4)[..]);
    }
}
