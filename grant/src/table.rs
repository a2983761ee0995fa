//! A granter's grant table: its frames, version, and the active table (pins), with the
//! map, unmap and copy-acquire operations (Xen's `map_grant_ref`, `unmap_common` +
//! `unmap_common_complete`, `acquire_grant_for_copy`/`release_grant_for_copy`,
//! `_set_status_v1`, `reduce_status_for_pin`, `gnttab_setup_table`, `gnttab_query_size`,
//! `gnttab_set_version`).

use crate::entry::{EntryAccess, ENTRIES_PER_FRAME};
use crate::maptrack::{MapTrack, Mapping};
use crate::{FrameRefs, MapUse};
use alloc_crate::vec::Vec;
use xen_abi::grant_table::{Gntst, GrantHandle};
use xen_abi::grant_table::{
    GNTMAP_DEVICE_MAP, GNTMAP_HOST_MAP, GNTMAP_READONLY, GTF_READING, GTF_WRITING,
};
use xen_abi::{DomId, Errno, GrantRef, Mfn};

/// Default maximum table size in frames (16384 entries). Xen's default
/// (`gnttab_max_frames`) is 64; 32 is what rxen's domains get unless configured.
pub const DEFAULT_MAX_FRAMES: u32 = 32;

/// Pins of one kind an entry may hold: Xen keeps each kind in 8 bits and refuses an
/// increment once the top bit is set (`GNTPIN_incr2oflow_mask`).
pub const PIN_LIMIT: u8 = 0x80;

/// How often the CAS on a shared entry is retried while the guest keeps changing it
/// (Xen's `_set_status_v1` gives up after five attempts).
const CAS_ATTEMPTS: u32 = 5;

/// Pin counts of an active entry (Xen's `act->pin` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Pins {
    /// Read-only host mappings (and read-side copies).
    pub host_ro: u8,
    /// Writable host mappings (and write-side copies).
    pub host_rw: u8,
    /// Read-only device mappings.
    pub dev_ro: u8,
    /// Writable device mappings.
    pub dev_rw: u8,
}

impl Pins {
    /// Whether nothing is pinned.
    pub fn is_zero(self) -> bool {
        self == Pins::default()
    }

    /// Whether a writable pin exists (the shared entry keeps `GTF_writing`).
    pub fn writable(self) -> bool {
        self.host_rw != 0 || self.dev_rw != 0
    }

    fn counter(&mut self, device: bool, readonly: bool) -> &mut u8 {
        match (device, readonly) {
            (false, true) => &mut self.host_ro,
            (false, false) => &mut self.host_rw,
            (true, true) => &mut self.dev_ro,
            (true, false) => &mut self.dev_rw,
        }
    }

    /// Adds the pins of `uses`; false (nothing changed) if a counter would reach
    /// [`PIN_LIMIT`].
    fn add(&mut self, uses: MapUse, readonly: bool) -> bool {
        let mut next = *self;
        for (on, device) in [(uses.host, false), (uses.device, true)] {
            if on {
                let c = next.counter(device, readonly);
                match c.checked_add(1) {
                    Some(v) if *c < PIN_LIMIT => *c = v,
                    _ => return false,
                }
            }
        }
        *self = next;
        true
    }

    /// Removes the pins of `uses`; false if one was not held (a bug).
    fn sub(&mut self, uses: MapUse, readonly: bool) -> bool {
        let mut ok = true;
        for (on, device) in [(uses.host, false), (uses.device, true)] {
            if on {
                let c = self.counter(device, readonly);
                match c.checked_sub(1) {
                    Some(v) => *c = v,
                    None => ok = false,
                }
            }
        }
        ok
    }
}

/// Xen's `struct active_grant_entry` (v1, no transitive grants).
#[derive(Clone, Copy, Debug, Default)]
struct Active {
    pins: Pins,
    /// The domain the entry is pinned for (valid while pinned).
    domid: DomId,
    /// The frame read from the entry at the first pin (valid while pinned; later changes
    /// of the shared `frame` field are ignored until the last pin goes, as in Xen).
    frame: Mfn,
}

