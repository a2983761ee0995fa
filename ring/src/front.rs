//! The frontend's view of a shared ring (`FRONT_RING_*`): produces requests, consumes
//! responses.

use core::marker::PhantomData;

use crate::sring::{
    copy_entry, load_idx, needs_notify, store_idx, write_entry, REQ_EVENT, REQ_PROD, RSP_EVENT,
    RSP_PROD,
};
use crate::{Fence, RingError, RingGeometry, RingIdx, RingMemory, RingMessage, HEADER_SIZE};

/// The frontend end of a shared ring (`struct *_front_ring`).
///
/// It keeps `req_prod_pvt` (requests written, not necessarily published) and `rsp_cons`
/// (responses consumed) privately, so a backend cannot make it overwrite an unanswered slot:
/// at most [`size`](Self::size) requests are ever outstanding. Responses are checked against
/// the requests actually published before they are read.
#[derive(Debug)]
pub struct FrontRing<Req, Rsp, M> {
    mem: M,
    geo: RingGeometry,
    /// Next request index to fill (`req_prod_pvt`).
    req_prod_pvt: RingIdx,
    /// Last value written to the shared `req_prod`.
    req_prod_published: RingIdx,
    /// Next response to consume (`rsp_cons`).
    rsp_cons: RingIdx,
    /// Shared `rsp_prod` as last read and validated; entries before it may be read without
    /// looking at the shared page again.
    rsp_prod_seen: RingIdx,
    _msgs: PhantomData<fn(Req) -> Rsp>,
}

impl<Req: RingMessage, Rsp: RingMessage, M: RingMemory> FrontRing<Req, Rsp, M> {
    /// Initialises the shared page (`SHARED_RING_INIT`: producers 0, events 1, padding 0)
    /// and attaches to it (`FRONT_RING_INIT`). Done by the frontend before it grants the
    /// page to the backend.
    pub fn init(mem: M) -> Result<Self, RingError> {
        Self::init_at(mem, RingIdx::new(0))
    }

    /// Like [`init`](Self::init) but with all indices starting at `start` (Xen always starts
    /// at 0; other values let tests exercise the wrap of the 32-bit indices).
    pub fn init_at(mem: M, start: RingIdx) -> Result<Self, RingError> {
        let geo = RingGeometry::for_memory::<Req, Rsp, M>(&mem)?;
        mem.write_bytes(0, &[0; HEADER_SIZE]);
        store_idx(&mem, REQ_PROD, start);
        store_idx(&mem, RSP_PROD, start);
        store_idx(&mem, REQ_EVENT, start.next());
        store_idx(&mem, RSP_EVENT, start.next());
        // The backend must see the initialised header before anything published later.
        mem.fence(Fence::Write);
        Ok(Self::with(mem, geo, start))
    }

    /// Attaches to an already initialised ring whose indices are at `idx`
    /// (`FRONT_RING_ATTACH`, used when reconnecting); the shared page is not touched.
    pub fn attach(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        let geo = RingGeometry::for_memory::<Req, Rsp, M>(&mem)?;
        Ok(Self::with(mem, geo, idx))
    }

    fn with(mem: M, geo: RingGeometry, idx: RingIdx) -> Self {
        Self {
            mem,
            geo,
            req_prod_pvt: idx,
            req_prod_published: idx,
            rsp_cons: idx,
            rsp_prod_seen: idx,
            _msgs: PhantomData,
        }
    }

    /// Number of slots (`RING_SIZE`).
    pub fn size(&self) -> u32 {
        self.geo.size()
    }

    /// The ring's geometry.
    pub fn geometry(&self) -> RingGeometry {
        self.geo
    }

    /// The shared memory.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Publishes `idx` as the shared `req_prod` without any request behind it: what a
    /// hostile or broken frontend does. Only for exercising a backend's index checks.
    pub fn publish_bogus_req_prod(&self, idx: RingIdx) {
        store_idx(&self.mem, REQ_PROD, idx);
    }

    /// `req_prod_pvt`: index the next request will take.
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// `rsp_cons`: index of the next response to consume.
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// Requests that can still be queued (`RING_FREE_REQUESTS`). Private indices only, so
    /// the backend cannot influence it beyond answering.
    pub fn free_requests(&self) -> u32 {
        // req_prod_pvt - rsp_cons <= size is an invariant of this type.
        self.size()
            .saturating_sub(self.req_prod_pvt.distance_from(self.rsp_cons))
    }

