//! Host tests of the xenstore client against a small fake xenstored sharing the same page.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use super::*;

const DOMID: u32 = 7;

/// What the fake server does besides answering correctly.
#[derive(Default)]
struct Quirks {
    /// Bytes of reply written per step (0 = as many as fit).
    chunk: usize,
    /// Vary the chunk size pseudo-randomly in 1..=chunk.
    random_chunks: bool,
    /// Fail the next commit with EAGAIN.
    eagain_once: bool,
    /// Answer nothing (requests are read and dropped).
    silent: bool,
    /// Do not even read requests.
    deaf: bool,
    /// Raw bytes to put in front of the next reply.
    inject_before_reply: Vec<u8>,
    /// Reply with this type instead of the request's.
    wrong_type: Option<u32>,
    /// Reply with this payload instead of the right one.
    payload: Option<Vec<u8>>,
}

struct FakeStore {
    req: Consumer,
    rsp: Producer,
    inbuf: Vec<u8>,
    out: VecDeque<u8>,
    nodes: BTreeMap<String, Vec<u8>>,
    watches: Vec<(String, String)>,
    quirks: Quirks,
    /// Requests answered while silent (replayed when `late_replies` is called).
    held: Vec<Vec<u8>>,
    seed: u32,
    steps: u64,
    notifies: u64,
}

fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = Header {
        ty,
        req_id,
        tx_id,
        len: payload.len() as u32,
    }
    .encode()
    .to_vec();
    v.extend_from_slice(payload);
    v
}

fn abs(path: &str) -> String {
    if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/local/domain/{DOMID}/{path}")
    }
}

impl FakeStore {
    fn new(page: SharedPage) -> FakeStore {
        let mut nodes = BTreeMap::new();
        nodes.insert(abs("domid"), DOMID.to_string().into_bytes());
        nodes.insert(abs("name"), b"demo".to_vec());
        FakeStore {
            req: Consumer::new(page, REQ),
            rsp: Producer::new(page, RSP),
            inbuf: Vec::new(),
            out: VecDeque::new(),
            nodes,
            watches: Vec::new(),
            quirks: Quirks::default(),
            held: Vec::new(),
            seed: 12345,
            steps: 0,
            notifies: 0,
        }
    }

    fn fire(&mut self, changed: &str) {
        let events: Vec<Vec<u8>> = self
            .watches
            .iter()
            .filter(|(p, _)| changed == p || changed.starts_with(&format!("{p}/")))
            .map(|(_, t)| {
                message(
                    msg::WATCH_EVENT,
                    0,
                    0,
                    format!("{changed}\0{t}\0").as_bytes(),
                )
            })
            .collect();
        for e in events {
            self.out.extend(e);
        }
    }

    fn reply(&mut self, h: Header, ty: u32, payload: &[u8]) {
        let inject = std::mem::take(&mut self.quirks.inject_before_reply);
        self.out.extend(inject);
        let ty = self.quirks.wrong_type.take().unwrap_or(ty);
        let payload = self.quirks.payload.take().unwrap_or(payload.to_vec());
        self.out.extend(message(ty, h.req_id, h.tx_id, &payload));
    }

    fn error(&mut self, h: Header, name: &str) {
        self.reply(h, msg::ERROR, format!("{name}\0").as_bytes());
    }

