//! `cargo xtask bench`: the project's benchmark table.
//!
//! Boots the test guest as dom0 with `scenario=bench` under TCG with `-icount shift=0`
//! (virtual time advances one nanosecond per instruction, so the numbers do not depend on
//! the host's load), `--runs` times. The guest prints `BENCH <name> <value> <unit>` lines
//! (medians of its own rounds, TSC converted to ns with its pvclock scale); the table shows
//! each benchmark's median over the runs and its ratio to the two baselines measured in
//! the same boots: a non-inlined function call and a 4 KiB memcpy.

use std::time::Duration;

use rxen_tests::{Accel, Config, Machine, TEST_RESULT};

use crate::args::Profile;
use crate::{build, require_qemu, Failure, Outcome};

/// `cargo xtask bench` options.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchOpts {
    /// Image profile (`--debug`; default release).
    pub profile: Profile,
    /// Boots (`--runs N`, default 3).
    pub runs: usize,
    /// Echo the guest's serial output (`--verbose`).
    pub verbose: bool,
    /// The parts to run (`--only hv,ring,blk`; default all three).
    pub parts: Parts,
}

/// The three parts of `cargo xtask bench`: the test guest's single-domain rows (`hv`),
/// the two-domain event-channel and ring rows (`ring`) and the block split driver (`blk`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// The test guest's `scenario=bench`.
    pub hv: bool,
    /// dom0 + the ringtest domU.
    pub ring: bool,
    /// dom0's disk against a domU through blkback.
    pub blk: bool,
}

impl Parts {
    const ALL: Parts = Parts {
        hv: true,
        ring: true,
        blk: true,
    };

    /// A comma-separated list of `hv`, `ring` and `blk`.
    fn parse(list: &str) -> Result<Parts, String> {
        let mut p = Parts {
            hv: false,
            ring: false,
            blk: false,
        };
        for part in list.split(',') {
            match part {
                "hv" => p.hv = true,
                "ring" => p.ring = true,
                "blk" => p.blk = true,
                other => return Err(format!("--only: unknown part `{other}` (hv, ring, blk)")),
            }
        }
        Ok(p)
    }
}

/// Parses the options after `cargo xtask bench`.
pub fn parse_opts(args: impl Iterator<Item = String>) -> Result<BenchOpts, String> {
    let mut o = BenchOpts {
        profile: Profile::Release,
        runs: 3,
        verbose: false,
        parts: Parts::ALL,
    };
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let (opt, inline) = match arg.split_once('=') {
            Some((o, v)) if arg.starts_with("--") => (o.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        match opt.as_str() {
            "--debug" | "--release" | "--verbose" if inline.is_none() => match opt.as_str() {
                "--debug" => o.profile = Profile::Debug,
                "--release" => o.profile = Profile::Release,
                _ => o.verbose = true,
            },
            "--runs" => {
                let v = inline
                    .or_else(|| args.next())
                    .ok_or("--runs needs a value")?;
                o.runs = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| format!("--runs: `{v}` is not a number from 1 to 100"))?;
            }
            "--only" => {
                let v = inline
                    .or_else(|| args.next())
                    .ok_or("--only needs a value")?;
                o.parts = Parts::parse(&v)?;
            }
            _ => return Err(format!("unknown option `{arg}` for `cargo xtask bench`")),
        }
    }
    Ok(o)
}

/// The median of `v` (mean of the middle two for an even count; 0 when empty).
pub fn median_f64(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// What the guest measures, in the order of the table (others it prints follow).
const EXPECTED: [(&str, &str); 5] = [
    ("hypercall_null", "ns"),
    ("mmu_update_per_entry_b512", "ns"),
    ("new_baseptr", "ns"),
    ("call", "ns"),
    ("memcpy_4k", "ns"),
];

/// Baseline names the guest prints.
const CALL: &str = "call";
const MEMCPY: &str = "memcpy_4k";

/// One benchmark's values over the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// `BENCH` name.
    pub name: String,
    /// Unit as printed.
    pub unit: String,
    /// One value per run that printed it.
    pub values: Vec<f64>,
}

