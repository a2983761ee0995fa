//! `hypercalls`: every hypercall of issue 2 part 5 with legal arguments (results checked)
//! and with illegal ones (Xen's exact -errno each time). Expected errnos come from Xen:
//! common/event_channel.c, common/kernel.c, common/sched/core.c, common/domain.c,
//! arch/x86/pv/callback.c, drivers/char/console.c.

use pv_guest::hypercall::{self as hc, Arg, BadPtr, Path};
use pv_guest::xen_abi::callback::{CALLBACKOP_REGISTER, CALLBACKTYPE_EVENT};
use pv_guest::xen_abi::event_channel::{
    EVTCHNOP_SEND, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ,
};
use pv_guest::xen_abi::features::{
    XENFEAT_AUTO_TRANSLATED_PHYSMAP, XENFEAT_GNTTAB_MAP_AVAIL_BITS,
    XENFEAT_MMU_PT_UPDATE_PRESERVE_AD, XENFEAT_WRITABLE_PAGE_TABLES,
};
use pv_guest::xen_abi::hypercall::{self as nr, MulticallEntry};
use pv_guest::xen_abi::sched::SCHEDOP_SHUTDOWN;
use pv_guest::xen_abi::vcpu::{RUNSTATE_RUNNING, VCPUOP_GET_RUNSTATE_INFO};
use pv_guest::xen_abi::version::{XENVER_EXTRAVERSION, XENVER_PAGESIZE, XENVER_VERSION};
use pv_guest::xen_abi::xen::{
    TrapInfo, CONSOLEIO_WRITE, HYPERVISOR_VIRT_START, VIRQ_TIMER, VMASST_CMD_ENABLE,
    VMASST_TYPE_WRITABLE_PAGETABLES,
};
use pv_guest::xen_abi::{DomId, Errno};
use pv_guest::{println, shared, time, traps};

use crate::report::{err, rc, rc0, Rc, Report};

const SELF: u16 = DomId::SELF.raw();
/// A port number no domain has (beyond 2-level's 4096).
const PORT_HUGE: u32 = 5000;
/// A port inside the 2-level range that a fresh domain never allocated (Xen: beyond
/// `valid_evtchns`, so every op says -EINVAL).
const PORT_UNALLOCATED: u32 = 4000;

fn probe(r: &mut Report, what: &str, path: Path, op: u64, args: [Arg; 5], expected: Rc) {
    match hc::probe(path, op, args) {
        Ok(v) => {
            r.eq(what, Rc(v), expected);
        }
        Err(_) => r.fail(what, "probe refused", expected),
    }
}

fn s(v: u64) -> Arg {
    Arg::Scalar(v)
}

fn b(p: BadPtr) -> Arg {
    Arg::Bad(p)
}

const Z: Arg = Arg::Scalar(0);

fn bad_name(p: BadPtr) -> &'static str {
    match p {
        BadPtr::Null => "NULL",
        BadPtr::Hypervisor => "hypervisor address",
        BadPtr::NonCanonical => "non-canonical address",
        BadPtr::Unmapped => "unmapped address",
    }
}

pub fn run(r: &mut Report) {
    super::setup(r);
    version(r);
    unknown(r);
    bad_pointers(r);
    console(r);
    evtchn(r);
    vcpu(r);
    sched(r);
    multicall(r);
    vm_assist(r);
    callbacks_and_traps(r);
    register_vcpu_info(r);
    println!("hypercalls: done, the hypervisor is still alive");
}

