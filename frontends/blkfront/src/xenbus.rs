//! The XenBus side of a virtual block device: the frontend's half of the handshake
//! (`XenbusState`, Xen's `io/xenbus.h`; Linux blkfront's `talk_to_blkback`,
//! `blkfront_connect` and `blkfront_closing`), and the xenstore nodes it reads and writes
//! (ABI.md §4.4).
//!
//! The toolstack creates the frontend directory `device/vbd/<devid>` (relative to the
//! guest's home) with `backend`, `backend-id`, `state` = 1, `virtual-device` and
//! `device-type`. Then:
//!
//! 1. wait for the backend's `state` to reach `InitWait` (2), read its
//!    `max-ring-page-order` ([`probe`], [`wait_backend`], [`read_offer`]);
//! 2. with the ring granted to the backend and an event channel allocated ([`connect`]):
//!    in one transaction write `ring-ref` (or `ring-page-order` and `ring-ref0..N`),
//!    `event-channel`, `protocol` = `x86_64-abi`, `feature-persistent` = 1 and
//!    `state` = `Initialised` (3);
//! 3. wait for the backend's `Connected` (4); read `sectors`, `info`, `sector-size`
//!    (mandatory), `feature-flush-cache`, `feature-barrier`, `feature-discard`,
//!    `discard-secure`, `feature-persistent`, `feature-max-indirect-segments`;
//!    write `state` = `Connected` (4).
//!
//! Closing ([`close`]): `state` = `Closing` (5), wait for the backend to close too
//! (`Closing` or `Closed`, or its directory gone), `state` = `Closed` (6), give the backend
//! a moment to reach `Closed` and unmap, then revoke every grant — which fails cleanly
//! (the grants are reported, their frames kept) if the backend still maps any.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use ring::blkif::{BlkifFrontRing, SECTOR_SIZE};
use ring::{RingError, RingMemory, MAX_RING_ORDER};
use xen_abi::{DomId, GrantRef, Mfn};

use crate::engine::{BlkFront, Disk, MAX_INDIRECT_SEGMENTS};
use crate::host::{GrantError, Host};

pub use xen_abi::xenbus::XenbusState;

/// A xenstore transaction (`Tx::NONE` = none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Tx(pub u32);

impl Tx {
    /// No transaction.
    pub const NONE: Tx = Tx(0);
}

/// How a transaction ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxEnd {
    /// Committed (or aborted, when asked to).
    Done,
    /// Conflicted with another change (`EAGAIN`): run it again.
    Retry,
}

/// A xenstore failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// [`Store::wait`] gave up: the environment's deadline passed.
    Timeout,
    /// Any other failure (the client's own error, described).
    Failed(&'static str),
}

/// The xenstore client the handshake runs on.
pub trait Store {
    /// The value of `path` (relative to the guest's home unless absolute); `None` if the
    /// node does not exist.
    fn read(&mut self, tx: Tx, path: &str) -> Result<Option<String>, StoreError>;
    /// Sets `path` to `value`.
    fn write(&mut self, tx: Tx, path: &str, value: &str) -> Result<(), StoreError>;
    /// Starts a transaction; a client without transactions returns [`Tx::NONE`].
    fn transaction_start(&mut self) -> Result<Tx, StoreError>;
    /// Ends `tx` (commit or abort).
    fn transaction_end(&mut self, tx: Tx, commit: bool) -> Result<TxEnd, StoreError>;
    /// Sleeps until something may have changed (a watch fired, an event, a short period);
    /// [`StoreError::Timeout`] once the caller's patience is exhausted.
    fn wait(&mut self) -> Result<(), StoreError>;
}

