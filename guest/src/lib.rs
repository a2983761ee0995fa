//! Runtime for rxen's Rust PV kernels (dom0, test guests): a 64-bit Xen PV guest kernel
//! environment that boots equally on rxen and on real Xen.
//!
//! * [`arch`]: `_start`, exception/upcall entry stubs, hypercall instructions (inline
//!   `syscall` and the hypercall page), fault probes. Bare-metal only parts are gated on
//!   `target_os = "none"`.
//! * [`shared`]: atomic access to shared_info / vcpu_info / the p2m list.
//! * [`start`]: start_info, shared_info mapping, command line.
//! * [`events`], [`traps`], [`time`], [`sched`], [`console`]: Xen's 2-level events, the
//!   virtual IDT, system time and timers, sched_op, console_io.
//! * [`lineedit`]: a portable line editor for console shells.
//! * [`mm`]: the portable half of the PV memory model (entries, frame allocator); the
//!   hypercall half is [`arch::mmu`].
//!
//! A kernel links with `guest/link.ld`, invokes [`xen_elfnotes!`] and [`kernel_main!`], and
//! gets `fn main(si: &'static StartInfo) -> !` called on its own 64 KiB stack with
//! shared_info mapped and events masked.
#![cfg_attr(not(test), no_std)]
#![deny(unsafe_code)]
// The entry paths that reach the upcall/trap/start code exist only on bare metal.
#![cfg_attr(not(target_os = "none"), allow(dead_code))]

#[allow(unsafe_code)]
pub mod arch;
pub mod console;
pub mod console_ring;
pub mod events;
pub mod lineedit;
pub mod mm;
pub mod sched;
#[allow(unsafe_code)]
pub mod shared;
#[allow(unsafe_code)]
pub mod shared_page;
pub mod start;
pub mod time;
pub mod traps;
pub mod xenbus;

pub use arch::hypercall;
pub use xen_abi;
pub use xen_abi::xen::StartInfo;

/// Emit the kernel's `.note.Xen` ELF notes (ABI.md §1.2): GUEST_OS, GUEST_VERSION,
/// XEN_VERSION "xen-3.0", LOADER "generic", VIRT_BASE = PADDR_OFFSET = 0xffffffff80000000,
/// ENTRY = `_start`, and with `hypercall_page` also HYPERCALL_PAGE = `hypercall_page`.
///
/// ```ignore
/// pv_guest::xen_elfnotes!(guest_os: "rxen-dom0", guest_version: "0.1.0");
/// pv_guest::xen_elfnotes!(guest_os: "rxen-test", guest_version: "0.1.0", hypercall_page);
/// ```
#[macro_export]
macro_rules! xen_elfnotes {
    (guest_os: $os:literal, guest_version: $ver:literal, hypercall_page) => {
        $crate::xen_elfnotes!(@emit $os, $ver, $crate::xen_elfnotes!(@note 2, ".quad hypercall_page"));
    };
    (guest_os: $os:literal, guest_version: $ver:literal) => {
        $crate::xen_elfnotes!(@emit $os, $ver, "");
    };
    (@note $ty:literal, $desc:expr) => {
        concat!(
            ".balign 4\n",
            ".long 4\n",
            ".long 9f - 8f\n",
            ".long ", $ty, "\n",
            ".asciz \"Xen\"\n",
            ".balign 4\n",
            "8: ", $desc, "\n",
            "9: .balign 4\n",
        )
    };
    (@emit $os:literal, $ver:literal, $extra:expr) => {
        ::core::arch::global_asm!(concat!(
            ".pushsection .note.Xen, \"a\", @note\n",
            $crate::xen_elfnotes!(@note 6, concat!(".asciz \"", $os, "\"")),
            $crate::xen_elfnotes!(@note 7, concat!(".asciz \"", $ver, "\"")),
            $crate::xen_elfnotes!(@note 5, ".asciz \"xen-3.0\""),
            $crate::xen_elfnotes!(@note 8, ".asciz \"generic\""),
            $crate::xen_elfnotes!(@note 3, ".quad 0xffffffff80000000"),
            $crate::xen_elfnotes!(@note 4, ".quad 0xffffffff80000000"),
            $crate::xen_elfnotes!(@note 1, ".quad _start"),
            $extra,
            ".popsection\n",
        ), options(att_syntax));
    };
}

/// Name the kernel's main function: `fn(&'static StartInfo) -> !`, called by the runtime's
/// entry path with shared_info mapped and events masked.
#[macro_export]
macro_rules! kernel_main {
    ($main:path) => {
        // Exporting the symbol the runtime's entry path calls is the only unsafe attribute
        // a kernel needs.
        #[allow(unsafe_code)]
        #[no_mangle]
        fn pv_guest_kernel_main(si: &'static $crate::StartInfo) -> ! {
            $main(si)
        }
    };
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    println!("pv-guest: panic: {}", info);
    sched::crash()
}
