//! The guest side of xenstore ("xenbus", ABI.md §4.1-4.3; Xen `io/xs_wire.h`,
//! `docs/misc/xenstore.txt`, `docs/misc/xenstore-ring.txt`; Linux
//! `drivers/xen/xenbus/xenbus_{comms,xs}.c` and Mini-OS `xenbus.c` are the clients this
//! follows): requests and replies framed by the 16-byte `xsd_sockmsg` header and carried as
//! byte streams over the ring page `start_info.store_mfn`, with `start_info.store_evtchn`
//! to signal.
//!
//! [`Xenbus`] is the portable client (host-tested against a fake xenstored): it writes a
//! request (waiting for ring space if needed), then reads messages until the reply with the
//! request's `req_id` arrives, queueing `WATCH_EVENT`s met on the way and dropping stray
//! replies (e.g. the late answer to a request that timed out). Messages may be split
//! across any number of ring fills and wrap around the ring. Whatever the server does —
//! indices out of range, a length over `XENSTORE_PAYLOAD_MAX`, malformed payloads — ends in
//! an [`XsError`], never a panic; errors that leave the byte stream out of step make the
//! connection unusable (every later call returns the same error), as Linux does.
//!
//! How to wait and notify is the [`XsTransport`]'s business: in a kernel,
//! [`EvtchnTransport`] sends with `EVTCHNOP_send` and waits with `SCHEDOP_poll` on the
//! (masked) store port, so no upcall handler is involved. [`init`] and [`with`] give a
//! kernel one shared client.

use core::fmt;

use spin::Mutex;
use xen_abi::xen::StartInfo;

use crate::shared_page::{Consumer, Producer, SharedPage, StreamLayout};

/// Offset of `req[]` (guest → xenstored).
pub const REQ_OFFSET: usize = 0;
/// Offset of `rsp[]` (xenstored → guest).
pub const RSP_OFFSET: usize = 1024;
/// Size of each data array (`XENSTORE_RING_SIZE`).
pub const RING_SIZE: u32 = 1024;
/// Offset of `req_cons` (written by xenstored).
pub const REQ_CONS: usize = 2048;
/// Offset of `req_prod` (written by the guest).
pub const REQ_PROD: usize = 2052;
/// Offset of `rsp_cons` (written by the guest).
pub const RSP_CONS: usize = 2056;
/// Offset of `rsp_prod` (written by xenstored).
pub const RSP_PROD: usize = 2060;
/// Size of `struct xsd_sockmsg`.
pub const HEADER_LEN: usize = 16;
/// `XENSTORE_PAYLOAD_MAX`: the most payload bytes one message may carry.
pub const PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`.
pub const ABS_PATH_MAX: usize = 3072;

const REQ: StreamLayout = StreamLayout {
    data: REQ_OFFSET,
    size: RING_SIZE,
    cons: REQ_CONS,
    prod: REQ_PROD,
};
const RSP: StreamLayout = StreamLayout {
    data: RSP_OFFSET,
    size: RING_SIZE,
    cons: RSP_CONS,
    prod: RSP_PROD,
};

/// Message types (`enum xsd_sockmsg_type`).
pub mod msg {
    /// `XS_CONTROL` (formerly `XS_DEBUG`).
    pub const CONTROL: u32 = 0;
    /// `XS_DIRECTORY`.
    pub const DIRECTORY: u32 = 1;
    /// `XS_READ`.
    pub const READ: u32 = 2;
    /// `XS_GET_PERMS`.
    pub const GET_PERMS: u32 = 3;
    /// `XS_WATCH`.
    pub const WATCH: u32 = 4;
    /// `XS_UNWATCH`.
    pub const UNWATCH: u32 = 5;
    /// `XS_TRANSACTION_START`.
    pub const TRANSACTION_START: u32 = 6;
    /// `XS_TRANSACTION_END`.
    pub const TRANSACTION_END: u32 = 7;
    /// `XS_INTRODUCE`.
    pub const INTRODUCE: u32 = 8;
    /// `XS_RELEASE`.
    pub const RELEASE: u32 = 9;
    /// `XS_GET_DOMAIN_PATH`.
    pub const GET_DOMAIN_PATH: u32 = 10;
    /// `XS_WRITE`.
    pub const WRITE: u32 = 11;
    /// `XS_MKDIR`.
    pub const MKDIR: u32 = 12;
    /// `XS_RM`.
    pub const RM: u32 = 13;
    /// `XS_SET_PERMS`.
    pub const SET_PERMS: u32 = 14;
    /// `XS_WATCH_EVENT` (server → client only).
    pub const WATCH_EVENT: u32 = 15;
    /// `XS_ERROR` (server → client only).
    pub const ERROR: u32 = 16;
    /// `XS_IS_DOMAIN_INTRODUCED`.
    pub const IS_DOMAIN_INTRODUCED: u32 = 17;
    /// `XS_RESUME`.
    pub const RESUME: u32 = 18;
    /// `XS_SET_TARGET`.
    pub const SET_TARGET: u32 = 19;
    /// `XS_RESET_WATCHES`.
    pub const RESET_WATCHES: u32 = 21;
    /// `XS_DIRECTORY_PART`.
    pub const DIRECTORY_PART: u32 = 22;
}

/// `struct xsd_sockmsg`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Message type ([`msg`]).
    pub ty: u32,
    /// Request id, echoed in the reply.
    pub req_id: u32,
    /// Transaction id (0 = none).
    pub tx_id: u32,
    /// Payload bytes that follow.
    pub len: u32,
}

impl Header {
    /// The 16 wire bytes (native = little-endian on x86_64).
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0; HEADER_LEN];
        for (i, v) in [self.ty, self.req_id, self.tx_id, self.len]
            .into_iter()
            .enumerate()
        {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Parse 16 wire bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Header {
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        Header {
            ty: w(0),
            req_id: w(1),
            tx_id: w(2),
            len: w(3),
        }
    }
}

/// The error names an `XS_ERROR` reply carries (`xsd_errors[]` in `xs_wire.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum XsErrno {
    EINVAL,
    EACCES,
    EEXIST,
    EISDIR,
    ENOENT,
    ENOMEM,
    ENOSPC,
    EIO,
    ENOTEMPTY,
    ENOSYS,
    EROFS,
    EBUSY,
    EAGAIN,
    EISCONN,
    E2BIG,
    EPERM,
    /// A name not in the table.
    Unknown,
}

