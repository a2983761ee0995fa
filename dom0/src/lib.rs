//! dom0's console shell, kept free of hypercalls so it can be tested on the host: line
//! handling lives in [`pv_guest::lineedit`], command dispatch here, and everything that talks
//! to the hypervisor sits behind the [`Host`] trait (implemented by the kernel in main.rs).
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::fmt::Write;

// toolstack (xl, xl.cfg, domain builder, console backend, dom0's ramdisk):
extern crate alloc;
pub mod cfg;
pub mod consback;
pub mod cpio;
pub mod xl;
// end toolstack

// disks: dom0's native block driver (portable parts; hardware glue in src/disks.rs)
pub mod pci;
pub mod virtio;

/// The prompt printed before each command.
pub const PROMPT: &str = "dom0# ";

/// dom0's version (the GUEST_VERSION note and `info`'s release).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A failed hypervisor request: the negative errno it returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostError(pub i64);

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match xen_abi::Errno::from_ret(self.0) {
            Some(e) => write!(f, "-{}", e.name()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Physical-machine facts for `info` (from `SYSCTL_physinfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysInfo {
    pub nr_cpus: u32,
    pub cpu_khz: u32,
    pub total_pages: u64,
    pub free_pages: u64,
}

/// What the shell needs from the hypervisor; `fmt::Write` is the console.
pub trait Host: Write {
    /// Raw bytes to the console (for the hypervisor log).
    fn write_bytes(&mut self, b: &[u8]);
    /// `XENVER_version`.
    fn xen_version(&mut self) -> Result<(u16, u16), HostError>;
    /// `XENVER_extraversion`, NUL-padded.
    fn xen_extraversion(&mut self) -> Result<[u8; 16], HostError>;
    /// `XENVER_capabilities`, NUL-padded.
    fn xen_capabilities(&mut self) -> Result<[u8; 1024], HostError>;
    /// `SYSCTL_physinfo`.
    fn physinfo(&mut self) -> Result<PhysInfo, HostError>;
    /// `start_info.nr_pages`.
    fn dom0_pages(&self) -> u64;
    /// System time in ns.
    fn uptime_ns(&mut self) -> u64;
    /// `SYSCTL_readconsole` from `index`: (bytes, next index).
    fn read_console(&mut self, index: u32, buf: &mut [u8]) -> Result<(usize, u32), HostError>;
}

/// What the kernel must do after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Print the prompt again.
    Continue,
    /// `SCHEDOP_shutdown(poweroff)`.
    PowerOff,
    /// `SCHEDOP_shutdown(reboot)`.
    Reboot,
}

/// Text up to the first NUL (invalid UTF-8 → "?").
pub fn c_str(b: &[u8]) -> &str {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    core::str::from_utf8(&b[..end]).unwrap_or("?")
}

/// Pages → MiB.
pub const fn pages_to_mib(pages: u64) -> u64 {
    pages / 256
}

const HELP: &str = "commands:
  help      this list
  info      hypervisor, memory and uptime (xl info style)
  dmesg     the hypervisor's log
  shutdown  power the machine off
  reboot    reset the machine
  xl ...    manage domains (xl help for the verbs)
";

/// One `xl info` line: the key padded to 23 columns, then ": value".
fn kv(h: &mut impl Host, key: &str, value: core::fmt::Arguments<'_>) {
    let _ = writeln!(h, "{key:<23}: {value}");
}

fn info(h: &mut impl Host) {
    kv(h, "host", format_args!("rxen"));
    kv(h, "release", format_args!("{VERSION}"));
    kv(h, "version", format_args!("rxen-dom0 {VERSION}"));
    kv(h, "machine", format_args!("x86_64"));
    match h.physinfo() {
        Ok(p) => {
            kv(h, "nr_cpus", format_args!("{}", p.nr_cpus));
            kv(h, "cpu_mhz", format_args!("{}", p.cpu_khz / 1000));
            kv(
                h,
                "total_memory",
                format_args!("{}", pages_to_mib(p.total_pages)),
            );
            kv(
                h,
                "free_memory",
                format_args!("{}", pages_to_mib(p.free_pages)),
            );
        }
        Err(e) => kv(h, "physinfo", format_args!("error {e}")),
    }
    let version = h.xen_version();
    let extra = h.xen_extraversion();
    match version {
        Ok((major, minor)) => {
            kv(h, "xen_major", format_args!("{major}"));
            kv(h, "xen_minor", format_args!("{minor}"));
            match extra {
                Ok(x) => {
                    kv(h, "xen_extra", format_args!("{}", c_str(&x)));
                    kv(
                        h,
                        "xen_version",
                        format_args!("{major}.{minor}{}", c_str(&x)),
                    );
                }
                Err(e) => kv(h, "xen_extra", format_args!("error {e}")),
            }
        }
        Err(e) => kv(h, "xen_version", format_args!("error {e}")),
    }
    match h.xen_capabilities() {
        Ok(c) => kv(h, "xen_caps", format_args!("{}", c_str(&c))),
        Err(e) => kv(h, "xen_caps", format_args!("error {e}")),
    }
    let pages = h.dom0_pages();
    kv(h, "dom0_memory", format_args!("{}", pages_to_mib(pages)));
    let up = h.uptime_ns() / 1_000_000_000;
    kv(h, "uptime", format_args!("{up}"));
}

/// Upper bound on readconsole rounds (the ring is finite; a misbehaving hypervisor must not
/// hang the shell).
const DMESG_MAX_ROUNDS: usize = 65536;

fn dmesg(h: &mut impl Host) {
    let mut buf = [0u8; 512];
    // The log ring also records what dom0 prints, so printing while reading would chase
    // its own tail: find where the log ends now, then print up to there (as `xl dmesg`
    // reads a snapshot before printing).
    let mut end = 0u32;
    for _ in 0..DMESG_MAX_ROUNDS {
        match h.read_console(end, &mut buf) {
            Ok((0, _)) => break,
            Ok((_, next)) => end = next,
            Err(e) => {
                let _ = writeln!(h, "dmesg: error {e}");
                return;
            }
        }
    }
    let mut index = 0u32;
    let mut last = b'\n';
    for _ in 0..DMESG_MAX_ROUNDS {
        if index >= end {
            break;
        }
        let want = ((end - index) as usize).min(buf.len());
        match h.read_console(index, &mut buf[..want]) {
            Ok((0, _)) => break,
            Ok((n, next)) => {
                let n = n.min(want);
                h.write_bytes(&buf[..n]);
                last = buf[n - 1];
                index = next;
            }
            Err(e) => {
                let _ = writeln!(h, "dmesg: error {e}");
                return;
            }
        }
    }
    if last != b'\n' {
        let _ = writeln!(h);
    }
}

/// Run one command line.
pub fn run_command(line: &str, h: &mut impl Host) -> Outcome {
    let mut words = line.split_ascii_whitespace();
    let Some(cmd) = words.next() else {
        return Outcome::Continue;
    };
    match cmd {
        "help" => {
            let _ = h.write_str(HELP);
            Outcome::Continue
        }
        "info" => {
            info(h);
            Outcome::Continue
        }
        "dmesg" => {
            dmesg(h);
            Outcome::Continue
        }
        "shutdown" | "poweroff" => {
            let _ = writeln!(h, "dom0: powering off");
            Outcome::PowerOff
        }
        "reboot" => {
            let _ = writeln!(h, "dom0: rebooting");
            Outcome::Reboot
        }
        other => {
            let _ = writeln!(h, "unknown command: {other} (try help)");
            Outcome::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pv_guest::lineedit::{Event, LineEditor};

    struct Mock {
        out: String,
        log: Vec<u8>,
        chunk: usize,
        fail_log: bool,
        /// Model the hypervisor recording dom0's console output in its log.
        echo_to_log: bool,
    }

    impl Mock {
        fn new() -> Mock {
            Mock {
                out: String::new(),
                log: Vec::new(),
                chunk: 7,
                fail_log: false,
                echo_to_log: false,
            }
        }
    }

    impl Write for Mock {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            self.out.push_str(s);
            if self.echo_to_log {
                self.log.extend_from_slice(s.as_bytes());
            }
            Ok(())
        }
    }

    impl Host for Mock {
        fn write_bytes(&mut self, b: &[u8]) {
            self.out.push_str(std::str::from_utf8(b).unwrap());
            if self.echo_to_log {
                self.log.extend_from_slice(b);
            }
        }
        fn xen_version(&mut self) -> Result<(u16, u16), HostError> {
            Ok((4, 19))
        }
        fn xen_extraversion(&mut self) -> Result<[u8; 16], HostError> {
            let mut b = [0; 16];
            b[..5].copy_from_slice(b"-rxen");
            Ok(b)
        }
        fn xen_capabilities(&mut self) -> Result<[u8; 1024], HostError> {
            let mut b = [0; 1024];
            b[..14].copy_from_slice(b"xen-3.0-x86_64");
            Ok(b)
        }
        fn physinfo(&mut self) -> Result<PhysInfo, HostError> {
            Ok(PhysInfo {
                nr_cpus: 1,
                cpu_khz: 2_400_000,
                total_pages: 262_144,
                free_pages: 131_072,
            })
        }
        fn dom0_pages(&self) -> u64 {
            65_536
        }
        fn uptime_ns(&mut self) -> u64 {
            12_345_000_000
        }
        fn read_console(&mut self, index: u32, buf: &mut [u8]) -> Result<(usize, u32), HostError> {
            if self.fail_log {
                return Err(HostError(-1));
            }
            let start = (index as usize).min(self.log.len());
            let n = (self.log.len() - start).min(buf.len()).min(self.chunk);
            buf[..n].copy_from_slice(&self.log[start..start + n]);
            Ok((n, (start + n) as u32))
        }
    }

    #[test]
    fn info_lines() {
        let mut m = Mock::new();
        assert_eq!(run_command("info", &mut m), Outcome::Continue);
        for line in [
            "host                   : rxen\n",
            "xen_major              : 4\n",
            "xen_minor              : 19\n",
            "xen_extra              : -rxen\n",
            "xen_version            : 4.19-rxen\n",
            "xen_caps               : xen-3.0-x86_64\n",
            "total_memory           : 1024\n",
            "free_memory            : 512\n",
            "dom0_memory            : 256\n",
            "uptime                 : 12\n",
            "release                : ",
            "version                : rxen-dom0 ",
        ] {
            assert!(m.out.contains(line), "missing {line:?} in\n{}", m.out);
        }
    }

    #[test]
    fn dmesg_reads_incrementally() {
        let mut m = Mock::new();
        m.log = b"(XEN) line one\n(XEN) line two without newline".to_vec();
        run_command("dmesg", &mut m);
        assert_eq!(m.out, "(XEN) line one\n(XEN) line two without newline\n");
        // The hypervisor's log also records what dom0 prints: dmesg must still end, and
        // print only what was there when it started.
        let mut m = Mock::new();
        m.log = b"(XEN) boot\n".to_vec();
        m.echo_to_log = true;
        run_command("dmesg", &mut m);
        assert_eq!(m.out, "(XEN) boot\n");
        let mut m = Mock::new();
        m.fail_log = true;
        run_command("dmesg", &mut m);
        assert_eq!(m.out, "dmesg: error -EPERM\n");
    }

    #[test]
    fn commands() {
        let mut m = Mock::new();
        assert_eq!(run_command("  ", &mut m), Outcome::Continue);
        assert_eq!(m.out, "");
        assert_eq!(run_command("frob x", &mut m), Outcome::Continue);
        assert_eq!(m.out, "unknown command: frob (try help)\n");
        assert_eq!(run_command("shutdown", &mut m), Outcome::PowerOff);
        assert_eq!(run_command("reboot", &mut m), Outcome::Reboot);
        m.out.clear();
        run_command("help", &mut m);
        for c in ["help", "info", "dmesg", "shutdown", "reboot"] {
            assert!(m.out.contains(c));
        }
    }

    #[test]
    fn typed_input_reaches_the_shell() {
        let mut ed = LineEditor::<128>::new();
        let mut m = Mock::new();
        let mut outcomes = Vec::new();
        for &b in b"inf\x7fxo\x08\x08fo\r\nbogus\rshutdown\n" {
            if let Event::Line(l) = ed.feed(b, &mut |_| {}) {
                let l = l.to_string();
                outcomes.push(run_command(&l, &mut m));
            }
        }
        assert_eq!(
            outcomes,
            vec![Outcome::Continue, Outcome::Continue, Outcome::PowerOff]
        );
        assert!(m.out.contains("host                   : rxen"));
        assert!(m.out.contains("unknown command: bogus (try help)"));
    }
}