/// A successful map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The mapper's handle.
    pub handle: GrantHandle,
    /// The granted frame (`dev_bus_addr` = its machine address; the host mapping's
    /// target).
    pub frame: Mfn,
}

/// An entry of a dying granter that another domain still maps or copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StillMapped {
    /// The grant reference.
    pub gref: GrantRef,
    /// The domain holding it.
    pub domid: DomId,
    /// The frame, still referenced by that domain's mappings.
    pub frame: Mfn,
    /// The pins held.
    pub pins: Pins,
}

/// A domain's grant table as the hypervisor keeps it (Xen's `struct grant_table`, v1).
#[derive(Clone, Debug)]
pub struct GrantTable {
    /// The table's frames (hypervisor pages shared writable with the owning domain).
    frames: Vec<Mfn>,
    max_frames: u32,
    active: Vec<Active>,
    /// Internal inconsistencies detected (a pin released that was not held): 0 unless
    /// rxen has a bug.
    bugs: u64,
}

impl GrantTable {
    /// An empty table (no frames yet) that may grow to `max_frames` frames.
    pub fn new(max_frames: u32) -> GrantTable {
        GrantTable {
            frames: Vec::new(),
            max_frames,
            active: Vec::new(),
            bugs: 0,
        }
    }

    /// Current size in frames (`nr_grant_frames`).
    pub fn nr_frames(&self) -> u32 {
        u32::try_from(self.frames.len()).unwrap_or(u32::MAX)
    }

    /// Maximum size in frames (`max_grant_frames`).
    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// Current number of entries (`nr_grant_entries`).
    pub fn nr_entries(&self) -> u32 {
        u32::try_from(self.active.len()).unwrap_or(u32::MAX)
    }

    /// The table's frames, in table order.
    pub fn frames(&self) -> &[Mfn] {
        &self.frames
    }

    /// Internal inconsistencies detected so far (0 unless rxen has a bug).
    pub fn inconsistencies(&self) -> u64 {
        self.bugs
    }

    /// `GNTTABOP_setup_table` for this table: grows it to `nr_frames` frames if it is
    /// smaller, calling `alloc` for each new frame (the caller allocates a zeroed
    /// hypervisor page and shares it writable with the domain), and returns the first
    /// `nr_frames` frames for the guest's `frame_list`.
    ///
    /// `GNTST_general_error` if `nr_frames > max_frames` or an allocation fails (frames
    /// added before the failure stay, as in Xen's `gnttab_grow_table`).
    pub fn setup_table(
        &mut self,
        nr_frames: u32,
        mut alloc: impl FnMut() -> Option<Mfn>,
    ) -> Result<&[Mfn], Gntst> {
        if nr_frames > self.max_frames {
            return Err(Gntst::GeneralError);
        }
        while self.nr_frames() < nr_frames {
            let f = alloc().ok_or(Gntst::GeneralError)?;
            self.frames.push(f);
            let entries = self.frames.len().saturating_mul(ENTRIES_PER_FRAME as usize);
            self.active.resize(entries, Active::default());
        }
        self.frames
            .get(..nr_frames as usize)
            .ok_or(Gntst::GeneralError)
    }

    /// `GNTTABOP_query_size`: `(nr_frames, max_nr_frames)`.
    pub fn query_size(&self) -> (u32, u32) {
        (self.nr_frames(), self.max_frames)
    }

    /// `GNTTABOP_get_version`: always 1.
    pub fn version(&self) -> u32 {
        1
    }

