//! The portable half of rxen's Rust domU kernel (the binary is `src/main.rs`): its
//! command line, the `control/shutdown` protocol of Xen's toolstack as Linux's
//! `drivers/xen/manage.c` follows it, and reading the domain's identity from xenstore. All
//! of it works on any [`XsTransport`], so it is host-tested against a scripted xenstored.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

use core::fmt;

use pv_guest::xenbus::{TxId, Xenbus, XsErrno, XsError, XsTransport};

/// The xenstore node the toolstack writes shutdown requests to (relative to our domain).
pub const SHUTDOWN_NODE: &str = "control/shutdown";
/// Token of our watch on [`SHUTDOWN_NODE`].
pub const SHUTDOWN_TOKEN: &str = "shutdown";
/// Feature nodes a guest writes to say which requests it obeys (Linux writes these too).
pub const FEATURE_NODES: [&str; 2] = ["control/feature-poweroff", "control/feature-reboot"];
/// How often a shutdown acknowledgement is retried when its transaction conflicts.
pub const MAX_TX_RETRIES: usize = 8;

/// What the kernel command line asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `crash` or `crash=<anything but 0>`: crash right after boot.
    pub crash: bool,
    /// `crash_after=N`: crash N seconds after boot.
    pub crash_after: Option<u64>,
    /// `console_io` or `console_io=1`: copy console output to the hypervisor console.
    pub console_io: bool,
    /// `evtchn_server`: offer an interdomain event channel through xenstore
    /// ([`evtchn`]) to the first domain that asks, and answer its events.
    pub evtchn_server: bool,
    /// `evtchn_client=D`: ask domain D (an `evtchn_server`) for a channel and ping-pong
    /// events with it.
    pub evtchn_client: Option<u16>,
    /// `evtchn_count=N`: events each side sends (default [`evtchn::DEFAULT_COUNT`]).
    pub evtchn_count: Option<u32>,
    /// `isolation=D`: try to read and write domain D's xenstore nodes and to map frames
    /// that are not ours, and report what the hypervisor and xenstored answered.
    pub isolation: Option<u16>,
}

fn flag(value: Option<&str>) -> bool {
    !matches!(value, Some("0" | "no" | "off" | "false"))
}

impl Config {
    /// Parse a space-separated command line (unknown words are ignored).
    pub fn parse(cmdline: &str) -> Config {
        let mut c = Config::default();
        for tok in cmdline.split_ascii_whitespace() {
            let (key, value) = match tok.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (tok, None),
            };
            match key {
                "crash" => c.crash = flag(value),
                "crash_after" => c.crash_after = value.and_then(|v| v.parse().ok()),
                "console_io" => c.console_io = flag(value),
                "evtchn_server" => c.evtchn_server = flag(value),
                "evtchn_client" => c.evtchn_client = value.and_then(|v| v.parse().ok()),
                "evtchn_count" => c.evtchn_count = value.and_then(|v| v.parse().ok()),
                "isolation" => c.isolation = value.and_then(|v| v.parse().ok()),
                _ => {}
            }
        }
        c
    }
}

/// A request written to `control/shutdown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownAction {
    /// `poweroff`.
    Poweroff,
    /// `halt` (a PV guest has nothing to halt to: powers off, as Linux does).
    Halt,
    /// `reboot`.
    Reboot,
}

impl ShutdownAction {
    /// The action for a node value; `None` for "" (no request) and for requests we do not
    /// obey (`suspend`, unknown words), which Linux also leaves in place.
    pub fn parse(value: &str) -> Option<ShutdownAction> {
        match value {
            "poweroff" => Some(ShutdownAction::Poweroff),
            "halt" => Some(ShutdownAction::Halt),
            "reboot" => Some(ShutdownAction::Reboot),
            _ => None,
        }
    }

    /// The word the toolstack wrote.
    pub fn name(self) -> &'static str {
        match self {
            ShutdownAction::Poweroff => "poweroff",
            ShutdownAction::Halt => "halt",
            ShutdownAction::Reboot => "reboot",
        }
    }
}

/// What [`take_shutdown_request`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// Nothing to do (node absent or empty).
    None,
    /// A request we obey; the node has been cleared.
    Act(ShutdownAction),
    /// A request we do not obey (left in place); its first bytes.
    Ignored(Text<32>),
}

