//! Drives the reader against the relay model with an arbitrary sequence of
//! operations, through the callback API (`drain`) and the pull API (`next`,
//! each sub-buffer dropped before the next is taken) in any mix, and checks
//! every invariant after each one. Shared by the
//! property test (`tests/model_ops.rs`) and the `reader_vs_model` fuzz
//! target (`fuzz/`), which includes this file by path.

use std::collections::BTreeSet;

use relay_reader::mapped::MappedBuffer;
use relay_reader::model::ModelBuffer;
use relay_reader::source::MappedSource;
use relay_reader::SubBuf;

/// Record layout: `len: u16 LE`, `seq: u64 LE`, then `len - 10` bytes equal
/// to `seq as u8`, so any stale, torn or misplaced byte is caught.
const HEADER: usize = 10;

fn record(seq: u64, len: usize) -> Vec<u8> {
    let mut r = Vec::with_capacity(len);
    r.extend_from_slice(&(len as u16).to_le_bytes());
    r.extend_from_slice(&seq.to_le_bytes());
    r.resize(len, seq as u8);
    r
}

/// Splits delivered data into records, checking each.
fn parse(mut data: &[u8], out: &mut Vec<u64>) {
    while !data.is_empty() {
        assert!(data.len() >= HEADER, "truncated record header: {data:?}");
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        assert!(
            len >= HEADER && len <= data.len(),
            "bad record length {len}"
        );
        let seq = u64::from_le_bytes(data[2..10].try_into().unwrap());
        assert!(
            data[HEADER..len].iter().all(|&b| b == seq as u8),
            "record {seq} corrupted"
        );
        out.push(seq);
        data = &data[len..];
    }
}

struct Run {
    src: MappedSource<ModelBuffer>,
    next_seq: u64,
    /// Records the writer accepted (not counting racing ones, whose fate
    /// only shows in the counters).
    stored: BTreeSet<u64>,
    attempted: u64,
    racing: u64,
    delivered: Vec<u64>,
    /// Sequence number the reader started at.
    first: u64,
    /// Overwrite mode: the writer went on while the pull API held back a
    /// batch of sub-buffers it had delivered but not yet released; the
    /// kernel counts those it overwrote as lost although the reader has
    /// them.
    wrote_over_pending: bool,
}

impl Run {
    /// Sub-buffers delivered (or lost) and not yet released to the kernel.
    fn pending(&mut self) -> u64 {
        let state = self.src.buffer_mut().state().unwrap();
        (self.src.stats().accounted() + self.first).saturating_sub(state.consumed)
    }

    /// The writer is about to run: note whether it may overwrite a batch
    /// the pull API holds back.
    fn before_writes(&mut self) {
        if self.src.buffer().info().overwrite && self.pending() > 0 {
            self.wrote_over_pending = true;
        }
    }

    fn write(&mut self, len: usize) {
        self.before_writes();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.attempted += 1;
        if self.src.buffer_mut().write(&record(seq, len)) {
            self.stored.insert(seq);
        }
    }

    fn drain(&mut self, flush: bool) {
        if flush {
            self.before_writes();
        }
        let delivered = &mut self.delivered;
        let mut f = |sb: SubBuf<'_>| {
            parse(sb.data, delivered);
            Ok(())
        };
        if flush {
            self.src.flush_and_drain(&mut f).unwrap();
        } else {
            self.src.drain(&mut f).unwrap();
        }
        self.check_released_all();
    }

    /// After a drain, or pulls until `next` returned `None`: the reader
    /// released everything it took, so a reader that keeps up never leaves
    /// the writer without room.
    fn check_released_all(&mut self) {
        let state = self.src.buffer_mut().state().unwrap();
        let next = self.src.stats().accounted() + self.first;
        assert!(
            state.consumed >= next.min(state.produced),
            "drained up to {next} but the kernel was told only {}",
            state.consumed
        );
    }

    /// Takes up to `max` sub-buffers (all there are with 0) through the
    /// pull API, flushing first with `flush`, each dropped before the next.
    fn pull(&mut self, max: usize, flush: bool) {
        if flush {
            // A flush switches sub-buffers: the writer runs.
            self.before_writes();
            self.src.flush().unwrap();
        }
        let mut taken = 0;
        let mut dry = false;
        while max == 0 || taken < max {
            let Some(sb) = self.src.next().unwrap() else {
                dry = true;
                break;
            };
            assert_eq!(sb.cpu(), 0);
            parse(&sb, &mut self.delivered);
            taken += 1;
        }
        if dry {
            self.check_released_all();
            return;
        }
        // Stopped inside a batch: what was given back waits for the batch's
        // release, but without overwrite never more than half the ring
        // with the meta area, one sub-buffer without it.
        let info = *self.src.buffer().info();
        if !info.overwrite {
            let every = if self.src.buffer().has_meta() {
                (info.n_subbufs / 2).max(1)
            } else {
                1
            };
            let pending = self.pending();
            assert!(
                pending <= every,
                "{pending} sub-buffers given back but not released (at most {every})"
            );
        }
    }

    /// A writer on another CPU adds `count` records while the reader copies.
    fn race(&mut self, count: usize, arg: usize) {
        let records = (0..count)
            .map(|i| record(self.next_seq + i as u64, HEADER + (arg * 7 + i) % 24))
            .collect();
        self.next_seq += count as u64;
        self.attempted += count as u64;
        self.racing += count as u64;
        self.before_writes();
        self.src.buffer_mut().race_before_consume(records);
        if arg & 1 == 0 {
            self.drain(false);
        } else {
            self.pull(0, false);
        }
        // Nothing was ready to consume: the writer still finishes its writes.
        self.src.buffer_mut().finish_races();
    }
}

