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

#[cfg(target_os = "none")]
mod kernel {
    use domu::{Config, Identity, Request, ShutdownAction, Text, SHUTDOWN_TOKEN};
    use pv_guest::xenbus::{self, XsError};
    use pv_guest::{arch::cpu, console_ring, sched, shared, start, time, StartInfo};

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
        run(cfg, name, watching)
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