/// Adds the `BENCH <name> <value> <unit>` lines of one run's output to `series` (in order
/// of first appearance). Returns how many lines were taken.
pub fn collect(output: &str, series: &mut Vec<Series>) -> usize {
    let mut n = 0;
    for line in output.lines() {
        let mut it = line.split_whitespace();
        if it.next() != Some("BENCH") {
            continue;
        }
        let (Some(name), Some(value), Some(unit)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.values.push(value),
            None => series.push(Series {
                name: name.to_owned(),
                unit: unit.to_owned(),
                values: vec![value],
            }),
        }
        n += 1;
    }
    n
}

/// The table: name | median | unit | × call | × memcpy 4 KiB.
pub fn table(series: &[Series], runs: usize) -> String {
    let med = |s: &Series| median_f64(&s.values);
    let base = |name: &str| {
        series
            .iter()
            .find(|s| s.name == name)
            .map(med)
            .filter(|v| *v > 0.0)
    };
    let (call, memcpy) = (base(CALL), base(MEMCPY));
    let ratio =
        |v: f64, b: Option<f64>| b.map_or_else(|| "-".to_owned(), |b| format!("{:.1}", v / b));
    let width = series
        .iter()
        .map(|s| s.name.len())
        .max()
        .unwrap_or(4)
        .max(9);
    let mut out = format!(
        "{:<width$} | {:>12} | {:<4} | {:>9} | {:>13} | runs\n",
        "benchmark", "median", "unit", "× call", "× memcpy 4KiB"
    );
    out.push_str(&format!(
        "{}-|-{}-|-{}-|-{}-|-{}-|-----\n",
        "-".repeat(width),
        "-".repeat(12),
        "-".repeat(4),
        "-".repeat(9),
        "-".repeat(13)
    ));
    let row = |s: &Series| {
        let v = med(s);
        // Ratios compare times only: a throughput (GB/s) row shows "-".
        let (c, m) = if s.unit == "ns" {
            (call, memcpy)
        } else {
            (None, None)
        };
        format!(
            "{:<width$} | {:>12.3} | {:<4} | {:>9} | {:>13} | {}/{runs}\n",
            s.name,
            v,
            s.unit,
            ratio(v, c),
            ratio(v, m),
            s.values.len()
        )
    };
    for (name, unit) in EXPECTED {
        match series.iter().find(|s| s.name == name) {
            Some(s) => out.push_str(&row(s)),
            None => out.push_str(&format!(
                "{name:<width$} | {:>12} | {unit:<4} | {:>9} | {:>13} | 0/{runs}\n",
                "not measured", "-", "-"
            )),
        }
    }
    for s in series
        .iter()
        .filter(|s| !EXPECTED.iter().any(|(n, _)| *n == s.name))
    {
        out.push_str(&row(s));
    }
    out
}