/// Why the handshake failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// A store operation failed (what was being done).
    Store(&'static str, StoreError),
    /// A mandatory node is missing.
    Missing(String),
    /// A node holds something unparsable.
    Bad(String),
    /// The backend closed (or failed) instead of reaching the wanted state.
    BackendClosed(XenbusState),
    /// The ring could not be initialised (its memory is not a usable size).
    Ring(RingError),
    /// A ring page could not be granted.
    Grant(GrantError),
    /// The ring has more pages than the backend accepts or than `ring-ref0..15` can name.
    RingOrder {
        /// Our ring's order.
        ours: u32,
        /// The backend's `max-ring-page-order`.
        max: u32,
    },
    /// Transactions kept conflicting.
    Conflict,
    /// Grants the backend still maps after closing (their frames are kept).
    StillMapped(Vec<GrantRef>),
}

impl core::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            HandshakeError::Store(what, e) => write!(f, "xenstore {what}: {e:?}"),
            HandshakeError::Missing(n) => write!(f, "missing node {n}"),
            HandshakeError::Bad(n) => write!(f, "bad value in {n}"),
            HandshakeError::BackendClosed(s) => write!(f, "backend went to state {s:?}"),
            HandshakeError::Ring(e) => write!(f, "ring: {e:?}"),
            HandshakeError::Grant(e) => write!(f, "granting the ring: {e:?}"),
            HandshakeError::RingOrder { ours, max } => {
                write!(f, "ring order {ours} above the backend's {max}")
            }
            HandshakeError::Conflict => f.write_str("xenstore transaction kept conflicting"),
            HandshakeError::StillMapped(g) => write!(f, "backend still maps grants {g:?}"),
        }
    }
}

/// How often a conflicting transaction is retried.
const TX_RETRIES: usize = 16;

/// The frontend's device, as the toolstack described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Our directory, `device/vbd/<devid>`.
    pub frontend: String,
    /// The backend's directory (`backend`, absolute).
    pub backend: String,
    /// The backend domain (`backend-id`).
    pub backend_id: DomId,
    /// `virtual-device`: the handle put in every request.
    pub handle: u16,
    /// `device-type` (`disk`, `cdrom`), `disk` if absent.
    pub device_type: String,
}

impl Device {
    fn node(&self, name: &str) -> String {
        format!("{}/{name}", self.frontend)
    }

    fn backend_node(&self, name: &str) -> String {
        format!("{}/{name}", self.backend)
    }
}

fn read_opt<S: Store>(store: &mut S, path: &str) -> Result<Option<String>, HandshakeError> {
    store
        .read(Tx::NONE, path)
        .map_err(|e| HandshakeError::Store("read", e))
}

fn read_req<S: Store>(store: &mut S, path: &str) -> Result<String, HandshakeError> {
    read_opt(store, path)?.ok_or_else(|| HandshakeError::Missing(path.into()))
}

fn parse_num<T: core::str::FromStr>(path: &str, v: &str) -> Result<T, HandshakeError> {
    v.trim()
        .trim_end_matches('\0')
        .parse()
        .map_err(|_| HandshakeError::Bad(path.into()))
}

fn read_num<S: Store, T: core::str::FromStr>(
    store: &mut S,
    path: &str,
) -> Result<T, HandshakeError> {
    let v = read_req(store, path)?;
    parse_num(path, &v)
}

/// An optional number; `default` if absent, an error if present but unparsable.
fn read_num_or<S: Store, T: core::str::FromStr>(
    store: &mut S,
    path: &str,
    default: T,
) -> Result<T, HandshakeError> {
    match read_opt(store, path)? {
        Some(v) => parse_num(path, &v),
        None => Ok(default),
    }
}

/// A feature flag node: absent or `0` means no; unparsable means no (as Linux's
/// `xenbus_read_unsigned` with default 0).
fn read_flag<S: Store>(store: &mut S, path: &str) -> Result<bool, HandshakeError> {
    Ok(read_opt(store, path)?
        .and_then(|v| v.trim().trim_end_matches('\0').parse::<u64>().ok())
        .is_some_and(|n| n != 0))
}

