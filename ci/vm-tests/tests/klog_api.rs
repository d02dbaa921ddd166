//! The klog API through klog_gen's counters: records are rejected while no
//! handler is registered or the handler refuses them, accepted otherwise, and
//! rejected again once the handler module is gone.

use relay_vm_tests::{generate_klog, in_vm, online_cpus, write_control, Modules};

const GEN: &str = "/sys/kernel/debug/klog_gen";

/// klog_gen's (emitted, rejected) counters.
fn counters() -> (u64, u64) {
    let read = |name: &str| -> u64 {
        let path = format!("{GEN}/{name}");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    (read("emitted"), read("rejected"))
}

/// Runs klog_gen with `n` records per CPU; returns (emitted, rejected) of the run.
fn run(n: u64) -> (u64, u64) {
    let (e0, r0) = counters();
    generate_klog(n);
    let (e1, r1) = counters();
    (e1 - e0, r1 - r0)
}

#[test]
fn without_a_handler_every_record_is_rejected() {
    if !in_vm() {
        return;
    }
    let _m = Modules::load(&[("klog", ""), ("klog_gen", "")]);
    let all = 100 * online_cpus().len() as u64;
    assert_eq!(
        run(100),
        (all, all),
        "(emitted, rejected) without a handler"
    );
}

#[test]
fn a_handler_takes_records_until_it_goes() {
    if !in_vm() {
        return;
    }
    let mut m = Modules::klog("");
    let all = 100 * online_cpus().len() as u64;
    assert_eq!(
        run(100),
        (all, 0),
        "(emitted, rejected) with relay_klog registered"
    );

    // The handler refuses records while its channel is disabled.
    write_control("/sys/kernel/debug/relay_klog/enabled", "0");
    assert_eq!(
        run(100),
        (all, all),
        "(emitted, rejected) with the channel disabled"
    );
    write_control("/sys/kernel/debug/relay_klog/enabled", "1");
    assert_eq!(run(100), (all, 0), "(emitted, rejected) re-enabled");

    // Unregistering the handler makes klog a no-op again.
    m.unload("relay_klog");
    assert_eq!(
        run(100),
        (all, all),
        "(emitted, rejected) after the handler left"
    );
}

#[test]
fn a_handler_can_register_again_after_leaving() {
    if !in_vm() {
        return;
    }
    let mut m = Modules::klog("");
    m.unload("relay_klog");
    let _again = Modules::load(&[("relay_klog", "n_subbufs=2")]);
    let all = 10 * online_cpus().len() as u64;
    assert_eq!(
        run(10),
        (all, 0),
        "(emitted, rejected) with the handler back"
    );
}
