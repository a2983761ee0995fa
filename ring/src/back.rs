//! The backend's view of a shared ring (`BACK_RING_*`): consumes requests, produces
//! responses.

use core::marker::PhantomData;

use crate::sring::{
    copy_entry, load_idx, needs_notify, store_idx, write_entry, REQ_EVENT, REQ_PROD, RSP_EVENT,
    RSP_PROD,
};
use crate::{Fence, RingError, RingGeometry, RingIdx, RingMemory, RingMessage};

/// The backend end of a shared ring (`struct *_back_ring`).
///
/// The frontend controls every shared byte, so this side trusts only its private
/// `req_cons` and `rsp_prod_pvt`: the shared `req_prod` is read once per batch, checked so
/// that no more than [`size`](Self::size) requests can be outstanding, and each request is
/// copied out of its slot exactly once.
#[derive(Debug)]
pub struct BackRing<Req, Rsp, M> {
    mem: M,
    geo: RingGeometry,
    /// Next request to consume (`req_cons`).
    req_cons: RingIdx,
    /// Shared `req_prod` as last read and validated.
    req_prod_seen: RingIdx,
    /// Next response index to fill (`rsp_prod_pvt`).
    rsp_prod_pvt: RingIdx,
    /// Last value written to the shared `rsp_prod`.
    rsp_prod_published: RingIdx,
    _msgs: PhantomData<fn(Rsp) -> Req>,
}

impl<Req: RingMessage, Rsp: RingMessage, M: RingMemory> BackRing<Req, Rsp, M> {
    /// Attaches to a ring the frontend initialised (`BACK_RING_INIT`); the shared page is
    /// not touched.
    pub fn new(mem: M) -> Result<Self, RingError> {
        Self::attach(mem, RingIdx::new(0))
    }

    /// Attaches with private indices at `idx` (`BACK_RING_ATTACH`: reconnecting, or a ring
    /// initialised with [`FrontRing::init_at`](crate::FrontRing::init_at)).
    pub fn attach(mem: M, idx: RingIdx) -> Result<Self, RingError> {
        let geo = RingGeometry::for_memory::<Req, Rsp, M>(&mem)?;
        Ok(Self {
            mem,
            geo,
            req_cons: idx,
            req_prod_seen: idx,
            rsp_prod_pvt: idx,
            rsp_prod_published: idx,
            _msgs: PhantomData,
        })
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

    /// `req_cons`: index of the next request to consume.
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// `rsp_prod_pvt`: index the next response will take.
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// Requests consumed but not yet answered.
    pub fn pending_responses(&self) -> u32 {
        self.req_cons.distance_from(self.rsp_prod_pvt)
    }

    /// Reads the shared `req_prod` and checks it (`RING_REQUEST_PROD_OVERFLOW`): counting
    /// from the oldest unanswered request, at most `size` requests can exist, and the index
    /// must not have moved back behind `req_cons`.
    fn read_req_prod(&self) -> Result<RingIdx, RingError> {
        let prod = load_idx(&self.mem, REQ_PROD);
        let unconsumed = prod.distance_from(self.req_cons);
        // Slots not holding a consumed-but-unanswered request; pending <= size always.
        let room = self.size().saturating_sub(self.pending_responses());
        if unconsumed > room {
            return Err(RingError::ProducerOverflow {
                prod,
                cons: self.req_cons,
            });
        }
        Ok(prod)
    }

    /// Number of requests waiting (`RING_HAS_UNCONSUMED_REQUESTS`), after checking the
    /// frontend's index.
    pub fn unconsumed_requests(&self) -> Result<u32, RingError> {
        Ok(self.read_req_prod()?.distance_from(self.req_cons))
    }

    /// Takes the next request: a private copy read once from the shared slot
    /// (`RING_COPY_REQUEST`), to be validated by the caller; `None` if there is none.
    /// [`RingError::ProducerOverflow`] means the frontend published an impossible index;
    /// nothing was read from the slots and the ring should be treated as broken.
    pub fn get_request(&mut self) -> Result<Option<Req>, RingError> {
        if self.req_cons == self.req_prod_seen {
            let prod = self.read_req_prod()?;
            if prod == self.req_cons {
                return Ok(None);
            }
            // Read the requests only after the index that published them.
            self.mem.fence(Fence::Read);
            self.req_prod_seen = prod;
        }
        let req = copy_entry(&self.mem, &self.geo, self.req_cons);
        self.req_cons = self.req_cons.next();
        Ok(Some(req))
    }

    /// Writes `rsp` into the slot of the oldest unanswered request and advances
    /// `rsp_prod_pvt`; visible to the frontend after
    /// [`push_responses_and_check_notify`](Self::push_responses_and_check_notify).
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<RingIdx, RingError> {
        if self.pending_responses() == 0 {
            return Err(RingError::NoPendingRequest);
        }
        let idx = self.rsp_prod_pvt;
        write_entry(&self.mem, &self.geo, idx, rsp);
        self.rsp_prod_pvt = idx.next();
        Ok(idx)
    }

    /// Publishes every response written so far (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`) and
    /// returns whether the frontend asked to be notified of them; send the event only then.
    #[must_use = "notify the frontend when this returns true"]
    pub fn push_responses_and_check_notify(&mut self) -> bool {
        // `old` is our own last published value, not the shared rsp_prod the frontend
        // could have scribbled on; for an honest frontend they are equal.
        let old = self.rsp_prod_published;
        let new = self.rsp_prod_pvt;
        self.mem.fence(Fence::Write);
        store_idx(&self.mem, RSP_PROD, new);
        self.rsp_prod_published = new;
        // Frontend sees the new index before we read its rsp_event.
        self.mem.fence(Fence::Full);
        let event = load_idx(&self.mem, RSP_EVENT);
        needs_notify(old, new, event)
    }

    /// Asks the frontend to notify when `req_prod` passes `event` (e.g. netback's RX path
    /// waiting for enough buffers); [`final_check_for_requests`](Self::final_check_for_requests)
    /// sets `req_cons + 1`.
    pub fn set_req_event(&self, event: RingIdx) {
        store_idx(&self.mem, REQ_EVENT, event);
    }

    /// Before sleeping (`RING_FINAL_CHECK_FOR_REQUESTS`): returns `true` if requests are
    /// waiting; otherwise re-arms `req_event = req_cons + 1` and looks once more, so a
    /// request published meanwhile is not missed. `false` means: sleep until notified.
    /// A frontend that broke the index rules counts as "work to do", so the following
    /// [`get_request`](Self::get_request) reports the error.
    #[must_use = "sleep only when this returns false"]
    pub fn final_check_for_requests(&mut self) -> bool {
        if self.has_work() {
            return true;
        }
        self.set_req_event(self.req_cons.next());
        self.mem.fence(Fence::Full);
        self.has_work()
    }

    fn has_work(&self) -> bool {
        self.req_cons != self.req_prod_seen || self.unconsumed_requests() != Ok(0)
    }
}