    /// `GNTTABOP_set_version`: returns the hypercall's result and the version to write
    /// back into the argument (Xen writes the version in force even on error). Version
    /// 1 → 0; version 2 → -ENOSYS (Xen's answer when v2 is not offered,
    /// `max_version == 1`: "behave as before set_version was introduced"); anything else
    /// → -EINVAL.
    pub fn set_version(&mut self, version: u32) -> (Result<(), Errno>, u32) {
        let r = match version {
            1 => Ok(()),
            2 => Err(Errno::ENOSYS),
            _ => Err(Errno::EINVAL),
        };
        (r, self.version())
    }

    fn active_mut(&mut self, gref: GrantRef) -> Option<&mut Active> {
        self.active.get_mut(gref.raw() as usize)
    }

    /// Sets `GTF_reading` (and `GTF_writing` unless `readonly`) in the shared entry
    /// (Xen's `_set_status_v1`). The entry must permit access to `to` (`map`: and not
    /// be a sub-page grant), pinned already or not; a write pin needs an entry without
    /// `GTF_readonly`. The guest may change the entry meanwhile: after
    /// [`CAS_ATTEMPTS`] failed compare-exchanges the entry counts as unstable. Every
    /// failure is `GNTST_general_error`, as in Xen.
    fn set_status<E: EntryAccess>(
        entries: &mut E,
        gref: GrantRef,
        readonly: bool,
        map: bool,
        to: DomId,
    ) -> Result<(), Gntst> {
        let mut cur = entries.read_header(gref);
        for _ in 0..CAS_ATTEMPTS {
            // Checked whether or not the entry is already pinned, as Xen's
            // _set_status_v1 does: a guest that revoked the grant while it was mapped
            // cannot have a new (writable) pin taken on it.
            if !cur.permits(to, map) {
                return Err(Gntst::GeneralError);
            }
            let mut new = cur.with_flags(GTF_READING);
            if !readonly {
                if cur.readonly() {
                    return Err(Gntst::GeneralError);
                }
                new = new.with_flags(GTF_WRITING);
            }
            match entries.cmpxchg_header(gref, cur, new) {
                Ok(()) => return Ok(()),
                Err(found) => cur = found,
            }
        }
        Err(Gntst::GeneralError)
    }

    /// Clears the status bits the pins no longer justify (Xen's
    /// `reduce_status_for_pin`): `GTF_reading` when nothing is pinned, `GTF_writing`
    /// when the pin just dropped was writable and no writable pin is left.
    fn reduce_status<E: EntryAccess>(entries: &mut E, gref: GrantRef, pins: Pins, readonly: bool) {
        let mut clear = if pins.is_zero() { GTF_READING } else { 0 };
        if !readonly && !pins.writable() {
            clear |= GTF_WRITING;
        }
        if clear != 0 {
            entries.clear_flags(gref, clear);
        }
    }