fn version(r: &mut Report) {
    // Through the hypercall page when the builder filled it (set up in main).
    let path = hc::default_path();
    println!("hypercalls: xen_version via {path:?}");
    match hc::xen_version() {
        Ok((major, minor)) => {
            r.eq("xen_version(version) major", major, 4);
            println!("info: xen version {major}.{minor}");
        }
        Err(e) => r.fail("xen_version(version)", e, "4.x"),
    }
    if let Some(x) = super::ok(r, "xen_version(extraversion)", hc::xen_extraversion()) {
        println!("info: extraversion \"{}\"", c_str(&x));
    }
    super::ok(r, "xen_version(compile_info)", hc::xen_compile_info());
    if let Some(c) = super::ok(r, "xen_version(capabilities)", hc::xen_capabilities()) {
        let caps = c_str(&c);
        r.check(
            caps.contains("xen-3.0-x86_64"),
            "capabilities contain xen-3.0-x86_64",
            caps,
            "xen-3.0-x86_64",
        );
    }
    super::ok(r, "xen_version(changeset)", hc::xen_changeset());
    r.eq(
        "xen_version(platform_parameters) virt_start",
        rc(hc::xen_platform_parameters()),
        Rc(HYPERVISOR_VIRT_START as i64),
    );
    match hc::xen_get_features(0) {
        Ok(f) => {
            let need =
                (1 << XENFEAT_MMU_PT_UPDATE_PRESERVE_AD) | (1 << XENFEAT_GNTTAB_MAP_AVAIL_BITS);
            r.check(
                f & need == need,
                "get_features(0) has mmu_pt_update_preserve_ad+gnttab_map_avail_bits",
                f,
                need,
            );
            let never =
                (1 << XENFEAT_WRITABLE_PAGE_TABLES) | (1 << XENFEAT_AUTO_TRANSLATED_PHYSMAP);
            r.check(
                f & never == 0,
                "get_features(0) lacks writable_page_tables/auto_translated_physmap",
                f,
                "bits 0,2 clear",
            );
        }
        Err(e) => r.fail("xen_version(get_features 0)", e, "success"),
    }
    r.eq(
        "xen_version(get_features 1) = -EINVAL",
        rc(hc::xen_get_features(1)),
        err(Errno::EINVAL),
    );
    r.eq("xen_version(pagesize)", rc(hc::xen_pagesize()), Rc(4096));
    probe(
        r,
        "xen_version(pagesize, non-NULL arg) = -EINVAL",
        path,
        nr::XEN_VERSION,
        [s(u64::from(XENVER_PAGESIZE)), b(BadPtr::Unmapped), Z, Z, Z],
        err(Errno::EINVAL),
    );
    super::ok(r, "xen_version(guest_handle)", hc::xen_guest_handle());
    probe(
        r,
        "xen_version(999) = -ENOSYS",
        path,
        nr::XEN_VERSION,
        [s(999), Z, Z, Z, Z],
        err(Errno::ENOSYS),
    );
    // The same call by direct syscall.
    match hc::probe_scalars(
        Path::Syscall,
        nr::XEN_VERSION,
        [u64::from(XENVER_VERSION), 0, 0, 0, 0],
    ) {
        Ok(v) => {
            r.eq("xen_version(version) by direct syscall major", v >> 16, 4);
        }
        Err(_) => r.fail("xen_version by syscall", "refused", "run"),
    }
    hc::set_default_path(Path::Syscall);
}

fn c_str(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}

fn unknown(r: &mut Report) {
    for op in [60u64, 1000] {
        for path in [Path::Syscall, Path::Page] {
            if path == Path::Page && (op >= 128 || !hc::hypercall_page_filled()) {
                continue;
            }
            let mut what = Label::new();
            let _ = core::fmt::Write::write_fmt(
                &mut what,
                format_args!("hypercall {op} via {path:?} = -ENOSYS"),
            );
            probe(r, what.as_str(), path, op, [Z; 5], err(Errno::ENOSYS));
        }
    }
    let p = Path::Syscall;
    probe(
        r,
        "sched_op(99) = -ENOSYS",
        p,
        nr::SCHED_OP,
        [s(99), Z, Z, Z, Z],
        err(Errno::ENOSYS),
    );
    probe(
        r,
        "event_channel_op(99) = -ENOSYS",
        p,
        nr::EVENT_CHANNEL_OP,
        [s(99), Z, Z, Z, Z],
        err(Errno::ENOSYS),
    );
    probe(
        r,
        "vcpu_op(99, vcpu 0) = -ENOSYS",
        p,
        nr::VCPU_OP,
        [s(99), Z, Z, Z, Z],
        err(Errno::ENOSYS),
    );
    probe(
        r,
        "callback_op(9) = -ENOSYS",
        p,
        nr::CALLBACK_OP,
        [s(9), Z, Z, Z, Z],
        err(Errno::ENOSYS),
    );
    probe(
        r,
        "console_io(7) = -ENOSYS",
        p,
        nr::CONSOLE_IO,
        [s(7), Z, Z, Z, Z],
        err(Errno::ENOSYS),
    );
}

