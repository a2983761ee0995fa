//! `crash`: no trap table; `ud2` must make the hypervisor crash the domain (it logs the
//! crash with our registers). Reaching the end is a failure.

use pv_guest::arch::cpu;
use pv_guest::println;

use crate::report::Report;

pub fn run(r: &mut Report) {
    println!("crash: executing ud2 with no trap table registered");
    let site = cpu::probe_ud2();
    r.fail(
        "crash: domain still running after ud2",
        site.rip,
        "domain crashed by the hypervisor",
    );
}
