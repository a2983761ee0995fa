//! The xenstore ring page (`struct xenstore_domain_interface`, `xs_wire.h`;
//! `docs/misc/xenstore-ring.txt`; ABI.md §4.2) seen from xenstored: requests arrive in
//! `req` (the guest produces, we consume), replies and watch events leave through `rsp`
//! (we produce, the guest consumes). Indices are free-running `u32`s; byte *i* of a stream
//! lives at `i & 1023`; `prod - cons` is never more than 1024.
//!
//! The page is guest-writable, so it is reached only through [`RingMemory`], whose
//! implementor does the volatile/atomic accesses: every index is read once per pass and
//! checked (`prod - cons <= 1024`, else the connection is broken with
//! `XENSTORE_ERROR_RINGIDX`), data bytes are copied out once into our own buffer, and
//! messages may wrap around the ring end and arrive split over several passes. A header
//! declaring more than `XENSTORE_PAYLOAD_MAX` bytes breaks the connection with
//! `XENSTORE_ERROR_PROTO`, as Xen kills such connections.

use alloc::vec::Vec;
use xen_abi::DomId;

use crate::store::{Broken, Store};
use crate::wire::{Header, HEADER_LEN, PAYLOAD_MAX};

/// `XENSTORE_RING_SIZE`.
pub const RING_SIZE: u32 = 1024;
/// Offset of `req`.
pub const REQ: usize = 0;
/// Offset of `rsp`.
pub const RSP: usize = 1024;
/// Offset of `req_cons` (we write).
pub const REQ_CONS: usize = 2048;
/// Offset of `req_prod` (the guest writes).
pub const REQ_PROD: usize = 2052;
/// Offset of `rsp_cons` (the guest writes).
pub const RSP_CONS: usize = 2056;
/// Offset of `rsp_prod` (we write).
pub const RSP_PROD: usize = 2060;
/// Offset of `server_features`.
pub const SERVER_FEATURES: usize = 2064;
/// Offset of `connection`.
pub const CONNECTION: usize = 2068;
/// Offset of `error`.
pub const ERROR: usize = 2072;

/// `XENSTORE_SERVER_FEATURE_ERROR`: the `error` field is used.
pub const FEATURE_ERROR: u32 = 2;
/// `XENSTORE_SERVER_FEATURE_WATCHDEPTH`: `WATCH` takes a depth.
pub const FEATURE_WATCHDEPTH: u32 = 4;
/// What this xenstored offers.
pub const SERVER_FEATURES_OFFERED: u32 = FEATURE_ERROR | FEATURE_WATCHDEPTH;

