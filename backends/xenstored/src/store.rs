//! The xenstore database and its request semantics (C xenstored `core.c`, `watch.c`,
//! `transaction.c`, `domain.c`): a tree of nodes with values, permissions and generation
//! counts; per-domain connections with watches, transactions and an output queue; the
//! wire dispatcher ([`Store::handle_message`]) and the in-process API dom0 uses directly.
//!
//! The tree is a map from absolute path to node: a node's children are the keys just
//! below it, so there is no child list to keep consistent. Creating or deleting a child
//! bumps the parent's generation, as C xenstored's rewrite of the parent's child list does.
//!
//! Transactions work on a copy of the tree taken at `TRANSACTION_START` and record the
//! generation of every node they read or wrote (or that it was absent). `TRANSACTION_END T`
//! fails with `EAGAIN` if any of those nodes changed in the live tree meanwhile; otherwise
//! the nodes the transaction changed are copied over and its watch events fire.

use alloc::collections::{BTreeMap, BTreeSet, VecDeque};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::ops::Bound;
use xen_abi::DomId;

use crate::path::{self, canonicalize, domain_path, is_child, parse_domid, Canonical};
use crate::perms::{Access, Perms, Rights, Who};
use crate::ring::RingIo;
use crate::wire::{self, Header, MsgType, XsError, HEADER_LEN, PAYLOAD_MAX};

/// Result of a store operation.
pub type XsResult<T> = Result<T, XsError>;

/// Per-domain limits for unprivileged domains (C xenstored's defaults). Exceeding one gives
/// `ENOSPC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    /// Nodes a domain may own.
    pub nodes: u32,
    /// Watches per connection.
    pub watches: usize,
    /// Open transactions per connection.
    pub transactions: usize,
    /// Bytes in one node's value.
    pub value_size: usize,
    /// Entries in one node's permission list.
    pub perms: usize,
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas {
            nodes: 1000,
            watches: 128,
            transactions: 10,
            value_size: 2048,
            perms: 5,
        }
    }
}

/// Watch events queued for one connection beyond which new events are dropped (a client
/// that does not read its ring must not make dom0 run out of memory; clients re-read on
/// any event, and xenstore allows lost events for unreadable nodes anyway).
pub const MAX_QUEUED_EVENTS: usize = 1024;
/// Bytes queued for one connection beyond which new events are dropped.
pub const MAX_QUEUED_BYTES: usize = 256 * 1024;

/// A watch event delivered to an in-process connection (dom0's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEvent {
    /// The changed path (relative if the watch was registered relative).
    pub path: String,
    /// The watch's token.
    pub token: String,
}

/// Where an introduced domain's ring lives (from `INTRODUCE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingInfo {
    /// Frame of the ring page (`start_info.store_mfn`; a PV guest's gfn is its MFN).
    pub mfn: u64,
    /// The domain's unbound port xenstored binds to (`start_info.store_evtchn`).
    pub port: u32,
}

/// The caller of an in-process operation: a domain, optionally inside one of its
/// transactions. `DomId` converts into a caller outside any transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Acting domain (its permissions apply; domain 0 is privileged).
    pub dom: DomId,
    /// Transaction id, 0 = none.
    pub tx: u32,
}

impl Caller {
    /// `dom` inside transaction `tx`.
    pub const fn tx(dom: DomId, tx: u32) -> Caller {
        Caller { dom, tx }
    }
}

impl From<DomId> for Caller {
    fn from(dom: DomId) -> Caller {
        Caller { dom, tx: 0 }
    }
}

#[derive(Clone, Debug)]
struct Node {
    value: Vec<u8>,
    perms: Perms,
    gen: u64,
}

type Tree = BTreeMap<String, Node>;
type Counts = BTreeMap<DomId, u32>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    /// Watches on the path or above it (and, depth permitting, the path below them).
    Subtree,
    /// Watches on exactly this path (sub-nodes of a removed subtree).
    Exact,
}

/// A committed (or, inside a transaction, pending) change, with the permissions needed to
/// decide who may hear of it.
#[derive(Clone, Debug)]
struct Change {
    path: String,
    how: Match,
    perms: Perms,
    parent_perms: Option<Perms>,
    old_perms: Option<Perms>,
}

#[derive(Debug)]
struct Watch {
    path: String,
    token: String,
    depth: Option<u32>,
    /// Bytes to strip from event paths (relative watches).
    strip: usize,
}

#[derive(Default, Debug)]
struct TxLog {
    accessed: BTreeMap<String, Option<u64>>,
    dirty: BTreeSet<String>,
}

#[derive(Debug)]
struct Tx {
    tree: Tree,
    counts: Counts,
    log: TxLog,
    changes: Vec<Change>,
}

#[derive(Debug, Default)]
pub(crate) struct Conn {
    watches: Vec<Watch>,
    txs: BTreeMap<u32, Tx>,
    /// Wire messages waiting to go out (replies and events), oldest first.
    pub(crate) out: VecDeque<Vec<u8>>,
    pub(crate) out_bytes: usize,
    /// Events of an in-process connection.
    events: VecDeque<WatchEvent>,
    /// Whether events are sent as `WATCH_EVENT` messages (else queued as [`WatchEvent`]s).
    wire: bool,
    ring: Option<RingInfo>,
    pub(crate) io: RingIo,
    dropped_events: u64,
}

impl Conn {
    fn new(wire: bool, ring: Option<RingInfo>) -> Conn {
        Conn {
            wire,
            ring,
            ..Conn::default()
        }
    }

