//! rxen's Rust domU kernel: a Xen PV guest that the toolstack builds (`xl create`). It
//! boots from start_info, writes to its console ring (`console.domU`), reads its name and
//! domid from xenstore, prints a heartbeat every second, obeys `control/shutdown`
//! (poweroff, reboot, halt) as Linux does, and crashes on request (`crash`,
//! `crash_after=N` on its command line) by executing `ud2` without a trap table, which the
//! hypervisor answers by crashing the domain.
//!
//! It installs no trap table and never enables event upcalls: every wait is `SCHEDOP_poll`
//! on the (masked) store and console ports with a timeout, so nothing but the hypervisor
//! can interrupt it.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(not(target_os = "none"))]
fn main() {}

// ringtest: the frontend of the dom0<->domU ring test (src/ringtest.rs)
#[cfg(target_os = "none")]
mod ringtest;

// blk: the virtual block device and its exercisers (src/blk.rs)
#[cfg(target_os = "none")]
mod blk;

#[cfg(target_os = "none")]
mod kernel {
    use domu::{evtchn, isolation};
    use domu::{Config, Identity, Request, ShutdownAction, Text, SHUTDOWN_TOKEN};
    use pv_guest::arch::mmu;
    use pv_guest::mm::{pte, pte_of};
    use pv_guest::xen_abi::xen::{MmuUpdate, MMU_NORMAL_PT_UPDATE, UVMF_INVLPG};
    use pv_guest::xen_abi::{DomId, Errno};
    use pv_guest::xenbus::{self, XsErrno, XsError};
    use pv_guest::StartInfo;
    use pv_guest::{arch::cpu, console_ring, events, hypercall, sched, shared, start, time};

    pv_guest::xen_elfnotes!(guest_os: "rxen-domU", guest_version: "0.1.0");
    pv_guest::kernel_main!(main);

    /// Everything this kernel prints goes to its console ring.
    macro_rules! println {
        ($($arg:tt)*) => { pv_guest::ring_println!($($arg)*) };
    }

    const SECOND: u64 = 1_000_000_000;
    /// How long the last lines may take to reach the console backend before we go.
    const DRAIN_NS: u64 = 500_000_000;

    fn main(si: &'static StartInfo) -> ! {
        let cfg = Config::parse(start::cmdline(si));
        if let Err(e) = console_ring::init(si) {
            // Still printed, through console_io.
            println!("domU: {e}; using the hypervisor console");
        }
        if cfg.console_io {
            console_ring::set_mirror(true);
        }
        let store = xenbus::init(si);
        let id = match store.and_then(|()| xenbus::with(domu::read_identity)) {
            Ok(id) => Some(id),
            Err(e) => {
                println!("domU: cannot read name and domid from xenstore: {e}");
                None
            }
        };
        let name = id.map_or(Text::new("?"), |i| i.name);
        match id {
            Some(Identity { domid, .. }) => println!("rxen domU {domid} ({name}) booting"),
            None => println!("rxen domU ? ({name}) booting"),
        }
        let watching = id.is_some() && {
            match xenbus::with(domu::watch_shutdown) {
                Ok(()) => true,
                Err(e) => {
                    println!("domU {name}: cannot watch control/shutdown: {e}");
                    false
                }
            }
        };
        match id {
            Some(Identity { domid, .. }) => println!("domU {name} (domid {domid}) up"),
            None => println!("domU {name} (domid ?) up"),
        }
        if cfg.crash {
            crash(name);
        }
        if let Some(Identity { domid, .. }) = id {
            // Domain ids are 15-bit; xenstored gave us ours.
            let me = domid as u16;
            let count = cfg.evtchn_count.unwrap_or(evtchn::DEFAULT_COUNT);
            if cfg.evtchn_server {
                evtchn_server(me, count);
            }
            if let Some(server) = cfg.evtchn_client {
                evtchn_client(me, server, count);
            }
            if let Some(other) = cfg.isolation {
                isolation_store(other);
                isolation_memory(si);
            }
            crate::ringtest::maybe_run(si); // ringtest: `extra="ringtest ..."`
            crate::blk::maybe_run(si); // blk: `device/vbd/*`, `extra="blk=verify ..."`
        }
        run(cfg, name, watching)
    }

    /// How long the event-channel rendezvous may take (the peer may boot later).
    const RENDEZVOUS_NS: u64 = 60 * SECOND;
    /// How long one event may take to arrive.
    const EVENT_NS: u64 = 10 * SECOND;