fn bad_pointers(r: &mut Report) {
    let p = Path::Syscall;
    for bad in BadPtr::ALL {
        let mut what = Label::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("xen_version(extraversion, {}) = -EFAULT", bad_name(bad)),
        );
        probe(
            r,
            what.as_str(),
            p,
            nr::XEN_VERSION,
            [s(u64::from(XENVER_EXTRAVERSION)), b(bad), Z, Z, Z],
            err(Errno::EFAULT),
        );
        let mut what = Label::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("console_io(write, 16, {}) = -EFAULT", bad_name(bad)),
        );
        probe(
            r,
            what.as_str(),
            p,
            nr::CONSOLE_IO,
            [s(u64::from(CONSOLEIO_WRITE)), s(16), b(bad), Z, Z],
            err(Errno::EFAULT),
        );
        let mut what = Label::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("event_channel_op(send, {}) = -EFAULT", bad_name(bad)),
        );
        probe(
            r,
            what.as_str(),
            p,
            nr::EVENT_CHANNEL_OP,
            [s(u64::from(EVTCHNOP_SEND)), b(bad), Z, Z, Z],
            err(Errno::EFAULT),
        );
        let mut what = Label::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("vcpu_op(get_runstate_info, 0, {}) = -EFAULT", bad_name(bad)),
        );
        probe(
            r,
            what.as_str(),
            p,
            nr::VCPU_OP,
            [s(u64::from(VCPUOP_GET_RUNSTATE_INFO)), Z, b(bad), Z, Z],
            err(Errno::EFAULT),
        );
        let mut what = Label::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("sched_op(shutdown, {}) = -EFAULT", bad_name(bad)),
        );
        probe(
            r,
            what.as_str(),
            p,
            nr::SCHED_OP,
            [s(u64::from(SCHEDOP_SHUTDOWN)), b(bad), Z, Z, Z],
            err(Errno::EFAULT),
        );
        let mut what = Label::new();
        let _ = core::fmt::Write::write_fmt(
            &mut what,
            format_args!("callback_op(register, {}) = -EFAULT", bad_name(bad)),
        );
        probe(
            r,
            what.as_str(),
            p,
            nr::CALLBACK_OP,
            [s(u64::from(CALLBACKOP_REGISTER)), b(bad), Z, Z, Z],
            err(Errno::EFAULT),
        );
        if bad != BadPtr::Null {
            // NULL clears the trap table (tested separately).
            let mut what = Label::new();
            let _ = core::fmt::Write::write_fmt(
                &mut what,
                format_args!("set_trap_table({}) = -EFAULT", bad_name(bad)),
            );
            probe(
                r,
                what.as_str(),
                p,
                nr::SET_TRAP_TABLE,
                [b(bad), Z, Z, Z, Z],
                err(Errno::EFAULT),
            );
        }
    }
}

fn console(r: &mut Report) {
    let msg = b"hypercalls: console_io write\n";
    r.eq("console_io(write)", rc(hc::console_write(msg)), Rc(0));
}