const XS_ERRNOS: [(XsErrno, &str); 16] = [
    (XsErrno::EINVAL, "EINVAL"),
    (XsErrno::EACCES, "EACCES"),
    (XsErrno::EEXIST, "EEXIST"),
    (XsErrno::EISDIR, "EISDIR"),
    (XsErrno::ENOENT, "ENOENT"),
    (XsErrno::ENOMEM, "ENOMEM"),
    (XsErrno::ENOSPC, "ENOSPC"),
    (XsErrno::EIO, "EIO"),
    (XsErrno::ENOTEMPTY, "ENOTEMPTY"),
    (XsErrno::ENOSYS, "ENOSYS"),
    (XsErrno::EROFS, "EROFS"),
    (XsErrno::EBUSY, "EBUSY"),
    (XsErrno::EAGAIN, "EAGAIN"),
    (XsErrno::EISCONN, "EISCONN"),
    (XsErrno::E2BIG, "E2BIG"),
    (XsErrno::EPERM, "EPERM"),
];

impl XsErrno {
    /// The errno for an `XS_ERROR` payload (the name, optionally NUL-terminated).
    pub fn from_payload(p: &[u8]) -> XsErrno {
        let name = p.split(|&b| b == 0).next().unwrap_or(&[]);
        XS_ERRNOS
            .iter()
            .find(|(_, n)| n.as_bytes() == name)
            .map_or(XsErrno::Unknown, |&(e, _)| e)
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        XS_ERRNOS
            .iter()
            .find(|(e, _)| *e == self)
            .map_or("unknown error", |&(_, n)| n)
    }
}

/// Why a xenstore operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XsError {
    /// xenstored answered with `XS_ERROR`.
    Server(XsErrno),
    /// A ring index out of range (`prod - cons` above the ring size). Connection unusable.
    BadIndex,
    /// A message header announced more than [`PAYLOAD_MAX`] bytes. Connection unusable.
    Protocol,
    /// The reply's type is neither the request's nor `XS_ERROR`, or its payload is not
    /// what the request type promises.
    BadReply,
    /// The reply does not fit the caller's buffer.
    ReplyTooLong,
    /// The request would exceed [`PAYLOAD_MAX`] or a path is too long (nothing was sent).
    TooLong,
    /// A path or token is empty or contains a NUL byte.
    InvalidArgument,
    /// Nothing arrived within the transport's timeout. If the request was fully sent the
    /// connection stays usable (a late reply is dropped); a failure while sending makes
    /// it unusable.
    Timeout,
    /// Notifying the store's event channel failed (the hypercall's return value).
    Notify(i64),
    /// Watch events arrived while the queue was full and were dropped: re-read every
    /// watched node.
    EventsLost,
    /// No xenstore: start_info names no ring page or event channel, or the page is not
    /// mapped, or [`init`] has not run.
    NoStore,
}

