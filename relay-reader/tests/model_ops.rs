//! Property test: many pseudo-random operation sequences against the model
//! (the same checker the `reader_vs_model` fuzz target runs).

mod common;

/// xorshift64*: deterministic, so a failure reproduces.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

#[test]
fn random_operation_sequences_keep_every_invariant() {
    for seed in 0..3000 {
        let data = bytes(seed, 64 + (seed as usize % 512));
        let result = std::panic::catch_unwind(|| common::ops::run_ops(&data));
        assert!(
            result.is_ok(),
            "seed {seed} broke an invariant; input {data:?}"
        );
    }
}
