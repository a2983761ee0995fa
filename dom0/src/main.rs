//! rxen's control domain: a Rust Xen PV kernel that boots from start_info, installs its trap
//! table and event callbacks, moves onto page tables of its own (pinned, switched to with
//! `MMUEXT_NEW_BASEPTR`), keeps a VIRQ_TIMER tick, and runs a line-editing shell on the
//! hypervisor console (input announced by VIRQ_CONSOLE, read with CONSOLEIO_read).
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

#[cfg(not(target_os = "none"))]
fn main() {}

// toolstack: xl, domain builder, console backend (dom0/src/toolstack.rs)
#[cfg(target_os = "none")]
mod toolstack;

// xenstore: dom0's xenstored service (dom0/src/xenstore.rs)
#[cfg(target_os = "none")]
mod xenstore;

// ringtest: `ringtest DOMID`, the backend of the dom0<->domU ring test (dom0/src/ringtest.rs)
#[cfg(target_os = "none")]
mod ringtest;

// disks: dom0's virtio-blk driver, disk registry, `lspci` / `disk ...` (dom0/src/disks.rs)
#[cfg(target_os = "none")]
mod disks;

// blkback: the block backend serving domUs' blkfronts from dom0's disks (dom0/src/blkback.rs)
#[cfg(target_os = "none")]
mod blkback;

#[cfg(target_os = "none")]
mod kernel {
    use crate::toolstack; // toolstack
    use core::fmt;
    use core::sync::atomic::{AtomicU64, Ordering};

    use dom0::{run_command, Host, HostError, Outcome, PhysInfo, PROMPT, VERSION};
    use pv_guest::arch::mmu;
    use pv_guest::lineedit::{Event, LineEditor};
    use pv_guest::xen_abi::xen::{SIF_INITDOMAIN, SIF_PRIVILEGED, VIRQ_CONSOLE, VIRQ_TIMER};
    use pv_guest::{console, events, hypercall, println, sched, time, traps, StartInfo};

    pv_guest::xen_elfnotes!(guest_os: "rxen-dom0", guest_version: "0.1.0");
    pv_guest::kernel_main!(main);

    /// Timer ticks (VIRQ_TIMER, periodic).
    static TICKS: AtomicU64 = AtomicU64::new(0);
    /// VIRQ_CONSOLE notifications.
    static CONSOLE_IRQS: AtomicU64 = AtomicU64::new(0);

    const TICK_NS: u64 = 1_000_000_000;

    fn on_tick(_port: u32) {
        TICKS.fetch_add(1, Ordering::Relaxed);
    }

    fn on_console(_port: u32) {
        // The main loop reads the input; the event only wakes it from SCHEDOP_block.
        CONSOLE_IRQS.fetch_add(1, Ordering::Relaxed);
    }

    struct Kernel {
        si: &'static StartInfo,
    }

