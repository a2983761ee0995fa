//! dom0's toolstack: Xen's `xl` command (`tools/xl/`) over libxl's behaviour, in-process.
//!
//! Verbs: `create FILE [-c]`, `list`, `destroy`, `shutdown`, `reboot`, `pause`,
//! `unpause`, `console`, `info`, `dmesg`, `mem-set`, `domid`, `domname`, with xl's output
//! formats. Domains are built by [`create`], their consoles served by the ring logic of
//! [`crate::consback`], and their lifecycle handled on `VIRQ_DOM_EXC` ([`Toolstack::
//! handle_dom_exc`]): a domain that shut down gets its `on_poweroff` / `on_reboot` /
//! `on_crash` action.
//!
//! Everything below the verbs goes through [`platform::Hypervisor`] and
//! [`platform::Store`], so the whole toolstack runs on the host against mocks.

mod block;
pub mod create;
pub mod disk;
pub mod platform;
pub mod xs;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use xen_abi::sched::{
    SHUTDOWN_CRASH, SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, SHUTDOWN_SOFT_RESET, SHUTDOWN_SUSPEND,
    SHUTDOWN_WATCHDOG,
};

use crate::cfg::{parse_uuid, Action, DomainConfig};
use crate::consback::{drain_out, push_in, ConsoleLog, ESCAPE};
use crate::cpio::Archive;
use crate::{Host, Outcome};
use create::{build_domain, remove_nodes, Built};
use platform::{DomInfo, Hypervisor, Store};

/// dom0's name in `xl list`.
pub const DOM0_NAME: &str = "Domain-0";
/// xl list's header.
pub const LIST_HEADER: &str =
    "Name                                        ID   Mem VCPUs\tState\tTime(s)";
/// Upper bound on domains walked by getdomaininfo (DOMID_FIRST_RESERVED).
const MAX_DOMID: u16 = 0x7ff0;

/// A console the backend serves.
struct Console<R> {
    ring: R,
    /// dom0's end of the console channel.
    local_port: u32,
}

/// A domain this toolstack created.
struct Domain<R> {
    domid: u16,
    uuid: [u8; 16],
    cfg: DomainConfig,
    console: Option<Console<R>>,
    log: ConsoleLog,
    /// Shut down and preserved (on_* = preserve): left alone until `xl destroy`.
    preserved: bool,
}

/// The toolstack's state.
pub struct Toolstack<V: Hypervisor, S: Store> {
    pub hv: V,
    pub xs: S,
    files: Archive<'static>,
    domains: Vec<Domain<V::Ring>>,
    attached: Option<u16>,
    uuid_counter: u64,
    /// Virtual block devices attached to our domains.
    vbds: Vec<block::Vbd>,
}

/// `SHUTDOWN_*` as xl names it.
pub fn reason_name(r: u32) -> &'static str {
    match r {
        SHUTDOWN_POWEROFF => "poweroff",
        SHUTDOWN_REBOOT => "reboot",
        SHUTDOWN_SUSPEND => "suspend",
        SHUTDOWN_CRASH => "crash",
        SHUTDOWN_WATCHDOG => "watchdog",
        SHUTDOWN_SOFT_RESET => "soft_reset",
        _ => "unknown",
    }
}

/// xl's memory sizes (`parse_mem_size_kb`): a number with an optional b/k/m/g/t suffix,
/// MiB without one. Returns KiB.
pub fn parse_mem_kb(s: &str) -> Option<u64> {
    let (num, suffix) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    let n: u64 = num.parse().ok()?;
    let kb = match suffix.to_ascii_lowercase().as_str() {
        "" | "m" => n.checked_mul(1 << 10)?,
        "k" => n,
        "b" => n >> 10,
        "g" => n.checked_mul(1 << 20)?,
        "t" => n.checked_mul(1 << 30)?,
        _ => return None,
    };
    Some(kb)
}

const CREATE_USAGE: &str = "Usage: xl create <ConfigFile> [-c] [Key=Value ...]";

