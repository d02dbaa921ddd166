//! Arbitrary operation sequences (writes of any size, drains, flushes,
//! writers racing with the reader's copy) on the relay model in both modes;
//! the checker panics when an invariant of the reader breaks.
#![no_main]

#[path = "../../relay-reader/tests/common/ops.rs"]
mod ops;

libfuzzer_sys::fuzz_target!(|data: &[u8]| ops::run_ops(data));
