//! The ioctl numbers, constants and structure layouts of the Rust side must
//! equal what a C compiler makes of the headers themselves: one harness,
//! [`c_agrees`], run over a table of rows for each header.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A C expression and the value the Rust side has for it.
type Row = (String, u64);

/// Rows of `sizeof` every listed structure and `offsetof` each of its fields.
macro_rules! layout {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {
        [$(
            vec![
                (concat!("sizeof(struct ", stringify!($ty), ")").to_string(), size_of::<$ty>() as u64),
                $((
                    concat!("offsetof(struct ", stringify!($ty), ", ", stringify!($field), ")").to_string(),
                    offset_of!($ty, $field) as u64,
                ),)*
            ],
        )*]
        .concat()
    };
}

/// Rows of macros whose Rust constant has the same name.
macro_rules! values {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name).to_string(), u64::from($name))),*]
    };
}

/// Rows of request macros and the code of the Rust [`relay_sys::Request`].
macro_rules! requests {
    ($($c:ident = $rust:expr),* $(,)?) => {
        vec![$((stringify!($c).to_string(), u64::from($rust.code()))),*]
    };
}

/// Compiles a C program that includes `headers` (from `include`, else from
/// the system) and prints every row's expression, then compares each with
/// the Rust value. With `guard`, the program prints nothing unless the
/// headers define that macro, and the rows are then skipped with a note.
fn c_agrees(include: Option<&Path>, headers: &[&str], guard: Option<&str>, rows: &[Row]) {
    let mut program = String::from("#include <stddef.h>\n#include <stdio.h>\n");
    for header in headers {
        program += &format!("#include <{header}>\n");
    }
    program += "int main(void)\n{\n";
    if let Some(guard) = guard {
        program += &format!("#ifdef {guard}\n");
    }
    for (expr, _) in rows {
        program += &format!("\tprintf(\"%llu {expr}\\n\", (unsigned long long)({expr}));\n");
    }
    if guard.is_some() {
        program += "#endif\n";
    }
    program += "\treturn 0;\n}\n";

    let dir = tempdir();
    let (src, exe) = (dir.join("abi.c"), dir.join("abi"));
    std::fs::write(&src, &program).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let mut cmd = Command::new(&cc);
    cmd.args(["-Wall", "-Werror"]);
    if let Some(include) = include {
        cmd.arg("-I").arg(include);
    }
    let status = cmd
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e}"));
    assert!(
        status.success(),
        "the C compiler rejected {headers:?} (from {include:?}, else the system's \
         linux-libc-dev):\n{program}"
    );
    let out = Command::new(&exe).output().expect("running the C program");
    std::fs::remove_dir_all(&dir).unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    if let (true, Some(guard)) = (text.is_empty(), guard) {
        eprintln!("note: {headers:?} do not define {guard}: its rows are not checked");
        return;
    }
    let c: HashMap<&str, u64> = text
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(v, expr)| (expr, v.parse().unwrap()))
        .collect();
    for (expr, rust) in rows {
        assert_eq!(
            c.get(expr.as_str()),
            Some(rust),
            "{expr}: C says {:?}, Rust says {rust}",
            c.get(expr.as_str())
        );
    }
}

/// A fresh directory for one C program.
fn tempdir() -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("relay-sys-c-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn relay_h() {
    use relay_sys::*;
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel-patches/src/include/uapi");
    let mut rows = layout! {
        relay_buf_info { subbuf_size, n_subbufs, mmap_len, cpu, flags, meta_len }
        relay_consume { seq, count, lost, consumed }
        relay_meta {
            meta_len, meta_struct_len, version, seq_lock, caps, subbuf_size, n_subbufs,
            cpu, flags, slots_offset, slot_len, produced, lost_full, lost_toobig,
            lost_overwritten, consumed, committed, reserved,
        }
        relay_meta_slot { seq, header, padding, lost_before }
    };
    rows.extend(values!(
        RELAY_BUF_GLOBAL,
        RELAY_BUF_OVERWRITE,
        RELAY_BUF_FINALIZED,
        RELAY_META_CAP_FLUSH,
        RELAY_META_VERSION,
        RELAY_META_SLOT_EMPTY,
        RELAY_IOC_MAGIC,
    ));
    rows.extend(requests!(
        RELAY_IOC_GET_INFO = GET_INFO,
        RELAY_IOC_CONSUME = CONSUME,
        RELAY_IOC_FLUSH = FLUSH,
    ));
    c_agrees(Some(&include), &["linux/relay.h"], None, &rows);
}

/// The headers the bindings come from: `cargo xtask codegen` installs them
/// into `<target>/uapi-headers/7.3/usr/include`.
fn installed_headers() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join("uapi-headers/7.3/usr/include"))
        .find(|dir| dir.join("linux/blktrace_api.h").is_file())
}

#[test]
fn blktrace_api_h() {
    use relay_sys::blktrace::*;
    // Without the installed 7.3 headers, the system's are checked, which
    // may predate BLKTRACESETUP2 (Linux 6.19) and its structures.
    let include = installed_headers();
    let guard = include.is_none().then_some("BLKTRACESETUP2");
    if include.is_none() {
        eprintln!(
            "note: no <target>/uapi-headers/7.3 (cargo xtask codegen): checking the system's"
        );
    }
    let headers = ["linux/fs.h", "linux/blktrace_api.h"];
    let mut rows = layout! {
        blk_user_trace_setup { name, act_mask, buf_size, buf_nr, start_lba, end_lba, pid }
        blk_io_trace {
            magic, sequence, time, sector, bytes, action, pid, device, cpu, error, pdu_len,
        }
    };
    rows.extend(values!(
        BLK_IO_TRACE_MAGIC,
        BLK_IO_TRACE_VERSION,
        BLKTRACE_BDEV_SIZE,
        BLK_TC_SHIFT,
    ));
    rows.extend(requests!(
        BLKTRACESETUP = BLKTRACESETUP,
        BLKTRACESTART = BLKTRACESTART,
        BLKTRACESTOP = BLKTRACESTOP,
        BLKTRACETEARDOWN = BLKTRACETEARDOWN,
    ));
    c_agrees(include.as_deref(), &headers, None, &rows);

    let mut rows = layout! {
        blk_user_trace_setup2 {
            name, act_mask, buf_size, buf_nr, start_lba, end_lba, pid, flags, reserved,
        }
        blk_io_trace2 {
            magic, sequence, time, sector, bytes, pid, action, device, cpu, error, pdu_len, pad,
        }
    };
    rows.extend(values!(BLK_IO_TRACE2_VERSION, BLKTRACE_BDEV_SIZE2));
    rows.extend(requests!(BLKTRACESETUP2 = BLKTRACESETUP2));
    c_agrees(include.as_deref(), &headers, guard, &rows);
}