    /// `GNTTABOP_map_grant_ref` against this (the granter's) table, entry `gref`, for
    /// `mapper` whose maptrack is `maptrack`, with `GNTMAP_*` `flags`.
    ///
    /// On success the entry is pinned (`GTF_reading`, and `GTF_writing` unless
    /// `GNTMAP_readonly`, set in the shared entry), a handle is recorded, and for
    /// `GNTMAP_device_map` a general reference (plus a writable type reference unless
    /// read-only) is taken through `refs` and held until the device use is unmapped.
    /// The caller then installs the host mapping (`GNTMAP_host_map`) in the PV MMU; if
    /// that fails it calls [`GrantTable::unmap`] with [`MapUse::ALL`] on the handle and
    /// reports `GNTST_general_error`.
    ///
    /// Errors, in Xen's order: neither host nor device map → `GNTST_bad_gntref`; no free
    /// handle → `GNTST_no_space`; `gref` beyond the table → `GNTST_bad_gntref`; pinned
    /// for another domain or a pin counter full → `GNTST_general_error`; entry not
    /// `GTF_permit_access` for `mapper`, a sub-page grant, a writable map of a
    /// `GTF_readonly` grant, or an entry the guest keeps changing →
    /// `GNTST_general_error`; the entry's frame not owned by `granter` →
    /// `GNTST_bad_page`; a device map whose frame cannot take the references →
    /// `GNTST_general_error`. (`GNTST_bad_domain` for an unknown granter is the caller's.)
    #[allow(clippy::too_many_arguments)]
    pub fn map<E: EntryAccess, R: FrameRefs>(
        &mut self,
        entries: &mut E,
        refs: &mut R,
        granter: DomId,
        gref: GrantRef,
        mapper: DomId,
        maptrack: &mut MapTrack,
        flags: u32,
    ) -> Result<Mapped, Gntst> {
        let uses = MapUse {
            host: flags & GNTMAP_HOST_MAP != 0,
            device: flags & GNTMAP_DEVICE_MAP != 0,
        };
        let readonly = flags & GNTMAP_READONLY != 0;
        if uses.is_empty() {
            return Err(Gntst::BadGntref);
        }
        if !maptrack.has_space() {
            return Err(Gntst::NoSpace);
        }
        let act = *self.active_mut(gref).ok_or(Gntst::BadGntref)?;
        let pinned = !act.pins.is_zero();
        let mut probe = act.pins;
        if pinned && (act.domid != mapper || !probe.add(uses, readonly)) {
            return Err(Gntst::GeneralError);
        }
        let mut frame = act.frame;
        if !pinned || (!readonly && !act.pins.writable()) {
            Self::set_status(entries, gref, readonly, true, mapper)?;
            if !pinned {
                frame = Mfn::new(u64::from(entries.read_frame(gref)));
            }
        }
        // The frame must be the granter's (Xen's get_paged_frame at the first pin; the
        // page reference check in map_grant_ref for later ones).
        let undo = |entries: &mut E| Self::reduce_status(entries, gref, act.pins, readonly);
        // A device use keeps the general reference; a host-only map just checks it could
        // be taken (the host mapping takes its own).
        let owned = if uses.device {
            refs.get_frame(frame, granter)
        } else {
            refs.check_frame(frame, granter)
        };
        if !owned {
            undo(entries);
            return Err(if pinned {
                Gntst::GeneralError
            } else {
                Gntst::BadPage
            });
        }
        if uses.device && !readonly && !refs.get_writable(frame) {
            refs.put_frame(frame);
            undo(entries);
            return Err(Gntst::GeneralError);
        }
        let mut pins = act.pins;
        if !pins.add(uses, readonly) {
            // Checked above for a pinned entry; an unpinned one has room.
            self.bugs = self.bugs.saturating_add(1);
        }
        let m = Mapping {
            granter,
            gref,
            uses,
            readonly,
            frame,
            map_flags: flags,
        };
        let handle = match maptrack.insert(m) {
            Ok(h) => h,
            Err(e) => {
                if uses.device {
                    if !readonly {
                        refs.put_writable(frame);
                    }
                    refs.put_frame(frame);
                }
                undo(entries);
                return Err(e);
            }
        };
        if let Some(a) = self.active_mut(gref) {
            *a = Active {
                pins,
                domid: mapper,
                frame,
            };
        }
        Ok(Mapped { handle, frame })
    }

