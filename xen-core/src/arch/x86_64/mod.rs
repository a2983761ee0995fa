//! The x86_64 hypervisor: boot, memory, traps, guest entry/exit and hypercalls.
//!
//! Blanket assumptions of the `unsafe` code in this module tree: it runs in ring 0 on
//! one CPU with interrupts disabled (except in the idle loop), on page tables that map
//! the hypervisor image at XEN_VIRT_START and all machine memory at DIRECTMAP_START.

core::arch::global_asm!(include_str!("boot.S"), options(att_syntax));
core::arch::global_asm!(include_str!("entry.S"), options(att_syntax));

pub mod console;
pub mod cpu;
pub mod dom0;
pub mod domain;
pub mod domctl;
pub mod frame;
pub mod gdt;
pub mod granthc;
pub mod guestmem;
pub mod hypercall;
pub mod irq;
pub mod memhc;
pub mod mm;
pub mod multiboot;
pub mod pci;
pub mod port;
pub mod power;
pub mod pv;
pub mod serial;
pub mod time;
pub mod trap;

use alloc::string::String;
use frame::TrapFrame;
use linked_list_allocator::LockedHeap;
use spin::Once;

/// The hypervisor heap (frame table, domains, event channels). The PV MMU keeps about 40
/// bytes per machine frame, so 32 MiB covers a few GiB of RAM.
const HEAP_SIZE: usize = 32 << 20;

#[repr(C, align(4096))]
struct HeapArea([u8; HEAP_SIZE]);

static mut HEAP_AREA: HeapArea = HeapArea([0; HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

static CMDLINE: Once<String> = Once::new();

/// The hypervisor's command line (without the image path the loader puts first).
pub fn boot_cmdline() -> &'static str {
    CMDLINE.get().map(|s| s.as_str()).unwrap_or("")
}

/// Drops the first word of a multiboot string (loaders put the file's path there).
fn args_of(s: &str) -> String {
    let s = s.trim_start();
    match s.find(char::is_whitespace) {
        Some(i) => String::from(s[i..].trim()),
        None => String::new(),
    }
}

const MULTIBOOT_BOOTLOADER_MAGIC: u64 = 0x2bad_b002;

/// Rust entry from boot.S: `mbi` is the physical address of the multiboot information.
#[unsafe(no_mangle)]
extern "C" fn xen_start(mbi: u64, magic: u64) -> ! {
    let early_input = serial::init();
    // SAFETY: the heap area is a static used only by the allocator from here on.
    unsafe { HEAP.lock().init((&raw mut HEAP_AREA) as *mut u8, HEAP_SIZE) };
    console::CONSOLE.lock().input.extend(early_input);
    crate::xinfo!(
        "Xen version {}.{}-rxen (rxen, a Rust hypervisor speaking Xen's pv64 ABI)\n",
        hypercall::XEN_MAJOR,
        hypercall::XEN_MINOR
    );
    if magic != MULTIBOOT_BOOTLOADER_MAGIC {
        crate::xerr!("not started by a multiboot loader (magic {:#x})\n", magic);
        power::fatal();
    }
    let info = multiboot::parse(mbi);
    let cmdline = args_of(multiboot::c_str(info.cmdline, 4096));
    crate::xinfo!("Command line: {}\n", cmdline);
    let options = crate::cmdline::Options::parse(&cmdline);
    console::CONSOLE.lock().level = options.log_level;
    CMDLINE.call_once(|| cmdline);

    let mut modules = alloc::vec::Vec::new();
    let mut reserved = alloc::vec::Vec::new();
    for m in info.modules.iter() {
        let args = args_of(multiboot::c_str(m.string, 4096));
        modules.push((m.start, m.end, args));
        reserved.push((m.start, m.end));
    }
    for r in info.ram.iter() {
        crate::xdebug!(" RAM {:016x} - {:016x}\n", r.start, r.end);
    }

    cpu::init();
    enable_cpu_features();
    mm::init(&info, &reserved);
    mm::drop_identity_map();
    gdt::init(cpu::static_gdt());
    {
        let f = mm::FRAMES.lock();
        crate::xinfo!(
            "Memory: {} MiB total, {} MiB free\n",
            f.total / 256,
            f.free_count() / 256
        );
    }
    time::init();
    pv::init();

    domain::HV.lock().options = options;
    let Some((kstart, kend, kargs)) = modules.first().cloned() else {
        crate::xerr!("no dom0 kernel given (the first multiboot module)\n");
        power::fatal();
    };
    let ramdisk = modules.get(1).map(|(s, e, _)| (*s, *e));
    if let Err(why) = dom0::build(kstart, kend, &kargs, ramdisk, &options, &info.firmware) {
        crate::xerr!("Could not set up DOM0 guest OS: {}\n", why);
        crate::xerr!("Panic: dom0 could not be built\n");
        power::fatal();
    }
    crate::xinfo!(
        "Scrubbing done; starting dom0 (boot took {} ms)\n",
        time::now() / 1_000_000
    );
    enter_first_guest()
}

fn enable_cpu_features() {
    // SAFETY: setting CR4.PGE (global pages), OSFXSR and OSXMMEXCPT (guests may use SSE)
    // changes no mapping and is supported by every x86_64 CPU.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr4",
            "or {t}, {bits}",
            "mov cr4, {t}",
            t = out(reg) _,
            bits = in(reg) (1u64 << 7) | (1 << 9) | (1 << 10),
            options(nostack)
        );
    }
}

unsafe extern "C" {
    static hv_stack_top: u8;
    fn return_to_frame() -> !;
}

/// Places a frame at the top of the hypervisor stack, lets the exit path pick the first
/// vCPU, and leaves through the common return path.
fn enter_first_guest() -> ! {
    // SAFETY: the hypervisor stack is not in use yet (boot runs on the boot stack); the
    // frame sits exactly where entry.S builds frames, so return_to_frame pops it.
    unsafe {
        let top = &raw const hv_stack_top as u64;
        let f = (top - core::mem::size_of::<TrapFrame>() as u64) as *mut TrapFrame;
        f.write(TrapFrame::default());
        trap::exit_to_guest(&mut *f);
        core::arch::asm!("mov rsp, {}", "jmp {}", in(reg) f, sym return_to_frame, options(noreturn));
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The panic may have happened while the console was locked; nothing else runs now.
    // SAFETY: one CPU, interrupts off: no other holder of the lock can still be running.
    unsafe { console::CONSOLE.force_unlock() };
    crate::xerr!("Panic: {}\n", info);
    power::fatal()
}