    fn handle(&mut self, h: Header, p: &[u8]) {
        let args: Vec<String> = p
            .split(|&b| b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        let path = abs(&args[0]);
        match h.ty {
            msg::READ => match self.nodes.get(&path).cloned() {
                Some(v) => self.reply(h, msg::READ, &v),
                None => self.error(h, "ENOENT"),
            },
            msg::WRITE => {
                let nul = p.iter().position(|&b| b == 0).unwrap();
                self.nodes.insert(path.clone(), p[nul + 1..].to_vec());
                self.reply(h, msg::WRITE, b"OK\0");
                self.fire(&path);
            }
            msg::MKDIR => {
                self.nodes.entry(path).or_default();
                self.reply(h, msg::MKDIR, b"OK\0");
            }
            msg::RM => {
                let gone: Vec<String> = self
                    .nodes
                    .keys()
                    .filter(|k| **k == path || k.starts_with(&format!("{path}/")))
                    .cloned()
                    .collect();
                if gone.is_empty() {
                    self.error(h, "ENOENT");
                    return;
                }
                for k in gone {
                    self.nodes.remove(&k);
                }
                self.reply(h, msg::RM, b"OK\0");
                self.fire(&path);
            }
            msg::DIRECTORY => {
                let prefix = format!("{path}/");
                let mut names: Vec<String> = self
                    .nodes
                    .keys()
                    .filter_map(|k| k.strip_prefix(&prefix))
                    .map(|r| r.split('/').next().unwrap().to_string())
                    .collect();
                names.dedup();
                let mut v = Vec::new();
                for n in names {
                    v.extend_from_slice(n.as_bytes());
                    v.push(0);
                }
                self.reply(h, msg::DIRECTORY, &v);
            }
            msg::WATCH => {
                self.watches.push((path.clone(), args[1].clone()));
                self.reply(h, msg::WATCH, b"OK\0");
                let t = args[1].clone();
                self.out.extend(message(
                    msg::WATCH_EVENT,
                    0,
                    0,
                    format!("{path}\0{t}\0").as_bytes(),
                ));
            }
            msg::UNWATCH => {
                self.watches
                    .retain(|(wp, t)| !(wp == &path && *t == args[1]));
                self.reply(h, msg::UNWATCH, b"OK\0");
            }
            msg::TRANSACTION_START => self.reply(h, msg::TRANSACTION_START, b"42\0"),
            msg::TRANSACTION_END => {
                if std::mem::take(&mut self.quirks.eagain_once) {
                    self.error(h, "EAGAIN");
                } else {
                    self.reply(h, msg::TRANSACTION_END, b"OK\0");
                }
            }
            _ => self.error(h, "ENOSYS"),
        }
    }

    /// Take request bytes, answer complete requests, push replies. Returns whether
    /// anything happened.
    fn step(&mut self) -> bool {
        self.steps += 1;
        let mut progress = false;
        let mut buf = [0u8; 4096];
        while !self.quirks.deaf {
            let n = self.req.read(&mut buf).expect("client indices sane");
            if n == 0 {
                break;
            }
            progress = true;
            self.inbuf.extend_from_slice(&buf[..n]);
        }
        while self.inbuf.len() >= HEADER_LEN {
            let h = Header::decode(self.inbuf[..HEADER_LEN].try_into().unwrap());
            let total = HEADER_LEN + h.len as usize;
            if self.inbuf.len() < total {
                break;
            }
            let p: Vec<u8> = self.inbuf[HEADER_LEN..total].to_vec();
            self.inbuf.drain(..total);
            if self.quirks.silent {
                self.held.push(message(h.ty, h.req_id, h.tx_id, &p));
            } else {
                self.handle(h, &p);
            }
        }
        let mut limit = match self.quirks.chunk {
            0 => usize::MAX,
            c if self.quirks.random_chunks => {
                self.seed = self.seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                1 + (self.seed >> 16) as usize % c
            }
            c => c,
        };
        while limit > 0 && !self.out.is_empty() {
            let (a, _) = self.out.as_slices();
            let take = a.len().min(limit);
            let n = self.rsp.write(&a[..take]).expect("client indices sane");
            if n == 0 {
                break;
            }
            progress = true;
            self.out.drain(..n);
            limit -= n;
        }
        progress
    }

    /// Answer the requests received while silent (late replies).
    fn late_replies(&mut self) {
        self.quirks.silent = false;
        for m in std::mem::take(&mut self.held) {
            let h = Header::decode(m[..HEADER_LEN].try_into().unwrap());
            self.handle(h, &m[HEADER_LEN..]);
        }
    }
}

#[derive(Clone)]
struct Fake(Rc<RefCell<FakeStore>>);

impl XsTransport for Fake {
    fn notify(&mut self) -> Result<(), XsError> {
        self.0.borrow_mut().notifies += 1;
        Ok(())
    }

