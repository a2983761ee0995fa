//! Helpers shared by the integration tests: a wire client over `Store::handle_message`
//! and a guest-side ring driver over `ArrayRing`.
#![allow(dead_code)]

use xenstored::ring::{self, ArrayRing, RingMemory};
use xenstored::wire::{self, Header, MsgType, HEADER_LEN};
use xenstored::{DomId, Store, DOM0};

pub fn d(n: u16) -> DomId {
    DomId::new(n)
}

/// A reply: type and payload (req_id/tx_id checked by `call`).
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    pub ty: u32,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.ty != MsgType::Error.raw() && self.payload == b"OK\0"
    }
    pub fn err(&self) -> Option<String> {
        (self.ty == MsgType::Error.raw())
            .then(|| String::from_utf8(self.payload.strip_suffix(b"\0").unwrap().to_vec()).unwrap())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.payload.clone()).unwrap()
    }
}

pub fn split(msg: &[u8]) -> (Header, Vec<u8>) {
    let h = Header::parse(msg).expect("header");
    assert_eq!(msg.len(), HEADER_LEN + h.len as usize);
    (h, msg[HEADER_LEN..].to_vec())
}

/// Send one request from `dom` and return its reply (the first queued message, which must
/// echo req_id and tx_id). Events stay queued.
pub fn call(s: &mut Store, dom: DomId, ty: MsgType, tx: u32, payload: &[u8]) -> Reply {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(100);
    let req_id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    s.handle_message(dom, &wire::message(ty.raw(), req_id, tx, payload))
        .expect("connection alive");
    // Events queued before the reply (e.g. a watch's immediate event from an earlier
    // call) are kept for `wire_events`.
    let (h, p) = loop {
        let (h, p) = split(&s.take_output(dom).expect("a reply"));
        if h.ty == MsgType::WatchEvent.raw() && h.req_id == 0 {
            STASH.with(|st| st.borrow_mut().push((dom, p)));
            continue;
        }
        break (h, p);
    };
    assert_eq!(h.req_id, req_id);
    assert_eq!(h.tx_id, tx);
    assert!(h.ty == ty.raw() || h.ty == MsgType::Error.raw());
    Reply {
        ty: h.ty,
        payload: p,
    }
}

/// `path\0` style payload from strings.
pub fn args(parts: &[&str]) -> Vec<u8> {
    let mut v = Vec::new();
    for p in parts {
        v.extend_from_slice(p.as_bytes());
        v.push(0);
    }
    v
}

pub fn write_payload(path: &str, value: &[u8]) -> Vec<u8> {
    let mut v = args(&[path]);
    v.extend_from_slice(value);
    v
}

thread_local! {
    static STASH: std::cell::RefCell<Vec<(DomId, Vec<u8>)>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn event_parts(p: &[u8]) -> (String, String) {
    let parts = wire::strings(p).unwrap();
    assert_eq!(parts.len(), 2);
    (parts[0].to_string(), parts[1].to_string())
}

/// Drain queued wire output of `dom`: every message must be a WATCH_EVENT.
pub fn wire_events(s: &mut Store, dom: DomId) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = STASH.with(|st| {
        let mut st = st.borrow_mut();
        let (mine, rest): (Vec<_>, Vec<_>) = st.drain(..).partition(|(d, _)| *d == dom);
        *st = rest;
        mine.iter().map(|(_, p)| event_parts(p)).collect()
    });
    while let Some(m) = s.take_output(dom) {
        let (h, p) = split(&m);
        assert_eq!(h.ty, MsgType::WatchEvent.raw());
        assert_eq!((h.req_id, h.tx_id), (0, 0));
        out.push(event_parts(&p));
    }
    out
}

pub fn local_events(s: &mut Store, dom: DomId) -> Vec<(String, String)> {
    s.take_events(dom)
        .into_iter()
        .map(|e| (e.path, e.token))
        .collect()
}

/// libxl's layout for a domU: `/local/domain/N` owned by dom0 readable by N, with a
/// guest-writable `data` and `device` area owned by N.
pub fn make_domain(s: &mut Store, n: u16) {
    let base = format!("/local/domain/{n}");
    s.mkdir(DOM0, &base).unwrap();
    s.set_perms(
        DOM0,
        &base,
        &xenstored::Perms::parse(
            ["n0".to_string(), format!("r{n}")]
                .iter()
                .map(|x| x.as_str()),
        )
        .unwrap(),
    )
    .unwrap();
    s.write(
        DOM0,
        &format!("{base}/name"),
        format!("guest{n}").as_bytes(),
    )
    .unwrap();
    s.write(DOM0, &format!("{base}/domid"), n.to_string().as_bytes())
        .unwrap();
    for sub in ["data", "device", "control"] {
        let p = format!("{base}/{sub}");
        s.mkdir(DOM0, &p).unwrap();
        s.set_perms(
            DOM0,
            &p,
            &xenstored::Perms::parse([format!("n{n}").as_str()]).unwrap(),
        )
        .unwrap();
    }
}

/// Guest side of a ring: writes requests into `req`, reads `rsp`.
pub struct Guest {
    pub page: ArrayRing,
    pub rx: Vec<u8>,
}

impl Guest {
    pub fn new() -> Guest {
        Guest {
            page: ArrayRing::default(),
            rx: Vec::new(),
        }
    }

    /// Start all four indices at `base` (to exercise wrap-around).
    pub fn with_indices(base: u32) -> Guest {
        let mut g = Guest::new();
        for off in [
            ring::REQ_CONS,
            ring::REQ_PROD,
            ring::RSP_CONS,
            ring::RSP_PROD,
        ] {
            g.page.store_u32(off, base);
        }
        g
    }

    /// Push as many bytes as fit; returns how many were written.
    pub fn send(&mut self, bytes: &[u8]) -> usize {
        let cons = self.page.load_u32(ring::REQ_CONS);
        let mut prod = self.page.load_u32(ring::REQ_PROD);
        let space = 1024 - prod.wrapping_sub(cons) as usize;
        let n = bytes.len().min(space);
        for &b in &bytes[..n] {
            self.page.0[ring::REQ + (prod & 1023) as usize] = b;
            prod = prod.wrapping_add(1);
        }
        self.page.store_u32(ring::REQ_PROD, prod);
        n
    }

    /// Take every byte in `rsp`.
    pub fn recv(&mut self) {
        let mut cons = self.page.load_u32(ring::RSP_CONS);
        let prod = self.page.load_u32(ring::RSP_PROD);
        assert!(prod.wrapping_sub(cons) <= 1024);
        while cons != prod {
            self.rx
                .push(self.page.0[ring::RSP + (cons & 1023) as usize]);
            cons = cons.wrapping_add(1);
        }
        self.page.store_u32(ring::RSP_CONS, cons);
    }

    /// Complete messages received so far.
    pub fn messages(&mut self) -> Vec<(Header, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some(h) = Header::parse(&self.rx) {
            let total = HEADER_LEN + h.len as usize;
            if self.rx.len() < total {
                break;
            }
            let msg: Vec<u8> = self.rx.drain(..total).collect();
            out.push((h, msg[HEADER_LEN..].to_vec()));
        }
        out
    }
}