    /// Sleep up to `ns` in `SCHEDOP_poll` on `ports` (or the store port); true if one of
    /// `ports` became pending (the bit is left set).
    fn wait(ports: &[u32], ns: u64) -> bool {
        let deadline = time::now_ns().saturating_add(ns);
        let store = xenbus::port();
        let mut all = [0u32; 3];
        let mut n = 0;
        for &p in ports.iter().take(2).chain(store.iter()) {
            all[n] = p;
            n += 1;
        }
        if sched::poll(&all[..n], deadline).is_err() {
            sched::yield_now();
        }
        if let Some(p) = store {
            shared::test_and_clear_pending(p);
        }
        ports.iter().any(|&p| shared::test_pending(p))
    }

    /// Retry `f` every 50 ms for up to [`RENDEZVOUS_NS`]; the last error if it never
    /// succeeds.
    fn retry<T>(mut f: impl FnMut() -> Result<T, XsError>) -> Result<T, XsError> {
        let deadline = time::now_ns().saturating_add(RENDEZVOUS_NS);
        loop {
            match f() {
                Ok(v) => return Ok(v),
                Err(e) if time::now_ns() >= deadline => return Err(e),
                Err(_) => {
                    wait(&[], 50_000_000);
                }
            }
        }
    }

    /// `evtchn_server`: offer a channel through xenstore, then answer every event.
    fn evtchn_server(me: u16, count: u32) {
        if let Err(e) = xenbus::with(|xb| evtchn::open_rendezvous(xb, me)) {
            println!("evtchn: cannot open the rendezvous node: {e}");
            return;
        }
        println!("evtchn: server waiting for a client");
        let client = retry(|| {
            xenbus::with(evtchn::client_domid)
                .and_then(|c| c.ok_or(XsError::Server(XsErrno::ENOENT)))
        });
        let client = match client {
            Ok(c) => c,
            Err(e) => {
                println!("evtchn: no client came: {e}");
                return;
            }
        };
        let port = match events::alloc_unbound(DomId::new(client)) {
            Ok(p) => p,
            Err(e) => {
                println!("evtchn: alloc_unbound for domid {client}: {e}");
                return;
            }
        };
        if let Err(e) = xenbus::with(|xb| evtchn::publish_port(xb, me, client, port)) {
            println!("evtchn: publishing port {port}: {e}");
            return;
        }
        println!("evtchn: port {port} offered to domid {client}");
        let mut got = 0;
        while got < count {
            if !wait(&[port], EVENT_NS) {
                println!("evtchn: timed out after {got} events from domid {client}");
                return;
            }
            shared::test_and_clear_pending(port);
            got += 1;
            if let Err(e) = events::send(port) {
                println!("evtchn: send: {e}");
                return;
            }
        }
        println!("evtchn: exchanged {count} events with domid {client}");
    }

    /// `evtchn_client=SERVER`: ask SERVER for a channel, then ping-pong `count` events.
    fn evtchn_client(me: u16, server: u16, count: u32) {
        if let Err(e) = retry(|| xenbus::with(|xb| evtchn::offer(xb, server, me))) {
            println!("evtchn: cannot reach domid {server}'s rendezvous node: {e}");
            return;
        }
        let remote = match retry(|| xenbus::with(|xb| evtchn::server_port(xb, server))) {
            Ok(p) => p,
            Err(e) => {
                println!("evtchn: domid {server} published no port: {e}");
                return;
            }
        };
        let port = match events::bind_interdomain(DomId::new(server), remote) {
            Ok(p) => p,
            Err(e) => {
                println!("evtchn: bind_interdomain to domid {server} port {remote}: {e}");
                return;
            }
        };
        // Binding marks the new port pending (Xen does, for notifications the unbound
        // port may have missed); the server only ever answers, so nothing is lost.
        shared::test_and_clear_pending(port);
        println!("evtchn: bound port {port} to domid {server} port {remote}");
        let begin = time::now_ns();
        for i in 0..count {
            if let Err(e) = events::send(port) {
                println!("evtchn: send: {e}");
                return;
            }
            if !wait(&[port], EVENT_NS) {
                println!("evtchn: no answer to event {} from domid {server}", i + 1);
                return;
            }
            shared::test_and_clear_pending(port);
        }
        let us = (time::now_ns() - begin) / 1000 / u64::from(count.max(1));
        println!("evtchn: exchanged {count} events with domid {server} ({us} us per round trip)");
    }

    /// `isolation=OTHER`, xenstore half: OTHER's nodes are neither readable nor writable.
    fn isolation_store(other: u16) {
        let read = xenbus::with(|xb| Ok(isolation::read_name(xb, other)));
        let write = xenbus::with(|xb| Ok(isolation::write_name(xb, other)));
        let data = xenbus::with(|xb| Ok(isolation::write_data(xb, other)));
        for (what, r) in [
            ("read /local/domain/{}/name", read),
            ("write /local/domain/{}/name", write),
            ("write /local/domain/{}/data/intruder", data),
        ] {
            let r = r.unwrap_or(Err(XsError::NoStore));
            let (head, tail) = what.split_once("{}").unwrap_or((what, ""));
            println!("isolation: {head}{other}{tail}: {}", domu::outcome(r));
        }
    }