    fn wait(&mut self) -> Result<(), XsError> {
        // A few idle rounds are allowed (chunks of a reply still queued); then time out.
        for _ in 0..3 {
            if self.0.borrow_mut().step() {
                return Ok(());
            }
        }
        Err(XsError::Timeout)
    }
}

fn setup() -> (SharedPage, Xenbus<Fake>, Fake) {
    let page = SharedPage::leak_host_page();
    setup_on(page)
}

fn setup_on(page: SharedPage) -> (SharedPage, Xenbus<Fake>, Fake) {
    let fake = Fake(Rc::new(RefCell::new(FakeStore::new(page))));
    (page, Xenbus::new(page, fake.clone()), fake)
}

#[test]
fn header_and_layout() {
    let h = Header {
        ty: msg::WRITE,
        req_id: 0x01020304,
        tx_id: 9,
        len: 5,
    };
    let b = h.encode();
    assert_eq!(&b[..8], &[11, 0, 0, 0, 4, 3, 2, 1]);
    assert_eq!(Header::decode(&b), h);
    assert_eq!(
        (REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD),
        (2048, 2052, 2056, 2060)
    );
    assert_eq!(XsErrno::from_payload(b"ENOENT\0"), XsErrno::ENOENT);
    assert_eq!(XsErrno::from_payload(b"EPERM"), XsErrno::EPERM);
    assert_eq!(XsErrno::from_payload(b"EWHAT\0"), XsErrno::Unknown);
    assert_eq!(XsErrno::E2BIG.name(), "E2BIG");
}

#[test]
fn read_write_rm_directory() {
    let (page, mut xb, _) = setup();
    let mut buf = [0u8; 256];
    assert_eq!(xb.read_str(TxId::NONE, "name", &mut buf), Ok("demo"));
    assert_eq!(xb.read_u64(TxId::NONE, "domid"), Ok(7));
    assert_eq!(
        xb.read_str(TxId::NONE, "/local/domain/7/name", &mut buf),
        Ok("demo")
    );
    xb.write(TxId::NONE, "data/a", b"1").unwrap();
    xb.write(TxId::NONE, "data/b", b"two").unwrap();
    xb.mkdir(TxId::NONE, "data/c").unwrap();
    let names: Vec<&str> = xb
        .directory(TxId::NONE, "data", &mut buf)
        .unwrap()
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    xb.rm(TxId::NONE, "data/b").unwrap();
    assert_eq!(
        xb.read(TxId::NONE, "data/b", &mut buf),
        Err(XsError::Server(XsErrno::ENOENT))
    );
    assert_eq!(
        xb.rm(TxId::NONE, "nope"),
        Err(XsError::Server(XsErrno::ENOENT))
    );
    // Unknown request types get ENOSYS and the connection carries on.
    assert_eq!(
        xb.request(99, TxId::NONE, &[b"\0"], &mut buf),
        Err(XsError::Server(XsErrno::ENOSYS))
    );
    assert_eq!(xb.read_str(TxId::NONE, "data/b", &mut buf).ok(), None);
    assert_eq!(xb.read_str(TxId::NONE, "data/a", &mut buf), Ok("1"));
    // The indices on the page moved in step.
    assert_eq!(page.load_u32(REQ_PROD), page.load_u32(REQ_CONS));
    assert_eq!(page.load_u32(RSP_PROD), page.load_u32(RSP_CONS));
}

#[test]
fn split_messages_one_byte_at_a_time() {
    let (_, mut xb, fake) = setup();
    fake.0.borrow_mut().quirks.chunk = 1;
    let mut buf = [0u8; 64];
    assert_eq!(xb.read_str(TxId::NONE, "name", &mut buf), Ok("demo"));
    xb.write(TxId::NONE, "x", b"y").unwrap();
    assert_eq!(xb.read_str(TxId::NONE, "x", &mut buf), Ok("y"));
}

#[test]
fn random_splits_and_wrap_with_large_values() {
    // Start near the top of the u32 index space so the indices wrap too.
    let page = SharedPage::leak_host_page();
    for off in [REQ_CONS, REQ_PROD, RSP_CONS, RSP_PROD] {
        page.store_u32(off, u32::MAX - 100);
    }
    let (_, mut xb, fake) = setup_on(page);
    fake.0.borrow_mut().quirks.chunk = 700;
    fake.0.borrow_mut().quirks.random_chunks = true;
    let mut buf = vec![0u8; PAYLOAD_MAX];
    for i in 0..60usize {
        // Values larger than the 1 KiB ring: every message needs several ring fills.
        let len = (i * 397) % 3000 + 1;
        let value: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        let path = format!("data/k{i}");
        xb.write(TxId::NONE, &path, &value).unwrap();
        assert_eq!(xb.read(TxId::NONE, &path, &mut buf).unwrap(), &value[..]);
    }
    assert!(page.load_u32(RSP_PROD) < 1 << 20, "indices wrapped");
    assert_eq!(xb.stats(), XsStats::default());
}

#[test]
fn largest_request_and_too_long_ones() {
    let (_, mut xb, _) = setup();
    let path = "data/big";
    let max = vec![b'v'; PAYLOAD_MAX - path.len() - 1];
    xb.write(TxId::NONE, path, &max).unwrap();
    let mut buf = vec![0u8; PAYLOAD_MAX];
    assert_eq!(
        xb.read(TxId::NONE, path, &mut buf).unwrap().len(),
        max.len()
    );
    let over = vec![b'v'; PAYLOAD_MAX - path.len()];
    assert_eq!(xb.write(TxId::NONE, path, &over), Err(XsError::TooLong));
    let long_path = "p".repeat(ABS_PATH_MAX + 1);
    assert_eq!(
        xb.read(TxId::NONE, &long_path, &mut buf),
        Err(XsError::TooLong)
    );
    assert_eq!(
        xb.read(TxId::NONE, "a\0b", &mut buf),
        Err(XsError::InvalidArgument)
    );
    assert_eq!(
        xb.read(TxId::NONE, "", &mut buf),
        Err(XsError::InvalidArgument)
    );
    // Nothing was sent for the refused requests: the connection is fine.
    assert_eq!(xb.read_str(TxId::NONE, "name", &mut buf), Ok("demo"));
}

#[test]
fn reply_too_long_for_the_buffer_keeps_the_connection() {
    let (_, mut xb, _) = setup();
    let mut small = [0u8; 2];
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut small),
        Err(XsError::ReplyTooLong)
    );
    let mut buf = [0u8; 16];
    assert_eq!(xb.read_str(TxId::NONE, "name", &mut buf), Ok("demo"));
}