    impl fmt::Write for Kernel {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            console::write_bytes(s.as_bytes());
            Ok(())
        }
    }

    fn err(e: hypercall::Error) -> HostError {
        HostError(e.raw())
    }

    impl Host for Kernel {
        fn write_bytes(&mut self, b: &[u8]) {
            console::write_bytes(b);
        }
        fn xen_version(&mut self) -> Result<(u16, u16), HostError> {
            hypercall::xen_version().map_err(err)
        }
        fn xen_extraversion(&mut self) -> Result<[u8; 16], HostError> {
            hypercall::xen_extraversion().map_err(err)
        }
        fn xen_capabilities(&mut self) -> Result<[u8; 1024], HostError> {
            hypercall::xen_capabilities().map_err(err)
        }
        fn physinfo(&mut self) -> Result<PhysInfo, HostError> {
            let p = hypercall::sysctl_physinfo().map_err(err)?;
            Ok(PhysInfo {
                nr_cpus: p.nr_cpus,
                cpu_khz: p.cpu_khz,
                total_pages: p.total_pages,
                free_pages: p.free_pages,
            })
        }
        fn dom0_pages(&self) -> u64 {
            self.si.nr_pages
        }
        fn uptime_ns(&mut self) -> u64 {
            time::now_ns()
        }
        fn read_console(&mut self, index: u32, buf: &mut [u8]) -> Result<(usize, u32), HostError> {
            hypercall::sysctl_readconsole(index, buf).map_err(err)
        }
    }

    fn must<T>(what: &str, r: hypercall::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                println!("dom0: {what} failed: {e}");
                sched::crash()
            }
        }
    }

    fn main(si: &'static StartInfo) -> ! {
        println!("rxen-dom0 {VERSION}: Xen PV control domain");
        println!(
            "dom0: start_info flags {:#x} nr_pages {} cmdline \"{}\"",
            si.flags,
            si.nr_pages,
            pv_guest::start::cmdline(si)
        );
        if si.flags & (SIF_PRIVILEGED | SIF_INITDOMAIN) != (SIF_PRIVILEGED | SIF_INITDOMAIN) {
            println!("dom0: warning: not started as the privileged initial domain");
        }
        must("set_trap_table", traps::install());
        own_page_tables(si);
        must("callback registration", events::init());
        must("bind VIRQ_TIMER", events::bind_virq(VIRQ_TIMER, 0, on_tick));
        if let Err(e) = time::set_periodic(TICK_NS) {
            println!("dom0: periodic timer unavailable ({e}); uptime from system time only");
        }
        must(
            "bind VIRQ_CONSOLE",
            events::bind_virq(VIRQ_CONSOLE, 0, on_console),
        );
        events::enable();
        toolstack::init(si); // toolstack
        crate::disks::init(); // disks
        println!("dom0: ready, type 'help' for commands");
        shell(si)
    }

    /// Move off the builder's page tables onto a pinned copy of our own, as Linux does at
    /// boot (`xen_setup_kernel_pagetable`): build the tree from free frames, make its frames
    /// read-only, pin it, `MMUEXT_NEW_BASEPTR` to it, then unpin the builder's L4 and make
    /// its frames ordinary RW memory again. Any refusal is reported and dom0 carries on, on
    /// whichever tables it still has.
    fn own_page_tables(si: &'static StartInfo) {
        let info = match mmu::init(si) {
            Ok(i) => i,
            Err(e) => {
                println!("dom0: memory manager: {e}; staying on the builder's page tables");
                return;
            }
        };
        println!(
            "dom0: {} free frames (initial mapping up to pfn {:#x}, builder L4 mfn {:#x})",
            info.free_frames, info.layout.mapped_end_pfn, info.l4_mfn
        );
        let space = match mmu::clone_current() {
            Ok(s) => s,
            Err(e) => {
                println!("dom0: cannot build own page tables ({e}); staying on the builder's");
                return;
            }
        };
        if let Err(e) = mmu::switch_to(&space) {
            println!("dom0: cannot switch to own page tables ({e}); staying on the builder's");
            if let Err(e) = mmu::destroy(space) {
                println!("dom0: releasing the unused tables: {e}");
            }
            return;
        }
        match mmu::release_boot_tables() {
            Ok(rel) => {
                if let Err(e) = rel.unpin {
                    println!("dom0: unpinning the builder's L4: {e}");
                }
                println!(
                    "dom0: {}/{} builder page-table frames returned to the allocator",
                    rel.freed, rel.total
                );
            }
            Err(e) => println!("dom0: releasing the builder's page tables: {e}"),
        }
        println!(
            "dom0: running on its own pinned page tables (L4 mfn {:#x}, {} tables)",
            space.l4_mfn(),
            space.nr_tables()
        );
    }

    /// Events other than block I/O (blkback rings, disk interrupts) dispatched so far.
    fn other_events() -> u64 {
        events::stats()
            .dispatched
            .wrapping_sub(crate::blkback::events())
            .wrapping_sub(crate::disks::interrupts())
    }

    /// How the shell loop waits when there is no input.
    struct Idle {
        /// [`other_events`] at the previous pass.
        others: u64,
        /// Serve the store on the next pass (first pass, or a command ran).
        store: bool,
    }

    impl Idle {
        /// One pass: serve the store, the block backends, then sleep. The store is served
        /// only when something other than block I/O happened since the last pass
        /// (xenstore requests and acknowledgements come with an event on the store
        /// channel, domain exits and timeouts with their own events; commands and
        /// blkback's handshake steps are flagged): a wake-up by a blkif ring or a disk
        /// interrupt alone — two per request — skips both walks over the domains' rings.
        fn pass(&mut self, k: &mut Kernel) {
            let others = other_events();
            let store = self.store || others != self.others;
            self.others = others;
            self.store = false;
            if store {
                crate::xenstore::poll(); // xenstore: serve domU rings, then block
            }
            // blkback: handshakes, rings, disk completions; then the store once more,
            // so that the watch events of what blkback wrote reach the domUs now.
            let stepped = crate::blkback::poll();
            if store || stepped {
                crate::xenstore::poll();
            }
            sched::block();
            poll_toolstack(k);
        }
    }

    /// toolstack: domain exits and console output. `xl console` ends when its domain goes
    /// (as xl's does when xenconsole's pty closes): the shell's prompt is back.
    fn poll_toolstack(k: &mut Kernel) {
        let was_attached = toolstack::attached();
        toolstack::poll(k);
        if was_attached && !toolstack::attached() {
            console::write_bytes(PROMPT.as_bytes());
        }
    }

    fn shell(si: &'static StartInfo) -> ! {
        let mut k = Kernel { si };
        let mut editor = LineEditor::<256>::new();
        let mut input = [0u8; 64];
        let mut idle = Idle {
            others: other_events(),
            store: true,
        };
        console::write_bytes(PROMPT.as_bytes());
        loop {
            // Check for input with events disabled, then block: SCHEDOP_block re-enables
            // events atomically, so VIRQ_CONSOLE arriving in between still wakes us.
            events::disable();
            let n = console::read(&mut input);
            if n == 0 {
                idle.pass(&mut k);
                continue;
            }
            // Whatever the input does (a command may write the store), the next idle pass
            // serves the store.
            idle.store = true;
            events::enable();
            // toolstack: domain exits, console output; while `xl console` is attached,
            // keystrokes go to the domU.
            poll_toolstack(&mut k);
            if toolstack::attached() {
                if toolstack::input(&input[..n], &mut k) {
                    console::write_bytes(PROMPT.as_bytes());
                }
                continue;
            }
            for &b in &input[..n] {
                let outcome = match editor.feed(b, &mut |e: &[u8]| console::write_bytes(e)) {
                    // toolstack: `xl ...` lines go to the toolstack
                    Event::Line(line) => match toolstack::command(line, &mut k)
                        .or_else(|| crate::ringtest::command(line, &mut k)) // ringtest
                        .or_else(|| crate::disks::command(line, &mut k)) // disks
                    {
                        Some(o) => o,
                        None => run_command(line, &mut k),
                    },
                    Event::None => continue,
                };
                if toolstack::attached() {
                    break; // toolstack: `xl console` / `xl create -c` attached
                }
                match outcome {
                    Outcome::Continue => console::write_bytes(PROMPT.as_bytes()),
                    Outcome::PowerOff => sched::poweroff(),
                    Outcome::Reboot => sched::reboot(),
                }
            }
        }
    }
}
