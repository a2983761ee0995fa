//! An XTF-style PV test kernel for rxen. `scenario=NAME` on its command line selects what to
//! exercise: `hypercalls`, `exception`, `crash`, `timers`, `events`, `cpu` (forced-emulation
//! cpuid, fpu_taskswitch/#NM, set_segment_base, `int $n`), `userspace` (iret to user mode,
//! the syscall callback, entries from user mode), `mmu` (the PV memory model: legal and
//! illegal page-table updates, pinning, memory_op, GDT, writable page tables), `bench`
//! (`BENCH <name> <value> <unit>` lines for `cargo xtask bench`), `grant` (grant tables
//! v1: map/unmap/copy with Xen's status codes, a granter destroyed while mapped), `pirq`
//! (physical IRQs: map_pirq/unmap_pirq/irq_status_query/eoi and bind_pirq). Each
//! check prints `ok <what>` or `FAIL <what>: got <x>, expected <y>`; the run ends with
//! exactly one `Test result: SUCCESS` / `Test result: FAILURE` and
//! SCHEDOP_shutdown(poweroff) (except `crash`, which must be killed by the hypervisor).
//!
//! Expected values are Xen's (xen-project/xen c447b7308b13), so the kernel passes on real Xen.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(not(target_os = "none"))]
fn main() {}

#[cfg(target_os = "none")]
mod report;
#[cfg(target_os = "none")]
mod scenarios;

#[cfg(target_os = "none")]
mod kernel {
    use pv_guest::hypercall::{self, Path};
    use pv_guest::{println, start, StartInfo};

    use crate::report::Report;
    use crate::scenarios;

    pv_guest::xen_elfnotes!(guest_os: "rxen-test-guest", guest_version: "0.1.0", hypercall_page);
    pv_guest::kernel_main!(main);

    fn main(si: &'static StartInfo) -> ! {
        let cmdline = start::cmdline(si);
        println!("rxen test guest: cmdline \"{cmdline}\"");
        let mut r = Report::new();
        let filled = hypercall::hypercall_page_filled();
        r.check(
            filled,
            "hypercall page filled by the builder",
            "0xc3 poison",
            "Xen stubs",
        );
        // Typed wrappers go through the page when it exists; scenarios switch paths too.
        hypercall::set_default_path(if filled { Path::Page } else { Path::Syscall });
        match start::cmdline_value(cmdline, "scenario") {
            Some("hypercalls") => scenarios::hypercalls::run(&mut r),
            Some("exception") => scenarios::exception::run(&mut r),
            Some("crash") => scenarios::crash::run(&mut r),
            Some("timers") => scenarios::timers::run(&mut r),
            Some("events") => scenarios::events::run(&mut r),
            Some("cpu") => scenarios::cpu::run(&mut r),
            Some("userspace") => scenarios::userspace::run(&mut r),
            Some("mmu") => scenarios::mmu::run(&mut r),
            Some("bench") => scenarios::bench::run(&mut r),
            Some("domctl") => scenarios::domctl::run(&mut r),
            Some("grant") => scenarios::grant::run(&mut r),
            Some("pirq") => scenarios::pirq::run(&mut r),
            Some(other) => r.fail(
                "scenario",
                other,
                "hypercalls|exception|crash|timers|events|cpu|userspace|mmu|bench|domctl|grant|pirq",
            ),
            None => r.fail("scenario", "none on the command line", "scenario=NAME"),
        }
        r.finish()
    }
}