#[test]
fn watch_events_are_queued_during_requests() {
    let (_, mut xb, fake) = setup();
    let mut ev = [0u8; 256];
    xb.watch("control/shutdown", "shutdown").unwrap();
    // The immediate event that every new watch fires.
    let e = xb.next_event(&mut ev).unwrap().unwrap();
    assert_eq!(e.path, "/local/domain/7/control/shutdown");
    assert_eq!(e.token, "shutdown");
    assert!(xb.next_event(&mut ev).is_none());
    // Events raised by our own writes arrive mixed with the replies.
    xb.write(TxId::NONE, "control/shutdown", b"poweroff")
        .unwrap();
    let mut buf = [0u8; 32];
    assert_eq!(
        xb.read_str(TxId::NONE, "control/shutdown", &mut buf),
        Ok("poweroff")
    );
    // And events injected in front of a reply, from another writer.
    fake.0.borrow_mut().quirks.inject_before_reply = message(
        msg::WATCH_EVENT,
        0,
        0,
        b"/local/domain/7/control/shutdown/x\0shutdown\0",
    );
    xb.write(TxId::NONE, "data/z", b"1").unwrap();
    let e = xb.next_event(&mut ev).unwrap().unwrap();
    assert_eq!(
        (e.path, e.token),
        ("/local/domain/7/control/shutdown", "shutdown")
    );
    let e = xb.next_event(&mut ev).unwrap().unwrap();
    assert_eq!(e.path, "/local/domain/7/control/shutdown/x");
    assert!(xb.next_event(&mut ev).is_none());
    xb.unwatch("control/shutdown", "shutdown").unwrap();
    xb.write(TxId::NONE, "control/shutdown", b"").unwrap();
    assert!(xb.next_event(&mut ev).is_none());
}

#[test]
fn wait_event_blocks_until_one_arrives() {
    let (_, mut xb, fake) = setup();
    xb.watch("control", "c").unwrap();
    let mut ev = [0u8; 256];
    assert!(xb.next_event(&mut ev).is_some());
    // Another writer changes the node; the event is still in the server's queue.
    fake.0.borrow_mut().fire("/local/domain/7/control/shutdown");
    xb.wait_event().unwrap();
    let e = xb.next_event(&mut ev).unwrap().unwrap();
    assert_eq!(e.path, "/local/domain/7/control/shutdown");
    assert_eq!(xb.wait_event(), Err(XsError::Timeout));
}