/// `XENSTORE_ERROR_RINGIDX`.
pub const ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`.
pub const ERROR_PROTO: u32 = 3;

/// Passes over the ring per [`Store::service_ring`] call (each handles at most one
/// request), so a guest that keeps the ring full cannot keep dom0 in one call forever.
pub const MAX_PASSES: usize = 64;
/// Queued output above which we stop reading requests until the guest drains `rsp`.
pub const RX_PAUSE_BYTES: usize = 64 * 1024;

/// Access to a domain's shared ring page. Offsets are always within the 4096-byte page
/// (the caller guarantees `offset + len <= 4096` and 4-byte alignment for the `u32`
/// accessors); implementors must still not panic on anything else.
pub trait RingMemory {
    /// Copy bytes `offset..offset + buf.len()` of the page into `buf`.
    fn read(&self, offset: usize, buf: &mut [u8]);
    /// Copy `data` to the page at `offset`.
    fn write(&mut self, offset: usize, data: &[u8]);
    /// Load the `u32` at `offset` with acquire ordering (an index: data reads that follow
    /// must not be satisfied before it).
    fn load_u32(&self, offset: usize) -> u32;
    /// Store the `u32` at `offset` with release ordering (an index: data accesses before
    /// it must be complete first).
    fn store_u32(&mut self, offset: usize, value: u32);
}

/// Why a ring connection is broken (the value written to the page's `error` field).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// `prod - cons > 1024` on either ring.
    BadIndex,
    /// A message longer than `XENSTORE_PAYLOAD_MAX`.
    Protocol,
}

impl RingError {
    /// The `error` field value.
    pub const fn code(self) -> u32 {
        match self {
            RingError::BadIndex => ERROR_RINGIDX,
            RingError::Protocol => ERROR_PROTO,
        }
    }
}

/// Per-connection ring state: a partly received request, how much of the oldest queued
/// output message is already in `rsp`, and whether the connection broke.
#[derive(Debug, Default)]
pub struct RingIo {
    inbuf: Vec<u8>,
    out_off: usize,
    broken: Option<RingError>,
    started: bool,
}

impl RingIo {
    pub(crate) fn reset_output(&mut self) {
        self.out_off = 0;
    }
}

/// Outcome of one [`Store::service_ring`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Serviced {
    /// An index or field changed: signal the domain's event channel.
    pub notify: bool,
    /// Requests handled.
    pub requests: u32,
    /// The connection is (now) broken; nothing more will be read or written.
    pub broken: Option<RingError>,
}

fn ring_off(idx: u32) -> usize {
    (idx & (RING_SIZE - 1)) as usize
}

impl Store {
    /// Service `dom`'s ring: queue replies to every complete request and copy queued
    /// output into `rsp`, until nothing moves (or [`MAX_PASSES`]). Returns whether the
    /// domain must be notified. `Err` if `dom` has no connection.
    pub fn service_ring(
        &mut self,
        dom: DomId,
        mem: &mut impl RingMemory,
    ) -> Result<Serviced, Broken> {
        let mut out = Serviced::default();
        {
            let conn = self.conn_mut(dom).ok_or(Broken::NotConnected)?;
            if let Some(e) = conn.io.broken {
                out.broken = Some(e);
                return Ok(out);
            }
            if !conn.io.started {
                conn.io.started = true;
                mem.store_u32(SERVER_FEATURES, SERVER_FEATURES_OFFERED);
            }
        }
        for _ in 0..MAX_PASSES {
            let mut progress = false;
            match self.flush_rsp(dom, mem) {
                Ok(moved) => {
                    progress |= moved;
                    out.notify |= moved;
                }
                Err(e) => return Ok(self.break_ring(dom, mem, e, out)),
            }
            match self.pull_req(dom, mem) {
                Ok((moved, msg)) => {
                    progress |= moved;
                    out.notify |= moved;
                    if let Some(msg) = msg {
                        out.requests = out.requests.saturating_add(1);
                        progress = true;
                        if self.handle_message(dom, &msg).is_err() {
                            return Ok(self.break_ring(dom, mem, RingError::Protocol, out));
                        }
                    }
                }
                Err(e) => return Ok(self.break_ring(dom, mem, e, out)),
            }
            if !progress {
                break;
            }
        }
        Ok(out)
    }

    fn break_ring(
        &mut self,
        dom: DomId,
        mem: &mut impl RingMemory,
        e: RingError,
        mut out: Serviced,
    ) -> Serviced {
        if let Some(c) = self.conn_mut(dom) {
            c.io.broken = Some(e);
            c.io.inbuf = Vec::new();
        }
        mem.store_u32(ERROR, e.code());
        out.notify = true;
        out.broken = Some(e);
        out
    }

    /// Copy queued output into `rsp`; whether `rsp_prod` moved.
    fn flush_rsp(&mut self, dom: DomId, mem: &mut impl RingMemory) -> Result<bool, RingError> {
        let Some(conn) = self.conn_mut(dom) else {
            return Ok(false);
        };
        if conn.out.is_empty() {
            return Ok(false);
        }
        let cons = mem.load_u32(RSP_CONS);
        let start = mem.load_u32(RSP_PROD);
        let used = start.wrapping_sub(cons);
        if used > RING_SIZE {
            return Err(RingError::BadIndex);
        }
        let mut space = (RING_SIZE - used) as usize;
        let mut prod = start;
        while space > 0 {
            let Some(front) = conn.out.front() else {
                break;
            };
            let rest = front.get(conn.io.out_off..).unwrap_or_default();
            let until_wrap = RING_SIZE as usize - ring_off(prod);
            let n = rest.len().min(space).min(until_wrap);
            if let Some(chunk) = rest.get(..n) {
                mem.write(RSP + ring_off(prod), chunk);
            }
            // n <= 1024, fits u32.
            prod = prod.wrapping_add(n as u32);
            space -= n;
            conn.io.out_off += n;
            if conn.io.out_off >= front.len() {
                let len = front.len();
                conn.out.pop_front();
                conn.out_bytes = conn.out_bytes.saturating_sub(len);
                conn.io.out_off = 0;
            }
        }
        if prod != start {
            mem.store_u32(RSP_PROD, prod);
            return Ok(true);
        }
        Ok(false)
    }

    /// Consume request bytes until one message is complete; (whether `req_cons` moved,
    /// the message if complete).
    fn pull_req(
        &mut self,
        dom: DomId,
        mem: &mut impl RingMemory,
    ) -> Result<(bool, Option<Vec<u8>>), RingError> {
        let Some(conn) = self.conn_mut(dom) else {
            return Ok((false, None));
        };
        if conn.out_bytes > RX_PAUSE_BYTES {
            return Ok((false, None));
        }
        let prod = mem.load_u32(REQ_PROD);
        let start = mem.load_u32(REQ_CONS);
        let avail0 = prod.wrapping_sub(start);
        if avail0 > RING_SIZE {
            return Err(RingError::BadIndex);
        }
        let mut avail = avail0 as usize;
        let mut cons = start;
        let mut done = None;
        let mut chunk = [0u8; RING_SIZE as usize];
        while avail > 0 {
            let have = conn.io.inbuf.len();
            let need = if have < HEADER_LEN {
                HEADER_LEN - have
            } else {
                let len = Header::parse(&conn.io.inbuf).map_or(0, |h| h.len as usize);
                (HEADER_LEN + len).saturating_sub(have)
            };
            let until_wrap = RING_SIZE as usize - ring_off(cons);
            let n = need.min(avail).min(until_wrap);
            if let Some(buf) = chunk.get_mut(..n) {
                mem.read(REQ + ring_off(cons), buf);
                conn.io.inbuf.extend_from_slice(buf);
            }
            cons = cons.wrapping_add(n as u32);
            avail -= n;
            if let Some(h) = Header::parse(&conn.io.inbuf) {
                if h.len as usize > PAYLOAD_MAX {
                    return Err(RingError::Protocol);
                }
                if conn.io.inbuf.len() == HEADER_LEN + h.len as usize {
                    done = Some(core::mem::take(&mut conn.io.inbuf));
                    break;
                }
            }
        }
        if cons != start {
            mem.store_u32(REQ_CONS, cons);
        }
        Ok((cons != start, done))
    }
}

/// A ring page in ordinary memory, for tests and for any implementor that has the page as
/// a plain byte array (no concurrent writer).
#[derive(Clone)]
pub struct ArrayRing(pub [u8; 4096]);

impl Default for ArrayRing {
    fn default() -> ArrayRing {
        ArrayRing([0; 4096])
    }
}

impl RingMemory for ArrayRing {
    fn read(&self, offset: usize, buf: &mut [u8]) {
        if let Some(src) = offset
            .checked_add(buf.len())
            .and_then(|end| self.0.get(offset..end))
        {
            buf.copy_from_slice(src);
        }
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        if let Some(dst) = offset
            .checked_add(data.len())
            .and_then(|end| self.0.get_mut(offset..end))
        {
            dst.copy_from_slice(data);
        }
    }
    fn load_u32(&self, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        self.read(offset, &mut b);
        u32::from_le_bytes(b)
    }
    fn store_u32(&mut self, offset: usize, value: u32) {
        self.write(offset, &value.to_le_bytes());
    }
}