/// The devices the toolstack gave us (`device/vbd/*`) are listed by the caller; this reads
/// one of them.
pub fn probe<S: Store>(store: &mut S, devid: u32) -> Result<Device, HandshakeError> {
    let frontend = format!("device/vbd/{devid}");
    let backend = read_req(store, &format!("{frontend}/backend"))?;
    let backend = String::from(backend.trim_end_matches('\0'));
    let backend_id: u16 = read_num(store, &format!("{frontend}/backend-id"))?;
    let handle: u32 = read_num(store, &format!("{frontend}/virtual-device"))?;
    // Linux accepts the extended encoding (bit 28) too, but the wire handle is 16 bits.
    let handle = u16::try_from(handle).unwrap_or(handle as u16);
    let device_type = read_opt(store, &format!("{frontend}/device-type"))?.map_or_else(
        || String::from("disk"),
        |s| String::from(s.trim_end_matches('\0')),
    );
    Ok(Device {
        frontend,
        backend,
        backend_id: DomId::new(backend_id),
        handle,
        device_type,
    })
}

/// The backend's state; `None` if its node is gone (or unparsable).
pub fn backend_state<S: Store>(
    store: &mut S,
    dev: &Device,
) -> Result<Option<XenbusState>, HandshakeError> {
    Ok(read_opt(store, &dev.backend_node("state"))?.and_then(|s| XenbusState::parse(&s)))
}

/// Our own state node.
pub fn frontend_state<S: Store>(
    store: &mut S,
    dev: &Device,
) -> Result<Option<XenbusState>, HandshakeError> {
    Ok(read_opt(store, &dev.node("state"))?.and_then(|s| XenbusState::parse(&s)))
}

/// Writes our `state`.
pub fn set_state<S: Store>(
    store: &mut S,
    dev: &Device,
    st: XenbusState,
) -> Result<(), HandshakeError> {
    store
        .write(Tx::NONE, &dev.node("state"), st.as_str())
        .map_err(|e| HandshakeError::Store("write state", e))
}

/// Waits until the backend is at least in `want` (and not closing): `InitWait` is also
/// satisfied by a backend already `Initialised` or `Connected`. A backend in `Closing` or
/// `Closed` fails the wait. Returns the state seen.
pub fn wait_backend<S: Store>(
    store: &mut S,
    dev: &Device,
    want: XenbusState,
) -> Result<XenbusState, HandshakeError> {
    loop {
        match backend_state(store, dev)? {
            Some(s @ (XenbusState::Closing | XenbusState::Closed)) => {
                return Err(HandshakeError::BackendClosed(s))
            }
            Some(s) if s >= want && s <= XenbusState::Connected => return Ok(s),
            _ => {}
        }
        store
            .wait()
            .map_err(|e| HandshakeError::Store("waiting for the backend", e))?;
    }
}

/// What the backend offers before the frontend publishes its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offer {
    /// `max-ring-page-order` (0 if absent): the ring may have up to `2^order` pages.
    pub max_ring_page_order: u32,
}

impl Offer {
    /// The ring order to use: ours, capped by the backend's and the protocol's limit.
    pub fn ring_order(&self, ours: u32) -> u32 {
        ours.min(self.max_ring_page_order).min(MAX_RING_ORDER)
    }
}

/// Reads the backend's [`Offer`] (after it reached `InitWait`).
pub fn read_offer<S: Store>(store: &mut S, dev: &Device) -> Result<Offer, HandshakeError> {
    Ok(Offer {
        max_ring_page_order: read_num_or(store, &dev.backend_node("max-ring-page-order"), 0)?,
    })
}

/// Frontend choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Offer `feature-persistent` = 1 (used if the backend offers it too).
    pub persistent: bool,
    /// Cap of indirect segments per request (≤ [`MAX_INDIRECT_SEGMENTS`]; 0 disables
    /// indirect requests).
    pub max_indirect_segments: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            persistent: true,
            max_indirect_segments: MAX_INDIRECT_SEGMENTS,
        }
    }
}

