//! The kernel series' own selftest, `tools/testing/selftests/relay/`
//! (`relay_mmap` on the kselftest harness and its client module
//! `lib/test_relay.c`), run as kselftest runs it: `relay_mmap.sh` loads
//! `test_relay` in each of its seven channel configurations and runs the
//! harness for each. A series build puts `test_relay.ko`, `relay_mmap` and
//! `relay_mmap.sh` among the modules (`cargo xtask kernel`); stock kernels
//! have no `test_relay`.

use std::process::Command;

use relay_vm_tests::{dmesg_tail, in_vm, kernel_reports_since, modules_dir};

/// Written to the kernel log before the run: reports after it are this test's.
const MARKER: &str = "relay selftest start";

/// The harness's closing line, `# Totals: pass:N fail:N xfail:N xpass:N
/// skip:N error:N`, as (pass, fail, skip, error).
fn totals(line: &str) -> Option<(u64, u64, u64, u64)> {
    let rest = line.trim().strip_prefix("# Totals: ")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|f| f.strip_prefix(name)?.strip_prefix(':')?.parse().ok())
    };
    Some((
        field("pass")?,
        field("fail")?,
        field("skip")?,
        field("error")?,
    ))
}

#[test]
fn totals_are_parsed() {
    assert_eq!(
        totals("# Totals: pass:7 fail:0 xfail:0 xpass:0 skip:2 error:0"),
        Some((7, 0, 2, 0))
    );
    assert_eq!(totals("ok 1 relay.get_info"), None);
}

#[test]
fn kselftest_relay_mmap_passes_in_every_configuration() {
    if !in_vm() {
        return;
    }
    let dir = modules_dir();
    let module = dir.join("test_relay.ko");
    if !module.exists() {
        eprintln!("no test_relay.ko in {}: not a series build", dir.display());
        return;
    }
    std::fs::write("/dev/kmsg", MARKER).expect("writing to /dev/kmsg");
    let out = Command::new("sh")
        .arg(dir.join("relay_mmap.sh"))
        .env("TEST_RELAY_KO", &module)
        .output()
        .expect("running relay_mmap.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "relay_mmap.sh failed ({}):\n{stdout}\n{stderr}\n{}",
        out.status,
        dmesg_tail(60)
    );
    // Seven configurations, each two harness runs: all the tests but the
    // unloading one, then that one alone.
    let runs: Vec<_> = stdout.lines().filter_map(totals).collect();
    assert_eq!(runs.len(), 14, "expected 14 harness runs:\n{stdout}");
    for (pass, fail, _skip, error) in &runs {
        assert_eq!((*fail, *error), (0, 0), "a harness run failed:\n{stdout}");
        assert!(*pass > 0, "a harness run passed nothing:\n{stdout}");
    }
    // Each configuration skips the loss test of the other mode, and one
    // more where it does not apply: never more than half.
    let (pass, skip) = runs.iter().fold((0, 0), |(p, s), r| (p + r.0, s + r.2));
    assert!(
        pass > 2 * skip,
        "too many skips ({skip} vs {pass} passed):\n{stdout}"
    );
    let reports = kernel_reports_since(MARKER);
    assert!(
        reports.is_empty(),
        "the kernel reported:\n{}",
        reports.join("\n")
    );
}