/// `cargo xtask bench`.
pub fn bench(opts: &BenchOpts) -> Outcome {
    let images = build(opts.profile)?;
    let version = require_qemu()?;
    eprintln!(
        "xtask: bench: {} run(s) of the test guest (scenario=bench) under TCG with -icount shift=0, QEMU {version}",
        opts.runs
    );
    let mut series = Vec::new();
    let mut blk_rows = Vec::new();
    for i in 1..=opts.runs {
        if opts.parts.hv {
            let mut cfg = Config::new(&images.xen, &images.test_guest);
            cfg.dom0_cmdline = "scenario=bench".to_owned();
            cfg.accel = Accel::Tcg;
            cfg.icount = true;
            cfg.echo = opts.verbose;
            let mut m = Machine::boot(cfg).map_err(|e| Failure::new(e.to_string()))?;
            let verdict = m
                .expect_line(TEST_RESULT, Duration::from_secs(600))
                .map_err(|e| Failure::new(format!("run {i}: {e}")))?;
            let _ = m.wait_exit(Duration::from_secs(30));
            let output = m.output();
            let n = collect(&output, &mut series);
            eprintln!(
                "xtask: run {i}/{}: {n} results, {}",
                opts.runs,
                verdict.trim()
            );
            if !verdict.contains("SUCCESS") {
                for line in output.lines().filter(|l| l.starts_with("FAIL ")) {
                    eprintln!("xtask:   {line}");
                }
            }
            m.kill();
        }
        // ringtest: dom0 + the ringtest domU (tools/xtask/src/ringbench.rs)
        if opts.parts.ring {
            match crate::ringbench::run(&images, opts.verbose, &mut series) {
                Ok(n) => eprintln!("xtask: run {i}/{}: {n} two-domain results", opts.runs),
                Err(e) => eprintln!("xtask: run {i}/{}: {}", opts.runs, e.message),
            }
        }
        // The block split driver against dom0's native disk (tools/xtask/src/blkbench.rs).
        if opts.parts.blk {
            match crate::blkbench::run(&images, opts.verbose, &mut blk_rows) {
                Ok(n) => eprintln!("xtask: run {i}/{}: {n} block I/O results", opts.runs),
                Err(e) => eprintln!("xtask: run {i}/{}: {}", opts.runs, e.message),
            }
        }
    }
    if series.is_empty() && blk_rows.is_empty() {
        return Err(Failure::new("the guests printed no BENCH lines"));
    }

    if opts.parts.hv || opts.parts.ring {
        print!("{}", table(&series, opts.runs));
        println!();
    }
    if opts.parts.blk {
        print!("{}", crate::blkbench::table(&blk_rows));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let p = |a: &[&str]| parse_opts(a.iter().map(|s| s.to_string()));
        assert_eq!(p(&[]).unwrap().runs, 3);
        assert_eq!(p(&["--runs", "5"]).unwrap().runs, 5);
        assert_eq!(p(&["--runs=7", "--debug"]).unwrap().profile, Profile::Debug);
        assert!(p(&["--verbose"]).unwrap().verbose);
        assert!(p(&["--runs", "0"]).is_err());
        assert!(p(&["--runs"]).is_err());
        assert!(p(&["--bogus"]).is_err());
        assert!(p(&["--debug=1"]).is_err());
        assert_eq!(p(&[]).unwrap().parts, Parts::ALL);
        let only = p(&["--only", "hv,blk"]).unwrap().parts;
        assert!(only.hv && !only.ring && only.blk);
        assert!(p(&["--only=ring"]).unwrap().parts.ring);
        assert!(p(&["--only", "disk"]).is_err());
        assert!(p(&["--only"]).is_err());
        assert_eq!(median_f64(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median_f64(&[]), 0.0);
    }

    #[test]
    fn parses_and_tabulates() {
        let mut s = Vec::new();
        let n = collect(
            "(XEN) hi\nBENCH call 2.000 ns\nBENCH hypercall_null 300.5 ns\nBENCH bad x ns\nok call\n",
            &mut s,
        );
        assert_eq!(n, 2);
        collect("BENCH call 4.000 ns\nBENCH memcpy_4k 100 ns\n", &mut s);
        assert_eq!(s[0].values, vec![2.0, 4.0]);
        assert_eq!(s[1].name, "hypercall_null");
        let t = table(&s, 2);
        assert!(t.contains("hypercall_null"), "{t}");
        // call median 3.0 → hypercall 300.5 / 3 = 100.2
        assert!(t.contains("100.2"), "{t}");
        assert!(t.contains("3.0"), "{t}");
        assert!(t.contains("1/2"), "{t}");
        collect("BENCH grant_copy_4k_gbps 1.500 GB/s\n", &mut s);
        let t = table(&s, 2);
        let gbps = t
            .lines()
            .find(|l| l.starts_with("grant_copy_4k_gbps"))
            .unwrap();
        assert!(gbps.contains("1.500") && gbps.contains("GB/s"), "{t}");
        assert_eq!(gbps.matches(" - ").count(), 2, "{t}");
    }
}