    /// Completes `GNTTABOP_unmap_grant_ref` of `handle` in `maptrack` for the `done` uses
    /// the caller removed (the host use: the caller took the PTE out of the PV MMU and
    /// flushed the mapper's TLBs; the device use: nothing to undo outside). The device
    /// references are dropped through `refs`, the pins go, the shared entry's
    /// `GTF_writing`/`GTF_reading` are cleared when the last writable/any pin goes, and
    /// the handle is freed once no use is left (Xen's `unmap_common` +
    /// `unmap_common_complete`).
    ///
    /// Returns the mapping as it was. `GNTST_bad_handle` for an unknown handle, or one
    /// whose grant reference is beyond this table (not this granter's); uses in `done`
    /// the mapping does not have are ignored.
    pub fn unmap<E: EntryAccess, R: FrameRefs>(
        &mut self,
        entries: &mut E,
        refs: &mut R,
        maptrack: &mut MapTrack,
        handle: GrantHandle,
        done: MapUse,
    ) -> Result<Mapping, Gntst> {
        let m = maptrack.lookup(handle)?;
        if m.gref.raw() >= self.nr_entries() {
            return Err(Gntst::BadHandle);
        }
        let done = MapUse {
            host: done.host && m.uses.host,
            device: done.device && m.uses.device,
        };
        let left = MapUse {
            host: m.uses.host && !done.host,
            device: m.uses.device && !done.device,
        };
        maptrack.set_uses(handle, left);
        self.release(entries, refs, &m, done);
        Ok(m)
    }

    /// The second half of a batched `GNTTABOP_unmap_grant_ref` (Xen's
    /// `unmap_common_complete`): the caller looked `m` up, removed the `done` uses from
    /// the maptrack ([`MapTrack::forget_uses`], Xen's `unmap_common`, so a handle named
    /// twice in one batch is unmapped once), removed the host PTE and flushed the
    /// mapper's TLBs. Drops the device references, the pins and the status bits the
    /// remaining pins no longer justify. Uses in `done` the mapping does not have are
    /// ignored. `GNTST_bad_handle` (nothing done) if `m`'s grant reference is beyond this
    /// table (not this granter's); check with [`GrantTable::nr_entries`] before
    /// removing anything.
    pub fn complete_unmap<E: EntryAccess, R: FrameRefs>(
        &mut self,
        entries: &mut E,
        refs: &mut R,
        m: &Mapping,
        done: MapUse,
    ) -> Result<(), Gntst> {
        if m.gref.raw() >= self.nr_entries() {
            return Err(Gntst::BadHandle);
        }
        let done = MapUse {
            host: done.host && m.uses.host,
            device: done.device && m.uses.device,
        };
        self.release(entries, refs, m, done);
        Ok(())
    }

    /// Releases what `m` holds for `uses` (pins, device references, status bits):
    /// mapper teardown after [`MapTrack::drain`]. The caller removes the host mapping
    /// from the PV MMU first (if the mapper's page tables still hold it).
    pub fn release_mapping<E: EntryAccess, R: FrameRefs>(
        &mut self,
        entries: &mut E,
        refs: &mut R,
        m: &Mapping,
    ) {
        self.release(entries, refs, m, m.uses);
    }

    fn release<E: EntryAccess, R: FrameRefs>(
        &mut self,
        entries: &mut E,
        refs: &mut R,
        m: &Mapping,
        uses: MapUse,
    ) {
        if uses.is_empty() {
            return;
        }
        if uses.device {
            if !m.readonly {
                refs.put_writable(m.frame);
            }
            refs.put_frame(m.frame);
        }
        let Some(a) = self.active_mut(m.gref) else {
            self.bugs = self.bugs.saturating_add(1);
            return;
        };
        let ok = a.frame == m.frame && a.pins.sub(uses, m.readonly);
        let pins = a.pins;
        if !ok {
            self.bugs = self.bugs.saturating_add(1);
        }
        Self::reduce_status(entries, m.gref, pins, m.readonly);
    }