    fn deliver(&mut self, path: &str, token: &str) {
        if self.wire {
            let mut payload = Vec::with_capacity(path.len() + token.len() + 2);
            payload.extend_from_slice(path.as_bytes());
            payload.push(0);
            payload.extend_from_slice(token.as_bytes());
            payload.push(0);
            if self.out.len() >= MAX_QUEUED_EVENTS
                || self.out_bytes.saturating_add(payload.len()) > MAX_QUEUED_BYTES
                || payload.len() > PAYLOAD_MAX
            {
                self.dropped_events = self.dropped_events.saturating_add(1);
                return;
            }
            self.push_out(wire::message(MsgType::WatchEvent.raw(), 0, 0, &payload));
        } else {
            if self.events.len() >= MAX_QUEUED_EVENTS {
                self.dropped_events = self.dropped_events.saturating_add(1);
                return;
            }
            self.events.push_back(WatchEvent {
                path: path.to_string(),
                token: token.to_string(),
            });
        }
    }

    fn push_out(&mut self, msg: Vec<u8>) {
        self.out_bytes = self.out_bytes.saturating_add(msg.len());
        self.out.push_back(msg);
    }

    fn insert_out(&mut self, at: usize, msg: Vec<u8>) {
        self.out_bytes = self.out_bytes.saturating_add(msg.len());
        let at = at.min(self.out.len());
        self.out.insert(at, msg);
    }
}

/// A view of the live tree or of one transaction's copy, recording what a transaction
/// touches and collecting the changes to fire.
struct View<'a> {
    tree: &'a mut Tree,
    counts: &'a mut Counts,
    gen: &'a mut u64,
    log: Option<&'a mut TxLog>,
    changes: &'a mut Vec<Change>,
}

fn count_adjust(counts: &mut Counts, old: Option<DomId>, new: Option<DomId>) {
    if let Some(o) = old {
        if let Some(c) = counts.get_mut(&o) {
            *c = c.saturating_sub(1);
        }
    }
    if let Some(n) = new {
        let c = counts.entry(n).or_insert(0);
        *c = c.saturating_add(1);
    }
}

/// `path/` (or `/` for the root): the prefix of every key below `path`.
fn below_prefix(path: &str) -> String {
    if path == "/" {
        String::from("/")
    } else {
        format!("{path}/")
    }
}

fn subtree_keys(tree: &Tree, path: &str) -> Vec<String> {
    let prefix = below_prefix(path);
    tree.range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(k, _)| k.clone())
        .collect()
}

