//! Compiles the BPF programs of `relay-bench transports` (`bpf/xbench.bpf.c`)
//! with clang into `$OUT_DIR/xbench.bpf.o`, which the binary embeds and
//! loads with libbpf-rs. Needs Debian's clang and libbpf-dev (for
//! `<bpf/bpf_helpers.h>`), which `cargo xtask setup` installs.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let src = "bpf/xbench.bpf.c";
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join("xbench.bpf.o");
    // <asm/types.h>, which <linux/bpf.h> includes, is under the target's
    // multiarch directory on Debian; -target bpf does not look there.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let multiarch = match arch.as_str() {
        "x86_64" => "x86_64-linux-gnu",
        "aarch64" => "aarch64-linux-gnu",
        "x86" => "i386-linux-gnu",
        other => other,
    };
    let status = Command::new("clang")
        .args(["-O2", "-g", "-Wall", "-target", "bpf"])
        .arg(format!("-I/usr/include/{multiarch}"))
        .args(["-c", src, "-o"])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "clang could not compile {src} ({s}): the BPF programs need Debian's clang and \
             libbpf-dev (`cargo xtask setup` installs them)"
        ),
        Err(e) => panic!(
            "could not run clang ({e}): the BPF programs need Debian's clang and libbpf-dev \
             (`cargo xtask setup` installs them)"
        ),
    }
}