/// Writes the ring details and `Initialised` in one transaction (retried on conflict).
fn publish<S: Store>(
    store: &mut S,
    dev: &Device,
    refs: &[GrantRef],
    order: u32,
    port: u32,
    persistent: bool,
) -> Result<(), HandshakeError> {
    let st = |e| HandshakeError::Store("publishing the ring", e);
    for _ in 0..TX_RETRIES {
        let tx = store.transaction_start().map_err(st)?;
        let r = (|| {
            if order == 0 {
                let r0 = refs.first().map_or(0, |g| g.raw());
                store.write(tx, &dev.node("ring-ref"), &format!("{r0}"))?;
            } else {
                store.write(tx, &dev.node("ring-page-order"), &format!("{order}"))?;
                for (i, g) in refs.iter().enumerate() {
                    store.write(
                        tx,
                        &dev.node(&format!("ring-ref{i}")),
                        &format!("{}", g.raw()),
                    )?;
                }
            }
            store.write(tx, &dev.node("event-channel"), &format!("{port}"))?;
            store.write(tx, &dev.node("protocol"), "x86_64-abi")?;
            store.write(
                tx,
                &dev.node("feature-persistent"),
                if persistent { "1" } else { "0" },
            )?;
            store.write(tx, &dev.node("state"), XenbusState::Initialised.as_str())
        })();
        if let Err(e) = r {
            if tx != Tx::NONE {
                let _ = store.transaction_end(tx, false);
            }
            return Err(st(e));
        }
        if tx == Tx::NONE {
            return Ok(());
        }
        match store.transaction_end(tx, true).map_err(st)? {
            TxEnd::Done => return Ok(()),
            TxEnd::Retry => continue,
        }
    }
    Err(HandshakeError::Conflict)
}

/// Reads the disk's description once the backend is `Connected` (Linux
/// `blkfront_connect` / `blkfront_gather_backend_features`).
pub fn read_disk<S: Store>(
    store: &mut S,
    dev: &Device,
    opts: &Options,
) -> Result<Disk, HandshakeError> {
    let sectors: u64 = read_num(store, &dev.backend_node("sectors"))?;
    let info: u32 = read_num(store, &dev.backend_node("info"))?;
    let sector_size_path = dev.backend_node("sector-size");
    let sector_size: u32 = read_num(store, &sector_size_path)?;
    if sector_size < SECTOR_SIZE as u32 || !sector_size.is_power_of_two() {
        return Err(HandshakeError::Bad(sector_size_path));
    }
    let flush = read_flag(store, &dev.backend_node("feature-flush-cache"))?;
    let barrier = read_flag(store, &dev.backend_node("feature-barrier"))?;
    let discard = read_flag(store, &dev.backend_node("feature-discard"))?;
    let discard_secure = discard && read_flag(store, &dev.backend_node("discard-secure"))?;
    let persistent = opts.persistent && read_flag(store, &dev.backend_node("feature-persistent"))?;
    let backend_max: u32 = read_opt(store, &dev.backend_node("feature-max-indirect-segments"))?
        .and_then(|v| v.trim().trim_end_matches('\0').parse().ok())
        .unwrap_or(0);
    let max = backend_max
        .min(opts.max_indirect_segments)
        .min(MAX_INDIRECT_SEGMENTS);
    // Indirect requests only pay off beyond what a direct request carries.
    let max_indirect_segments = if max > ring::blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST as u32 {
        max
    } else {
        0
    };
    Ok(Disk {
        sectors,
        sector_size,
        info,
        flush,
        barrier,
        discard,
        discard_secure,
        persistent,
        max_indirect_segments,
    })
}