impl View<'_> {
    fn touch(&mut self, path: &str) {
        if let Some(log) = self.log.as_deref_mut() {
            if !log.accessed.contains_key(path) {
                let g = self.tree.get(path).map(|n| n.gen);
                log.accessed.insert(path.to_string(), g);
            }
        }
    }

    fn mark_dirty(&mut self, path: &str) {
        if let Some(log) = self.log.as_deref_mut() {
            log.dirty.insert(path.to_string());
        }
    }

    fn next_gen(&mut self) -> u64 {
        *self.gen = self.gen.wrapping_add(1);
        *self.gen
    }

    fn get(&mut self, path: &str) -> Option<&Node> {
        self.touch(path);
        self.tree.get(path)
    }

    fn put(&mut self, path: &str, mut node: Node) {
        self.touch(path);
        self.mark_dirty(path);
        node.gen = self.next_gen();
        let new_owner = node.perms.owner();
        let old = self.tree.insert(path.to_string(), node);
        count_adjust(self.counts, old.map(|n| n.perms.owner()), Some(new_owner));
    }

    fn del(&mut self, path: &str) -> Option<Node> {
        self.touch(path);
        self.mark_dirty(path);
        let old = self.tree.remove(path);
        count_adjust(self.counts, old.as_ref().map(|n| n.perms.owner()), None);
        old
    }

    /// A child list changed: new generation for `path`.
    fn bump(&mut self, path: &str) {
        self.touch(path);
        self.mark_dirty(path);
        let g = self.next_gen();
        if let Some(n) = self.tree.get_mut(path) {
            n.gen = g;
        }
    }

    fn perms_of(&self, path: Option<&str>) -> Option<Perms> {
        path.and_then(|p| self.tree.get(p)).map(|n| n.perms.clone())
    }

    fn change(&mut self, path: &str, how: Match, perms: Perms, old_perms: Option<Perms>) {
        let parent_perms = self.perms_of(path::parent(path));
        self.changes.push(Change {
            path: path.to_string(),
            how,
            perms,
            parent_perms,
            old_perms,
        });
    }

    /// C xenstored's `get_node` + `errno_from_parents`: `Ok(true)` if the node exists and
    /// `who` has `need` on it; `ENOENT` if it is missing and the nearest existing ancestor
    /// grants some of `need` (so the caller may learn it is missing, or create it);
    /// `EACCES` otherwise.
    fn check(&mut self, who: &Who, path: &str, need: Rights) -> XsResult<()> {
        if let Some(n) = self.get(path) {
            return if n.perms.rights(who).has(need) {
                Ok(())
            } else {
                Err(XsError::Acces)
            };
        }
        let mut cur = path;
        while let Some(p) = path::parent(cur) {
            if let Some(n) = self.tree.get(p) {
                return if n.perms.rights(who).any(need) {
                    Err(XsError::NoEnt)
                } else {
                    Err(XsError::Acces)
                };
            }
            cur = p;
        }
        Err(XsError::Acces)
    }

    /// Create `path` and its missing ancestors; new nodes copy the nearest existing
    /// ancestor's permissions, owned by the creator if it is unprivileged.
    fn create(&mut self, who: &Who, path: &str, value: Vec<u8>, q: &Quotas) -> XsResult<()> {
        let mut missing = alloc::vec![path];
        let mut cur = path;
        let ancestor = loop {
            let p = path::parent(cur).ok_or(XsError::Inval)?;
            if self.tree.contains_key(p) {
                break p;
            }
            missing.push(p);
            cur = p;
        };
        if !who.privileged {
            let have = self.counts.get(&who.dom).copied().unwrap_or(0);
            let new = u32::try_from(missing.len()).unwrap_or(u32::MAX);
            if have.saturating_add(new) > q.nodes {
                return Err(XsError::NoSpc);
            }
        }
        let mut perms = self
            .perms_of(Some(ancestor))
            .unwrap_or_else(|| Perms::owned_by(DomId::new(0), Access::None));
        if !who.privileged {
            perms.set_owner(who.dom);
        }
        self.bump(ancestor);
        let mut value = Some(value);
        for p in missing.iter().rev() {
            let v = if *p == path {
                value.take().unwrap_or_default()
            } else {
                Vec::new()
            };
            self.put(
                p,
                Node {
                    value: v,
                    perms: perms.clone(),
                    gen: 0,
                },
            );
        }
        self.change(path, Match::Subtree, perms, None);
        Ok(())
    }

    fn read(&mut self, who: &Who, path: &str) -> XsResult<Vec<u8>> {
        self.check(who, path, Rights::READ)?;
        Ok(self
            .tree
            .get(path)
            .map(|n| n.value.clone())
            .unwrap_or_default())
    }

    fn write(&mut self, who: &Who, path: &str, value: &[u8], q: &Quotas) -> XsResult<()> {
        if !who.privileged && value.len() > q.value_size {
            return Err(XsError::NoSpc);
        }
        match self.check(who, path, Rights::WRITE) {
            Ok(()) => {
                let Some(mut n) = self.tree.get(path).cloned() else {
                    return Err(XsError::NoEnt);
                };
                n.value = value.to_vec();
                let perms = n.perms.clone();
                self.put(path, n);
                self.change(path, Match::Subtree, perms, None);
                Ok(())
            }
            Err(XsError::NoEnt) => self.create(who, path, value.to_vec(), q),
            Err(e) => Err(e),
        }
    }

    fn mkdir(&mut self, who: &Who, path: &str, q: &Quotas) -> XsResult<()> {
        match self.check(who, path, Rights::WRITE) {
            Ok(()) => Ok(()),
            Err(XsError::NoEnt) => self.create(who, path, Vec::new(), q),
            Err(e) => Err(e),
        }
    }

    fn rm(&mut self, who: &Who, path: &str) -> XsResult<()> {
        match self.check(who, path, Rights::WRITE) {
            Ok(()) => {}
            Err(XsError::NoEnt) => {
                // Not there: fine if the parent is.
                let parent = path::parent(path).ok_or(XsError::NoEnt)?;
                return match self.get(parent) {
                    Some(_) => Ok(()),
                    None => Err(XsError::NoEnt),
                };
            }
            Err(e) => return Err(e),
        }
        let parent = path::parent(path).ok_or(XsError::Inval)?;
        let below = subtree_keys(self.tree, path);
        // Descendants first (deepest paths sort last), each to watches on exactly it.
        for k in below.iter().rev() {
            let parent_perms = self.perms_of(path::parent(k));
            if let Some(n) = self.del(k) {
                self.changes.push(Change {
                    path: k.clone(),
                    how: Match::Exact,
                    perms: n.perms,
                    parent_perms,
                    old_perms: None,
                });
            }
        }
        if let Some(n) = self.del(path) {
            self.change(path, Match::Subtree, n.perms, None);
        }
        self.bump(parent);
        Ok(())
    }

    fn directory(&mut self, who: &Who, path: &str) -> XsResult<Vec<String>> {
        self.check(who, path, Rights::READ)?;
        let prefix = below_prefix(path);
        Ok(self
            .tree
            .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(k, _)| k.get(prefix.len()..))
            .filter(|rest| !rest.is_empty() && !rest.contains('/'))
            .map(ToString::to_string)
            .collect())
    }

    fn get_perms(&mut self, who: &Who, path: &str) -> XsResult<Perms> {
        self.check(who, path, Rights::READ)?;
        self.tree
            .get(path)
            .map(|n| n.perms.clone())
            .ok_or(XsError::NoEnt)
    }

    fn set_perms(&mut self, who: &Who, path: &str, perms: &Perms, q: &Quotas) -> XsResult<()> {
        if !who.privileged && perms.entries().len() > q.perms {
            return Err(XsError::NoSpc);
        }
        self.check(who, path, Rights::WRITE.with(Rights::OWNER))?;
        let Some(mut n) = self.tree.get(path).cloned() else {
            return Err(XsError::NoEnt);
        };
        if !who.privileged && perms.owner() != n.perms.owner() {
            return Err(XsError::Perm);
        }
        let old = core::mem::replace(&mut n.perms, perms.clone());
        self.put(path, n);
        self.change(path, Match::Subtree, perms.clone(), Some(old));
        Ok(())
    }
}

