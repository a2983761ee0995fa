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

#[cfg(test)]
mod tests;