impl fmt::Display for XsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            XsError::Server(e) => write!(f, "xenstored: {}", e.name()),
            XsError::BadIndex => f.write_str("xenstore ring index out of range"),
            XsError::Protocol => f.write_str("xenstore message longer than the protocol allows"),
            XsError::BadReply => f.write_str("malformed xenstore reply"),
            XsError::ReplyTooLong => f.write_str("xenstore reply larger than the buffer"),
            XsError::TooLong => f.write_str("xenstore request too long"),
            XsError::InvalidArgument => f.write_str("invalid xenstore path or token"),
            XsError::Timeout => f.write_str("xenstore timeout"),
            XsError::Notify(e) => write!(f, "xenstore event channel: {e}"),
            XsError::EventsLost => f.write_str("xenstore watch events lost"),
            XsError::NoStore => f.write_str("no xenstore"),
        }
    }
}

/// A transaction id (`XBT_NIL` = [`TxId::NONE`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TxId(u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);

    /// The raw id.
    pub const fn raw(self) -> u32 {
        self.0
    }
}

/// How a [`Xenbus`] client signals xenstored and waits for it.
pub trait XsTransport {
    /// Signal the store's event channel (after new request bytes or freed reply space).
    fn notify(&mut self) -> Result<(), XsError>;
    /// Wait until xenstored may have done something (signalled us), or give up with
    /// [`XsError::Timeout`]. Spurious returns are fine: the caller re-checks the ring.
    fn wait(&mut self) -> Result<(), XsError>;
}

/// One watch event: the path that changed and the watch's token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchEvent<'a> {
    /// The node that changed (absolute, as xenstored reports it).
    pub path: &'a str,
    /// The token given to [`Xenbus::watch`].
    pub token: &'a str,
}

impl<'a> WatchEvent<'a> {
    /// Parse a `WATCH_EVENT` payload `path\0token\0` (the final NUL optional).
    pub fn parse(p: &'a [u8]) -> Option<WatchEvent<'a>> {
        let nul = p.iter().position(|&b| b == 0)?;
        let path = core::str::from_utf8(&p[..nul]).ok()?;
        let rest = &p[nul + 1..];
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let token = core::str::from_utf8(&rest[..end]).ok()?;
        (!path.is_empty()).then_some(WatchEvent { path, token })
    }
}

/// Counters of what the client tolerated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XsStats {
    /// Replies whose `req_id` matched no outstanding request (dropped).
    pub stray_replies: u64,
    /// Malformed watch events (dropped).
    pub bad_events: u64,
    /// Watch events dropped because the queue was full.
    pub lost_events: u64,
}

/// Bytes of queued watch events (each stored as a 2-byte length and its payload).
pub const EVENT_QUEUE_BYTES: usize = 8192;

/// A FIFO of watch-event payloads in a fixed buffer.
struct EventQueue {
    buf: [u8; EVENT_QUEUE_BYTES],
    len: usize,
    count: usize,
    lost: bool,
}

impl EventQueue {
    const fn new() -> EventQueue {
        EventQueue {
            buf: [0; EVENT_QUEUE_BYTES],
            len: 0,
            count: 0,
            lost: false,
        }
    }

    /// Queue `p`; false (and the `lost` mark) if it does not fit.
    fn push(&mut self, p: &[u8]) -> bool {
        let need = p.len() + 2;
        if p.len() > usize::from(u16::MAX) || self.len + need > self.buf.len() {
            self.lost = true;
            return false;
        }
        self.buf[self.len..self.len + 2].copy_from_slice(&(p.len() as u16).to_le_bytes());
        self.buf[self.len + 2..self.len + need].copy_from_slice(p);
        self.len += need;
        self.count += 1;
        true
    }