/// The xenstore database with every domain's connection.
#[derive(Debug)]
pub struct Store {
    tree: Tree,
    counts: Counts,
    gen: u64,
    conns: BTreeMap<DomId, Conn>,
    special: BTreeMap<String, Perms>,
    targets: BTreeMap<DomId, DomId>,
    next_tx: u32,
    quotas: Quotas,
}

impl Default for Store {
    fn default() -> Store {
        Store::new()
    }
}

/// Domain 0, the privileged domain.
pub const DOM0: DomId = DomId::new(0);

fn ok_reply() -> Vec<u8> {
    b"OK\0".to_vec()
}

impl Store {
    /// An empty store: just `/` (owned by dom0, no access for others), the special nodes,
    /// and dom0's in-process connection.
    pub fn new() -> Store {
        let mut s = Store {
            tree: Tree::new(),
            counts: Counts::new(),
            gen: 0,
            conns: BTreeMap::new(),
            special: BTreeMap::new(),
            targets: BTreeMap::new(),
            next_tx: 1,
            quotas: Quotas::default(),
        };
        let root = Perms::owned_by(DOM0, Access::None);
        s.tree.insert(
            String::from("/"),
            Node {
                value: Vec::new(),
                perms: root.clone(),
                gen: 0,
            },
        );
        count_adjust(&mut s.counts, None, Some(DOM0));
        for sp in [path::INTRODUCE_DOMAIN, path::RELEASE_DOMAIN] {
            s.special.insert(String::from(sp), root.clone());
        }
        s.conns.insert(DOM0, Conn::new(false, None));
        s
    }

    /// The limits for unprivileged domains.
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Change the limits.
    pub fn set_quotas(&mut self, q: Quotas) {
        self.quotas = q;
    }

    fn who(&self, dom: DomId) -> Who {
        Who {
            dom,
            privileged: dom == DOM0,
            target: self.targets.get(&dom).copied(),
        }
    }

    fn canon(&self, dom: DomId, raw: &str, special: bool) -> XsResult<Canonical> {
        canonicalize(dom, raw, special, dom == DOM0)
    }

