//! The block split driver end to end: QEMU's virtio-blk disks driven by dom0's native
//! driver, served by dom0's blkback to the Rust domU's blkfront. What a domU writes is
//! checked in the disk image files on the host after QEMU has exited.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blkfront::pattern_byte;
use rxen_tests::shell::{console_expect_for, create, domid, free_memory, power_off, run, run_for};
use rxen_tests::{Config, Disk, Machine, Result, DOM0_PROMPT};

/// Booting to the prompt with disks under TCG.
const BOOT: Duration = Duration::from_secs(180);
/// A domU's block exerciser from `xl create` to its verdict.
const EXERCISE: Duration = Duration::from_secs(300);
/// dom0's own disk commands.
const DISK_COMMAND: Duration = Duration::from_secs(120);
const SECTOR: u64 = 512;

/// A scratch directory for this test's disk images.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rxen-blk-{}-{test}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A zeroed raw image of `mib` MiB.
fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let f = fs::File::create(&path).expect("image");
    f.set_len(mib << 20).expect("image size");
    path
}

/// Boots dom0 with `disks` and waits for its prompt.
fn boot(disks: Vec<Disk>) -> Result<Machine> {
    let mut cfg = Config::dom0();
    cfg.disks = disks;
    let mut m = Machine::boot(cfg)?;
    m.expect(DOM0_PROMPT, BOOT)?;
    Ok(m)
}

/// Starts a Rust domU named `name` on `disk` (an xl disk spec) whose block exerciser runs
/// `extra`, and returns its console up to the exerciser's verdict; fails on `blk: FAIL`.
fn exercise(m: &mut Machine, name: &str, disk: &str, extra: &str) -> Result<String> {
    create(
        m,
        "/etc/xen/demo.cfg",
        &format!("name=\"{name}\" memory=32 disk=['{disk}'] extra=\"{extra}\""),
    )?;
    verdict(m, name)
}

/// Waits on `name`'s console for `blk: all ok` (or a failure).
fn verdict(m: &mut Machine, name: &str) -> Result<String> {
    let out = console_expect_for(m, name, "blk: all ok", EXERCISE)?;
    assert!(!out.contains("blk: FAIL"), "{name}:\n{out}");
    Ok(out)
}

/// The `(sector, sectors)` of every `blk: write S+N ok` line.
fn written(console: &str) -> Vec<(u64, u64)> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.split("blk: write ").nth(1)?.strip_suffix(" ok")?;
            let (s, n) = rest.split_once('+')?;
            Some((s.trim().parse().ok()?, n.trim().parse().ok()?))
        })
        .collect()
}

/// Checks that `image` holds the pattern with `seed` in every range.
fn assert_pattern(image: &Path, seed: u64, ranges: &[(u64, u64)]) {
    let data = fs::read(image).expect("read image");
    assert!(!ranges.is_empty(), "nothing was written");
    for &(sector, n) in ranges {
        for s in sector..sector + n {
            let at = (s * SECTOR) as usize;
            let got = &data[at..at + SECTOR as usize];
            let bad = (0..SECTOR as u32).find(|&o| got[o as usize] != pattern_byte(seed, s, o));
            assert!(
                bad.is_none(),
                "{}: sector {s} byte {:?} differs from the pattern (seed {seed})",
                image.display(),
                bad
            );
        }
    }
}

/// The connected state (4) of a domain's vbd in `xl block-list`.
fn block_list_states(m: &mut Machine, name: &str) -> Result<Vec<(u32, i64)>> {
    let out = run(m, &format!("xl block-list {name}"))?;
    Ok(out
        .lines()
        .skip_while(|l| !l.starts_with("Vdev"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.first()?.parse().ok()?, f.get(3)?.parse().ok()?))
        })
        .collect())
}

