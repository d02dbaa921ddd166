//! The JSON files the benchmarks write (`--json`) and `report` reads back.
//!
//! Each is one typed result, defined next to the benchmark that writes it
//! and used by writer and reader alike: [`crate::readers::RunResult`]
//! (`run`: paced.json, full.json), [`crate::host::HostResult`],
//! [`crate::blktrace::BlktraceResult`] and [`crate::pbench::PbenchResult`].
//! The field names are the files' keys, so files written by earlier
//! versions still read; fields those did not have yet are marked
//! `#[serde(default)]` and read as what they meant then (no rounds, no
//! pause measured, ...).

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Writes `result` as indented JSON to `path`, if there is one. The keys
/// come sorted, as they always have in these files: through
/// `serde_json::Value`, whose maps are sorted.
pub fn write<T: Serialize>(path: Option<&Path>, result: &T) -> Result<()> {
    let Some(path) = path else {
        return Ok(());
    };
    let value = serde_json::to_value(result)?;
    std::fs::write(path, serde_json::to_string_pretty(&value)?)
        .with_context(|| format!("writing {}", path.display()))
}

/// Reads `dir/name`, or None when that part was not run.
pub fn read<T: DeserializeOwned>(dir: &Path, name: &str) -> Result<Option<T>> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some(
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blktrace::{self, BlktraceResult};
    use crate::host::HostResult;
    use crate::pbench::{self, PbenchResult};
    use crate::readers::{self, RunResult};
    use crate::transports::{self, TransportsResult};

    /// The files of one `cargo xtask bench` run (the one BENCHMARKS.md was
    /// generated from, by the untyped writer): the JSON and what each
    /// benchmark printed.
    const RUN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

    /// Reads `name` of [`RUN`] as `T` and checks that it writes back as
    /// the untyped writer wrote the same values: the same keys, in the same
    /// order and layout. (Against the file's own bytes the last digit of a
    /// float can differ: serde_json parses floats to within an ulp unless
    /// its `float_roundtrip` feature is on, typed or not.)
    fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
        let dir = Path::new(RUN);
        let result: T = read(dir, name).unwrap().unwrap();
        let untyped: serde_json::Value = read(dir, name).unwrap().unwrap();
        let out = std::env::temp_dir().join(format!("relay-bench-{}-{name}", std::process::id()));
        write(Some(&out), &result).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_file(&out).unwrap();
        assert_eq!(written, serde_json::to_string_pretty(&untyped).unwrap());
        result
    }

    fn printed(name: &str) -> String {
        std::fs::read_to_string(Path::new(RUN).join(name)).unwrap()
    }

    #[test]
    fn the_files_of_a_bench_run_read_and_write_back_unchanged() {
        let paced: RunResult = round_trip("paced.json");
        let full: RunResult = round_trip("full.json");
        let blk: BlktraceResult = round_trip("blktrace.json");
        let pb: PbenchResult = round_trip("pbench.json");
        let _: HostResult = round_trip("host.json");
        // What the guest printed is what the files render to.
        assert_eq!(readers::table(&paced), printed("paced.md"));
        assert_eq!(readers::table(&full), printed("full.md"));
        assert_eq!(blktrace::table(&blk), printed("blktrace.md"));
        assert_eq!(pbench::table(&pb), printed("pbench.md"));
    }

    #[test]
    fn the_files_of_a_transports_run_read_and_write_back_unchanged() {
        // From a run of its own on the stock 6.12 kernel (the run above
        // booted a 7.3 built without BPF then), written by the typed writer.
        let tr: TransportsResult = round_trip("transports.json");
        assert_eq!(tr.cells.len(), 9);
        assert!(tr.cells.iter().all(|c| c.rounds.len() == 5));
        assert_eq!(transports::table(&tr), printed("transports.md"));
    }

    #[test]
    fn a_part_not_run_reads_as_none() {
        let missing: Option<RunResult> = read(Path::new(RUN), "no-such.json").unwrap();
        assert!(missing.is_none());
    }
}