    /// Run `f` on the live tree (tx 0) or on `dom`'s transaction `tx`; changes made
    /// outside a transaction fire at once.
    fn with_view<R>(
        &mut self,
        dom: DomId,
        tx: u32,
        f: impl FnOnce(&mut View<'_>, &Quotas) -> XsResult<R>,
    ) -> XsResult<R> {
        let q = self.quotas;
        if tx == 0 {
            let mut changes = Vec::new();
            let r = {
                let mut v = View {
                    tree: &mut self.tree,
                    counts: &mut self.counts,
                    gen: &mut self.gen,
                    log: None,
                    changes: &mut changes,
                };
                f(&mut v, &q)
            };
            self.fire(&changes);
            r
        } else {
            let t = self
                .conns
                .get_mut(&dom)
                .and_then(|c| c.txs.get_mut(&tx))
                .ok_or(XsError::NoEnt)?;
            let mut v = View {
                tree: &mut t.tree,
                counts: &mut t.counts,
                gen: &mut self.gen,
                log: Some(&mut t.log),
                changes: &mut t.changes,
            };
            f(&mut v, &q)
        }
    }

    fn fire(&mut self, changes: &[Change]) {
        for ch in changes {
            for (&dom, conn) in self.conns.iter_mut() {
                let who = Who {
                    dom,
                    privileged: dom == DOM0,
                    target: self.targets.get(&dom).copied(),
                };
                let readable = |p: &Option<Perms>| {
                    p.as_ref().is_some_and(|p| p.rights(&who).has(Rights::READ))
                };
                // C xenstored's watch_permitted: the node (before or after) or its parent
                // must be readable by the watcher.
                let permitted = who.privileged
                    || ch.perms.rights(&who).has(Rights::READ)
                    || readable(&ch.old_perms)
                    || readable(&ch.parent_perms);
                if !permitted {
                    continue;
                }
                let mut hits: Vec<(String, String)> = Vec::new();
                for w in &conn.watches {
                    let hit = match ch.how {
                        Match::Subtree => is_child(&ch.path, &w.path, w.depth),
                        Match::Exact => ch.path == w.path,
                    };
                    if hit {
                        let p = ch.path.get(w.strip..).unwrap_or(&ch.path);
                        hits.push((p.to_string(), w.token.clone()));
                    }
                }
                for (p, t) in hits {
                    conn.deliver(&p, &t);
                }
            }
        }
    }

    /// `@introduceDomain` / `@releaseDomain` for `dom` (C's `fire_special_watches`):
    /// watches without a depth hear the bare name, watches with a depth (or on
    /// `@releaseDomain/<domid>`) hear `<name>/<domid>`.
    fn fire_special(&mut self, name: &str, dom: DomId) {
        let Some(perms) = self.special.get(name).cloned() else {
            return;
        };
        let with_id = format!("{name}/{}", dom.raw());
        for (&cdom, conn) in self.conns.iter_mut() {
            let who = Who {
                dom: cdom,
                privileged: cdom == DOM0,
                target: self.targets.get(&cdom).copied(),
            };
            if !perms.rights(&who).has(Rights::READ) {
                continue;
            }
            let mut hits: Vec<(String, String)> = Vec::new();
            for w in &conn.watches {
                if w.path == name && w.depth.is_none() {
                    hits.push((name.to_string(), w.token.clone()));
                } else if w.path == with_id
                    || (w.depth.is_some_and(|d| d > 0) && is_child(&with_id, &w.path, w.depth))
                {
                    hits.push((with_id.clone(), w.token.clone()));
                }
            }
            for (p, t) in hits {
                conn.deliver(&p, &t);
            }
        }
    }

    fn conn_or_local(&mut self, dom: DomId) -> &mut Conn {
        self.conns
            .entry(dom)
            .or_insert_with(|| Conn::new(false, None))
    }

    // ---------------------------------------------------------------------------------
    // In-process API (paths may be relative to the caller's /local/domain/<domid>).

    /// `READ`.
    pub fn read(&mut self, c: impl Into<Caller>, path: &str) -> XsResult<Vec<u8>> {
        let c = c.into();
        let p = self.canon(c.dom, path, false)?;
        let who = self.who(c.dom);
        self.with_view(c.dom, c.tx, |v, _| v.read(&who, &p.path))
    }

    /// `READ` as UTF-8 text (`EINVAL` if it is not).
    pub fn read_string(&mut self, c: impl Into<Caller>, path: &str) -> XsResult<String> {
        String::from_utf8(self.read(c, path)?).map_err(|_| XsError::Inval)
    }

    /// `WRITE` (missing parents are created).
    pub fn write(&mut self, c: impl Into<Caller>, path: &str, value: &[u8]) -> XsResult<()> {
        let c = c.into();
        let p = self.canon(c.dom, path, false)?;
        let who = self.who(c.dom);
        self.with_view(c.dom, c.tx, |v, q| v.write(&who, &p.path, value, q))
    }

    /// `MKDIR`.
    pub fn mkdir(&mut self, c: impl Into<Caller>, path: &str) -> XsResult<()> {
        let c = c.into();
        let p = self.canon(c.dom, path, false)?;
        let who = self.who(c.dom);
        self.with_view(c.dom, c.tx, |v, q| v.mkdir(&who, &p.path, q))
    }

    /// `RM` (the whole subtree; not an error if missing while its parent exists).
    pub fn rm(&mut self, c: impl Into<Caller>, path: &str) -> XsResult<()> {
        let c = c.into();
        let p = self.canon(c.dom, path, false)?;
        if p.path == "/" {
            return Err(XsError::Inval);
        }
        let who = self.who(c.dom);
        self.with_view(c.dom, c.tx, |v, _| v.rm(&who, &p.path))
    }

    /// `DIRECTORY`: the children's names.
    pub fn directory(&mut self, c: impl Into<Caller>, path: &str) -> XsResult<Vec<String>> {
        let c = c.into();
        let p = self.canon(c.dom, path, false)?;
        let who = self.who(c.dom);
        self.with_view(c.dom, c.tx, |v, _| v.directory(&who, &p.path))
    }

    /// `GET_PERMS` (also of `@introduceDomain` / `@releaseDomain`).
    pub fn get_perms(&mut self, c: impl Into<Caller>, path: &str) -> XsResult<Perms> {
        let c = c.into();
        let p = self.canon(c.dom, path, true)?;
        let who = self.who(c.dom);
        if p.is_special() {
            let perms = self.special.get(&p.path).ok_or(XsError::NoEnt)?;
            return if perms.rights(&who).has(Rights::READ) {
                Ok(perms.clone())
            } else {
                Err(XsError::Acces)
            };
        }
        self.with_view(c.dom, c.tx, |v, _| v.get_perms(&who, &p.path))
    }

    /// `SET_PERMS`: only the owner (or dom0) may, and only dom0 may change the owner.
    pub fn set_perms(&mut self, c: impl Into<Caller>, path: &str, perms: &Perms) -> XsResult<()> {
        let c = c.into();
        let p = self.canon(c.dom, path, true)?;
        let who = self.who(c.dom);
        if p.is_special() {
            let cur = self.special.get_mut(&p.path).ok_or(XsError::NoEnt)?;
            if !cur.rights(&who).has(Rights::WRITE.with(Rights::OWNER)) {
                return Err(XsError::Acces);
            }
            if !who.privileged && perms.owner() != cur.owner() {
                return Err(XsError::Perm);
            }
            *cur = perms.clone();
            return Ok(());
        }
        self.with_view(c.dom, c.tx, |v, q| v.set_perms(&who, &p.path, perms, q))
    }

    /// `WATCH` for `dom`'s connection (an in-process one is made on first use); the watch
    /// fires once at once. `depth` limits the levels below `path` that match.
    pub fn watch(
        &mut self,
        dom: DomId,
        path: &str,
        token: &str,
        depth: Option<u32>,
    ) -> XsResult<()> {
        let p = self.canon(dom, path, true)?;
        if token.contains('\0') {
            return Err(XsError::Inval);
        }
        let privileged = dom == DOM0;
        let watches = self.quotas.watches;
        let conn = self.conn_or_local(dom);
        if conn
            .watches
            .iter()
            .any(|w| w.path == p.path && w.token == token)
        {
            return Err(XsError::Exist);
        }
        if !privileged && conn.watches.len() >= watches {
            return Err(XsError::NoSpc);
        }
        let strip = if p.relative {
            domain_path(dom).len() + 1
        } else {
            0
        };
        conn.watches.push(Watch {
            path: p.path,
            token: token.to_string(),
            depth,
            strip,
        });
        // The immediate event, with the path as the client gave it.
        conn.deliver(path, token);
        Ok(())
    }

    /// `UNWATCH`.
    pub fn unwatch(&mut self, dom: DomId, path: &str, token: &str) -> XsResult<()> {
        let p = self.canon(dom, path, true)?;
        let conn = self.conns.get_mut(&dom).ok_or(XsError::NoEnt)?;
        let i = conn
            .watches
            .iter()
            .position(|w| w.path == p.path && w.token == token)
            .ok_or(XsError::NoEnt)?;
        conn.watches.remove(i);
        Ok(())
    }

    /// `RESET_WATCHES`: drop every watch and transaction of `dom`'s connection.
    pub fn reset_watches(&mut self, dom: DomId) {
        if let Some(c) = self.conns.get_mut(&dom) {
            c.watches.clear();
            c.txs.clear();
        }
    }

    /// Events queued for an in-process connection (dom0's), oldest first.
    pub fn take_events(&mut self, dom: DomId) -> Vec<WatchEvent> {
        self.conns
            .get_mut(&dom)
            .map(|c| c.events.drain(..).collect())
            .unwrap_or_default()
    }

    /// Watch events dropped for `dom` because its queue was full.
    pub fn dropped_events(&self, dom: DomId) -> u64 {
        self.conns.get(&dom).map_or(0, |c| c.dropped_events)
    }

    /// `TRANSACTION_START`: a transaction id for `dom` (never 0).
    pub fn transaction_start(&mut self, dom: DomId) -> XsResult<u32> {
        let privileged = dom == DOM0;
        let limit = self.quotas.transactions;
        let tree = self.tree.clone();
        let counts = self.counts.clone();
        let mut id = self.next_tx;
        // Pick an id no connection is using (bounded: there are far fewer than 2^32).
        for _ in 0..1024 {
            if id != 0 && !self.conns.values().any(|c| c.txs.contains_key(&id)) {
                break;
            }
            id = id.wrapping_add(1);
        }
        let conn = self.conn_or_local(dom);
        if !privileged && conn.txs.len() >= limit {
            return Err(XsError::NoSpc);
        }
        if id == 0 || conn.txs.contains_key(&id) {
            return Err(XsError::Busy);
        }
        conn.txs.insert(
            id,
            Tx {
                tree,
                counts,
                log: TxLog::default(),
                changes: Vec::new(),
            },
        );
        self.next_tx = id.wrapping_add(1);
        Ok(id)
    }

    /// `TRANSACTION_END`: commit (`EAGAIN` if a node it read or wrote changed meanwhile)
    /// or abort.
    pub fn transaction_end(&mut self, dom: DomId, tx: u32, commit: bool) -> XsResult<()> {
        let t = self
            .conns
            .get_mut(&dom)
            .and_then(|c| c.txs.remove(&tx))
            .ok_or(XsError::NoEnt)?;
        if !commit {
            return Ok(());
        }
        for (p, seen) in &t.log.accessed {
            if self.tree.get(p).map(|n| n.gen) != *seen {
                return Err(XsError::Again);
            }
        }
        if dom != DOM0 {
            let mut delta: i64 = 0;
            for p in &t.log.dirty {
                let old = self.tree.get(p).map(|n| n.perms.owner()) == Some(dom);
                let new = t.tree.get(p).map(|n| n.perms.owner()) == Some(dom);
                delta += i64::from(new) - i64::from(old);
            }
            let have = i64::from(self.counts.get(&dom).copied().unwrap_or(0));
            if delta > 0 && have + delta > i64::from(self.quotas.nodes) {
                return Err(XsError::NoSpc);
            }
        }
        for p in &t.log.dirty {
            let old = self.tree.remove(p);
            let new = t.tree.get(p).cloned();
            count_adjust(
                &mut self.counts,
                old.map(|n| n.perms.owner()),
                new.as_ref().map(|n| n.perms.owner()),
            );
            if let Some(mut n) = new {
                self.gen = self.gen.wrapping_add(1);
                n.gen = self.gen;
                self.tree.insert(p.clone(), n);
            }
        }
        self.fire(&t.changes);
        Ok(())
    }

    /// `INTRODUCE`: start talking to `dom` over its ring (`mfn`, unbound `port`). The
    /// caller (dom0's glue) maps the page and binds the port; see [`Store::introduced`].
    /// Fires `@introduceDomain` the first time.
    pub fn introduce(&mut self, dom: DomId, mfn: u64, port: u32) -> XsResult<()> {
        if dom == DOM0 || dom.is_reserved() || port == 0 {
            return Err(XsError::Inval);
        }
        let ring = RingInfo { mfn, port };
        let first = self.conns.get(&dom).is_none_or(|c| c.ring.is_none());
        // (Re-)introduction resets the connection, as C xenstored's domain_conn_reset.
        self.conns.insert(dom, Conn::new(true, Some(ring)));
        if first {
            self.fire_special(path::INTRODUCE_DOMAIN, dom);
        }
        Ok(())
    }

    /// `RELEASE` (also what dom0 does when a domain dies): drop `dom`'s connection, delete
    /// the nodes it owns, strip it from every permission list, fire `@releaseDomain`.
    pub fn release(&mut self, dom: DomId) -> XsResult<()> {
        if dom == DOM0 || dom.is_reserved() {
            return Err(XsError::Inval);
        }
        if self.conns.remove(&dom).is_none() {
            return Err(XsError::NoEnt);
        }
        self.targets.retain(|k, v| *k != dom && *v != dom);
        self.forget_domain(dom);
        self.fire_special(path::RELEASE_DOMAIN, dom);
        Ok(())
    }

    /// C xenstored's `domain_tree_remove`.
    fn forget_domain(&mut self, dom: DomId) {
        let keys: Vec<String> = self.tree.keys().cloned().collect();
        let mut removed: Option<String> = None;
        let root_who = self.who(DOM0);
        for k in keys {
            if removed.as_deref().is_some_and(|r| is_child(&k, r, None)) {
                continue;
            }
            let owned = self.tree.get(&k).is_some_and(|n| n.perms.owner() == dom);
            if owned && k != "/" {
                let _ = self.with_view(DOM0, 0, |v, _| v.rm(&root_who, &k));
                removed = Some(k);
            } else if let Some(n) = self.tree.get_mut(&k) {
                if n.perms.forget(dom) {
                    self.gen = self.gen.wrapping_add(1);
                    n.gen = self.gen;
                }
            }
        }
        for p in self.special.values_mut() {
            p.forget(dom);
        }
    }

    /// `IS_DOMAIN_INTRODUCED`.
    pub fn is_introduced(&self, dom: DomId) -> bool {
        dom == DOM0 || self.conns.get(&dom).is_some_and(|c| c.ring.is_some())
    }

    /// Every introduced domain and its ring.
    pub fn introduced(&self) -> Vec<(DomId, RingInfo)> {
        self.conns
            .iter()
            .filter_map(|(&d, c)| c.ring.map(|r| (d, r)))
            .collect()
    }

    /// `SET_TARGET`: `dom` acts with `target`'s rights too (a device model's domain).
    pub fn set_target(&mut self, dom: DomId, target: DomId) -> XsResult<()> {
        if dom.is_reserved() || target.is_reserved() {
            return Err(XsError::Inval);
        }
        self.targets.insert(dom, target);
        Ok(())
    }

    /// A wire connection for `dom` without a ring (another transport, or tests); replaces
    /// any existing connection.
    pub fn connect(&mut self, dom: DomId) {
        self.conns.insert(dom, Conn::new(true, None));
    }

    /// Pop the oldest wire message queued for `dom` (replies and watch events).
    pub fn take_output(&mut self, dom: DomId) -> Option<Vec<u8>> {
        let c = self.conns.get_mut(&dom)?;
        let m = c.out.pop_front()?;
        c.out_bytes = c.out_bytes.saturating_sub(m.len());
        c.io.reset_output();
        Some(m)
    }

    pub(crate) fn conn_mut(&mut self, dom: DomId) -> Option<&mut Conn> {
        self.conns.get_mut(&dom)
    }

    /// Number of nodes in the tree.
    pub fn node_count(&self) -> usize {
        self.tree.len()
    }

    /// Nodes owned by `dom`.
    pub fn owned_nodes(&self, dom: DomId) -> u32 {
        self.counts.get(&dom).copied().unwrap_or(0)
    }

    // ---------------------------------------------------------------------------------
    // Wire protocol.

    /// Handle one complete message (`xsd_sockmsg` + payload) from `dom`'s connection and
    /// queue the reply (and any watch events) on it. Malformed messages get an `ERROR`
    /// reply; a declared length over [`PAYLOAD_MAX`] is a protocol violation the caller
    /// must treat by breaking the connection ([`Broken`]).
    pub fn handle_message(&mut self, dom: DomId, msg: &[u8]) -> Result<(), Broken> {
        let at = self.conns.get(&dom).ok_or(Broken::NotConnected)?.out.len();
        let Some(h) = Header::parse(msg) else {
            let reply = error_message(Header::default(), XsError::Inval);
            self.conn_mut(dom)
                .ok_or(Broken::NotConnected)?
                .push_out(reply);
            return Ok(());
        };
        if usize::try_from(h.len).map_or(true, |l| l > PAYLOAD_MAX) {
            return Err(Broken::TooLong);
        }
        let payload = msg.get(HEADER_LEN..).unwrap_or_default();
        let reply = if usize::try_from(h.len).ok() != Some(payload.len()) {
            error_message(h, XsError::Inval)
        } else {
            match self.process(dom, h, payload) {
                Ok(p) if p.len() > PAYLOAD_MAX => error_message(h, XsError::TooBig),
                Ok(p) => wire::message(h.ty, h.req_id, h.tx_id, &p),
                Err(e) => error_message(h, e),
            }
        };
        // The reply goes before events this request caused (WATCH: "OK", then the event).
        // The connection may be gone (a domain releasing itself cannot; dom0 is local).
        if let Some(c) = self.conn_mut(dom) {
            c.insert_out(at, reply);
        }
        Ok(())
    }

    fn process(&mut self, dom: DomId, h: Header, p: &[u8]) -> XsResult<Vec<u8>> {
        use MsgType as T;
        let ty = MsgType::from_raw(h.ty).ok_or(XsError::NoSys)?;
        let privileged = dom == DOM0;
        let priv_only = matches!(
            ty,
            T::Control
                | T::Introduce
                | T::Release
                | T::IsDomainIntroduced
                | T::Resume
                | T::SetTarget
                | T::SetFeature
                | T::GetQuota
                | T::SetQuota
        );
        if matches!(ty, T::WatchEvent | T::Error) {
            return Err(XsError::NoSys);
        }
        if priv_only && !privileged {
            return Err(XsError::Acces);
        }
        let uses_tx = !matches!(ty, T::Watch | T::Unwatch);
        let tx = if uses_tx { h.tx_id } else { 0 };
        if tx != 0
            && !self
                .conns
                .get(&dom)
                .is_some_and(|c| c.txs.contains_key(&tx))
        {
            return Err(XsError::NoEnt);
        }
        let c = Caller { dom, tx };
        let arg = || wire::one_arg(p).ok_or(XsError::Inval);
        match ty {
            T::Read => self.read(c, arg()?),
            T::Write => {
                let nul = p.iter().position(|&b| b == 0).ok_or(XsError::Inval)?;
                let path = p
                    .get(..nul)
                    .and_then(|s| core::str::from_utf8(s).ok())
                    .ok_or(XsError::Inval)?;
                let value = p.get(nul + 1..).unwrap_or_default();
                self.write(c, path, value).map(|()| ok_reply())
            }
            T::Mkdir => self.mkdir(c, arg()?).map(|()| ok_reply()),
            T::Rm => self.rm(c, arg()?).map(|()| ok_reply()),
            T::Directory => {
                let names = self.directory(c, arg()?)?;
                let mut out = Vec::new();
                for n in names {
                    out.extend_from_slice(n.as_bytes());
                    out.push(0);
                }
                Ok(out)
            }
            T::GetPerms => self.get_perms(c, arg()?).map(|p| p.to_wire()),
            T::SetPerms => {
                let s = wire::strings(p).ok_or(XsError::Inval)?;
                let (path, entries) = s.split_first().ok_or(XsError::Inval)?;
                // A trailing empty string is the reserved "?" some clients send.
                let entries = entries.iter().copied().filter(|e| !e.is_empty());
                let perms = Perms::parse(entries)?;
                self.set_perms(c, path, &perms).map(|()| ok_reply())
            }
            T::Watch => {
                let s = wire::strings(p).ok_or(XsError::Inval)?;
                let (path, token, depth) = match s.as_slice() {
                    [path, token] => (*path, *token, None),
                    [path, token, depth] => {
                        let d = depth.parse::<u32>().map_err(|_| XsError::Inval)?;
                        (*path, *token, Some(d))
                    }
                    _ => return Err(XsError::Inval),
                };
                self.watch(dom, path, token, depth).map(|()| ok_reply())
            }
            T::Unwatch => {
                let s = wire::strings(p).ok_or(XsError::Inval)?;
                match s.as_slice() {
                    [path, token, ..] => self.unwatch(dom, path, token).map(|()| ok_reply()),
                    _ => Err(XsError::Inval),
                }
            }
            T::TransactionStart => {
                if h.tx_id != 0 {
                    return Err(XsError::Busy);
                }
                let id = self.transaction_start(dom)?;
                Ok(format!("{id}\0").into_bytes())
            }
            T::TransactionEnd => {
                let commit = match arg()? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(XsError::Inval),
                };
                if h.tx_id == 0 {
                    return Err(XsError::NoEnt);
                }
                self.transaction_end(dom, h.tx_id, commit)
                    .map(|()| ok_reply())
            }
            T::Introduce => {
                let s = wire::strings(p).ok_or(XsError::Inval)?;
                let [d, gfn, port, ..] = s.as_slice() else {
                    return Err(XsError::Inval);
                };
                let d = parse_domid(d)?;
                let gfn = gfn.parse::<i64>().map_err(|_| XsError::Inval)?;
                let mfn = u64::try_from(gfn).map_err(|_| XsError::Inval)?;
                let port = port.parse::<u32>().map_err(|_| XsError::Inval)?;
                self.introduce(d, mfn, port).map(|()| ok_reply())
            }
            T::Release => self.release(parse_domid(arg()?)?).map(|()| ok_reply()),
            T::GetDomainPath => {
                let d = parse_domid(arg()?)?;
                Ok(format!("{}\0", domain_path(d)).into_bytes())
            }
            T::IsDomainIntroduced => {
                let d = parse_domid(arg()?)?;
                Ok(if self.is_introduced(d) {
                    b"T\0"
                } else {
                    b"F\0"
                }
                .to_vec())
            }
            T::Resume => {
                let d = parse_domid(arg()?)?;
                if d == DOM0 {
                    return Err(XsError::Inval);
                }
                if self.is_introduced(d) {
                    Ok(ok_reply())
                } else {
                    Err(XsError::NoEnt)
                }
            }
            T::SetTarget => {
                let s = wire::strings(p).ok_or(XsError::Inval)?;
                let [d, t, ..] = s.as_slice() else {
                    return Err(XsError::Inval);
                };
                self.set_target(parse_domid(d)?, parse_domid(t)?)
                    .map(|()| ok_reply())
            }
            T::ResetWatches => {
                self.reset_watches(dom);
                Ok(ok_reply())
            }
            // Optional types (xenstore.txt): not offered.
            T::Control
            | T::DirectoryPart
            | T::GetFeature
            | T::SetFeature
            | T::GetQuota
            | T::SetQuota
            | T::WatchEvent
            | T::Error => Err(XsError::NoSys),
        }
    }
}

/// Why a connection must be dropped (the wire's "connection killed").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Broken {
    /// No connection for the domain.
    NotConnected,
    /// A header declared more than [`PAYLOAD_MAX`] bytes (`XENSTORE_ERROR_PROTO`).
    TooLong,
}

fn error_message(h: Header, e: XsError) -> Vec<u8> {
    let mut payload = Vec::from(e.name().as_bytes());
    payload.push(0);
    wire::message(MsgType::Error.raw(), h.req_id, h.tx_id, &payload)
}