fn evtchn(r: &mut Report) {
    let Some(p) = super::ok(
        r,
        "evtchn alloc_unbound(self, remote self)",
        hc::evtchn_alloc_unbound(SELF, SELF),
    ) else {
        return;
    };
    r.check(p != 0, "alloc_unbound port is not 0", p, "> 0");
    match hc::evtchn_status(SELF, p) {
        Ok(st) => {
            r.eq("status(unbound port).status", st.status, EVTCHNSTAT_UNBOUND);
            r.eq("status(unbound port).vcpu", st.vcpu, 0);
        }
        Err(e) => r.fail("evtchn status(unbound)", e, "success"),
    }
    let Some(q) = super::ok(
        r,
        "evtchn bind_interdomain(self, port)",
        hc::evtchn_bind_interdomain(SELF, p),
    ) else {
        return;
    };
    r.check(
        q != p && q != 0,
        "bind_interdomain gives a new port",
        q,
        "!= remote port, != 0",
    );
    for (a, bb) in [(p, q), (q, p)] {
        match hc::evtchn_status(SELF, a) {
            Ok(st) => {
                r.eq(
                    "status(interdomain).status",
                    st.status,
                    EVTCHNSTAT_INTERDOMAIN,
                );
                r.eq("status(interdomain) remote port", st.u[1], bb);
            }
            Err(e) => r.fail("evtchn status(interdomain)", e, "success"),
        }
    }
    // Events are masked here: the send only raises the other end's pending bit.
    shared::test_and_clear_pending(p);
    r.eq("evtchn send(interdomain)", rc(hc::evtchn_send(q)), Rc(0));
    r.check(
        shared::test_pending(p),
        "send raised the other end's pending bit",
        false,
        true,
    );
    shared::test_and_clear_pending(p);
    shared::test_and_clear_pending(q);

    r.eq(
        "evtchn bind_vcpu(port, 0)",
        rc(hc::evtchn_bind_vcpu(p, 0)),
        Rc(0),
    );
    r.eq(
        "evtchn bind_vcpu(port, 1) = -ENOENT",
        rc(hc::evtchn_bind_vcpu(p, 1)),
        err(Errno::ENOENT),
    );
    r.eq("evtchn unmask(port)", rc(hc::evtchn_unmask(p)), Rc(0));

    match hc::evtchn_bind_virq(VIRQ_TIMER, 0) {
        Ok(t) => {
            r.pass("evtchn bind_virq(VIRQ_TIMER, 0)");
            match hc::evtchn_status(SELF, t) {
                Ok(st) => {
                    r.eq("status(virq).status", st.status, EVTCHNSTAT_VIRQ);
                    r.eq("status(virq).virq", st.u[0], VIRQ_TIMER);
                }
                Err(e) => r.fail("evtchn status(virq)", e, "success"),
            }
            r.eq(
                "bind_virq(VIRQ_TIMER) again = -EEXIST",
                rc(hc::evtchn_bind_virq(VIRQ_TIMER, 0)),
                err(Errno::EEXIST),
            );
            r.eq("evtchn close(virq port)", rc(hc::evtchn_close(t)), Rc(0));
            r.eq(
                "status(closed).status",
                hc::evtchn_status(SELF, t).map(|s| s.status).ok(),
                Some(EVTCHNSTAT_CLOSED),
            );
        }
        Err(e) => r.fail("evtchn bind_virq(VIRQ_TIMER, 0)", e, "success"),
    }
    r.eq(
        "bind_virq(99) = -EINVAL",
        rc(hc::evtchn_bind_virq(99, 0)),
        err(Errno::EINVAL),
    );
    r.eq(
        "bind_virq(VIRQ_TIMER, vcpu 1) = -ENOENT",
        rc(hc::evtchn_bind_virq(VIRQ_TIMER, 1)),
        err(Errno::ENOENT),
    );

    for (port, name) in [
        (0u32, "port 0"),
        (PORT_HUGE, "port 5000"),
        (PORT_UNALLOCATED, "unallocated port 4000"),
    ] {
        let mut what = Label::new();
        let _ =
            core::fmt::Write::write_fmt(&mut what, format_args!("evtchn send({name}) = -EINVAL"));
        r.eq(what.as_str(), rc(hc::evtchn_send(port)), err(Errno::EINVAL));
        let mut what = Label::new();
        let _ =
            core::fmt::Write::write_fmt(&mut what, format_args!("evtchn close({name}) = -EINVAL"));
        r.eq(
            what.as_str(),
            rc(hc::evtchn_close(port)),
            err(Errno::EINVAL),
        );
    }
    // Port 0 exists (reserved) so Xen's unmask accepts it; beyond the allocated range it
    // is invalid.
    r.eq("evtchn unmask(port 0) = 0", rc(hc::evtchn_unmask(0)), Rc(0));
    r.eq(
        "evtchn unmask(port 5000) = -EINVAL",
        rc(hc::evtchn_unmask(PORT_HUGE)),
        err(Errno::EINVAL),
    );
    r.eq(
        "evtchn unmask(unallocated port 4000) = -EINVAL",
        rc(hc::evtchn_unmask(PORT_UNALLOCATED)),
        err(Errno::EINVAL),
    );
    r.eq(
        "status(port 0) = closed",
        hc::evtchn_status(SELF, 0).map(|s| s.status).ok(),
        Some(EVTCHNSTAT_CLOSED),
    );
    r.eq(
        "status(port 5000) = -EINVAL",
        rc0(hc::evtchn_status(SELF, PORT_HUGE)),
        err(Errno::EINVAL),
    );
    r.eq(
        "bind_interdomain(self, port 0) = -EINVAL",
        rc(hc::evtchn_bind_interdomain(SELF, 0)),
        err(Errno::EINVAL),
    );
    r.eq(
        "alloc_unbound(dom 0x1234) = -ESRCH",
        rc(hc::evtchn_alloc_unbound(0x1234, SELF)),
        err(Errno::ESRCH),
    );

    r.eq("evtchn close(interdomain)", rc(hc::evtchn_close(p)), Rc(0));
    r.eq(
        "status(peer of closed end) = unbound",
        hc::evtchn_status(SELF, q).map(|s| s.status).ok(),
        Some(EVTCHNSTAT_UNBOUND),
    );
    r.eq(
        "evtchn send(unbound) = 0 (dropped)",
        rc(hc::evtchn_send(q)),
        Rc(0),
    );

    // EVTCHNOP_reset closes everything, including q.
    r.eq("evtchn reset(self)", rc(hc::evtchn_reset(SELF)), Rc(0));
    r.eq(
        "status after reset = closed",
        hc::evtchn_status(SELF, q).map(|s| s.status).ok(),
        Some(EVTCHNSTAT_CLOSED),
    );
}

