//! relay-app mode on channels of both padding-word sizes: relay_klog writes
//! relay.rst's 4-byte `unsigned int` by default and the 8-byte `size_t` of
//! some relay-apps klog copies with `padding_size_t=1`. Detection finds
//! 4-byte words (klog_gen's text rules 8 out) and refuses to guess for
//! 8-byte words, which fit both readings; an explicit size reads either
//! exactly; the wrong explicit size is an error (8 for 4-byte words) or
//! leaves the word's other half at the head of every sub-buffer (4 for
//! 8-byte words). mmap mode needs no choice: the meta area's slots say.

use std::collections::BTreeMap;
use std::process::Command;

use relay_reader::{Error, Mode, OpenOptions, PaddingWord, Reader};
use relay_vm_tests::{bin, generate_klog, in_vm, klog_gen_records, online_cpus, Modules};

const DIR: &str = "/sys/kernel/debug/relay_klog";
const CHANNEL: &str = "/sys/kernel/debug/relay_klog/cpu";
/// Records per CPU and run: about 80 KB, five or six 16 KiB sub-buffers,
/// well within the 16 of each buffer.
const N: u64 = 3000;
const GEOMETRY: &str = "subbuf_size=16384 n_subbufs=16";

/// relay_klog writing `unsigned int` padding words, or `size_t` ones.
fn load(size_t_words: bool) -> Modules {
    let params = if size_t_words {
        format!("{GEOMETRY} padding_size_t=1")
    } else {
        GEOMETRY.to_string()
    };
    Modules::klog(&params)
}