    /// Move the oldest payload into `out`: its length, or `None` if the queue is empty.
    /// A payload longer than `out` is dropped and reported as `Some(Err(()))`.
    fn pop(&mut self, out: &mut [u8]) -> Option<Result<usize, ()>> {
        if self.count == 0 {
            return None;
        }
        let n = usize::from(u16::from_le_bytes([self.buf[0], self.buf[1]]));
        let r = match out.get_mut(..n) {
            Some(dst) => {
                dst.copy_from_slice(&self.buf[2..2 + n]);
                Ok(n)
            }
            None => Err(()),
        };
        self.buf.copy_within(2 + n..self.len, 0);
        self.len -= 2 + n;
        self.count -= 1;
        Some(r)
    }
}

/// Collects one message from the reply stream, however it is split.
struct Reassembler {
    buf: [u8; HEADER_LEN + PAYLOAD_MAX],
    have: usize,
}

impl Reassembler {
    const fn new() -> Reassembler {
        Reassembler {
            buf: [0; HEADER_LEN + PAYLOAD_MAX],
            have: 0,
        }
    }

    fn header(&self) -> Header {
        let mut h = [0; HEADER_LEN];
        h.copy_from_slice(&self.buf[..HEADER_LEN]);
        Header::decode(&h)
    }

    fn payload(&self) -> &[u8] {
        &self.buf[HEADER_LEN..self.have]
    }

    fn reset(&mut self) {
        self.have = 0;
    }

    /// Read from `rsp` until one message is complete (returned; its payload stays in the
    /// buffer until [`Reassembler::reset`]) or nothing more is available (`None`). Also
    /// reports whether anything was consumed (the server may be waiting for space).
    fn fill(&mut self, rsp: &mut Consumer) -> (Result<Option<Header>, XsError>, bool) {
        let mut consumed = false;
        loop {
            let want = if self.have < HEADER_LEN {
                HEADER_LEN
            } else {
                let len = self.header().len as usize;
                if len > PAYLOAD_MAX {
                    return (Err(XsError::Protocol), consumed);
                }
                if self.have == HEADER_LEN + len {
                    return (Ok(Some(self.header())), consumed);
                }
                HEADER_LEN + len
            };
            match rsp.read(&mut self.buf[self.have..want]) {
                Ok(0) => return (Ok(None), consumed),
                Ok(n) => {
                    self.have += n;
                    consumed = true;
                }
                Err(_) => return (Err(XsError::BadIndex), consumed),
            }
        }
    }
}

/// Child names of a `DIRECTORY` reply.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Entries<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let end = self
                .rest
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.rest.len());
            let name = &self.rest[..end];
            self.rest = self.rest.get(end + 1..).unwrap_or(&[]);
            // Validated as UTF-8 when the reply arrived; empty names are skipped.
            if let Ok(s) = core::str::from_utf8(name) {
                if !s.is_empty() {
                    return Some(s);
                }
            }
        }
    }
}

/// A xenstore client on one ring page.
pub struct Xenbus<T: XsTransport> {
    req: Producer,
    rsp: Consumer,
    transport: T,
    rx: Reassembler,
    events: EventQueue,
    next_id: u32,
    /// Set by an error that desynchronised the streams; returned by every later call.
    broken: Option<XsError>,
    stats: XsStats,
}

fn check_path(path: &str) -> Result<&[u8], XsError> {
    let b = path.as_bytes();
    if b.is_empty() || b.contains(&0) {
        return Err(XsError::InvalidArgument);
    }
    if b.len() > ABS_PATH_MAX {
        return Err(XsError::TooLong);
    }
    Ok(b)
}

fn check_token(token: &str) -> Result<&[u8], XsError> {
    let b = token.as_bytes();
    if b.contains(&0) {
        return Err(XsError::InvalidArgument);
    }
    Ok(b)
}

impl<T: XsTransport> Xenbus<T> {
    /// A client on the ring in `page`, continuing from the indices found there.
    pub fn new(page: SharedPage, transport: T) -> Xenbus<T> {
        Xenbus {
            req: Producer::new(page, REQ),
            rsp: Consumer::new(page, RSP),
            transport,
            rx: Reassembler::new(),
            events: EventQueue::new(),
            next_id: 1,
            broken: None,
            stats: XsStats::default(),
        }
    }

    /// What was tolerated so far.
    pub fn stats(&self) -> XsStats {
        self.stats
    }