/// Connects `dev` (whose backend is in `InitWait`, see [`wait_backend`]): initialises the
/// ring in `ring` (`2^order` pages whose frames are `frames`), grants it to the backend,
/// publishes it with event channel `port`, waits for the backend to connect, reads the
/// disk and switches to `Connected`. On failure the ring grants are revoked again (if the
/// backend let go of them) and our state is left as it was written.
pub fn connect<S: Store, M: RingMemory, H: Host>(
    store: &mut S,
    dev: &Device,
    mut host: H,
    ring: M,
    frames: &[Mfn],
    port: u32,
    opts: &Options,
) -> Result<BlkFront<M, H>, HandshakeError> {
    let order = frames.len().trailing_zeros();
    if !frames.len().is_power_of_two() || order > MAX_RING_ORDER {
        return Err(HandshakeError::RingOrder {
            ours: order,
            max: MAX_RING_ORDER,
        });
    }
    let offer = read_offer(store, dev)?;
    if order > offer.max_ring_page_order {
        return Err(HandshakeError::RingOrder {
            ours: order,
            max: offer.max_ring_page_order,
        });
    }
    let front = BlkifFrontRing::init(ring).map_err(HandshakeError::Ring)?;
    let mut refs = Vec::with_capacity(frames.len());
    for &f in frames {
        match host.grant(dev.backend_id, f, false) {
            Ok(g) => refs.push(g),
            Err(e) => {
                for g in refs {
                    let _ = host.end_access(g);
                }
                return Err(HandshakeError::Grant(e));
            }
        }
    }
    let steps = (|| {
        publish(store, dev, &refs, order, port, opts.persistent)?;
        wait_backend(store, dev, XenbusState::Connected)?;
        let disk = read_disk(store, dev, opts)?;
        set_state(store, dev, XenbusState::Connected)?;
        Ok(disk)
    })();
    match steps {
        Ok(disk) => {
            let mut blk = BlkFront::new(front, host, dev.backend_id, dev.handle, disk);
            blk.set_ring_refs(refs);
            Ok(blk)
        }
        Err(e) => {
            for g in refs {
                let _ = host.end_access(g);
            }
            Err(e)
        }
    }
}

/// What [`close`] left behind.
pub struct Closed<H> {
    /// The kernel services, back.
    pub host: H,
    /// `Ok`, or why the close was not clean: a store failure, a backend that never
    /// closed, or [`HandshakeError::StillMapped`] with the grants it still maps (their
    /// frames — possibly the ring's — must not be reused).
    pub result: Result<(), HandshakeError>,
    /// Whether the ring's grants were revoked (the ring pages may be freed).
    pub ring_revoked: bool,
}

/// Closes the device: `Closing`, wait for the backend to close, `Closed`, wait (briefly,
/// as far as [`Store::wait`] allows) for the backend's `Closed`, then revoke every grant.
///
/// Linux blkback answers a frontend's `Closing` with `Closing` and reaches `Closed` only
/// after the frontend's `Closed`, so the first wait accepts either state; the second one
/// is what lets the backend unmap before the grants are revoked.
pub fn close<S: Store, M: RingMemory, H: Host>(
    store: &mut S,
    dev: &Device,
    front: BlkFront<M, H>,
) -> Closed<H> {
    let handshake = (|| {
        set_state(store, dev, XenbusState::Closing)?;
        loop {
            match backend_state(store, dev)? {
                None | Some(XenbusState::Closing | XenbusState::Closed) => break,
                Some(_) => {}
            }
            store
                .wait()
                .map_err(|e| HandshakeError::Store("waiting for the backend to close", e))?;
        }
        set_state(store, dev, XenbusState::Closed)?;
        while let Some(s) = backend_state(store, dev)? {
            if s == XenbusState::Closed || s < XenbusState::InitWait {
                break;
            }
            // Running out of patience here is not fatal: the revocation below tells
            // whether the backend let go.
            if store.wait().is_err() {
                break;
            }
        }
        Ok(())
    })();
    let ring_refs: Vec<GrantRef> = front.ring_refs().to_vec();
    let (host, leaked) = front.teardown();
    let ring_revoked = !ring_refs.iter().any(|g| leaked.contains(g));
    let result = match handshake {
        Err(e) => Err(e),
        Ok(()) if !leaked.is_empty() => Err(HandshakeError::StillMapped(leaked)),
        Ok(()) => Ok(()),
    };
    Closed {
        host,
        result,
        ring_revoked,
    }
}