#[test]
fn event_queue_overflow_is_reported_once() {
    let (_, mut xb, fake) = setup();
    {
        let mut f = fake.0.borrow_mut();
        let mut inject = Vec::new();
        for i in 0..100 {
            let p = format!("/local/domain/7/data/{i:0200}\0t\0");
            inject.extend(message(msg::WATCH_EVENT, 0, 0, p.as_bytes()));
        }
        f.quirks.inject_before_reply = inject;
    }
    let mut buf = [0u8; 64];
    xb.read_str(TxId::NONE, "name", &mut buf).unwrap();
    let mut ev = [0u8; 512];
    let mut got = 0;
    let mut lost = 0;
    while let Some(r) = xb.next_event(&mut ev) {
        match r {
            Ok(_) => got += 1,
            Err(XsError::EventsLost) => lost += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(lost, 1);
    assert!(got > 10 && got < 100, "{got}");
    assert_eq!(xb.stats().lost_events, 100 - got);
    // An event longer than the caller's buffer is dropped and reported.
    fake.0.borrow_mut().fire("/local/domain/7/data");
    xb.watch("data", "t").unwrap();
    let mut tiny = [0u8; 4];
    assert_eq!(xb.next_event(&mut tiny), Some(Err(XsError::EventsLost)));
}

#[test]
fn transactions() {
    let (_, mut xb, fake) = setup();
    let tx = xb.transaction_start().unwrap();
    assert_eq!(tx.raw(), 42);
    xb.write(tx, "control/shutdown", b"").unwrap();
    xb.transaction_end(tx, true).unwrap();
    fake.0.borrow_mut().quirks.eagain_once = true;
    let tx = xb.transaction_start().unwrap();
    assert_eq!(
        xb.transaction_end(tx, true),
        Err(XsError::Server(XsErrno::EAGAIN))
    );
    xb.transaction_end(tx, false).unwrap();
}

#[test]
fn stray_and_malformed_messages_are_dropped() {
    let (_, mut xb, fake) = setup();
    let mut inject = message(msg::READ, 0xdead, 0, b"stale");
    inject.extend(message(msg::WATCH_EVENT, 0, 0, b"no-terminator"));
    inject.extend(message(msg::WATCH_EVENT, 0, 0, b"\0empty-path\0"));
    inject.extend(message(msg::WATCH_EVENT, 0, 0, b"/bad\xff\0t\0"));
    fake.0.borrow_mut().quirks.inject_before_reply = inject;
    let mut buf = [0u8; 64];
    assert_eq!(xb.read_str(TxId::NONE, "name", &mut buf), Ok("demo"));
    let s = xb.stats();
    assert_eq!((s.stray_replies, s.bad_events, s.lost_events), (1, 3, 0));
    let mut ev = [0u8; 64];
    assert!(xb.next_event(&mut ev).is_none());
}

#[test]
fn wrong_reply_type_is_an_error() {
    let (_, mut xb, fake) = setup();
    fake.0.borrow_mut().quirks.wrong_type = Some(msg::DIRECTORY);
    let mut buf = [0u8; 64];
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut buf),
        Err(XsError::BadReply)
    );
    // The reply was consumed whole: the stream is still framed.
    assert_eq!(xb.read_str(TxId::NONE, "name", &mut buf), Ok("demo"));
    // Payloads that do not match what the request type promises.
    for bad in [&b"x1\0"[..], b"0\0", b"", b"99999999999\0"] {
        fake.0.borrow_mut().quirks.payload = Some(bad.to_vec());
        assert_eq!(xb.transaction_start(), Err(XsError::BadReply));
    }
    fake.0.borrow_mut().quirks.payload = Some(b"NO\0".to_vec());
    assert_eq!(xb.write(TxId::NONE, "a", b"b"), Err(XsError::BadReply));
    fake.0.borrow_mut().quirks.payload = Some(b"12x".to_vec());
    assert_eq!(xb.read_u64(TxId::NONE, "domid"), Err(XsError::BadReply));
    fake.0.borrow_mut().quirks.payload = Some(b"a\0\xff\0".to_vec());
    assert!(matches!(
        xb.directory(TxId::NONE, "data", &mut buf),
        Err(XsError::BadReply)
    ));
    assert_eq!(xb.read_u64(TxId::NONE, "domid"), Ok(7));
}