fn read_number(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every sub-buffer the channel holds, per CPU, read with `options` (the
/// reader flushes, which disables the channel: enabled again after).
fn read_subbufs(
    options: OpenOptions,
) -> (
    relay_reader::Result<()>,
    BTreeMap<u32, Vec<Vec<u8>>>,
    Reader,
) {
    let mut reader = Reader::open_with(CHANNEL, options)
        .unwrap_or_else(|e| panic!("opening the relay_klog channel as {options:?}: {e}"));
    assert_eq!(reader.mode(), options.mode);
    let mut per_cpu: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
    let mut keep = |sb: relay_reader::SubBuf<'_>| {
        per_cpu.entry(sb.cpu).or_default().push(sb.data.to_vec());
        Ok(())
    };
    let result = reader
        .consume(&mut keep)
        .and_then(|_| reader.flush_and_drain(&mut keep))
        .map(drop);
    std::fs::write(format!("{DIR}/enabled"), "1").expect("enabling the channel again");
    (result, per_cpu, reader)
}

/// The sub-buffers of every CPU joined, each first stripped of `strip` bytes.
fn joined(per_cpu: &BTreeMap<u32, Vec<Vec<u8>>>, strip: usize) -> BTreeMap<u32, Vec<u8>> {
    per_cpu
        .iter()
        .map(|(&cpu, subbufs)| {
            (
                cpu,
                subbufs
                    .iter()
                    .flat_map(|sb| &sb[strip..])
                    .copied()
                    .collect(),
            )
        })
        .collect()
}

/// Every CPU's records of one run, 0 .. N, in order and nothing else;
/// klog_gen emitted `runs` runs without a rejection, relay_app dropped none.
fn assert_exact(per_cpu: &BTreeMap<u32, Vec<u8>>, runs: u64, what: &str) {
    let cpus = online_cpus();
    let records = klog_gen_records(per_cpu);
    for &cpu in &cpus {
        let seqs = records
            .get(&cpu)
            .unwrap_or_else(|| panic!("{what}: no records from cpu {cpu}"));
        assert!(
            seqs.iter().copied().eq(0..N),
            "{what}: cpu {cpu}: {} records, not 0..{N} in order",
            seqs.len()
        );
    }
    assert_eq!(
        records.len(),
        cpus.len(),
        "{what}: buffers of offline CPUs?"
    );
    let emitted = read_number("/sys/kernel/debug/klog_gen/emitted");
    assert_eq!(
        emitted,
        runs * N * cpus.len() as u64,
        "{what}: klog_gen emitted"
    );
    assert_eq!(
        read_number("/sys/kernel/debug/klog_gen/rejected"),
        0,
        "{what}: rejected"
    );
    assert_eq!(
        read_number(&format!("{DIR}/dropped")),
        0,
        "{what}: relay_app dropped"
    );
}

fn relay_app(word: PaddingWord) -> OpenOptions {
    OpenOptions::new(Mode::RelayApp).padding_word(word)
}

/// Reads the channel in relay-app mode with `word`, which must fail before
/// it delivers anything, the reader reporting `reported`; the error.
fn refused(word: PaddingWord, reported: PaddingWord) -> Error {
    let (result, per_cpu, reader) = read_subbufs(relay_app(word));
    let err = result.expect_err("the channel was read");
    assert!(
        per_cpu.is_empty(),
        "padding word {word}: data delivered before: {err}"
    );
    assert_eq!(reader.padding_word(), Some(reported), "{err}");
    err
}

/// Reads the channel in relay-app mode with `word`: every record of the
/// last run, the reader reporting `reported`.
fn read_exactly(word: PaddingWord, reported: PaddingWord, runs: u64) {
    let (result, per_cpu, reader) = read_subbufs(relay_app(word));
    result.unwrap_or_else(|e| panic!("reading with padding word {word}: {e}"));
    assert_eq!(reader.padding_word(), Some(reported));
    assert_exact(&joined(&per_cpu, 0), runs, &format!("padding word {word}"));
}

#[test]
fn four_byte_words_are_detected_and_read_exactly() {
    if !in_vm() {
        return;
    }
    let _modules = load(false);
    generate_klog(N);
    // The wrong size fails at the first delivery, before it takes anything.
    let err = refused(PaddingWord::Eight, PaddingWord::Eight);
    assert!(
        matches!(&err, Error::Corrupt { what, .. } if what.contains("exceeds the sub-buffer size")),
        "unexpected error: {err}"
    );
    read_exactly(PaddingWord::Auto, PaddingWord::Four, 1);
    generate_klog(N);
    read_exactly(PaddingWord::Four, PaddingWord::Four, 2);
}

#[test]
fn eight_byte_words_need_the_choice_and_then_read_exactly() {
    if !in_vm() {
        return;
    }
    let _modules = load(true);
    generate_klog(N);
    // Every 8-byte word fits a 4-byte reading too: detection says so
    // instead of guessing, before it delivers anything.
    let err = refused(PaddingWord::Auto, PaddingWord::Auto);
    assert!(
        matches!(err, Error::PaddingWordUnknown { .. })
            && err
                .to_string()
                .contains("cannot tell whether the padding words are 4 or 8 bytes"),
        "unexpected error: {err}"
    );
    read_exactly(PaddingWord::Eight, PaddingWord::Eight, 1);

    // The wrong size: every sub-buffer starts with the word's high half.
    generate_klog(N);
    let (result, per_cpu, _reader) = read_subbufs(relay_app(PaddingWord::Four));
    result.expect("reading 8-byte words as 4-byte ones");
    for (cpu, subbufs) in &per_cpu {
        assert!(
            subbufs.iter().all(|sb| sb.starts_with(&[0; 4])),
            "cpu {cpu}: a sub-buffer read with the wrong size does not start with 4 zero bytes"
        );
    }
    assert_exact(
        &joined(&per_cpu, 4),
        2,
        "--padding-word 4, high halves stripped",
    );
}

#[test]
fn mmap_mode_reads_eight_byte_words_from_the_meta_area() {
    if !in_vm() {
        return;
    }
    let _modules = load(true);
    generate_klog(N);
    let (result, per_cpu, reader) = read_subbufs(OpenOptions::new(Mode::Mmap));
    result.expect("reading 8-byte words in mmap mode");
    assert_eq!(reader.padding_word(), None);
    assert_exact(&joined(&per_cpu, 0), 1, "mmap");
}

/// `relay-reader snapshot --mode relay-app` with `args` into `out`.
fn snapshot(out: &std::path::Path, args: &[&str]) -> std::process::Output {
    let _ = std::fs::remove_dir_all(out);
    let output = Command::new(bin("relay-reader"))
        .args(["snapshot", "--mode", "relay-app", "--json", "-o"])
        .arg(out)
        .args(args)
        .arg(CHANNEL)
        .output()
        .expect("running relay-reader");
    std::fs::write(format!("{DIR}/enabled"), "1").expect("enabling the channel again");
    output
}

fn recorded(out: &std::path::Path) -> BTreeMap<u32, Vec<u8>> {
    online_cpus()
        .into_iter()
        .map(|cpu| {
            let file = out.join(format!("cpu{cpu}"));
            let data =
                std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            (cpu, data)
        })
        .collect()
}

#[test]
fn relay_reader_says_which_size_it_used() {
    if !in_vm() {
        return;
    }
    let out = std::env::temp_dir().join("relay-reader-padding-word");
    for size_t_words in [false, true] {
        let _modules = load(size_t_words);
        generate_klog(N);
        let auto = snapshot(&out, &[]);
        let stderr = String::from_utf8_lossy(&auto.stderr);
        if size_t_words {
            assert!(!auto.status.success(), "8-byte words detected: {stderr}");
            assert!(
                stderr.contains("cannot tell whether the padding words are 4 or 8 bytes")
                    && stderr.contains("--padding-word 4 or --padding-word 8"),
                "{stderr}"
            );
            let chosen = snapshot(&out, &["--padding-word", "8"]);
            let stderr = String::from_utf8_lossy(&chosen.stderr);
            assert!(chosen.status.success(), "{stderr}");
            let summary: serde_json::Value = serde_json::from_str(&stderr).expect("JSON summary");
            assert_eq!(summary["padding_word"], 8, "{summary:#}");
        } else {
            assert!(auto.status.success(), "{stderr}");
            let summary: serde_json::Value = serde_json::from_str(&stderr).expect("JSON summary");
            assert_eq!(summary["mode"], "relay-app", "{summary:#}");
            assert_eq!(summary["padding_word"], 4, "{summary:#}");
        }
        assert_exact(&recorded(&out), 1, "relay-reader snapshot");
    }
    let _ = std::fs::remove_dir_all(&out);
}