    /// The transport.
    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// The error that made the connection unusable, if any.
    pub fn broken(&self) -> Option<XsError> {
        self.broken
    }

    fn fail(&mut self, e: XsError) -> XsError {
        self.broken = Some(e);
        e
    }

    fn usable(&self) -> Result<(), XsError> {
        self.broken.map_or(Ok(()), Err)
    }

    /// The next complete message that is not a watch event (watch events go to the
    /// queue), or `None` if the ring holds no complete message now.
    fn next_message(&mut self) -> Result<Option<Header>, XsError> {
        loop {
            let (r, consumed) = self.rx.fill(&mut self.rsp);
            if consumed {
                // xenstored may be waiting for room in rsp[].
                self.transport.notify()?;
            }
            let h = match r {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(e) => return Err(self.fail(e)),
            };
            if h.ty != msg::WATCH_EVENT {
                return Ok(Some(h));
            }
            if WatchEvent::parse(self.rx.payload()).is_none() {
                self.stats.bad_events += 1;
            } else if !self.events.push(&self.rx.buf[HEADER_LEN..self.rx.have]) {
                self.stats.lost_events += 1;
            }
            self.rx.reset();
        }
    }

    /// Take everything xenstored has sent: queue watch events, drop stray replies. Never
    /// blocks.
    pub fn pump(&mut self) -> Result<(), XsError> {
        self.usable()?;
        while self.next_message()?.is_some() {
            self.stats.stray_replies += 1;
            self.rx.reset();
        }
        Ok(())
    }

    /// Whether a watch event (or a loss report) is queued.
    pub fn has_event(&self) -> bool {
        self.events.count > 0 || self.events.lost
    }