const XL_USAGE: &str = "Usage: xl <subcommand> [args]
 create FILE [-c] [KEY=VALUE ...]
                    create a domain from a config file (-c: attach its console;
                    KEY=VALUE settings override the file's)
 list               list domains
 destroy DOM        terminate a domain immediately
 shutdown DOM       ask a domain to shut down
 reboot DOM         ask a domain to reboot
 pause DOM          pause a domain
 unpause DOM        unpause a domain
 console DOM        attach to a domain's console (Ctrl-] detaches)
 info               hypervisor and host information
 dmesg              the hypervisor's log
 mem-set DOM MEM    set a domain's memory target (MiB, or with b/k/m/g suffix)
 domid NAME         the id of a domain
 domname ID         the name of a domain
 block-attach DOM SPEC
                    attach a dom0 disk to a domain (SPEC as in disk=, e.g.
                    phy:vdb,xvdb,w)
 block-detach DOM DEV
                    detach a virtual disk (DEV: devid or vdev name)
 block-list DOM     list a domain's virtual disks
";

impl<V: Hypervisor, S: Store> Toolstack<V, S> {
    /// A toolstack reading its files from the cpio archive `files` (dom0's ramdisk).
    pub fn new(hv: V, xs: S, files: &'static [u8]) -> Self {
        Toolstack {
            hv,
            xs,
            files: Archive::new(files),
            domains: Vec::new(),
            attached: None,
            uuid_counter: 0,
            vbds: Vec::new(),
        }
    }

    /// The domain whose console is attached, if any.
    pub fn attached(&self) -> Option<u16> {
        self.attached
    }

    /// dom0's local ports of the served consoles (to bind event handlers).
    pub fn console_ports(&self) -> Vec<u32> {
        self.domains
            .iter()
            .filter_map(|d| d.console.as_ref().map(|c| c.local_port))
            .collect()
    }

    /// Runs `xl ARGS...` (`args` excludes "xl").
    pub fn command(&mut self, args: &[&str], h: &mut impl Host) -> Outcome {
        let Some((&verb, rest)) = args.split_first() else {
            let _ = h.write_str(XL_USAGE);
            return Outcome::Continue;
        };
        match verb {
            "help" | "-h" | "--help" => {
                let _ = h.write_str(XL_USAGE);
            }
            "create" => self.cmd_create(rest, h),
            "list" | "li" => self.cmd_list(rest, h),
            "destroy" => self.with_dom(rest, h, "destroy", |t, id, h| {
                if id == 0 {
                    let _ = writeln!(h, "xl: cannot destroy Domain-0");
                } else {
                    t.destroy(id, h);
                }
            }),
            "shutdown" => self.with_dom(rest, h, "shutdown", |t, id, h| {
                t.control(id, "poweroff", "Shutting down", h)
            }),
            "reboot" => self.with_dom(rest, h, "reboot", |t, id, h| {
                t.control(id, "reboot", "Rebooting", h)
            }),
            "pause" => self.with_dom(rest, h, "pause", |t, id, h| {
                if let Err(e) = t.hv.pause_domain(id) {
                    let _ = writeln!(h, "xl: pausing domain {id} failed: {e}");
                }
            }),
            "unpause" => self.with_dom(rest, h, "unpause", |t, id, h| {
                if let Err(e) = t.hv.unpause_domain(id) {
                    let _ = writeln!(h, "xl: unpausing domain {id} failed: {e}");
                }
            }),
            "console" => self.with_dom(rest, h, "console", |t, id, h| t.attach(id, h)),
            "info" => return crate::run_command("info", h),
            "dmesg" => return crate::run_command("dmesg", h),
            "mem-set" => self.cmd_mem_set(rest, h),
            "block-attach" => self.cmd_block_attach(rest, h),
            "block-detach" => self.cmd_block_detach(rest, h),
            "block-list" => self.cmd_block_list(rest, h),
            "domid" => match rest {
                [name] => match self.lookup(name) {
                    Some(id) => {
                        let _ = writeln!(h, "{id}");
                    }
                    None => {
                        let _ = writeln!(
                            h,
                            "Can't get domid of domain name '{name}', maybe this domain does not exist."
                        );
                    }
                },
                _ => {
                    let _ = writeln!(h, "Usage: xl domid <DomainName>");
                }
            },
            "domname" => match rest.first().and_then(|s| s.parse::<u16>().ok()) {
                Some(id) if rest.len() == 1 => match self.name_of(id) {
                    Some(n) => {
                        let _ = writeln!(h, "{n}");
                    }
                    None => {
                        let _ = writeln!(h, "Can't get domain name of domain id '{id}', maybe this domain does not exist.");
                    }
                },
                _ => {
                    let _ = writeln!(h, "Usage: xl domname <DomainId>");
                }
            },
            other => {
                let _ = writeln!(h, "xl: command not implemented: {other}");
                let _ = h.write_str(XL_USAGE);
            }
        }
        Outcome::Continue
    }

    fn with_dom(
        &mut self,
        rest: &[&str],
        h: &mut impl Host,
        verb: &str,
        f: impl FnOnce(&mut Self, u16, &mut dyn HostOut),
    ) {
        let [dom] = rest else {
            let _ = writeln!(h, "Usage: xl {verb} <Domain>");
            return;
        };
        match self.lookup(dom) {
            Some(id) => f(self, id, &mut HostWriter(h)),
            None => {
                let _ = writeln!(h, "xl: domain '{dom}' does not exist.");
            }
        }
    }

    /// A domain by name or id (an id must exist in the hypervisor).
    pub fn lookup(&mut self, dom: &str) -> Option<u16> {
        if dom == DOM0_NAME {
            return Some(0);
        }
        if let Some(d) = self.domains.iter().find(|d| d.cfg.name == dom) {
            return Some(d.domid);
        }
        let id: u16 = dom.parse().ok()?;
        match self.hv.domain_info(id) {
            Ok(Some(i)) if i.domid == id => Some(id),
            _ => None,
        }
    }

    /// A domain's name.
    pub fn name_of(&mut self, id: u16) -> Option<String> {
        if id == 0 {
            return Some(DOM0_NAME.into());
        }
        if let Some(d) = self.domains.iter().find(|d| d.domid == id) {
            return Some(d.cfg.name.clone());
        }
        None
    }

    fn next_uuid(&mut self, cfg: &DomainConfig) -> [u8; 16] {
        if let Some(u) = cfg.uuid.as_deref().and_then(parse_uuid) {
            return u;
        }
        // No random source in dom0: mix the system time and a counter (splitmix64) into a
        // version-4-shaped uuid. Unique per boot is all xenstore's /vm/<uuid> needs.
        self.uuid_counter += 1;
        let mut x = self.hv.now_ns() ^ self.uuid_counter.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&next().to_le_bytes());
        u[8..].copy_from_slice(&next().to_le_bytes());
        u[6] = (u[6] & 0x0f) | 0x40;
        u[8] = (u[8] & 0x3f) | 0x80;
        u
    }

    fn read_file(&self, path: &str) -> Result<&'static [u8], String> {
        match self.files.find(path) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(alloc::format!("{path}: No such file or directory")),
            Err(e) => Err(alloc::format!("{path}: dom0's ramdisk: {e}")),
        }
    }

    fn cmd_create(&mut self, rest: &[&str], h: &mut impl Host) {
        let mut file = None;
        let mut console = false;
        // xl's `[Key=Value ...]`: extra settings that follow the file's (and so win).
        let mut extra: Vec<String> = Vec::new();
        let mut args = rest.iter().copied();
        while let Some(a) = args.next() {
            match a {
                "-c" => console = true,
                "-p" | "-q" | "-F" | "-e" => {}
                _ if file.is_some() && a.contains('=') => {
                    // The shell split at blanks: a quoted value with blanks in it
                    // (extra="a b") continues until its quote closes.
                    let mut setting = String::from(a);
                    let open = |s: &str| {
                        s.matches('"').count() % 2 == 1 || s.matches('\'').count() % 2 == 1
                    };
                    while open(&setting) {
                        let Some(next) = args.next() else { break };
                        setting.push(' ');
                        setting.push_str(next);
                    }
                    extra.push(setting);
                }
                _ if file.is_none() && !a.starts_with('-') => file = Some(a),
                _ => {
                    let _ = writeln!(h, "{CREATE_USAGE}");
                    return;
                }
            }
        }
        let Some(file) = file else {
            let _ = writeln!(h, "{CREATE_USAGE}");
            return;
        };
        let _ = writeln!(h, "Parsing config from {file}");
        let text = match self.read_file(file) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(h, "Failed to read config file: {e}");
                return;
            }
        };
        let Ok(text) = core::str::from_utf8(text) else {
            let _ = writeln!(h, "{file}: config file is not UTF-8 text");
            return;
        };
        let lines = text.lines().count();
        let text = if extra.is_empty() {
            String::from(text)
        } else {
            let mut t = String::from(text);
            if !t.is_empty() && !t.ends_with('\n') {
                t.push('\n');
            }
            for e in &extra {
                t.push_str(e);
                t.push('\n');
            }
            t
        };
        let cfg = match DomainConfig::parse(&text) {
            Ok(c) => c,
            Err(e) if e.line > lines => {
                let setting = extra.get(e.line - lines - 1).map_or("", String::as_str);
                let _ = writeln!(h, "{setting}: config parsing error: {}", e.problem);
                return;
            }
            Err(e) => {
                let _ = writeln!(h, "{file}:{}: config parsing error: {}", e.line, e.problem);
                return;
            }
        };
        for w in &cfg.warnings {
            let _ = writeln!(h, "{w}");
        }
        if let Some(id) = self.create(cfg, &mut HostWriter(h)) {
            if console {
                self.attach(id, &mut HostWriter(h));
            }
        }
    }

    /// Creates and starts a domain; None after printing why not.
    pub fn create(&mut self, cfg: DomainConfig, h: &mut dyn HostOut) -> Option<u16> {
        if self.domains.iter().any(|d| d.cfg.name == cfg.name) {
            let _ = writeln!(h, "xl: domain '{}' already exists", cfg.name);
            return None;
        }
        let kernel = match self.read_file(&cfg.kernel) {
            Ok(k) => k,
            Err(e) => {
                let _ = writeln!(h, "xl: kernel {e}");
                return None;
            }
        };
        let ramdisk = match &cfg.ramdisk {
            Some(r) => match self.read_file(r) {
                Ok(d) => d,
                Err(e) => {
                    let _ = writeln!(h, "xl: ramdisk {e}");
                    return None;
                }
            },
            None => &[],
        };
        let uuid = self.next_uuid(&cfg);
        let built = match build_domain(&mut self.hv, &mut self.xs, &cfg, kernel, ramdisk, uuid) {
            Ok(b) => b,
            Err(e) => {
                let _ = writeln!(h, "xl: failed to create domain '{}': {e}", cfg.name);
                return None;
            }
        };
        let id = built.domid;
        for disk in &cfg.disks {
            if let Err(e) = self.attach_disk(id, disk) {
                let _ = writeln!(h, "xl: failed to create domain '{}': {e}", cfg.name);
                self.teardown(id, &uuid, None);
                return None;
            }
        }
        let console = match self.connect_console(&built) {
            Ok(c) => c,
            Err(e) => {
                let _ = writeln!(
                    h,
                    "xl: domain {id}: setting up the console backend failed: {e}"
                );
                self.teardown(id, &uuid, None);
                return None;
            }
        };
        if let Err(e) = self.hv.unpause_domain(id) {
            let _ = writeln!(h, "xl: unpausing domain {id} failed: {e}");
            self.teardown(id, &uuid, Some(console));
            return None;
        }
        self.domains.push(Domain {
            domid: id,
            uuid,
            cfg,
            console: Some(console),
            log: ConsoleLog::default(),
            preserved: false,
        });
        Some(id)
    }

    fn connect_console(&mut self, b: &Built) -> Result<Console<V::Ring>, crate::HostError> {
        let ring = self.hv.map_ring(b.domid, b.console_mfn)?;
        match self.hv.bind_interdomain(b.domid, b.console_port) {
            Ok(local_port) => Ok(Console { ring, local_port }),
            Err(e) => {
                self.hv.unmap_ring(ring);
                Err(e)
            }
        }
    }

    /// Releases everything of a domain and destroys it.
    fn teardown(&mut self, id: u16, uuid: &[u8; 16], console: Option<Console<V::Ring>>) {
        if let Some(c) = console {
            self.hv.unbind(c.local_port);
            self.hv.unmap_ring(c.ring);
        }
        let _ = self.xs.release(id);
        self.drop_disks(id);
        remove_nodes(&mut self.xs, id, uuid);
        let _ = self.hv.destroy_domain(id);
    }

    /// `xl destroy`.
    pub fn destroy(&mut self, id: u16, h: &mut dyn HostOut) {
        if self.attached == Some(id) {
            self.attached = None;
        }
        match self.domains.iter().position(|d| d.domid == id) {
            Some(i) => {
                let d = self.domains.remove(i);
                self.teardown(id, &d.uuid, d.console);
            }
            // Not ours (created before us or by someone else): still destroy it.
            None => {
                if let Err(e) = self.hv.destroy_domain(id) {
                    let _ = writeln!(h, "xl: destroying domain {id} failed: {e}");
                }
                let _ = self.xs.release(id);
                let _ = self.xs.rm(&create::dom_path(id));
            }
        }
    }

    /// `xl shutdown` / `xl reboot`: the PV control protocol (`~/control/shutdown`).
    fn control(&mut self, id: u16, cmd: &str, verb: &str, h: &mut dyn HostOut) {
        if id == 0 {
            let _ = writeln!(h, "xl: use the shell's shutdown/reboot for Domain-0");
            return;
        }
        let _ = writeln!(h, "{verb} domain {id}");
        let path = alloc::format!("{}/control/shutdown", create::dom_path(id));
        if let Err(e) = self.xs.write(&path, cmd) {
            let _ = writeln!(h, "xl: writing {path} failed: {e}");
        }
    }

    fn cmd_mem_set(&mut self, rest: &[&str], h: &mut impl Host) {
        let [dom, mem] = rest else {
            let _ = writeln!(h, "Usage: xl mem-set <Domain> <MemKB>");
            return;
        };
        let Some(kb) = parse_mem_kb(mem) else {
            let _ = writeln!(h, "Error: Invalid memory size: {mem}");
            return;
        };
        let Some(id) = self.lookup(dom) else {
            let _ = writeln!(h, "xl: domain '{dom}' does not exist.");
            return;
        };
        let d = create::dom_path(id);
        // libxl_set_memory_target: refuse targets above static-max, then write the
        // balloon target the guest's balloon driver follows.
        if let Ok(Some(max)) = self.xs.read(&alloc::format!("{d}/memory/static-max")) {
            if max.parse::<u64>().is_ok_and(|m| kb > m) {
                let _ = writeln!(
                    h,
                    "xl: memory target {kb} KiB is above the domain's maximum {max} KiB"
                );
                return;
            }
        }
        if let Err(e) = self.xs.write(
            &alloc::format!("{d}/memory/target"),
            &alloc::format!("{kb}"),
        ) {
            let _ = writeln!(h, "xl: setting the memory target failed: {e}");
        }
    }

    fn cmd_list(&mut self, rest: &[&str], h: &mut impl Host) {
        if !rest.is_empty() && !rest.iter().all(|a| self.lookup(a).is_some()) {
            let _ = writeln!(h, "xl: domain does not exist");
            return;
        }
        let mut infos: Vec<DomInfo> = Vec::new();
        let mut next = 0u16;
        while next < MAX_DOMID {
            match self.hv.domain_info(next) {
                Ok(Some(i)) if i.domid >= next => {
                    next = i.domid.saturating_add(1);
                    infos.push(i);
                }
                Ok(_) => break,
                Err(e) => {
                    if infos.is_empty() {
                        let _ = writeln!(h, "xl: getdomaininfo failed: {e}");
                        return;
                    }
                    break;
                }
            }
        }
        let _ = writeln!(h, "{LIST_HEADER}");
        for i in infos {
            if !rest.is_empty() && !rest.iter().any(|a| self.lookup(a) == Some(i.domid)) {
                continue;
            }
            let name = self.name_of(i.domid).unwrap_or_else(|| "(null)".into());
            let _ = writeln!(h, "{}", list_row(&name, &i));
        }
    }

    /// `xl console`: attach (prints what was buffered first).
    fn attach(&mut self, id: u16, h: &mut dyn HostOut) {
        let Some(d) = self.domains.iter_mut().find(|d| d.domid == id) else {
            let _ = writeln!(h, "xl: domain {id} has no console served by this dom0");
            return;
        };
        if d.console.is_none() {
            let _ = writeln!(h, "xl: domain {id} has no console");
            return;
        }
        d.log.replay();
        let pending = d.log.take_unshown();
        h.bytes(&pending);
        self.attached = Some(id);
    }

    /// Keyboard input while a console is attached. Ctrl-] detaches; returns true when it
    /// did (the shell prints its prompt again).
    pub fn console_input(&mut self, bytes: &[u8], h: &mut impl Host) -> bool {
        let Some(id) = self.attached else {
            return true;
        };
        let (send, detach) = match bytes.iter().position(|&b| b == ESCAPE) {
            Some(i) => (&bytes[..i], true),
            None => (bytes, false),
        };
        // Terminals send CR for Enter; the guest's line discipline wants it as is
        // (xenconsoled passes bytes through untouched).
        if let Some(d) = self.domains.iter_mut().find(|d| d.domid == id) {
            if let Some(c) = d.console.as_mut() {
                let n = push_in(&mut c.ring, send);
                if n > 0 {
                    self.hv.notify(c.local_port);
                }
            }
        }
        if detach {
            self.attached = None;
            let _ = writeln!(h);
        }
        detach
    }

    /// Drains every console ring into its log; prints new output of the attached one.
    pub fn poll_consoles(&mut self, h: &mut impl Host) {
        for d in &mut self.domains {
            let Some(c) = d.console.as_mut() else {
                continue;
            };
            let log = &mut d.log;
            let r = drain_out(&mut c.ring, |b| log.push(b));
            if r.bytes > 0 || r.corrupt {
                self.hv.notify(c.local_port);
            }
            if self.attached == Some(d.domid) {
                let new = d.log.take_unshown();
                if !new.is_empty() {
                    h.write_bytes(&new);
                }
            }
        }
    }

    /// A domain's buffered console output (tests, `xl console` replay).
    pub fn console_log(&self, id: u16) -> Option<Vec<u8>> {
        self.domains
            .iter()
            .find(|d| d.domid == id)
            .map(|d| d.log.contents())
    }

    /// `VIRQ_DOM_EXC`: finds our domains that shut down and applies their actions.
    pub fn handle_dom_exc(&mut self, h: &mut impl Host) {
        // Their last words first.
        self.poll_consoles(h);
        let mut todo: Vec<(u16, u32)> = Vec::new();
        for d in &self.domains {
            if d.preserved {
                continue;
            }
            match self.hv.domain_info(d.domid) {
                Ok(Some(i)) if i.domid == d.domid => {
                    if let Some(r) = i.shutdown_reason() {
                        todo.push((d.domid, r));
                    }
                }
                // Gone: someone destroyed it; forget it below.
                _ => todo.push((d.domid, u32::MAX)),
            }
        }
        for (id, reason) in todo {
            let Some(i) = self.domains.iter().position(|d| d.domid == id) else {
                continue;
            };
            if reason == u32::MAX {
                let d = self.domains.remove(i);
                self.teardown(id, &d.uuid, d.console);
                continue;
            }
            let cfg = &self.domains[i].cfg;
            let action = match reason {
                SHUTDOWN_POWEROFF => cfg.on_poweroff,
                SHUTDOWN_REBOOT => cfg.on_reboot,
                SHUTDOWN_CRASH | SHUTDOWN_WATCHDOG => cfg.on_crash,
                // Suspend/soft-reset are not supported: treat as poweroff.
                _ => cfg.on_poweroff,
            };
            let _ = writeln!(
                h,
                "\nxl: domain {id} ({}) has shut down, reason {}; action {}",
                cfg.name,
                reason_name(reason),
                action.name()
            );
            match action {
                Action::Preserve => self.domains[i].preserved = true,
                Action::Destroy => self.destroy(id, &mut HostWriter(h)),
                Action::Restart => {
                    let cfg = self.domains[i].cfg.clone();
                    self.destroy(id, &mut HostWriter(h));
                    if let Some(new) = self.create(cfg, &mut HostWriter(h)) {
                        let _ = writeln!(h, "xl: domain restarted as {new}");
                    }
                }
            }
        }
    }
}

/// One `xl list` row (xl: `"%-40s %5d %5lu %5d     %c%c%c%c%c%c  %8.1f"`).
pub fn list_row(name: &str, i: &DomInfo) -> String {
    let state = i.state();
    let state = core::str::from_utf8(&state).unwrap_or("------");
    let mib = i.tot_pages / 256;
    // Tenths of a second, rounded as printf's %.1f does.
    let tenths = (i.cpu_time_ns + 50_000_000) / 100_000_000;
    alloc::format!(
        "{name:<40} {:>5} {mib:>5} {:>5}     {state}  {:>6}.{}",
        i.domid,
        i.nr_online_vcpus,
        tenths / 10,
        tenths % 10
    )
}

/// Output sink for the verbs that do not need the whole [`Host`].
pub trait HostOut: Write {
    fn bytes(&mut self, b: &[u8]);
}

struct HostWriter<'a, H: Host>(&'a mut H);

impl<H: Host> Write for HostWriter<'_, H> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.0.write_str(s)
    }
}

impl<H: Host> HostOut for HostWriter<'_, H> {
    fn bytes(&mut self, b: &[u8]) {
        self.0.write_bytes(b)
    }
}

#[cfg(test)]
mod tests;
