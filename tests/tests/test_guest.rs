//! The test guest booted as dom0, one scenario per test (chosen by its command line). Each
//! scenario prints exactly one XTF-style `Test result:` line and powers off, except `crash`,
//! which faults without a handler so that the hypervisor must crash the domain.

use std::time::Duration;

use rxen_tests::{
    Config, ExitKind, Machine, Result, TEST_RESULT, XEN_CRASH_NOREBOOT, XEN_CRASH_REBOOT,
    XEN_DOM0_CRASHED,
};

/// Booting and running one scenario under TCG.
const RUN: Duration = Duration::from_secs(180);
/// From the verdict (or the crash report) to QEMU's exit.
const END: Duration = Duration::from_secs(30);

/// Runs a scenario that must report SUCCESS and then power the machine off.
fn expect_success(scenario: &str) -> Result<()> {
    expect_success_with(Config::test_guest(scenario), scenario).map(|_| ())
}

/// As [`expect_success`] with a prepared configuration; returns the console output.
fn expect_success_with(cfg: Config, scenario: &str) -> Result<String> {
    let mut m = Machine::boot(cfg)?;
    let verdict = m.expect_line(TEST_RESULT, RUN)?;
    let exit = m.wait_exit(END)?;
    let output = m.output();
    assert_eq!(
        verdict.trim_end(),
        "Test result: SUCCESS",
        "scenario {scenario} failed:\n{output}"
    );
    assert_eq!(
        output.matches(TEST_RESULT).count(),
        1,
        "scenario {scenario} printed more than one verdict:\n{output}"
    );
    assert_eq!(exit, ExitKind::PoweredOff, "scenario {scenario}:\n{output}");
    Ok(output)
}

#[test]
fn hypercalls() -> Result<()> {
    expect_success("hypercalls")
}

#[test]
fn exception() -> Result<()> {
    expect_success("exception")
}

#[test]
fn timers() -> Result<()> {
    expect_success("timers")
}

#[test]
fn events() -> Result<()> {
    expect_success("events")
}

#[test]
fn cpu() -> Result<()> {
    expect_success("cpu")
}

#[test]
fn userspace() -> Result<()> {
    expect_success("userspace")
}

/// The PV memory model: legal and illegal mmu_update / update_va_mapping / mmuext_op /
/// memory_op / set_gdt / update_descriptor requests with Xen's errnos, and writable
/// page-table emulation for each instruction form Linux uses.
#[test]
fn mmu() -> Result<()> {
    expect_success("mmu")
}

/// domctl from dom0: create, query, pause, destroy with Xen's errors; every frame a
/// domain held returns to the free pool, also over 100 create/destroy cycles.
#[test]
fn domctl() -> Result<()> {
    expect_success("domctl")
}

/// Grant tables v1 from dom0: set/get_version, query_size, setup_table (own and another
/// domain's), self-grants mapped and unmapped with the GTF_reading/GTF_writing bits,
/// read-only mappings that fault on write, copies, every illegal request with Xen's
/// GNTST_* code, and a granter destroyed while dom0 maps its grant (the frame is freed
/// at the unmap, not before, and nothing leaks).
#[test]
fn grant() -> Result<()> {
    expect_success("grant")
}

/// Physical IRQs from dom0 with Xen's errors (map_pirq / unmap_pirq / irq_status_query /
/// eoi / bind_pirq), and on a machine with a virtio-blk disk the positive path: its
/// MSI-X entry mapped to a PIRQ (the hypervisor reads the entry back from the device and
/// says "verified"), bound to a port once, closed, unmapped.
#[test]
fn pirq() -> Result<()> {
    let disk = std::env::temp_dir().join(format!("rxen-pirq-{}.img", std::process::id()));
    std::fs::write(&disk, vec![0u8; 1 << 20])
        .map_err(|e| rxen_tests::Error::Io(format!("{}: {e}", disk.display())))?;
    let mut cfg = Config::test_guest("pirq");
    cfg.disks.push(rxen_tests::Disk::new(&disk));
    let output = expect_success_with(cfg, "pirq");
    let _ = std::fs::remove_file(&disk);
    let output = output?;
    assert!(
        output.contains("pirq: MSI-X function 00:"),
        "the virtio-blk disk's MSI-X was not found:\n{output}"
    );
    assert!(
        output.contains("entry verified"),
        "the hypervisor did not read the MSI-X entry back:\n{output}"
    );
    Ok(())
}

/// The start of a crash: the report and the guest's registers.
fn expect_crash_report(m: &mut Machine) -> Result<()> {
    m.expect(XEN_DOM0_CRASHED, RUN)?;
    m.expect("RIP:", END)?;
    Ok(())
}

#[test]
fn crash_reboots_the_machine() -> Result<()> {
    let mut m = Machine::boot(Config::test_guest("crash"))?;
    expect_crash_report(&mut m)?;
    m.expect(XEN_CRASH_REBOOT, END)?;
    // A reset the hypervisor asked for, not a triple fault of its own.
    assert_eq!(m.wait_exit(END)?, ExitKind::Reset);
    Ok(())
}

#[test]
fn crash_with_noreboot_halts() -> Result<()> {
    let mut cfg = Config::test_guest("crash");
    cfg.xen_cmdline.push_str(" noreboot");
    let mut m = Machine::boot(cfg)?;
    expect_crash_report(&mut m)?;
    m.expect(XEN_CRASH_NOREBOOT, END)?;
    // The hypervisor halts instead of resetting: QEMU must still be running.
    m.expect_running_for(Duration::from_secs(2))?;
    m.kill();
    Ok(())
}