    /// Frames either side of ours to try mapping: 32 MiB each way covers the domains
    /// built just before and after us.
    const GUESS_WINDOW: u64 = 8192;

    /// Frames of the hypervisor's image (rxen loads at 1 MiB).
    const HYPERVISOR_FRAMES: core::ops::Range<u64> = 0x100..0x500;

    /// `isolation=OTHER`, memory half: map frames that are not ours (by our p2m) with
    /// `update_va_mapping` and with `mmu_update` on a map-area L1 entry; every one must be
    /// refused. Prints how many were tried and the errors by kind.
    fn isolation_memory(si: &StartInfo) {
        if let Err(e) = mmu::init(si)
            .map(|_| ())
            .and_then(|()| mmu::map_area_init().map(|_| ()))
        {
            println!("isolation: memory manager: {e}");
            return;
        }
        let nr = si.nr_pages;
        let own = |mfn: u64| (0..nr).any(|p| mmu::pfn_to_mfn(p) == Some(mfn));
        let (mut lo, mut hi) = (u64::MAX, 0);
        for p in 0..nr {
            if let Some(m) = mmu::pfn_to_mfn(p) {
                lo = lo.min(m);
                hi = hi.max(m);
            }
        }
        if lo > hi {
            println!("isolation: empty p2m");
            return;
        }
        // Frames Xen shares with us outside the p2m: shared_info.
        let shared_info = si.shared_info >> 12;
        let slot = match mmu::reserve_slots(1) {
            Ok(s) => s,
            Err(e) => {
                println!("isolation: no map-area slot: {e}");
                return;
            }
        };
        let Some(l1e) = mmu::slot_maddr(slot) else {
            println!("isolation: no map-area slot address");
            return;
        };
        // Our frames as runs of consecutive MFNs (few in practice), so that testing a
        // candidate is cheap; a p2m too scattered for the table falls back to a search.
        let mut runs = [(0u64, 0u64); 256];
        let mut nr_runs = 0;
        let mut scattered = false;
        for p in 0..nr {
            let Some(m) = mmu::pfn_to_mfn(p) else {
                continue;
            };
            match runs[..nr_runs].iter().position(|r| r.0 + r.1 == m) {
                Some(i) => runs[i].1 += 1,
                None if nr_runs < runs.len() => {
                    runs[nr_runs] = (m, 1);
                    nr_runs += 1;
                }
                None => scattered = true,
            }
        }
        let runs = &runs[..nr_runs];
        let is_own =
            |m: u64| runs.iter().any(|&(s, l)| m >= s && m < s + l) || (scattered && own(m));
        let mut tried = 0u64;
        let mut uvm = Tally::default();
        let mut mmu_upd = Tally::default();
        let first = lo.saturating_sub(GUESS_WINDOW);
        let last = hi.saturating_add(GUESS_WINDOW);
        // Also the hypervisor's image (loaded at 1 MiB) and frames past the end of RAM.
        let top = hypercall::maximum_ram_page().unwrap_or(0);
        let guesses = (first..=last)
            .chain(HYPERVISOR_FRAMES)
            .chain(top.saturating_add(1)..top.saturating_add(65));
        for mfn in guesses {
            if is_own(mfn) || mfn == shared_info {
                continue;
            }
            tried += 1;
            let r = mmu::update_slot(slot, pte_of(mfn, pte::KERNEL_RW), UVMF_INVLPG);
            if r.is_ok() {
                let _ = mmu::update_slot(slot, 0, UVMF_INVLPG);
            }
            uvm.add(mfn, r.map(|_| ()));
            let req = [MmuUpdate {
                ptr: l1e | MMU_NORMAL_PT_UPDATE,
                val: pte_of(mfn, pte::KERNEL_RO),
            }];
            let r = mmu::mmu_update(&req).result;
            if r.is_ok() {
                let _ = mmu::update_slot(slot, 0, UVMF_INVLPG);
            }
            mmu_upd.add(mfn, r.map(|_| ()));
        }
        mmu::release_slots(slot, 1);
        println!(
            "isolation: tried {tried} frames not ours: mfn {first:#x}..={last:#x}, \
             {:#x}..{:#x}, past RAM's end {top:#x}",
            HYPERVISOR_FRAMES.start, HYPERVISOR_FRAMES.end
        );
        uvm.print("update_va_mapping");
        mmu_upd.print("mmu_update");
    }

    /// Outcomes of mapping attempts.
    #[derive(Default)]
    struct Tally {
        mapped: u64,
        first_mapped: Option<u64>,
        ebusy: u64,
        eperm: u64,
        einval: u64,
        other: u64,
    }