fn vcpu(r: &mut Report) {
    r.eq("vcpu_op is_up(0) = 1", rc(hc::vcpu_is_up(0)), Rc(1));
    r.eq(
        "vcpu_op is_up(1) = -ENOENT",
        rc(hc::vcpu_is_up(1)),
        err(Errno::ENOENT),
    );
    match hc::vcpu_runstate_info(0) {
        Ok(rs) => {
            r.eq(
                "get_runstate_info(0).state = running",
                rs.state,
                RUNSTATE_RUNNING,
            );
            r.check(
                rs.time[0] > 0,
                "runstate time running > 0",
                rs.time[0],
                "> 0",
            );
        }
        Err(e) => r.fail("vcpu_op get_runstate_info(0)", e, "success"),
    }
    r.eq(
        "get_runstate_info(1) = -ENOENT",
        rc0(hc::vcpu_runstate_info(1)),
        err(Errno::ENOENT),
    );
    r.eq(
        "set_periodic_timer(100us) = -EINVAL",
        rc(hc::vcpu_set_periodic_timer(0, 100_000)),
        err(Errno::EINVAL),
    );
    r.eq(
        "stop_periodic_timer(0)",
        rc(hc::vcpu_stop_periodic_timer(0)),
        Rc(0),
    );
    r.eq(
        "stop_singleshot_timer(0)",
        rc(hc::vcpu_stop_singleshot_timer(0)),
        Rc(0),
    );
    r.eq("set_timer_op(0) cancels", rc(hc::set_timer_op(0)), Rc(0));
}

fn sched(r: &mut Report) {
    r.eq("sched_op yield", rc(hc::sched_yield()), Rc(0));
    let ports = [1u32; 129];
    r.eq(
        "sched_op poll(129 ports) = -EINVAL",
        rc(hc::sched_poll(&ports, 0)),
        err(Errno::EINVAL),
    );
}

