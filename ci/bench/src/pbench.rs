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
use serde::{Deserialize, Serialize};

use crate::json;

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

/// What `pbench` measured (its `--json` file, which `report` reads).
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct PbenchResult {
    /// The guest's kernel release.
    pub kernel: String,
    /// Events of each kind per round.
    pub events: u64,
    /// One per way to log an event.
    pub rows: Vec<PbenchRow>,
}

/// The cost of one way to log an event.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
pub struct PbenchRow {
    /// The way.
    pub name: String,
    /// Nanoseconds per event.
    pub ns: f64,
}

/// Runs both passes; writes JSON to `--json` and Markdown to stdout.
pub fn run(args: &PbenchArgs) -> Result<()> {
    let (modules, events) = (&args.modules, args.events);
    let all = [
        "relay_pbench",
        "relay_klog",
        "klog_gen",
        "relay_app",
        "klog",
    ];
    rmmod(&all);
    let result = (|| -> Result<PbenchResult> {
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
        let row = |name: &str, rows: &[(String, f64)], key: &str| {
            let ns = rows
                .iter()
                .find(|(n, _)| n == key)
                .map(|r| r.1)
                .with_context(|| format!("no {key} in relay_pbench's results"))?;
            anyhow::Ok(PbenchRow {
                name: name.to_string(),
                ns,
            })
        };
        let rows = vec![
            row("empty function call", &off, "empty")?,
            row("klog() off (no handler)", &off, "klog")?,
            row(
                "klog() on (relay_klog handler, overwrite mode)",
                &on,
                "klog",
            )?,
            row("relay_write() (overwrite mode)", &off, "relay_write")?,
            row("trace_printk()", &off, "trace_printk")?,
            row("empty function call (second pass)", &on, "empty")?,
        ];
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        Ok(PbenchResult {
            kernel: kernel.trim().to_string(),
            events,
            rows,
        })
    })();
    rmmod(&all);
    let result = result?;
    print!("{}", table(&result));
    json::write(args.json.as_deref(), &result)
}

/// ns per event of the row whose name starts with `prefix`.
pub fn ns(result: &PbenchResult, prefix: &str) -> Option<f64> {
    let row = result.rows.iter().find(|r| r.name.starts_with(prefix))?;
    Some(row.ns)
}

/// The Markdown of a `pbench` result.
pub fn table(result: &PbenchResult) -> String {
    let empty = ns(result, "empty function call").unwrap_or(f64::NAN);
    let mut s = format!(
        "relay_pbench: {} events of each kind on one CPU with preemption disabled, best of 5 rounds; \
         the record is 64 bytes (klog, relay_write), trace_printk formats a sequence number; \
         kernel {}, TCG.\n\n",
        result.events, result.kernel,
    );
    s.push_str("| per event | ns | vs empty function call |\n|---|---:|---:|\n");
    for r in &result.rows {
        s.push_str(&format!(
            "| {} | {:.1} | {:.2}x |\n",
            r.name,
            r.ns,
            r.ns / empty
        ));
    }
    s
}