    impl Tally {
        fn add(&mut self, mfn: u64, r: Result<(), hypercall::Error>) {
            match r.map_err(|e| e.errno()) {
                Ok(()) => {
                    self.mapped += 1;
                    self.first_mapped.get_or_insert(mfn);
                }
                Err(Some(Errno::EBUSY)) => self.ebusy += 1,
                Err(Some(Errno::EPERM)) => self.eperm += 1,
                Err(Some(Errno::EINVAL)) => self.einval += 1,
                Err(_) => self.other += 1,
            }
        }

        fn print(&self, what: &str) {
            println!(
                "isolation: {what}: {} mapped, EBUSY {}, EPERM {}, EINVAL {}, other {}",
                self.mapped, self.ebusy, self.eperm, self.einval, self.other
            );
            if let Some(m) = self.first_mapped {
                println!("isolation: {what}: mfn {m:#x} is not ours but was mapped");
            }
        }
    }

    /// Heartbeats, shutdown requests and the crash timer, sleeping in `SCHEDOP_poll`.
    fn run(cfg: Config, name: Text<64>, watching: bool) -> ! {
        let start = time::now_ns();
        let crash_at = cfg
            .crash_after
            .map(|s| start.saturating_add(s.saturating_mul(SECOND)));
        let mut next_beat = start.saturating_add(SECOND);
        let mut beats = 0u64;
        let mut ports = [0u32; 2];
        let mut nr = 0;
        for p in [watching.then(xenbus::port).flatten(), console_ring::port()]
            .into_iter()
            .flatten()
        {
            ports[nr] = p;
            nr += 1;
        }
        let ports = &ports[..nr];
        loop {
            if watching && shutdown_event_pending(name) {
                check_shutdown(name);
            }
            let now = time::now_ns();
            if crash_at.is_some_and(|t| now >= t) {
                crash(name);
            }
            if now >= next_beat {
                beats += 1;
                println!("domU {name} heartbeat {beats}");
                next_beat = next_beat.saturating_add(SECOND);
                if next_beat <= now {
                    // Far behind (we were paused): no burst of catch-up beats.
                    next_beat = now.saturating_add(SECOND);
                }
            }
            let deadline = crash_at.map_or(next_beat, |t| t.min(next_beat));
            // Returns when a port is pending (the store or the console backend signalled)
            // or at the deadline; the ports are masked, so we clear them ourselves and then
            // look at the rings again.
            if sched::poll(ports, deadline).is_err() {
                sched::yield_now();
            }
            for &p in ports {
                shared::test_and_clear_pending(p);
            }
        }
    }

    /// Drain queued watch events; true if one may concern `control/shutdown` (including a
    /// report of lost events, after which we re-read it anyway).
    fn shutdown_event_pending(name: Text<64>) -> bool {
        let r = xenbus::with(|xb| {
            let mut check = false;
            let mut buf = [0u8; 512];
            while let Some(ev) = xb.next_event(&mut buf) {
                match ev {
                    Ok(ev) => check |= ev.token == SHUTDOWN_TOKEN,
                    Err(XsError::EventsLost) => check = true,
                    Err(e) => return Err(e),
                }
            }
            Ok(check)
        });
        r.unwrap_or_else(|e| {
            println!("domU {name}: xenstore: {e}");
            false
        })
    }

    fn check_shutdown(name: Text<64>) {
        match xenbus::with(domu::take_shutdown_request) {
            Ok(Request::None) => {}
            Ok(Request::Ignored(w)) => {
                println!("domU {name}: ignoring shutdown request '{w}'");
            }
            Ok(Request::Act(a)) => {
                println!("domU {name}: shutdown request '{}'", a.name());
                match a {
                    ShutdownAction::Poweroff => {
                        println!("domU {name} powering off");
                        console_ring::drain(DRAIN_NS);
                        sched::poweroff()
                    }
                    ShutdownAction::Halt => {
                        println!("domU {name} halting");
                        console_ring::drain(DRAIN_NS);
                        sched::poweroff()
                    }
                    ShutdownAction::Reboot => {
                        println!("domU {name} rebooting");
                        console_ring::drain(DRAIN_NS);
                        sched::reboot()
                    }
                }
            }
            Err(e) => println!("domU {name}: reading control/shutdown: {e}"),
        }
    }

    /// Crash on purpose: `ud2` with no trap table makes the hypervisor crash the domain.
    fn crash(name: Text<64>) -> ! {
        println!("domU {name} crashing on request (ud2)");
        console_ring::drain(DRAIN_NS);
        cpu::probe_ud2();
        // Only reached if someone handled #UD after all.
        println!("domU {name}: still running after ud2; SHUTDOWN_crash");
        sched::crash()
    }
}