fn multicall(r: &mut Report) {
    let mut e = [MulticallEntry::default(); 3];
    e[0].op = nr::XEN_VERSION;
    e[0].args[0] = u64::from(XENVER_VERSION);
    e[1].op = nr::XEN_VERSION;
    e[1].args[0] = u64::from(XENVER_PAGESIZE);
    e[2].op = nr::XEN_VERSION;
    e[2].args[0] = 999;
    r.eq(
        "multicall(3 xen_version ops)",
        rc(hc::multicall_scalars(&mut e)),
        Rc(0),
    );
    r.eq("multicall[0] version major", e[0].result >> 16, 4);
    r.eq("multicall[1] pagesize", e[1].result, 4096);
    r.eq(
        "multicall[2] xen_version(999)",
        Rc(e[2].result as i64),
        err(Errno::ENOSYS),
    );
}

fn vm_assist(r: &mut Report) {
    r.eq(
        "vm_assist(enable, writable_pagetables)",
        rc(hc::vm_assist(
            VMASST_CMD_ENABLE,
            VMASST_TYPE_WRITABLE_PAGETABLES,
        )),
        Rc(0),
    );
    r.eq(
        "vm_assist(enable, type 6) = -EINVAL",
        rc(hc::vm_assist(VMASST_CMD_ENABLE, 6)),
        err(Errno::EINVAL),
    );
    r.eq(
        "vm_assist(enable, type 64) = -EINVAL",
        rc(hc::vm_assist(VMASST_CMD_ENABLE, 64)),
        err(Errno::EINVAL),
    );
    r.eq(
        "vm_assist(cmd 7, writable_pagetables) = -ENOSYS",
        rc(hc::vm_assist(7, VMASST_TYPE_WRITABLE_PAGETABLES)),
        err(Errno::ENOSYS),
    );
}

fn callbacks_and_traps(r: &mut Report) {
    r.eq(
        "callback_op register type 99 = -ENOSYS",
        rc(hc::callback_register(99, 0, 0xffff_ffff_8010_0000)),
        err(Errno::ENOSYS),
    );
    r.eq(
        "callback_op register non-canonical address = -EINVAL",
        rc(hc::callback_register(
            CALLBACKTYPE_EVENT,
            0,
            0x8000_0000_0000_0000,
        )),
        err(Errno::EINVAL),
    );
    r.eq(
        "callback_op unregister(event) = -EINVAL",
        rc(hc::callback_unregister(CALLBACKTYPE_EVENT)),
        err(Errno::EINVAL),
    );
    // Our real callbacks again (the failed calls changed nothing, but be explicit).
    r.eq(
        "callback_op re-register",
        rc0(pv_guest::events::init()),
        Rc(0),
    );

    let mut bad = [TrapInfo::default(); 2];
    bad[0].vector = 6;
    bad[0].address = 0x8000_0000_0000_0000;
    r.eq(
        "set_trap_table(non-canonical handler) = -EINVAL",
        rc(hc::set_trap_table(&bad)),
        err(Errno::EINVAL),
    );
    r.eq(
        "set_trap_table(NULL) clears",
        rc(hc::clear_trap_table()),
        Rc(0),
    );
    r.eq("set_trap_table(ours) again", rc(traps::install()), Rc(0));
}

fn register_vcpu_info(r: &mut Report) {
    let t0 = time::now_ns();
    r.eq(
        "register_vcpu_info(offset 4096) = -EINVAL",
        rc(hc::register_vcpu_info_in_spare_page(4096)),
        err(Errno::EINVAL),
    );
    r.eq(
        "register_vcpu_info(spare page + 64)",
        rc(hc::register_vcpu_info_in_spare_page(64)),
        Rc(0),
    );
    r.eq(
        "register_vcpu_info again = -EBUSY",
        rc(hc::register_vcpu_info_in_spare_page(128)),
        err(Errno::EBUSY),
    );
    r.check(
        shared::upcall_mask(),
        "new vcpu_info keeps the upcall mask",
        false,
        true,
    );
    let t1 = time::now_ns();
    r.check(
        t1 >= t0 && t1 != 0,
        "system time from the new vcpu_info",
        t1,
        "≥ previous",
    );
}

/// A small stack string for check labels.
pub struct Label {
    buf: [u8; 120],
    len: usize,
}

impl Label {
    pub fn new() -> Label {
        Label {
            buf: [0; 120],
            len: 0,
        }
    }
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("?")
    }
}

impl core::fmt::Write for Label {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