    /// Pop the oldest watch event into `buf` (after [`Xenbus::pump`]ing the ring), or
    /// `None` if there is none. `Some(Err(EventsLost))` reports, once, that events were
    /// dropped (queue full, or an event longer than `buf`): re-read the watched nodes.
    pub fn next_event<'b>(&mut self, buf: &'b mut [u8]) -> Option<Result<WatchEvent<'b>, XsError>> {
        if let Err(e) = self.pump() {
            return Some(Err(e));
        }
        if core::mem::take(&mut self.events.lost) {
            return Some(Err(XsError::EventsLost));
        }
        match self.events.pop(buf)? {
            // Validated when queued.
            Ok(n) => WatchEvent::parse(&buf[..n]).map(Ok),
            Err(()) => {
                self.stats.lost_events += 1;
                Some(Err(XsError::EventsLost))
            }
        }
    }

    /// Block (through the transport) until a watch event or a loss report is queued.
    pub fn wait_event(&mut self) -> Result<(), XsError> {
        loop {
            self.pump()?;
            if self.has_event() {
                return Ok(());
            }
            self.transport.wait()?;
        }
    }

    /// Write all of `parts` into `req[]`, waiting for space as needed.
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), XsError> {
        let mut unsignalled = false;
        for part in parts {
            let mut rest = *part;
            while !rest.is_empty() {
                let n = self
                    .req
                    .write(rest)
                    .map_err(|_| self.fail(XsError::BadIndex))?;
                if n > 0 {
                    rest = &rest[n..];
                    unsignalled = true;
                    continue;
                }
                // Full: let xenstored see what we wrote, keep reading so it is never
                // stuck on a full rsp[], and wait.
                self.transport.notify()?;
                unsignalled = false;
                self.pump()?;
                self.transport.wait()?;
            }
        }
        if unsignalled {
            self.transport.notify()?;
        }
        Ok(())
    }

    /// Send one request whose payload is the concatenation of `parts`, wait for its reply,
    /// and copy the reply's payload into `reply`. Returns the payload length. An `XS_ERROR`
    /// reply becomes [`XsError::Server`].
    pub fn request(
        &mut self,
        ty: u32,
        tx: TxId,
        parts: &[&[u8]],
        reply: &mut [u8],
    ) -> Result<usize, XsError> {
        self.usable()?;
        let len = parts.iter().map(|p| p.len()).sum::<usize>();
        if len > PAYLOAD_MAX {
            return Err(XsError::TooLong);
        }
        // Anything already waiting is from before this request.
        self.pump()?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let hdr = Header {
            ty,
            req_id: id,
            tx_id: tx.0,
            len: len as u32,
        }
        .encode();
        let mut all: [&[u8]; 5] = [&[]; 5];
        if parts.len() >= all.len() {
            return Err(XsError::InvalidArgument);
        }
        all[0] = &hdr;
        all[1..=parts.len()].copy_from_slice(parts);
        if let Err(e) = self.send(&all[..=parts.len()]) {
            // Part of the request may be in the stream: nothing after it could be framed.
            return Err(self.fail(e));
        }
        let h = loop {
            match self.next_message()? {
                Some(h) if h.req_id == id => break h,
                Some(_) => {
                    self.stats.stray_replies += 1;
                    self.rx.reset();
                }
                None => self.transport.wait()?,
            }
        };
        let payload = self.rx.payload();
        let r = if h.ty == msg::ERROR {
            Err(XsError::Server(XsErrno::from_payload(payload)))
        } else if h.ty != ty {
            Err(XsError::BadReply)
        } else if let Some(dst) = reply.get_mut(..payload.len()) {
            dst.copy_from_slice(payload);
            Ok(payload.len())
        } else {
            Err(XsError::ReplyTooLong)
        };
        self.rx.reset();
        r
    }

    /// Send a request whose reply must be `OK`.
    fn request_ok(&mut self, ty: u32, tx: TxId, parts: &[&[u8]]) -> Result<(), XsError> {
        let mut b = [0u8; 8];
        let n = self.request(ty, tx, parts, &mut b)?;
        // xenstored answers "OK\0"; be lenient about the terminator.
        match &b[..n] {
            b"OK\0" | b"OK" => Ok(()),
            _ => Err(XsError::BadReply),
        }
    }

    /// `XS_READ`: the value of `path` (relative paths are under `/local/domain/<domid>`).
    pub fn read<'b>(
        &mut self,
        tx: TxId,
        path: &str,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], XsError> {
        let p = check_path(path)?;
        let n = self.request(msg::READ, tx, &[p, b"\0"], buf)?;
        Ok(&buf[..n])
    }

    /// `XS_READ` of a text value (trailing NULs, which some servers add, are dropped).
    pub fn read_str<'b>(
        &mut self,
        tx: TxId,
        path: &str,
        buf: &'b mut [u8],
    ) -> Result<&'b str, XsError> {
        let v = self.read(tx, path, buf)?;
        let end = v.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        core::str::from_utf8(&v[..end]).map_err(|_| XsError::BadReply)
    }

    /// `XS_READ` of a decimal number.
    pub fn read_u64(&mut self, tx: TxId, path: &str) -> Result<u64, XsError> {
        let mut b = [0u8; 32];
        let s = self.read_str(tx, path, &mut b)?;
        s.trim().parse().map_err(|_| XsError::BadReply)
    }

    /// `XS_WRITE`: set `path` to `value` (missing parents are created).
    pub fn write(&mut self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        let p = check_path(path)?;
        self.request_ok(msg::WRITE, tx, &[p, b"\0", value])
    }

    /// `XS_MKDIR`.
    pub fn mkdir(&mut self, tx: TxId, path: &str) -> Result<(), XsError> {
        let p = check_path(path)?;
        self.request_ok(msg::MKDIR, tx, &[p, b"\0"])
    }

    /// `XS_RM`: remove `path` and everything below it.
    pub fn rm(&mut self, tx: TxId, path: &str) -> Result<(), XsError> {
        let p = check_path(path)?;
        self.request_ok(msg::RM, tx, &[p, b"\0"])
    }

    /// `XS_DIRECTORY`: the children of `path`, read into `buf`.
    pub fn directory<'b>(
        &mut self,
        tx: TxId,
        path: &str,
        buf: &'b mut [u8],
    ) -> Result<Entries<'b>, XsError> {
        let p = check_path(path)?;
        let n = self.request(msg::DIRECTORY, tx, &[p, b"\0"], buf)?;
        let rest = &buf[..n];
        if core::str::from_utf8(rest).is_err() {
            return Err(XsError::BadReply);
        }
        Ok(Entries { rest })
    }

    /// `XS_WATCH`: events for `path` and below, tagged with `token`. xenstored fires one
    /// event at once (it will be queued).
    pub fn watch(&mut self, path: &str, token: &str) -> Result<(), XsError> {
        let p = check_path(path)?;
        let t = check_token(token)?;
        self.request_ok(msg::WATCH, TxId::NONE, &[p, b"\0", t, b"\0"])
    }

    /// `XS_UNWATCH`.
    pub fn unwatch(&mut self, path: &str, token: &str) -> Result<(), XsError> {
        let p = check_path(path)?;
        let t = check_token(token)?;
        self.request_ok(msg::UNWATCH, TxId::NONE, &[p, b"\0", t, b"\0"])
    }

    /// `XS_TRANSACTION_START`.
    pub fn transaction_start(&mut self) -> Result<TxId, XsError> {
        let mut b = [0u8; 16];
        let n = self.request(msg::TRANSACTION_START, TxId::NONE, &[b"\0"], &mut b)?;
        let v = &b[..n];
        let end = v.iter().position(|&c| c == 0).unwrap_or(v.len());
        let id = core::str::from_utf8(&v[..end])
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
            .filter(|&id| id != 0)
            .ok_or(XsError::BadReply)?;
        Ok(TxId(id))
    }

    /// `XS_TRANSACTION_END`: commit (`true`) or abort. A conflicting change makes the commit
    /// fail with `Server(EAGAIN)`: start again.
    pub fn transaction_end(&mut self, tx: TxId, commit: bool) -> Result<(), XsError> {
        let arg: &[u8] = if commit { b"T\0" } else { b"F\0" };
        self.request_ok(msg::TRANSACTION_END, tx, &[arg])
    }
}