#[test]
fn domu_writes_land_in_the_image_and_a_read_only_disk_refuses_writes() -> Result<()> {
    let dir = scratch("rw");
    let rw = image(&dir, "rw.img", 64);
    let ro = image(&dir, "ro.img", 16);
    // The read-only disk starts with known contents, which must survive.
    let ro_before: Vec<u8> = (0..16u64 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(&ro, &ro_before).expect("fill ro image");
    let mut m = boot(vec![
        Disk::new(&rw),
        Disk {
            path: ro.clone(),
            read_only: true,
        },
    ])?;
    let lspci = run(&mut m, "lspci")?;
    assert_eq!(
        lspci.matches("1af4:1042").count(),
        2,
        "two modern virtio-blk functions:\n{lspci}"
    );
    let disks = run(&mut m, "disk list")?;
    assert!(disks.contains("vda") && disks.contains("vdb"), "{disks}");

    let out = exercise(
        &mut m,
        "writer",
        "phy:vda,xvda,w",
        "blk=verify blkseed=7 blksector=2048",
    )?;
    let ranges = written(&out);
    assert!(out.contains("blk: flush ok"), "{out}");
    assert_eq!(block_list_states(&mut m, "writer")?, [(51712, 4)]);
    // A second domU on the second disk while the first still runs.
    let out = exercise(&mut m, "reader", "phy:vdb,xvda,r", "blk=ro blksector=8")?;
    assert!(out.contains("refused ok"), "{out}");
    // The read-only disk cannot be given to the writer too, nor vda to anyone else.
    let e = run(&mut m, "xl block-attach writer phy:vdb,xvdb,w")?;
    assert!(e.contains("already in use by domain"), "{e}");
    run(&mut m, "xl destroy reader")?;
    run(&mut m, "xl destroy writer")?;
    power_off(m)?;

    assert_pattern(&rw, 7, &ranges);
    assert!(ranges.iter().any(|&(s, _)| s == 2048), "{ranges:?}");
    let ro_after = fs::read(&ro).expect("read ro image");
    assert!(ro_after == ro_before, "the read-only image changed");
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn dom0_native_disk_io_reaches_the_image() -> Result<()> {
    let dir = scratch("native");
    let img = image(&dir, "d.img", 16);
    let mut m = boot(vec![Disk::new(&img)])?;
    let out = run_for(&mut m, "disk write vda 4096 96 5", DISK_COMMAND)?;
    assert!(!out.to_lowercase().contains("error"), "{out}");
    let out = run_for(&mut m, "disk verify vda 4096 96 5", DISK_COMMAND)?;
    assert!(out.contains("verify ok"), "{out}");
    let out = run_for(&mut m, "disk flush vda", DISK_COMMAND)?;
    assert!(!out.to_lowercase().contains("error"), "{out}");
    // A verify against another seed must notice.
    let out = run_for(&mut m, "disk verify vda 4096 96 6", DISK_COMMAND)?;
    assert!(!out.contains("verify ok"), "{out}");
    power_off(m)?;
    assert_pattern(&img, 5, &[(4096, 96)]);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn a_hostile_frontend_gets_errors_while_another_domu_does_io() -> Result<()> {
    let dir = scratch("hostile");
    let a = image(&dir, "a.img", 32);
    let b = image(&dir, "b.img", 32);
    let mut m = boot(vec![Disk::new(&a), Disk::new(&b)])?;
    let out = exercise(&mut m, "evil", "phy:vda,xvda,w", "blk=hostile")?;
    for step in [
        "bad grant ref: refused",
        "nr_segments 200 direct: refused",
        "first_sect > last_sect: refused",
        "sector past the end: refused",
        "unknown operation: refused",
        "read into a read-only grant: refused",
        "good request after them: ok",
        "ring index out of range: backend closed the device ok",
    ] {
        assert!(out.contains(step), "no `{step}`:\n{out}");
    }
    // The backend survived and another domU's I/O is untouched.
    let out = exercise(
        &mut m,
        "good",
        "phy:vdb,xvda,w",
        // Through persistent grants (the other domUs here go copyless).
        "blk=verify blkseed=11 blksector=64 blkpersistent",
    )?;
    assert!(out.contains("persistent true"), "{out}");
    let ranges = written(&out);
    run(&mut m, "xl destroy evil")?;
    run(&mut m, "xl destroy good")?;
    power_off(m)?;
    assert_pattern(&b, 11, &ranges);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn destroy_with_io_in_flight_leaks_nothing_and_the_disk_is_reusable() -> Result<()> {
    let dir = scratch("inflight");
    let d = image(&dir, "d.img", 64);
    let mut m = boot(vec![Disk::new(&d)])?;
    let free_before = free_memory(&mut m)?;
    create(
        &mut m,
        "/etc/xen/demo.cfg",
        "name=\"busy\" memory=32 disk=['phy:vda,xvda,w'] extra=\"blk=bench\"",
    )?;
    // Destroy it in the middle of its benchmark (requests in flight at queue depth 32).
    console_expect_for(&mut m, "busy", "BENCH blk domu seq1m read qd1", EXERCISE)?;
    let id = domid(&mut m, "busy")?;
    run(&mut m, "xl destroy busy")?;
    // The backend lets go of the disk: a new domain gets it and its I/O works.
    let out = exercise(
        &mut m,
        "after",
        "phy:vda,xvda,w",
        "blk=verify blkseed=3 blksector=16",
    )?;
    let ranges = written(&out);
    run(&mut m, "xl destroy after")?;
    // Every page of the destroyed domains came back (dom0 unmapped all grants).
    let mut free_after = free_memory(&mut m)?;
    for _ in 0..10 {
        if free_after == free_before {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        free_after = free_memory(&mut m)?;
    }
    assert_eq!(free_after, free_before, "memory of domain {id} leaked");
    power_off(m)?;
    assert_pattern(&d, 3, &ranges);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

#[test]
fn block_attach_list_and_detach() -> Result<()> {
    let dir = scratch("attach");
    let a = image(&dir, "a.img", 16);
    let b = image(&dir, "b.img", 16);
    let mut m = boot(vec![Disk::new(&a), Disk::new(&b)])?;
    exercise(
        &mut m,
        "dev",
        "phy:vda,xvda,w",
        "blk=verify blkseed=2 blksector=0",
    )?;
    let e = run(&mut m, "xl block-attach dev phy:vdz,xvdb,w")?;
    assert!(e.contains("no such block device"), "{e}");
    assert_eq!(run(&mut m, "xl block-attach dev phy:vdb,xvdb,r")?, "");
    let states = block_list_states(&mut m, "dev")?;
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(states.contains(&(51712, 4)), "{states:?}");
    assert_eq!(run(&mut m, "xl block-detach dev xvdb")?, "");
    assert_eq!(run(&mut m, "xl block-detach dev xvda")?, "");
    // Both go (the connected one once blkback has closed it, the other at once or at
    // the toolstack's timeout).
    let mut left = block_list_states(&mut m, "dev")?;
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        left = block_list_states(&mut m, "dev")?;
    }
    assert!(left.is_empty(), "still attached: {left:?}");
    // vda is free for another domain.
    exercise(
        &mut m,
        "next",
        "phy:vda,xvda,w",
        "blk=verify blkseed=4 blksector=0",
    )?;
    power_off(m)?;
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

/// Debian's stock kernel as a domU, with Linux's own xen-blkfront (a module in Debian's
/// kernel, loaded from an initramfs by `tests/linux-init`) against rxen's blkback: the
/// pattern it writes, flushes and reads back with O_DIRECT lands in the image. Needs
/// dom0's ramdisk with Debian's kernel (`RXEN_DOM0_DEBIAN_RAMDISK`, which `cargo xtask
/// test` sets when it has the kernel: `cargo xtask debian-kernel`, done by CI).
#[test]
fn linux_blkfront_writes_through_blkback() -> Result<()> {
    let Some(ramdisk) = std::env::var_os("RXEN_DOM0_DEBIAN_RAMDISK") else {
        eprintln!(
            "linux_blkfront_writes_through_blkback: SKIPPED (no RXEN_DOM0_DEBIAN_RAMDISK; \
             `cargo xtask debian-kernel` fetches Debian's kernel)"
        );
        return Ok(());
    };
    let dir = scratch("linux");
    let img = image(&dir, "vda.img", 64);
    let mut cfg = Config::dom0();
    cfg.ramdisk = Some(ramdisk.into());
    cfg.memory_mib = 1024;
    cfg.xen_cmdline = format!("{} dom0_mem=256M", cfg.xen_cmdline);
    cfg.disks = vec![Disk::new(&img)];
    let mut m = Machine::boot(cfg)?;
    m.expect(DOM0_PROMPT, BOOT)?;
    m.send_line("xl create /etc/xen/debian-blk.cfg -c")?;
    let verdict = loop {
        let line = m.expect_line("linux-init: ", EXERCISE)?;
        if line.contains("PASS") || line.contains("FAIL") {
            break line;
        }
    };
    assert!(verdict.contains("linux-init: PASS"), "{verdict}");
    // It powers off; on_poweroff="destroy" takes it away and the console detaches.
    m.expect(DOM0_PROMPT, EXERCISE)?;
    let list = run(&mut m, "xl list")?;
    assert!(
        !list.contains("debian-blk"),
        "the domain is still there:\n{list}"
    );
    power_off(m)?;
    // blktest=7,2048,64 in /etc/xen/debian-blk.cfg.
    assert_pattern(&img, 7, &[(2048, 64)]);
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}
