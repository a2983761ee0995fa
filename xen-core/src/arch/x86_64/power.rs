//! Ending the machine: power off, reset, halt, and the fatal path of a hypervisor bug.
//! Under QEMU the isa-debug-exit device (port 0xf4) turns these into exit statuses the
//! test harness reads: 0x10 → 33 (powered off), 0x1f → 63 (hypervisor panic).

use super::port::{outb, outw};

const DEBUG_EXIT: u16 = 0xf4;

/// Powers the machine off.
pub fn poweroff() -> ! {
    // SAFETY: the machine is being turned off; nothing runs after this.
    unsafe {
        outb(DEBUG_EXIT, 0x10);
        // ACPI S5 on QEMU's PIIX4/ICH9 power-management block.
        outw(0x604, 0x2000);
        outw(0xb004, 0x2000);
    }
    halt()
}

/// Resets the machine (QEMU with -no-reboot then exits with status 0).
pub fn reboot() -> ! {
    // SAFETY: the machine is being reset; nothing runs after this.
    unsafe {
        outb(0xcf9, 0x06); // PCI reset control: hard reset
        outb(0x64, 0xfe); // keyboard controller reset line
                          // Last resort: triple fault by loading an empty IDT and raising an exception.
        let null = [0u8; 10];
        core::arch::asm!("lidt [{}]", "int3", in(reg) &null);
    }
    halt()
}

/// Stops the CPU for good.
pub fn halt() -> ! {
    loop {
        // SAFETY: cli;hlt stops this CPU; nothing else needs it.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// A hypervisor bug: stop (and tell QEMU).
pub fn fatal() -> ! {
    // SAFETY: the hypervisor is stopping.
    unsafe { outb(DEBUG_EXIT, 0x1f) };
    halt()
}