// ---------------------------------------------------------------------------------------
// The kernel's connection.

/// How long [`EvtchnTransport`] waits for xenstored before giving up.
pub const DEFAULT_TIMEOUT_NS: u64 = 30_000_000_000;

/// Signals with `EVTCHNOP_send` and waits with `SCHEDOP_poll` on the store port, which
/// [`init`] masks: waiting needs no upcall handler and works with events disabled.
#[derive(Clone, Copy, Debug)]
pub struct EvtchnTransport {
    port: u32,
    timeout_ns: u64,
}

impl EvtchnTransport {
    /// A transport on `port` that gives up after `timeout_ns` without a signal.
    pub const fn new(port: u32, timeout_ns: u64) -> EvtchnTransport {
        EvtchnTransport { port, timeout_ns }
    }

    /// The store event channel.
    pub fn port(&self) -> u32 {
        self.port
    }
}

impl XsTransport for EvtchnTransport {
    fn notify(&mut self) -> Result<(), XsError> {
        crate::events::send(self.port)
            .map(|_| ())
            .map_err(|e| XsError::Notify(e.raw()))
    }

    fn wait(&mut self) -> Result<(), XsError> {
        let deadline = crate::time::now_ns().saturating_add(self.timeout_ns);
        loop {
            // Poll returns at once if the port is already pending, so a signal between the
            // caller's check of the ring and this call is not lost.
            if crate::sched::poll(&[self.port], deadline).is_err() {
                crate::sched::yield_now();
            }
            if crate::shared::test_and_clear_pending(self.port) {
                return Ok(());
            }
            if crate::time::now_ns() >= deadline {
                return Err(XsError::Timeout);
            }
        }
    }
}

/// The kernel's xenstore client.
pub type Store = Xenbus<EvtchnTransport>;

static STORE: Mutex<Option<Store>> = Mutex::new(None);

/// Connect to xenstore through start_info's `store_mfn` / `store_evtchn`.
pub fn init(si: &StartInfo) -> Result<(), XsError> {
    if si.store_mfn == 0 || si.store_evtchn == 0 {
        return Err(XsError::NoStore);
    }
    let page = crate::shared_page::ring_page(si, si.store_mfn).ok_or(XsError::NoStore)?;
    crate::events::mask(si.store_evtchn);
    let mut g = STORE.lock();
    *g = Some(Xenbus::new(
        page,
        EvtchnTransport::new(si.store_evtchn, DEFAULT_TIMEOUT_NS),
    ));
    Ok(())
}

/// Run `f` on the kernel's client ([`XsError::NoStore`] before [`init`]).
pub fn with<R>(f: impl FnOnce(&mut Store) -> Result<R, XsError>) -> Result<R, XsError> {
    match STORE.lock().as_mut() {
        Some(s) => f(s),
        None => Err(XsError::NoStore),
    }
}

/// The store event channel (None before [`init`]).
pub fn port() -> Option<u32> {
    STORE.lock().as_mut().map(|s| s.transport_mut().port())
}

#[cfg(test)]
mod tests;
