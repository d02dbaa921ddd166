//! `relay-bench pbench`: the producer side, from the relay_pbench module:
//! cost per event of an empty function call, klog() off (no handler) and on
//! (relay_klog's handler), relay_write() and trace_printk().
//!
//! The module times `events` calls of each kind on one CPU with preemption
//! disabled, best of five rounds. It runs twice: with klog.ko alone (klog
//! off), then with relay_app.ko and relay_klog.ko loaded (klog on).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::process::sh;

const RUN: &str = "/sys/kernel/debug/relay_pbench/run";
const RESULTS: &str = "/sys/kernel/debug/relay_pbench/results";

/// "NAME NS EVENTS" lines into (name, ns per event), and the klog_handler flag.
fn measure(events: u64) -> Result<(Vec<(String, f64)>, bool)> {
    std::fs::write(RUN, events.to_string()).context("running relay_pbench")?;
    let text = std::fs::read_to_string(RESULTS).context("reading relay_pbench's results")?;
    let mut rows = Vec::new();
    let mut handler = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields[..] {
            ["klog_handler", on] => handler = on == "1",
            [name, ns, n] => {
                let ns: f64 = ns.parse().with_context(|| format!("{line:?}"))?;
                let n: f64 = n.parse().with_context(|| format!("{line:?}"))?;
                rows.push((name.to_string(), ns / n));
            }
            _ => {}
        }
    }
    Ok((rows, handler))
}

fn rmmod(modules: &[&str]) {
    for m in modules {
        let _ = Command::new("rmmod").arg(m).output();
    }
}

/// What `relay-bench pbench` takes.
#[derive(clap::Args)]
pub struct PbenchArgs {
    /// Directory with klog.ko, relay_app.ko, relay_klog.ko and
    /// relay_pbench.ko.
    #[arg(long)]
    modules: PathBuf,
    /// Events of each kind per round.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Also write the measurements as JSON here (for `report`).
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Runs both passes; writes JSON to `--json` and Markdown to stdout.
pub fn run(args: &PbenchArgs) -> Result<()> {
    let (modules, events, out) = (&args.modules, args.events, args.json.as_deref());
    let all = [
        "relay_pbench",
        "relay_klog",
        "klog_gen",
        "relay_app",
        "klog",
    ];
    rmmod(&all);
    let result = (|| -> Result<Value> {
        sh(Command::new("insmod").arg(modules.join("klog.ko")))?;
        sh(Command::new("insmod").arg(modules.join("relay_pbench.ko")))?;
        let (off, handler) = measure(events)?;
        ensure!(!handler, "klog() reached a handler with none loaded");
        sh(Command::new("insmod").arg(modules.join("relay_app.ko")))?;
        sh(Command::new("insmod")
            .arg(modules.join("relay_klog.ko"))
            .args(["overwrite=1", "subbuf_size=262144", "n_subbufs=8"]))?;
        let (on, handler) = measure(events)?;
        ensure!(handler, "klog() did not reach relay_klog's handler");
        let get = |rows: &[(String, f64)], name: &str| {
            rows.iter()
                .find(|(n, _)| n == name)
                .map(|r| r.1)
                .with_context(|| format!("no {name} in relay_pbench's results"))
        };
        let rows = vec![
            json!({"name": "empty function call", "ns": get(&off, "empty")?}),
            json!({"name": "klog() off (no handler)", "ns": get(&off, "klog")?}),
            json!({"name": "klog() on (relay_klog handler, overwrite mode)", "ns": get(&on, "klog")?}),
            json!({"name": "relay_write() (overwrite mode)", "ns": get(&off, "relay_write")?}),
            json!({"name": "trace_printk()", "ns": get(&off, "trace_printk")?}),
            json!({"name": "empty function call (second pass)", "ns": get(&on, "empty")?}),
        ];
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Ok(json!({"kernel": kernel.trim(), "events": events, "rows": rows}))
    })();
    rmmod(&all);
    let result = result?;
    print!("{}", table(&result));
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(&result)?)
            .with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

/// ns per event of the row whose name starts with `prefix`.
pub fn ns(result: &Value, prefix: &str) -> Option<f64> {
    result["rows"]
        .as_array()?
        .iter()
        .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with(prefix)))?["ns"]
        .as_f64()
}

/// The Markdown of a `pbench` result.
pub fn table(result: &Value) -> String {
    let empty = ns(result, "empty function call").unwrap_or(f64::NAN);
    let mut s = format!(
        "relay_pbench: {} events of each kind on one CPU with preemption disabled, best of 5 rounds; \
         the record is 64 bytes (klog, relay_write), trace_printk formats a sequence number; \
         kernel {}, TCG.\n\n",
        result["events"],
        result["kernel"].as_str().unwrap_or("?"),
    );
    s.push_str("| per event | ns | vs empty function call |\n|---|---:|---:|\n");
    let none = Vec::new();
    for r in result["rows"].as_array().unwrap_or(&none) {
        let v = r["ns"].as_f64().unwrap_or(f64::NAN);
        s.push_str(&format!(
            "| {} | {v:.1} | {:.2}x |\n",
            r["name"].as_str().unwrap_or("?"),
            v / empty
        ));
    }
    s
}