/// Runs the operations encoded in `data` against the model with the meta
/// area (reads from memory, one CONSUME per drain) and against the one
/// without (as the relay-apps control files: CONSUME per sub-buffer); panics when an
/// invariant breaks.
pub fn run_ops(data: &[u8]) {
    run_ops_on(data, true);
    run_ops_on(data, false);
}

fn run_ops_on(data: &[u8], meta: bool) {
    let Some((&geometry, ops)) = data.split_first() else {
        return;
    };
    let subbuf_size = 32 + usize::from(geometry % 8) * 32;
    let n_subbufs = 2 + usize::from((geometry >> 3) % 6);
    let overwrite = geometry & 0x80 != 0;
    let mut run = Run {
        src: MappedSource::new(if meta {
            ModelBuffer::new(subbuf_size, n_subbufs, overwrite)
        } else {
            ModelBuffer::without_meta(subbuf_size, n_subbufs, overwrite)
        })
        .unwrap(),
        next_seq: 0,
        stored: BTreeSet::new(),
        attempted: 0,
        racing: 0,
        delivered: Vec::new(),
        first: 0,
        wrote_over_pending: false,
    };

    let mut bytes = ops.iter().copied();
    while let Some(op) = bytes.next() {
        let arg = usize::from(bytes.next().unwrap_or(0));
        match op % 7 {
            // Mostly writes, of every size up to a little more than fits.
            0..=1 => run.write(HEADER + arg % (subbuf_size + 8)),
            2 => run.drain(false),
            3 => run.drain(true),
            4 => run.race(arg % 16, arg),
            5 => run.pull(arg % 6, false),
            _ => run.pull(0, true),
        }
        // Delivered records are never duplicated or reordered.
        assert!(
            run.delivered.windows(2).all(|w| w[0] < w[1]),
            "records out of order or duplicated: {:?}",
            run.delivered
        );
        let produced = run.src.buffer_mut().state().unwrap().produced;
        assert!(
            run.src.stats().accounted() <= produced,
            "more sub-buffers accounted than produced"
        );
    }

    // The last sub-buffers through either API.
    if ops.len() % 2 == 0 {
        run.drain(true);
    } else {
        run.pull(0, true);
    }
    let stats = *run.src.stats();
    let state = run.src.buffer_mut().state().unwrap();
    assert_eq!(
        stats.accounted(),
        state.produced,
        "received + lost != produced after the final flush and drain"
    );
    // Drops the slots place before delivered sub-buffers are drops the
    // kernel counted; without a meta area there are no slots to tell.
    assert!(
        stats.drops_before <= state.lost_full + state.lost_toobig,
        "{} drops before delivered sub-buffers, {} + {} counted",
        stats.drops_before,
        state.lost_full,
        state.lost_toobig
    );
    assert!(stats.subbufs_after_drops <= stats.drops_before);
    if !meta {
        assert_eq!(stats.drops_before, 0);
    }
    if !overwrite {
        assert_eq!(stats.lost_subbufs, 0, "no-overwrite mode lost sub-buffers");
        // Every record the writer accepted arrives; every other one is counted.
        for seq in &run.stored {
            assert!(
                run.delivered.binary_search(seq).is_ok(),
                "stored record {seq} never delivered"
            );
        }
        assert_eq!(
            run.delivered.len() as u64 + state.lost_full + state.lost_toobig,
            run.attempted,
            "received + dropped != written"
        );
    } else {
        // The reader and the kernel agree on what the writer overwrote,
        // unless it overwrote sub-buffers the reader had but had not
        // released yet: the kernel counts those too.
        if run.wrote_over_pending {
            assert!(
                stats.lost_subbufs <= state.lost_overwritten,
                "reader lost {} sub-buffers, the kernel overwrote {}",
                stats.lost_subbufs,
                state.lost_overwritten
            );
        } else {
            assert_eq!(
                stats.lost_subbufs, state.lost_overwritten,
                "reader and kernel disagree on overwritten sub-buffers"
            );
        }
        // What arrives was written, and the newest stored record survives
        // (unless racing writes, whose fate is unknown here, came after it).
        assert!(run.delivered.iter().all(|s| *s < run.next_seq));
        if let Some(&last) = run.stored.iter().next_back() {
            if last + 1 == run.next_seq {
                assert!(
                    run.delivered.contains(&last),
                    "newest record {last} lost in overwrite mode"
                );
            }
        }
    }
}