/// Read `control/shutdown` and, for a request we obey, clear it in the same transaction
/// (retrying on `EAGAIN`), as Linux's `shutdown_handler` does. The caller then acts.
pub fn take_shutdown_request<T: XsTransport>(xb: &mut Xenbus<T>) -> Result<Request, XsError> {
    for _ in 0..MAX_TX_RETRIES {
        let tx = xb.transaction_start()?;
        let mut buf = [0u8; 64];
        let value = match xb.read_str(tx, SHUTDOWN_NODE, &mut buf) {
            Ok(v) => v,
            Err(XsError::Server(XsErrno::ENOENT)) => {
                xb.transaction_end(tx, false)?;
                return Ok(Request::None);
            }
            Err(e) => {
                let _ = xb.transaction_end(tx, false);
                return Err(e);
            }
        };
        let action = ShutdownAction::parse(value);
        let Some(action) = action else {
            let r = if value.is_empty() {
                Request::None
            } else {
                Request::Ignored(Text::new(value))
            };
            xb.transaction_end(tx, false)?;
            return Ok(r);
        };
        if let Err(e) = xb.write(tx, SHUTDOWN_NODE, b"") {
            let _ = xb.transaction_end(tx, false);
            return Err(e);
        }
        match xb.transaction_end(tx, true) {
            Ok(()) => return Ok(Request::Act(action)),
            Err(XsError::Server(XsErrno::EAGAIN)) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(XsError::Server(XsErrno::EAGAIN))
}

/// A short text kept by value (truncated at a character boundary).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Text<N> {
    /// `s`, truncated to at most `N` bytes.
    pub fn new(s: &str) -> Text<N> {
        let mut len = s.len().min(N);
        while !s.is_char_boundary(len) {
            len -= 1;
        }
        let mut buf = [0; N];
        buf[..len].copy_from_slice(&s.as_bytes()[..len]);
        Text { buf, len }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Built from a prefix of a &str cut at a character boundary.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl<const N: usize> fmt::Display for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Who we are, from xenstore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `domid` (read relative to our home, `/local/domain/<domid>`).
    pub domid: u64,
    /// `name`.
    pub name: Text<64>,
}

/// Read `domid` and `name` (relative paths: xenstored resolves them under our home).
pub fn read_identity<T: XsTransport>(xb: &mut Xenbus<T>) -> Result<Identity, XsError> {
    let domid = xb.read_u64(TxId::NONE, "domid")?;
    let mut buf = [0u8; 128];
    let name = Text::new(xb.read_str(TxId::NONE, "name", &mut buf)?);
    Ok(Identity { domid, name })
}

/// Watch [`SHUTDOWN_NODE`] and announce the requests we obey (the feature nodes are
/// best-effort: a toolstack may not give us write access to `control/`).
pub fn watch_shutdown<T: XsTransport>(xb: &mut Xenbus<T>) -> Result<(), XsError> {
    for node in FEATURE_NODES {
        let _ = xb.write(TxId::NONE, node, b"1");
    }
    xb.watch(SHUTDOWN_NODE, SHUTDOWN_TOKEN)
}

/// `XS_SET_PERMS` on `path`: `perms[0]` is the owner with the access everybody else gets
/// (`n`, `r`, `w` or `b`), the rest are per-domain grants (Xen's `xs_perm_to_string`).
pub fn set_perms<T: XsTransport>(
    xb: &mut Xenbus<T>,
    path: &str,
    perms: &[(u8, u16)],
) -> Result<(), XsError> {
    use core::fmt::Write as _;
    let mut buf = Buf::<64>::new();
    for &(access, domid) in perms {
        if write!(buf, "{}{domid}\0", access as char).is_err() {
            return Err(XsError::TooLong);
        }
    }
    let mut reply = [0u8; 8];
    let n = xb.request(
        pv_guest::xenbus::msg::SET_PERMS,
        TxId::NONE,
        &[path.as_bytes(), b"\0", buf.as_bytes()],
        &mut reply,
    )?;
    match &reply[..n] {
        b"OK\0" | b"OK" => Ok(()),
        _ => Err(XsError::BadReply),
    }
}

mod heapless_buf {
    /// A fixed-size byte buffer that `write!` fills (refusing to overflow).
    #[derive(Clone, Copy)]
    pub struct Buf<const N: usize> {
        bytes: [u8; N],
        len: usize,
    }

    impl<const N: usize> Default for Buf<N> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<const N: usize> Buf<N> {
        /// Empty.
        pub fn new() -> Self {
            Buf {
                bytes: [0; N],
                len: 0,
            }
        }
        /// What was written.
        pub fn as_bytes(&self) -> &[u8] {
            &self.bytes[..self.len]
        }
        /// What was written, as text (only `write!` fills it, so it is UTF-8).
        pub fn as_str(&self) -> &str {
            core::str::from_utf8(self.as_bytes()).unwrap_or("")
        }
    }

    impl<const N: usize> core::fmt::Write for Buf<N> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let end = self.len.checked_add(s.len()).ok_or(core::fmt::Error)?;
            let dst = self.bytes.get_mut(self.len..end).ok_or(core::fmt::Error)?;
            dst.copy_from_slice(s.as_bytes());
            self.len = end;
            Ok(())
        }
    }
}

pub use heapless_buf::Buf;