    /// Whether no request slot is free (`RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// The index the next [`push_request`](Self::push_request) will use, or `None` if the
    /// ring is full. Protocols that tie ids to slots (netfront RX) use `slot(size)` of it.
    pub fn next_request_slot(&self) -> Option<RingIdx> {
        (!self.is_full()).then_some(self.req_prod_pvt)
    }

    /// Writes `req` into the next free slot and advances `req_prod_pvt`. The request is not
    /// visible to the backend until
    /// [`push_requests_and_check_notify`](Self::push_requests_and_check_notify) publishes it.
    /// Returns the request's index.
    pub fn push_request(&mut self, req: &Req) -> Result<RingIdx, RingError> {
        let idx = self.next_request_slot().ok_or(RingError::Full)?;
        write_entry(&self.mem, &self.geo, idx, req);
        self.req_prod_pvt = idx.next();
        Ok(idx)
    }

    /// Publishes every request written so far (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`) and
    /// returns whether the backend asked to be notified of them (its `req_event` lies in the
    /// range just published); send the event only then.
    #[must_use = "notify the backend when this returns true"]
    pub fn push_requests_and_check_notify(&mut self) -> bool {
        let old = self.req_prod_published;
        let new = self.req_prod_pvt;
        // Backend sees the requests before the index that publishes them.
        self.mem.fence(Fence::Write);
        store_idx(&self.mem, REQ_PROD, new);
        self.req_prod_published = new;
        // Backend sees the new index before we read its req_event: otherwise both sides
        // could miss each other (it re-arms and sleeps, we read the stale event).
        self.mem.fence(Fence::Full);
        let event = load_idx(&self.mem, REQ_EVENT);
        needs_notify(old, new, event)
    }

    /// Reads the shared `rsp_prod` and checks it: responses can only answer published
    /// requests (`RING_RESPONSE_PROD_OVERFLOW`, tightened to the published count).
    fn read_rsp_prod(&self) -> Result<RingIdx, RingError> {
        let prod = load_idx(&self.mem, RSP_PROD);
        let available = prod.distance_from(self.rsp_cons);
        let outstanding = self.req_prod_published.distance_from(self.rsp_cons);
        if available > outstanding {
            return Err(RingError::ProducerOverflow {
                prod,
                cons: self.rsp_cons,
            });
        }
        Ok(prod)
    }

    /// Number of published responses not yet consumed (`RING_HAS_UNCONSUMED_RESPONSES`).
    pub fn unconsumed_responses(&self) -> Result<u32, RingError> {
        Ok(self.read_rsp_prod()?.distance_from(self.rsp_cons))
    }

    /// Takes the next response: a copy read once from the shared slot, or `None` if the
    /// backend has published nothing new. An error means the backend is broken.
    pub fn get_response(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.rsp_cons == self.rsp_prod_seen {
            let prod = self.read_rsp_prod()?;
            if prod == self.rsp_cons {
                return Ok(None);
            }
            // Read the responses only after the index that published them.
            self.mem.fence(Fence::Read);
            self.rsp_prod_seen = prod;
        }
        let rsp = copy_entry(&self.mem, &self.geo, self.rsp_cons);
        self.rsp_cons = self.rsp_cons.next();
        Ok(Some(rsp))
    }

    /// Asks the backend to notify when `rsp_prod` passes `event` (the custom batching the
    /// `ring.h` comment describes); [`final_check_for_responses`](Self::final_check_for_responses)
    /// sets `rsp_cons + 1`.
    pub fn set_rsp_event(&self, event: RingIdx) {
        store_idx(&self.mem, RSP_EVENT, event);
    }

    /// Before sleeping (`RING_FINAL_CHECK_FOR_RESPONSES`): returns `true` if responses are
    /// waiting; otherwise re-arms `rsp_event = rsp_cons + 1` and looks once more, so a
    /// response published meanwhile is not missed. `false` means: sleep until notified.
    /// A backend that broke the index rules counts as "work to do", so the following
    /// [`get_response`](Self::get_response) reports the error.
    #[must_use = "sleep only when this returns false"]
    pub fn final_check_for_responses(&mut self) -> bool {
        if self.has_work() {
            return true;
        }
        self.set_rsp_event(self.rsp_cons.next());
        self.mem.fence(Fence::Full);
        self.has_work()
    }

    fn has_work(&self) -> bool {
        self.rsp_cons != self.rsp_prod_seen || self.unconsumed_responses() != Ok(0)
    }
}