    /// The first half of a copy from or to grant `gref` of this table by `copier`
    /// (Xen's `acquire_grant_for_copy`, v1): pins the entry for reading (`readonly`, the
    /// source) or writing (the destination), takes a general reference on the frame
    /// through `refs` and returns the frame. Release with
    /// [`GrantTable::release_for_copy`] (and drop the reference) right after the copy.
    ///
    /// Errors: `gref` beyond the table → `GNTST_bad_gntref`; pinned for another domain,
    /// a full pin counter, a bad entry (type, domid, `GTF_readonly` for a write) or an
    /// unstable one → `GNTST_general_error`; the entry's frame not `granter`'s →
    /// `GNTST_bad_page`; an entry already pinned whose frame is no longer `granter`'s
    /// (it is dying) → `GNTST_bad_domain`.
    pub fn acquire_for_copy<E: EntryAccess, R: FrameRefs>(
        &mut self,
        entries: &mut E,
        refs: &mut R,
        granter: DomId,
        gref: GrantRef,
        copier: DomId,
        readonly: bool,
    ) -> Result<Mfn, Gntst> {
        let act = *self.active_mut(gref).ok_or(Gntst::BadGntref)?;
        let pinned = !act.pins.is_zero();
        let host = MapUse {
            host: true,
            device: false,
        };
        let mut pins = act.pins;
        if pinned && (act.domid != copier || !pins.add(host, readonly)) {
            return Err(Gntst::GeneralError);
        }
        let frame = if !pinned || (!readonly && !act.pins.writable()) {
            Self::set_status(entries, gref, readonly, false, copier)?;
            let f = Mfn::new(u64::from(entries.read_frame(gref)));
            if !refs.get_frame(f, granter) {
                Self::reduce_status(entries, gref, act.pins, readonly);
                return Err(Gntst::BadPage);
            }
            if pinned && f != act.frame {
                refs.put_frame(f);
                Self::reduce_status(entries, gref, act.pins, readonly);
                return Err(Gntst::GeneralError);
            }
            f
        } else {
            if !refs.get_frame(act.frame, granter) {
                Self::reduce_status(entries, gref, act.pins, readonly);
                return Err(Gntst::BadDomain);
            }
            act.frame
        };
        if !pinned {
            pins = Pins::default();
            if !pins.add(host, readonly) {
                self.bugs = self.bugs.saturating_add(1);
            }
        }
        if let Some(a) = self.active_mut(gref) {
            *a = Active {
                pins,
                domid: copier,
                frame,
            };
        }
        Ok(frame)
    }

    /// Undoes [`GrantTable::acquire_for_copy`] (Xen's `release_grant_for_copy`): drops
    /// the pin and the status bits it justified. The caller drops its frame reference.
    pub fn release_for_copy<E: EntryAccess>(
        &mut self,
        entries: &mut E,
        gref: GrantRef,
        readonly: bool,
    ) {
        let host = MapUse {
            host: true,
            device: false,
        };
        let Some(a) = self.active_mut(gref) else {
            self.bugs = self.bugs.saturating_add(1);
            return;
        };
        let ok = a.pins.sub(host, readonly);
        let pins = a.pins;
        if !ok {
            self.bugs = self.bugs.saturating_add(1);
        }
        Self::reduce_status(entries, gref, pins, readonly);
    }

    /// The pins of entry `gref` (zero if out of range).
    pub fn pins(&self, gref: GrantRef) -> Pins {
        self.active
            .get(gref.raw() as usize)
            .map(|a| a.pins)
            .unwrap_or_default()
    }

    /// Whether no entry is pinned: a dying domain's table (and its shared frames) may be
    /// freed only then.
    pub fn is_idle(&self) -> bool {
        self.active.iter().all(|a| a.pins.is_zero())
    }

    /// Granter teardown: the entries other domains still map (or copy), with their
    /// frames. Those frames stay referenced (the PV MMU reports them in
    /// `still_referenced` and frees each when its last mapping goes); the table must be
    /// kept until [`GrantTable::is_idle`], because each unmap still updates it.
    pub fn still_mapped(&self) -> Vec<StillMapped> {
        self.active
            .iter()
            .enumerate()
            .filter(|(_, a)| !a.pins.is_zero())
            .filter_map(|(i, a)| {
                Some(StillMapped {
                    gref: GrantRef::new(u32::try_from(i).ok()?),
                    domid: a.domid,
                    frame: a.frame,
                    pins: a.pins,
                })
            })
            .collect()
    }
}