/// Two domUs setting up an interdomain event channel through xenstore, as split drivers
/// do (a frontend publishes a port its backend binds), with a rendezvous because neither
/// knows the other's domid in advance:
///
/// 1. the server creates `data/evtchn/client` (empty), writable by everyone;
/// 2. the client, told the server's domid, writes its own domid there;
/// 3. the server allocates an unbound port for that domid (`EVTCHNOP_alloc_unbound`) and
///    publishes it as `data/evtchn/port`, readable by the client only;
/// 4. the client binds it (`EVTCHNOP_bind_interdomain`) and they ping-pong events.
pub mod evtchn {
    use super::*;

    /// Events each side sends unless `evtchn_count=` says otherwise.
    pub const DEFAULT_COUNT: u32 = 100;
    /// The rendezvous node, under the server's home.
    pub const CLIENT_NODE: &str = "data/evtchn/client";
    /// The published port, under the server's home.
    pub const PORT_NODE: &str = "data/evtchn/port";

    /// `/local/domain/<dom>/<node>`.
    pub fn remote_path(dom: u16, node: &str) -> Buf<96> {
        use core::fmt::Write as _;
        let mut b = Buf::new();
        let _ = write!(b, "/local/domain/{dom}/{node}");
        b
    }

    /// Server step 1: create the rendezvous node, writable (not readable) by others.
    pub fn open_rendezvous<T: XsTransport>(xb: &mut Xenbus<T>, me: u16) -> Result<(), XsError> {
        xb.write(TxId::NONE, CLIENT_NODE, b"")?;
        set_perms(xb, CLIENT_NODE, &[(b'w', me)])
    }

    /// Server step 3a: the client's domid, once it wrote one.
    pub fn client_domid<T: XsTransport>(xb: &mut Xenbus<T>) -> Result<Option<u16>, XsError> {
        let mut buf = [0u8; 16];
        let v = xb.read_str(TxId::NONE, CLIENT_NODE, &mut buf)?;
        Ok(v.trim().parse().ok())
    }

    /// Server step 3b: publish `port` for `client` only.
    pub fn publish_port<T: XsTransport>(
        xb: &mut Xenbus<T>,
        me: u16,
        client: u16,
        port: u32,
    ) -> Result<(), XsError> {
        use core::fmt::Write as _;
        let mut v = Buf::<16>::new();
        let _ = write!(v, "{port}");
        xb.write(TxId::NONE, PORT_NODE, v.as_bytes())?;
        set_perms(xb, PORT_NODE, &[(b'n', me), (b'r', client)])
    }

    /// Client step 2: tell `server` who we are.
    pub fn offer<T: XsTransport>(xb: &mut Xenbus<T>, server: u16, me: u16) -> Result<(), XsError> {
        use core::fmt::Write as _;
        let mut v = Buf::<16>::new();
        let _ = write!(v, "{me}");
        let path = remote_path(server, CLIENT_NODE);
        let path = path.as_str();
        xb.write(TxId::NONE, path, v.as_bytes())
    }

    /// Client step 4a: the port `server` published for us, once it did.
    pub fn server_port<T: XsTransport>(xb: &mut Xenbus<T>, server: u16) -> Result<u32, XsError> {
        let path = remote_path(server, PORT_NODE);
        let path = path.as_str();
        let mut buf = [0u8; 16];
        let v = xb.read_str(TxId::NONE, path, &mut buf)?;
        v.trim().parse().map_err(|_| XsError::BadReply)
    }
}

/// What a domU may try on another domain's xenstore nodes (all must be refused).
pub mod isolation {
    use super::*;

    /// Reading `/local/domain/<other>/name`.
    pub fn read_name<T: XsTransport>(xb: &mut Xenbus<T>, other: u16) -> Result<(), XsError> {
        let path = evtchn::remote_path(other, "name");
        let path = path.as_str();
        let mut buf = [0u8; 128];
        xb.read(TxId::NONE, path, &mut buf).map(|_| ())
    }

    /// Overwriting `/local/domain/<other>/name`.
    pub fn write_name<T: XsTransport>(xb: &mut Xenbus<T>, other: u16) -> Result<(), XsError> {
        let path = evtchn::remote_path(other, "name");
        let path = path.as_str();
        xb.write(TxId::NONE, path, b"hijacked")
    }

    /// Creating a node in `/local/domain/<other>/data` (owned by the other domain).
    pub fn write_data<T: XsTransport>(xb: &mut Xenbus<T>, other: u16) -> Result<(), XsError> {
        let path = evtchn::remote_path(other, "data/intruder");
        let path = path.as_str();
        xb.write(TxId::NONE, path, b"1")
    }
}

/// A xenstore result as the test reads it: `ok` or the errno's name.
pub fn outcome(r: Result<(), XsError>) -> &'static str {
    match r {
        Ok(()) => "ok",
        Err(XsError::Server(e)) => e.name(),
        Err(_) => "transport error",
    }
}

#[cfg(test)]
mod tests;
