//! Wire-protocol round trips for every message type, permissions, transactions, watches,
//! malformed messages and quotas.

mod common;

use common::*;
use xenstored::wire::{self, MsgType as T};
use xenstored::{Broken, Perms, Quotas, Store, DOM0};

/// A store with dom0 on a wire connection (as the tests drive everything through
/// `handle_message`) and domUs 1 and 2 connected.
fn setup() -> Store {
    let mut s = Store::new();
    make_domain(&mut s, 1);
    make_domain(&mut s, 2);
    s.connect(DOM0);
    s.connect(d(1));
    s.connect(d(2));
    s
}

#[test]
fn read_write_mkdir_directory_rm() {
    let mut s = setup();
    let r = call(
        &mut s,
        DOM0,
        T::Write,
        0,
        &write_payload("/a/b/c", b"v\0bin"),
    );
    assert!(r.ok(), "{r:?}");
    let r = call(&mut s, DOM0, T::Read, 0, &args(&["/a/b/c"]));
    assert_eq!(
        (r.ty, r.payload.as_slice()),
        (T::Read.raw(), &b"v\0bin"[..])
    );
    // Missing parents were created, empty.
    assert_eq!(
        call(&mut s, DOM0, T::Read, 0, &args(&["/a/b"])).payload,
        b""
    );
    assert!(call(&mut s, DOM0, T::Mkdir, 0, &args(&["/a/d"])).ok());
    assert!(call(&mut s, DOM0, T::Mkdir, 0, &args(&["/a/d"])).ok());
    let r = call(&mut s, DOM0, T::Directory, 0, &args(&["/a"]));
    assert_eq!(r.payload, b"b\0d\0");
    // Children of the root and an empty directory.
    assert_eq!(
        call(&mut s, DOM0, T::Directory, 0, &args(&["/a/d"])).payload,
        b""
    );
    let root = call(&mut s, DOM0, T::Directory, 0, &args(&["/"])).text();
    assert_eq!(root, "a\0local\0");
    // A sibling whose name sorts between "b" and "b/..." does not confuse listings.
    assert!(call(&mut s, DOM0, T::Write, 0, &write_payload("/a/b-x", b"1")).ok());
    assert_eq!(
        call(&mut s, DOM0, T::Directory, 0, &args(&["/a"])).payload,
        b"b\0b-x\0d\0"
    );
    assert!(call(&mut s, DOM0, T::Rm, 0, &args(&["/a/b"])).ok());
    assert_eq!(
        call(&mut s, DOM0, T::Read, 0, &args(&["/a/b/c"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    assert_eq!(
        call(&mut s, DOM0, T::Read, 0, &args(&["/a/b-x"])).payload,
        b"1"
    );
    // rm of a missing node is fine if the parent exists, ENOENT otherwise; rm / is EINVAL.
    assert!(call(&mut s, DOM0, T::Rm, 0, &args(&["/a/zz"])).ok());
    assert_eq!(
        call(&mut s, DOM0, T::Rm, 0, &args(&["/q/zz"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    assert_eq!(
        call(&mut s, DOM0, T::Rm, 0, &args(&["/"])).err().unwrap(),
        "EINVAL"
    );
    // Overwrite.
    assert!(call(&mut s, DOM0, T::Write, 0, &write_payload("/a/d", b"")).ok());
    assert!(call(&mut s, DOM0, T::Write, 0, &write_payload("/a/d", b"xyz")).ok());
    assert_eq!(
        call(&mut s, DOM0, T::Read, 0, &args(&["/a/d"])).payload,
        b"xyz"
    );
}

#[test]
fn relative_paths_and_domain_queries() {
    let mut s = setup();
    assert_eq!(
        call(&mut s, d(1), T::Read, 0, &args(&["domid"])).payload,
        b"1"
    );
    assert!(call(&mut s, d(1), T::Write, 0, &write_payload("data/x", b"7")).ok());
    assert_eq!(s.read(DOM0, "/local/domain/1/data/x").unwrap(), b"7");
    // Dom0's relative paths are below /local/domain/0.
    assert!(call(
        &mut s,
        DOM0,
        T::Write,
        0,
        &write_payload("name", b"Domain-0")
    )
    .ok());
    assert_eq!(s.read(DOM0, "/local/domain/0/name").unwrap(), b"Domain-0");
    let r = call(&mut s, d(1), T::GetDomainPath, 0, &args(&["7"]));
    assert_eq!(r.payload, b"/local/domain/7\0");
    assert_eq!(
        call(&mut s, d(1), T::GetDomainPath, 0, &args(&["x"]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    // Privileged-only requests.
    for (ty, p) in [
        (T::IsDomainIntroduced, args(&["1"])),
        (T::Introduce, args(&["3", "100", "5"])),
        (T::Release, args(&["2"])),
        (T::Resume, args(&["2"])),
        (T::SetTarget, args(&["2", "1"])),
        (T::Control, args(&["check"])),
    ] {
        assert_eq!(
            call(&mut s, d(1), ty, 0, &p).err().unwrap(),
            "EACCES",
            "{ty:?}"
        );
    }
    assert_eq!(
        call(&mut s, DOM0, T::IsDomainIntroduced, 0, &args(&["3"])).payload,
        b"F\0"
    );
    assert!(call(&mut s, DOM0, T::Introduce, 0, &args(&["3", "4660", "5"])).ok());
    assert_eq!(
        call(&mut s, DOM0, T::IsDomainIntroduced, 0, &args(&["3"])).payload,
        b"T\0"
    );
    assert_eq!(
        s.introduced(),
        vec![(d(3), xenstored::RingInfo { mfn: 4660, port: 5 })]
    );
    assert!(call(&mut s, DOM0, T::Resume, 0, &args(&["3"])).ok());
    assert!(call(&mut s, DOM0, T::Release, 0, &args(&["3"])).ok());
    assert_eq!(
        call(&mut s, DOM0, T::Release, 0, &args(&["3"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    assert_eq!(
        call(&mut s, DOM0, T::Resume, 0, &args(&["3"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    for bad in [
        args(&["0", "1", "1"]),
        args(&["3", "1", "0"]),
        args(&["3", "-5", "1"]),
        args(&["32752", "1", "1"]),
        args(&["3", "1"]),
    ] {
        assert_eq!(
            call(&mut s, DOM0, T::Introduce, 0, &bad).err().unwrap(),
            "EINVAL"
        );
    }
    assert!(call(&mut s, DOM0, T::SetTarget, 0, &args(&["2", "1"])).ok());
    // Domain 2 now acts for domain 1 too.
    assert_eq!(
        call(&mut s, d(2), T::Read, 0, &args(&["/local/domain/1/domid"])).payload,
        b"1"
    );
    assert!(call(
        &mut s,
        d(2),
        T::Write,
        0,
        &write_payload("/local/domain/1/data/t", b"x")
    )
    .ok());
    // Optional, unsupported, removed and server-only types.
    for ty in [
        20u32,
        22,
        23,
        27,
        0xffff,
        T::WatchEvent.raw(),
        T::Error.raw(),
    ] {
        s.handle_message(DOM0, &wire::message(ty, 9, 0, b"x\0"))
            .unwrap();
        let (h, p) = split(&s.take_output(DOM0).unwrap());
        assert_eq!(
            (h.ty, h.req_id, p.as_slice()),
            (T::Error.raw(), 9, &b"ENOSYS\0"[..])
        );
    }
}

#[test]
fn permissions_isolate_domains() {
    let mut s = setup();
    // Each domU reads its own home, not the other's: EACCES, not ENOENT.
    assert_eq!(
        call(&mut s, d(1), T::Read, 0, &args(&["name"])).payload,
        b"guest1"
    );
    for (ty, p) in [
        (T::Read, args(&["/local/domain/2/name"])),
        (T::Read, args(&["/local/domain/2/nonexistent"])),
        (T::Directory, args(&["/local/domain/2"])),
        (T::GetPerms, args(&["/local/domain/2/data"])),
        (T::Write, write_payload("/local/domain/2/data/x", b"1")),
        (T::Write, write_payload("/local/domain/2/name", b"evil")),
        (T::Mkdir, args(&["/local/domain/2/data/y"])),
        (T::Rm, args(&["/local/domain/2/data"])),
        (T::Write, write_payload("/tool/x", b"1")),
        (T::Read, args(&["/local/domain/0"])),
        (T::SetPerms, args(&["/local/domain/2/data", "b1"])),
    ] {
        assert_eq!(
            call(&mut s, d(1), ty, 0, &p).err().as_deref(),
            Some("EACCES"),
            "{ty:?} {p:?}"
        );
    }
    assert_eq!(s.read(DOM0, "/local/domain/2/name").unwrap(), b"guest2");
    assert!(s.read(DOM0, "/local/domain/2/data/x").is_err());
    // A domU cannot write its own read-only home, but can its data area; a missing node
    // under a readable parent is ENOENT.
    assert_eq!(
        call(&mut s, d(1), T::Write, 0, &write_payload("name", b"x"))
            .err()
            .unwrap(),
        "EACCES"
    );
    assert_eq!(
        call(&mut s, d(1), T::Read, 0, &args(&["missing"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    // Nodes a domU creates are its own, inheriting the parent's other entries.
    assert!(call(&mut s, d(1), T::Write, 0, &write_payload("data/a/b", b"1")).ok());
    assert_eq!(
        call(&mut s, d(1), T::GetPerms, 0, &args(&["data/a/b"])).payload,
        b"n1\0"
    );
    // The owner may grant access but not give the node away.
    assert!(call(&mut s, d(1), T::SetPerms, 0, &args(&["data/a", "n1", "r2"])).ok());
    assert_eq!(
        call(&mut s, d(2), T::Read, 0, &args(&["/local/domain/1/data/a"])).payload,
        b""
    );
    assert_eq!(
        call(
            &mut s,
            d(2),
            T::Write,
            0,
            &write_payload("/local/domain/1/data/a", b"x")
        )
        .err()
        .unwrap(),
        "EACCES"
    );
    assert_eq!(
        call(&mut s, d(1), T::SetPerms, 0, &args(&["data/a", "n2"]))
            .err()
            .unwrap(),
        "EPERM"
    );
    assert_eq!(
        call(&mut s, d(1), T::SetPerms, 0, &args(&["data/a", "x2"]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    assert_eq!(
        call(&mut s, d(1), T::SetPerms, 0, &args(&["data/a"]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    // Dom0 may change the owner.
    assert!(call(
        &mut s,
        DOM0,
        T::SetPerms,
        0,
        &args(&["/local/domain/1/data/a", "b2"])
    )
    .ok());
    assert_eq!(
        call(
            &mut s,
            DOM0,
            T::GetPerms,
            0,
            &args(&["/local/domain/1/data/a"])
        )
        .payload,
        b"b2\0"
    );
    // Special nodes: readable perms for dom0, not for domUs until granted.
    assert_eq!(
        call(&mut s, d(1), T::GetPerms, 0, &args(&["@releaseDomain"]))
            .err()
            .unwrap(),
        "EACCES"
    );
    assert_eq!(
        call(&mut s, DOM0, T::GetPerms, 0, &args(&["@releaseDomain"])).payload,
        b"n0\0"
    );
    assert_eq!(
        call(&mut s, DOM0, T::Read, 0, &args(&["@releaseDomain"]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    assert_eq!(
        call(&mut s, DOM0, T::GetPerms, 0, &args(&["@other"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
}

#[test]
fn isolation_through_the_in_process_api() {
    let mut s = Store::new();
    make_domain(&mut s, 5);
    make_domain(&mut s, 6);
    assert_eq!(s.read_string(d(5), "name").unwrap(), "guest5");
    assert_eq!(
        s.read(d(5), "/local/domain/6/name"),
        Err(xenstored::XsError::Acces)
    );
    assert_eq!(
        s.write(d(6), "/local/domain/5/data/k", b"v"),
        Err(xenstored::XsError::Acces)
    );
    s.write(d(6), "data/k", b"v").unwrap();
    assert_eq!(
        s.read(d(5), "/local/domain/6/data/k"),
        Err(xenstored::XsError::Acces)
    );
    assert_eq!(s.directory(DOM0, "/local/domain").unwrap(), ["5", "6"]);
}

#[test]
fn transactions_commit_abort_and_conflict() {
    let mut s = setup();
    s.write(DOM0, "/local/domain/1/data/x", b"0").unwrap();
    let r = call(&mut s, d(1), T::TransactionStart, 0, b"\0");
    let tx: u32 = r.text().trim_end_matches('\0').parse().unwrap();
    assert_ne!(tx, 0);
    // Snapshot isolation: the write is invisible outside until commit.
    assert!(call(&mut s, d(1), T::Write, tx, &write_payload("data/x", b"1")).ok());
    assert!(call(
        &mut s,
        d(1),
        T::Write,
        tx,
        &write_payload("data/new/y", b"2")
    )
    .ok());
    assert_eq!(
        call(&mut s, d(1), T::Read, tx, &args(&["data/x"])).payload,
        b"1"
    );
    assert_eq!(
        call(&mut s, d(1), T::Read, 0, &args(&["data/x"])).payload,
        b"0"
    );
    assert_eq!(
        call(&mut s, d(1), T::Read, 0, &args(&["data/new/y"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    // Nested start, a foreign or unknown tx id.
    assert_eq!(
        call(&mut s, d(1), T::TransactionStart, tx, b"\0")
            .err()
            .unwrap(),
        "EBUSY"
    );
    assert_eq!(
        call(&mut s, d(2), T::Read, tx, &args(&["data"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    assert_eq!(
        call(&mut s, d(1), T::TransactionEnd, 0, &args(&["T"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    assert_eq!(
        call(&mut s, d(1), T::TransactionEnd, tx, &args(&["X"]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    assert!(call(&mut s, d(1), T::TransactionEnd, tx, &args(&["T"])).ok());
    assert_eq!(s.read(DOM0, "/local/domain/1/data/x").unwrap(), b"1");
    assert_eq!(s.read(DOM0, "/local/domain/1/data/new/y").unwrap(), b"2");
    assert_eq!(
        call(&mut s, d(1), T::Read, tx, &args(&["data/x"]))
            .err()
            .unwrap(),
        "ENOENT"
    );

    // Abort discards.
    let tx = s.transaction_start(d(1)).unwrap();
    s.write(xenstored::Caller::tx(d(1), tx), "data/x", b"9")
        .unwrap();
    assert!(call(&mut s, d(1), T::TransactionEnd, tx, &args(&["F"])).ok());
    assert_eq!(s.read(DOM0, "/local/domain/1/data/x").unwrap(), b"1");

    // Conflict: something the transaction read changed meanwhile.
    let tx = s.transaction_start(d(1)).unwrap();
    let c = xenstored::Caller::tx(d(1), tx);
    assert_eq!(s.read(c, "data/x").unwrap(), b"1");
    s.write(c, "data/z", b"z").unwrap();
    s.write(DOM0, "/local/domain/1/data/x", b"other").unwrap();
    assert_eq!(
        call(&mut s, d(1), T::TransactionEnd, tx, &args(&["T"]))
            .err()
            .unwrap(),
        "EAGAIN"
    );
    assert!(s.read(DOM0, "/local/domain/1/data/z").is_err());

    // Reading a missing node, which then appears, conflicts too; so does a directory
    // whose children changed.
    let tx = s.transaction_start(d(1)).unwrap();
    let c = xenstored::Caller::tx(d(1), tx);
    assert!(s.read(c, "data/later").is_err());
    s.write(d(1), "data/later", b"1").unwrap();
    assert_eq!(
        s.transaction_end(d(1), tx, true),
        Err(xenstored::XsError::Again)
    );
    let tx = s.transaction_start(d(1)).unwrap();
    let c = xenstored::Caller::tx(d(1), tx);
    s.directory(c, "data").unwrap();
    s.write(c, "/local/domain/1/data/mine", b"1").unwrap();
    s.write(d(1), "data/sibling", b"1").unwrap();
    assert_eq!(
        s.transaction_end(d(1), tx, true),
        Err(xenstored::XsError::Again)
    );

    // Unrelated changes do not conflict.
    let tx = s.transaction_start(d(1)).unwrap();
    let c = xenstored::Caller::tx(d(1), tx);
    assert_eq!(s.read(c, "data/x").unwrap(), b"other");
    s.write(c, "data/x", b"tx").unwrap();
    s.write(d(2), "data/unrelated", b"1").unwrap();
    s.transaction_end(d(1), tx, true).unwrap();
    assert_eq!(s.read(DOM0, "/local/domain/1/data/x").unwrap(), b"tx");

    // rm inside a transaction.
    let tx = s.transaction_start(d(1)).unwrap();
    let c = xenstored::Caller::tx(d(1), tx);
    s.rm(c, "data/new").unwrap();
    assert!(s.read(DOM0, "/local/domain/1/data/new/y").is_ok());
    s.transaction_end(d(1), tx, true).unwrap();
    assert!(s.read(DOM0, "/local/domain/1/data/new/y").is_err());
    assert!(s.read(DOM0, "/local/domain/1/data/new").is_err());
}

#[test]
fn transaction_watch_events_fire_at_commit() {
    let mut s = setup();
    s.watch(DOM0, "/local/domain/1/data", "tok", None).unwrap();
    s.take_output(DOM0).unwrap(); // immediate event
    let tx = s.transaction_start(d(1)).unwrap();
    s.write(xenstored::Caller::tx(d(1), tx), "data/q", b"1")
        .unwrap();
    assert!(wire_events(&mut s, DOM0).is_empty());
    s.transaction_end(d(1), tx, true).unwrap();
    assert_eq!(
        wire_events(&mut s, DOM0),
        [("/local/domain/1/data/q".to_string(), "tok".to_string())]
    );
    let tx = s.transaction_start(d(1)).unwrap();
    s.write(xenstored::Caller::tx(d(1), tx), "data/q", b"2")
        .unwrap();
    s.transaction_end(d(1), tx, false).unwrap();
    assert!(wire_events(&mut s, DOM0).is_empty());
}

#[test]
fn watches_fire_immediately_and_on_changes() {
    let mut s = setup();
    let r = call(&mut s, d(1), T::Watch, 0, &args(&["data", "t1"]));
    assert!(r.ok());
    // The reply came first; the immediate event is next, with the path as given.
    assert_eq!(wire_events(&mut s, d(1)), [("data".into(), "t1".into())]);
    assert_eq!(
        call(&mut s, d(1), T::Watch, 0, &args(&["data", "t1"]))
            .err()
            .unwrap(),
        "EEXIST"
    );
    assert!(call(
        &mut s,
        d(1),
        T::Watch,
        0,
        &args(&["/local/domain/1/data/a", "abs"])
    )
    .ok());
    wire_events(&mut s, d(1));
    s.write(DOM0, "/local/domain/1/data/a/b", b"1").unwrap();
    // Relative watches report relative paths; absolute ones absolute.
    assert_eq!(
        wire_events(&mut s, d(1)),
        [
            ("data/a/b".into(), "t1".into()),
            ("/local/domain/1/data/a/b".into(), "abs".into())
        ]
    );
    // Removing a parent: watches above get the removed path, the watch on exactly a
    // removed node gets its own path.
    s.rm(DOM0, "/local/domain/1/data/a").unwrap();
    let mut ev = wire_events(&mut s, d(1));
    ev.sort();
    assert_eq!(
        ev,
        [
            ("/local/domain/1/data/a".into(), "abs".into()),
            ("data/a".into(), "t1".into()),
        ]
    );
    // Permission changes fire too.
    s.mkdir(DOM0, "/local/domain/1/data/p").unwrap();
    wire_events(&mut s, d(1));
    s.set_perms(
        DOM0,
        "/local/domain/1/data/p",
        &Perms::parse(["n1"]).unwrap(),
    )
    .unwrap();
    assert_eq!(wire_events(&mut s, d(1)), [("data/p".into(), "t1".into())]);
    // Unwatch.
    assert!(call(&mut s, d(1), T::Unwatch, 0, &args(&["data", "t1"])).ok());
    assert_eq!(
        call(&mut s, d(1), T::Unwatch, 0, &args(&["data", "t1"]))
            .err()
            .unwrap(),
        "ENOENT"
    );
    s.write(DOM0, "/local/domain/1/data/z", b"1").unwrap();
    assert!(wire_events(&mut s, d(1)).is_empty());
    // Reset watches drops the rest (and transactions).
    assert!(call(&mut s, d(1), T::Watch, 0, &args(&["data", "t2"])).ok());
    let tx = s.transaction_start(d(1)).unwrap();
    assert!(call(&mut s, d(1), T::ResetWatches, 0, b"\0").ok());
    wire_events(&mut s, d(1));
    s.write(DOM0, "/local/domain/1/data/z", b"2").unwrap();
    assert!(wire_events(&mut s, d(1)).is_empty());
    assert_eq!(
        s.transaction_end(d(1), tx, true),
        Err(xenstored::XsError::NoEnt)
    );
}

#[test]
fn watch_depth_and_permission_filtering() {
    let mut s = setup();
    assert!(call(&mut s, DOM0, T::Watch, 0, &args(&["/w", "d1", "1"])).ok());
    assert!(call(&mut s, DOM0, T::Watch, 0, &args(&["/w", "d0", "0"])).ok());
    assert_eq!(
        call(&mut s, DOM0, T::Watch, 0, &args(&["/w", "bad", "-1"]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    wire_events(&mut s, DOM0);
    s.write(DOM0, "/w/a", b"").unwrap();
    s.write(DOM0, "/w/a/b", b"").unwrap();
    s.write(DOM0, "/w", b"x").unwrap();
    assert_eq!(
        wire_events(&mut s, DOM0),
        [
            ("/w/a".into(), "d1".into()),
            ("/w".into(), "d1".into()),
            ("/w".into(), "d0".into())
        ]
    );
    // A domU watching / hears only about nodes it (or whose parent it) can read.
    assert!(call(&mut s, d(2), T::Watch, 0, &args(&["/", "all"])).ok());
    wire_events(&mut s, d(2));
    s.write(d(1), "data/secret", b"s").unwrap();
    s.write(DOM0, "/local/domain/2/data/mine", b"m").unwrap();
    assert_eq!(
        wire_events(&mut s, d(2)),
        [("/local/domain/2/data/mine".into(), "all".into())]
    );
    // Watch arguments.
    for bad in [
        args(&["/x"]),
        b"/x\0tok".to_vec(),
        args(&["/x", "t", "1", "4"]),
    ] {
        assert_eq!(
            call(&mut s, d(2), T::Watch, 0, &bad).err().unwrap(),
            "EINVAL"
        );
    }
}

#[test]
fn special_watches() {
    let mut s = Store::new();
    s.watch(DOM0, "@introduceDomain", "intro", None).unwrap();
    s.watch(DOM0, "@releaseDomain", "rel", None).unwrap();
    s.watch(DOM0, "@releaseDomain", "rel-depth", Some(1))
        .unwrap();
    s.watch(DOM0, "@releaseDomain/7", "rel7", None).unwrap();
    // A domU may watch, but hears nothing without permission.
    s.watch(d(7), "@releaseDomain", "u", None).unwrap();
    assert_eq!(local_events(&mut s, DOM0).len(), 4);
    local_events(&mut s, d(7));
    s.introduce(d(7), 0x1234, 3).unwrap();
    assert_eq!(
        local_events(&mut s, DOM0),
        [("@introduceDomain".into(), "intro".into())]
    );
    // Re-introduction does not fire again.
    s.introduce(d(7), 0x1234, 3).unwrap();
    assert!(local_events(&mut s, DOM0).is_empty());
    s.introduce(d(8), 0x1235, 3).unwrap();
    local_events(&mut s, DOM0);
    s.watch(d(8), "@releaseDomain", "u8", None).unwrap();
    s.set_perms(DOM0, "@releaseDomain", &Perms::parse(["n0", "r8"]).unwrap())
        .unwrap();
    // d8 is introduced: its events go out on its ring as WATCH_EVENT messages.
    assert_eq!(
        wire_events(&mut s, d(8)),
        [("@releaseDomain".into(), "u8".into())]
    );
    s.release(d(7)).unwrap();
    let mut ev = local_events(&mut s, DOM0);
    ev.sort();
    assert_eq!(
        ev,
        [
            ("@releaseDomain".into(), "rel".into()),
            ("@releaseDomain/7".into(), "rel-depth".into()),
            ("@releaseDomain/7".into(), "rel7".into()),
        ]
    );
    assert_eq!(
        wire_events(&mut s, d(8)),
        [("@releaseDomain".into(), "u8".into())]
    );
    assert!(!s.is_introduced(d(7)));
    assert!(s.is_introduced(DOM0));
}

#[test]
fn release_removes_the_domains_nodes_and_acl_entries() {
    let mut s = Store::new();
    make_domain(&mut s, 3);
    s.introduce(d(3), 1, 1).unwrap();
    s.write(d(3), "data/a/b", b"1").unwrap();
    s.write(DOM0, "/backend/x", b"1").unwrap();
    s.set_perms(DOM0, "/backend/x", &Perms::parse(["n0", "r3"]).unwrap())
        .unwrap();
    s.watch(DOM0, "/local/domain/3/data", "w", None).unwrap();
    local_events(&mut s, DOM0);
    assert!(s.owned_nodes(d(3)) >= 4);
    s.release(d(3)).unwrap();
    assert_eq!(s.owned_nodes(d(3)), 0);
    assert!(s.read(DOM0, "/local/domain/3/data").is_err());
    assert_eq!(s.read(DOM0, "/local/domain/3/name").unwrap(), b"guest3");
    assert_eq!(
        s.get_perms(DOM0, "/backend/x").unwrap(),
        Perms::parse(["n0"]).unwrap()
    );
    assert!(local_events(&mut s, DOM0).contains(&("/local/domain/3/data".into(), "w".into())));
    assert_eq!(s.release(d(3)), Err(xenstored::XsError::NoEnt));
    assert_eq!(s.release(DOM0), Err(xenstored::XsError::Inval));
}

#[test]
fn malformed_messages() {
    let mut s = setup();
    // Short header.
    s.handle_message(d(1), &[1, 0, 0]).unwrap();
    let (h, p) = split(&s.take_output(d(1)).unwrap());
    assert_eq!((h.ty, p.as_slice()), (T::Error.raw(), &b"EINVAL\0"[..]));
    // Declared length differs from the bytes given.
    let mut m = wire::message(T::Read.raw(), 5, 0, b"data\0");
    m.pop();
    s.handle_message(d(1), &m).unwrap();
    let (h, p) = split(&s.take_output(d(1)).unwrap());
    assert_eq!(
        (h.ty, h.req_id, p.as_slice()),
        (T::Error.raw(), 5, &b"EINVAL\0"[..])
    );
    // Missing NULs, extra NULs, bad UTF-8, bad characters, empty payloads.
    for (ty, p) in [
        (T::Read, b"data".to_vec()),
        (T::Read, b"data\0x\0".to_vec()),
        (T::Read, b"\0".to_vec()),
        (T::Read, b"".to_vec()),
        (T::Read, b"da\xfft\0".to_vec()),
        (T::Read, b"da ta\0".to_vec()),
        (T::Read, b"data/\0".to_vec()),
        (T::Read, b"/a//b\0".to_vec()),
        (T::Write, b"novalue".to_vec()),
        (T::Write, b"@introduceDomain\0x".to_vec()),
        (T::Mkdir, b"".to_vec()),
        (T::Directory, b"x".to_vec()),
        (T::TransactionEnd, b"T".to_vec()),
        (T::GetDomainPath, b"".to_vec()),
        (T::SetPerms, b"data\0b1".to_vec()),
        (T::Unwatch, b"data\0".to_vec()),
    ] {
        assert_eq!(
            call(&mut s, d(1), ty, 0, &p).err().as_deref(),
            Some("EINVAL"),
            "{ty:?} {p:?}"
        );
    }
    // A too-long path.
    let long = format!("data/{}", "a".repeat(3000));
    assert_eq!(
        call(&mut s, d(1), T::Read, 0, &args(&[&long]))
            .err()
            .unwrap(),
        "EINVAL"
    );
    // Payload limit: exactly 4096 is fine, more breaks the connection.
    let mut big = args(&["data/big"]);
    big.resize(4096, b'x');
    assert!(call(&mut s, DOM0, T::Write, 0, &big).ok());
    let mut huge = wire::message(T::Write.raw(), 1, 0, &big);
    huge.push(b'y');
    huge[12..16].copy_from_slice(&4097u32.to_le_bytes());
    assert_eq!(s.handle_message(d(1), &huge), Err(Broken::TooLong));
    assert_eq!(s.handle_message(d(9), &big), Err(Broken::NotConnected));
    // A reply that would exceed the limit is E2BIG.
    for i in 0..700 {
        s.write(DOM0, &format!("/many/child{i:04}"), b"").unwrap();
    }
    assert_eq!(
        call(&mut s, DOM0, T::Directory, 0, &args(&["/many"]))
            .err()
            .unwrap(),
        "E2BIG"
    );
}

#[test]
fn quotas() {
    let mut s = setup();
    s.set_quotas(Quotas {
        nodes: s.owned_nodes(d(1)) + 3,
        watches: 2,
        transactions: 1,
        value_size: 8,
        perms: 2,
    });
    assert!(call(
        &mut s,
        d(1),
        T::Write,
        0,
        &write_payload("data/a", b"12345678")
    )
    .ok());
    assert_eq!(
        call(
            &mut s,
            d(1),
            T::Write,
            0,
            &write_payload("data/b", b"123456789")
        )
        .err()
        .unwrap(),
        "ENOSPC"
    );
    // Two more nodes fit, a path needing three does not (and creates nothing).
    assert_eq!(
        call(&mut s, d(1), T::Write, 0, &write_payload("data/x/y/z", b""))
            .err()
            .unwrap(),
        "ENOSPC"
    );
    assert!(s.read(DOM0, "/local/domain/1/data/x").is_err());
    assert!(call(&mut s, d(1), T::Write, 0, &write_payload("data/x/y", b"")).ok());
    assert_eq!(
        call(&mut s, d(1), T::Mkdir, 0, &args(&["data/q"]))
            .err()
            .unwrap(),
        "ENOSPC"
    );
    // Removing frees quota.
    assert!(call(&mut s, d(1), T::Rm, 0, &args(&["data/x"])).ok());
    assert!(call(&mut s, d(1), T::Mkdir, 0, &args(&["data/q"])).ok());
    // Watches.
    assert!(call(&mut s, d(1), T::Watch, 0, &args(&["data", "1"])).ok());
    assert!(call(&mut s, d(1), T::Watch, 0, &args(&["data", "2"])).ok());
    assert_eq!(
        call(&mut s, d(1), T::Watch, 0, &args(&["data", "3"]))
            .err()
            .unwrap(),
        "ENOSPC"
    );
    // Transactions.
    assert_eq!(
        call(&mut s, d(1), T::TransactionStart, 0, b"\0").ty,
        T::TransactionStart.raw()
    );
    assert_eq!(
        call(&mut s, d(1), T::TransactionStart, 0, b"\0")
            .err()
            .unwrap(),
        "ENOSPC"
    );
    // Permission list length.
    assert_eq!(
        call(
            &mut s,
            d(1),
            T::SetPerms,
            0,
            &args(&["data/a", "n1", "r2", "r3"])
        )
        .err()
        .unwrap(),
        "ENOSPC"
    );
    // Dom0 is not limited.
    for i in 0..20 {
        s.write(DOM0, &format!("/local/domain/1/data/d0-{i}"), &[b'x'; 100])
            .unwrap();
    }
    // Quota is also enforced at commit for nodes created in a transaction.
    let mut s = setup();
    s.set_quotas(Quotas {
        nodes: s.owned_nodes(d(1)) + 1,
        ..Quotas::default()
    });
    let tx = s.transaction_start(d(1)).unwrap();
    s.write(xenstored::Caller::tx(d(1), tx), "data/t", b"")
        .unwrap();
    s.write(d(1), "device/u", b"").unwrap();
    assert_eq!(
        s.transaction_end(d(1), tx, true),
        Err(xenstored::XsError::NoSpc)
    );
}

#[test]
fn event_queue_is_bounded() {
    let mut s = setup();
    s.watch(d(1), "data", "t", None).unwrap();
    for i in 0..(xenstored::store::MAX_QUEUED_EVENTS + 50) {
        s.write(DOM0, &format!("/local/domain/1/data/k{}", i % 10), b"x")
            .unwrap();
    }
    assert!(s.dropped_events(d(1)) > 0);
    assert_eq!(
        wire_events(&mut s, d(1)).len(),
        xenstored::store::MAX_QUEUED_EVENTS
    );
}