#[test]
fn timeout_then_late_reply_is_dropped() {
    let (_, mut xb, fake) = setup();
    fake.0.borrow_mut().quirks.silent = true;
    let mut buf = [0u8; 64];
    assert_eq!(xb.read(TxId::NONE, "name", &mut buf), Err(XsError::Timeout));
    fake.0.borrow_mut().late_replies();
    assert_eq!(xb.read_u64(TxId::NONE, "domid"), Ok(7));
    assert_eq!(xb.stats().stray_replies, 1);
}

#[test]
fn timeout_while_sending_breaks_the_connection() {
    let (page, mut xb, fake) = setup();
    fake.0.borrow_mut().quirks.deaf = true;
    // Larger than the request ring: the client must wait for xenstored to consume.
    assert_eq!(
        xb.write(TxId::NONE, "data/v", &[b'v'; 2000]),
        Err(XsError::Timeout)
    );
    assert_eq!(page.load_u32(REQ_PROD), RING_SIZE);
    assert_eq!(xb.broken(), Some(XsError::Timeout));
    fake.0.borrow_mut().quirks.deaf = false;
    let mut buf = [0u8; 16];
    assert_eq!(xb.read(TxId::NONE, "name", &mut buf), Err(XsError::Timeout));
}

#[test]
fn hostile_response_index_breaks_the_connection() {
    let (page, mut xb, _) = setup();
    page.store_u32(RSP_PROD, 5000);
    let mut buf = [0u8; 64];
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut buf),
        Err(XsError::BadIndex)
    );
    assert_eq!(xb.broken(), Some(XsError::BadIndex));
    // Sticky: nothing more is sent or read.
    let before = page.load_u32(REQ_PROD);
    assert_eq!(xb.write(TxId::NONE, "a", b"b"), Err(XsError::BadIndex));
    assert_eq!(page.load_u32(REQ_PROD), before);
    let mut ev = [0u8; 64];
    assert_eq!(xb.next_event(&mut ev), Some(Err(XsError::BadIndex)));
}

#[test]
fn hostile_request_index_breaks_the_connection() {
    let (page, mut xb, _) = setup();
    page.store_u32(REQ_CONS, 2000); // consumer beyond what we produced
    let mut buf = [0u8; 64];
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut buf),
        Err(XsError::BadIndex)
    );
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut buf),
        Err(XsError::BadIndex)
    );
}

#[test]
fn oversized_reply_length_breaks_the_connection() {
    let (_, mut xb, fake) = setup();
    let mut h = Header {
        ty: msg::READ,
        req_id: 1,
        tx_id: 0,
        len: PAYLOAD_MAX as u32 + 1,
    }
    .encode()
    .to_vec();
    h.extend_from_slice(b"junk");
    fake.0.borrow_mut().quirks.inject_before_reply = h;
    let mut buf = [0u8; 64];
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut buf),
        Err(XsError::Protocol)
    );
    assert_eq!(
        xb.read(TxId::NONE, "name", &mut buf),
        Err(XsError::Protocol)
    );
}

#[test]
fn garbage_stream_never_panics() {
    // Whatever bytes xenstored sends, the client returns (an error or a value).
    let mut seed = 99u32;
    for round in 0..200 {
        let (_, mut xb, fake) = setup();
        let mut junk = Vec::new();
        for _ in 0..(round % 50) * 7 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = (seed >> 16) as u8;
            // Bias towards small header values so some frames parse.
            junk.push(if seed & 0x3 == 0 { b } else { b % 20 });
        }
        fake.0.borrow_mut().quirks.inject_before_reply = junk;
        let mut buf = [0u8; 128];
        let _ = xb.read(TxId::NONE, "name", &mut buf);
        let _ = xb.transaction_start();
        let mut ev = [0u8; 128];
        while let Some(Ok(_)) = xb.next_event(&mut ev) {}
    }
}

#[test]
fn directory_entries_parse() {
    let e = Entries {
        rest: b"a\0bb\0\0c",
    };
    assert_eq!(e.collect::<Vec<_>>(), ["a", "bb", "c"]);
    assert_eq!(
        WatchEvent::parse(b"/p\0tok"),
        Some(WatchEvent {
            path: "/p",
            token: "tok"
        })
    );
    assert_eq!(WatchEvent::parse(b"/p"), None);
}
