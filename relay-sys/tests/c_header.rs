//! The ioctl numbers and structure layouts computed in Rust must equal what a
//! C compiler makes of the header itself.

use std::path::Path;
use std::process::Command;

use relay_sys::*;

const PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include <linux/relay.h>
#define SHOW(x) printf(#x " %llu\n", (unsigned long long)(x))
int main(void)
{
	SHOW(RELAY_IOC_GET_INFO);
	SHOW(RELAY_IOC_CONSUME);
	SHOW(RELAY_IOC_FLUSH);
	SHOW(sizeof(struct relay_buf_info));
	SHOW(sizeof(struct relay_consume));
	SHOW(offsetof(struct relay_consume, lost));
	SHOW(offsetof(struct relay_buf_info, meta_len));
	SHOW(sizeof(struct relay_meta));
	SHOW(offsetof(struct relay_meta, seq_lock));
	SHOW(offsetof(struct relay_meta, slots_offset));
	SHOW(offsetof(struct relay_meta, produced));
	SHOW(offsetof(struct relay_meta, consumed));
	SHOW(offsetof(struct relay_meta, committed));
	SHOW(sizeof(struct relay_meta_slot));
	SHOW(offsetof(struct relay_meta_slot, header));
	SHOW(offsetof(struct relay_meta_slot, lost_before));
	SHOW(RELAY_META_SLOT_EMPTY);
	SHOW(RELAY_META_VERSION);
	SHOW(RELAY_META_CAP_FLUSH);
	return 0;
}
"#;

#[test]
fn ioctl_numbers_and_sizes_match_the_c_header() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let include = root.join("kernel-patches/src/include/uapi");
    let dir = std::env::temp_dir().join(format!("relay-sys-c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("abi.c");
    let exe = dir.join("abi");
    std::fs::write(&src, PROGRAM).unwrap();
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .arg("-Wall")
        .arg("-Werror")
        .arg("-I")
        .arg(&include)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .status()
        .unwrap_or_else(|e| panic!("running the C compiler {cc:?}: {e}"));
    assert!(status.success(), "the C compiler rejected relay.h");
    let out = Command::new(&exe).output().expect("running the C program");
    let text = String::from_utf8(out.stdout).unwrap();
    let c: std::collections::HashMap<&str, u64> = text
        .lines()
        .filter_map(|l| l.rsplit_once(" "))
        .map(|(k, v)| (k, v.parse().unwrap()))
        .collect();
    let expect = [
        ("RELAY_IOC_GET_INFO", u64::from(RELAY_IOC_GET_INFO)),
        ("RELAY_IOC_CONSUME", u64::from(RELAY_IOC_CONSUME)),
        ("RELAY_IOC_FLUSH", u64::from(RELAY_IOC_FLUSH)),
        (
            "sizeof(struct relay_buf_info)",
            size_of::<relay_buf_info>() as u64,
        ),
        (
            "sizeof(struct relay_consume)",
            size_of::<relay_consume>() as u64,
        ),
        (
            "offsetof(struct relay_consume, lost)",
            std::mem::offset_of!(relay_consume, lost) as u64,
        ),
        (
            "offsetof(struct relay_buf_info, meta_len)",
            std::mem::offset_of!(relay_buf_info, meta_len) as u64,
        ),
        ("sizeof(struct relay_meta)", size_of::<relay_meta>() as u64),
        (
            "offsetof(struct relay_meta, seq_lock)",
            std::mem::offset_of!(relay_meta, seq_lock) as u64,
        ),
        (
            "offsetof(struct relay_meta, slots_offset)",
            std::mem::offset_of!(relay_meta, slots_offset) as u64,
        ),
        (
            "offsetof(struct relay_meta, produced)",
            std::mem::offset_of!(relay_meta, produced) as u64,
        ),
        (
            "offsetof(struct relay_meta, consumed)",
            std::mem::offset_of!(relay_meta, consumed) as u64,
        ),
        (
            "offsetof(struct relay_meta, committed)",
            std::mem::offset_of!(relay_meta, committed) as u64,
        ),
        (
            "sizeof(struct relay_meta_slot)",
            size_of::<relay_meta_slot>() as u64,
        ),
        (
            "offsetof(struct relay_meta_slot, header)",
            std::mem::offset_of!(relay_meta_slot, header) as u64,
        ),
        (
            "offsetof(struct relay_meta_slot, lost_before)",
            std::mem::offset_of!(relay_meta_slot, lost_before) as u64,
        ),
        ("RELAY_META_SLOT_EMPTY", RELAY_META_SLOT_EMPTY),
        ("RELAY_META_VERSION", u64::from(RELAY_META_VERSION)),
        ("RELAY_META_CAP_FLUSH", RELAY_META_CAP_FLUSH),
    ];
    for (name, rust) in expect {
        assert_eq!(
            c.get(name),
            Some(&rust),
            "{name}: C says {:?}, Rust says {rust}",
            c.get(name)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
