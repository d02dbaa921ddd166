//! The reading logic against the kernel-free relay model: sub-buffer switch,
//! padding, produced/consumed, no-overwrite and overwrite modes, laps.

use std::cell::Cell;
use std::rc::Rc;

use relay_reader::mapped::{BufInfo, BufState, MappedBuffer, Released, SubbufLoc, SubbufLookup};
use relay_reader::model::{CallRecorder, ModelBuffer, ModelMapping};
use relay_reader::source::MappedSource;
use relay_reader::SubBuf;

/// A record of varying length, so sub-buffers end with varying padding.
fn record(seq: u64) -> Vec<u8> {
    let pad = "x".repeat((seq % 23) as usize);
    format!("seq={seq} {pad}\n").into_bytes()
}

/// Splits received data into records and returns their sequence numbers,
/// failing on anything that is not a well-formed record (stale bytes, torn
/// or padded data).
fn parse(data: &[u8]) -> Vec<u64> {
    let text = std::str::from_utf8(data).expect("received data is not the records written");
    text.lines()
        .map(|line| {
            let (head, pad) = line.split_once(' ').unwrap_or((line, ""));
            let seq: u64 = head
                .strip_prefix("seq=")
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("malformed record {line:?}"));
            assert_eq!(pad, "x".repeat((seq % 23) as usize), "torn record {line:?}");
            seq
        })
        .collect()
}

/// Drains `src`, checking that each sub-buffer holds whole records.
fn drain(src: &mut MappedSource<ModelBuffer>, flush: bool) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut f = |sb: SubBuf<'_>| {
        assert!(
            sb.data.ends_with(b"\n") || sb.data.is_empty(),
            "sub-buffer ends inside a record"
        );
        seqs.extend(parse(sb.data));
        Ok(())
    };
    if flush {
        src.flush_and_drain(&mut f).unwrap();
    } else {
        src.drain(&mut f).unwrap();
    }
    seqs
}

#[test]
fn no_overwrite_reader_keeping_up_gets_everything_in_order() {
    let mut src = MappedSource::new(ModelBuffer::new(512, 4, false)).unwrap();
    let mut got = Vec::new();
    for seq in 0..5000 {
        assert!(src.buffer_mut().write(&record(seq)));
        if seq % 20 == 0 {
            got.extend(drain(&mut src, false));
        }
    }
    got.extend(drain(&mut src, true));
    assert_eq!(got, (0..5000).collect::<Vec<_>>());
    let stats = *src.stats();
    let kernel = stats.kernel.unwrap();
    assert_eq!(stats.accounted(), kernel.produced);
    assert_eq!(stats.lost_subbufs, 0);
    assert_eq!(kernel.lost_full, 0);
    assert!(stats.max_backlog >= 1);
}

#[test]
fn no_overwrite_full_buffer_drops_new_writes_and_counts_them() {
    let mut src = MappedSource::new(ModelBuffer::new(256, 4, false)).unwrap();
    let mut written = 0u64;
    for seq in 0..1000 {
        if src.buffer_mut().write(&record(seq)) {
            written += 1;
        }
    }
    let got = drain(&mut src, true);
    let kernel = src.stats().kernel.unwrap();
    // The oldest data survives; what did not fit was dropped, not mixed in.
    assert_eq!(got, (0..written).collect::<Vec<_>>());
    assert_eq!(written + kernel.lost_full, 1000);
    assert!(kernel.lost_full > 0);
    assert_eq!(src.stats().accounted(), kernel.produced);
    // After draining, the writer resumes.
    assert!(src.buffer_mut().write(&record(written)));
}

#[test]
fn overwrite_reader_lapped_counts_lost_subbufs_and_keeps_newest() {
    let mut src = MappedSource::new(ModelBuffer::new(256, 4, true)).unwrap();
    for seq in 0..1000 {
        assert!(src.buffer_mut().write(&record(seq)));
    }
    let got = drain(&mut src, true);
    let stats = *src.stats();
    let kernel = stats.kernel.unwrap();
    assert_eq!(kernel.lost_full, 0);
    assert!(stats.lost_subbufs > 0);
    assert_eq!(stats.accounted(), kernel.produced);
    // What is left is the newest data, contiguous up to the last record.
    assert_eq!(*got.last().unwrap(), 999);
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "gap inside the kept data"
    );
    // The kernel counted at least the sub-buffers the reader lost.
    assert!(kernel.lost_overwritten >= stats.lost_subbufs - 1);
}

/// Sub-buffer 0 was lapped while it was copied: counted lost, and none of
/// its records delivered.
fn assert_lap_detected(stats: &relay_reader::BufStats, got: &[u64], what: &str) {
    assert!(
        stats.lost_subbufs >= 1,
        "{what}: the lapped sub-buffer was not counted"
    );
    assert!(
        !got.contains(&0),
        "{what}: data of a lapped sub-buffer was delivered"
    );
}

#[test]
fn overwrite_lap_during_copy_discards_the_torn_subbuf() {
    let mut src = MappedSource::new(ModelBuffer::new(256, 4, true)).unwrap();
    let mut seq = 0;
    while src.buffer().produced() < 2 {
        src.buffer_mut().write(&record(seq));
        seq += 1;
    }
    // While the reader copies the oldest sub-buffer, the writer laps it.
    let racing: Vec<Vec<u8>> = (1000..1200).map(record).collect();
    src.buffer_mut().race_before_consume(racing);
    let got = drain(&mut src, false);
    assert_lap_detected(src.stats(), &got, "callbacks");
    let produced = src.buffer_mut().state().unwrap().produced;
    let _ = drain(&mut src, true);
    assert_eq!(
        src.stats().accounted(),
        src.buffer_mut().state().unwrap().produced
    );
    assert!(produced > 4);
}

#[test]
fn padding_and_header_never_reach_the_callback() {
    let mut src = MappedSource::new(ModelBuffer::new(64, 8, false)).unwrap();
    // 40-byte records: one per 64-byte sub-buffer (4-byte header), 20 bytes of padding each.
    for seq in 0..6u64 {
        let mut rec = format!("seq={seq} ").into_bytes();
        rec.resize(39, b'x');
        rec.push(b'\n');
        assert!(src.buffer_mut().write(&rec));
    }
    let mut lens = Vec::new();
    src.flush_and_drain(&mut |sb| {
        assert!(!sb.data.contains(&0xa5), "stale buffer bytes delivered");
        lens.push(sb.data.len());
        Ok(())
    })
    .unwrap();
    assert_eq!(lens, vec![40; 6]);
}

#[test]
fn flush_of_an_empty_subbuf_produces_nothing() {
    let mut src = MappedSource::new(ModelBuffer::new(256, 4, false)).unwrap();
    assert!(drain(&mut src, true).is_empty());
    assert_eq!(src.buffer_mut().state().unwrap().produced, 0);
    src.buffer_mut().write(&record(0));
    assert_eq!(
        drain(&mut src, false),
        Vec::<u64>::new(),
        "partial sub-buffer delivered before flush"
    );
    assert_eq!(drain(&mut src, true), vec![0]);
}

#[test]
fn callback_error_keeps_the_subbuf_for_the_next_drain() {
    let mut src = MappedSource::new(ModelBuffer::new(256, 4, false)).unwrap();
    for seq in 0..50 {
        src.buffer_mut().write(&record(seq));
    }
    src.buffer_mut().flush_writer();
    let err = src.drain(&mut |_| {
        Err(relay_reader::Error::Sink {
            target: "test".into(),
            source: std::io::Error::other("disk full"),
        })
    });
    assert!(err.is_err());
    assert_eq!(src.stats().subbufs, 0);
    assert_eq!(drain(&mut src, false), (0..50).collect::<Vec<_>>());
}

#[test]
fn too_big_writes_are_counted() {
    let mut src = MappedSource::new(ModelBuffer::new(64, 4, false)).unwrap();
    assert!(!src.buffer_mut().write(&[b'y'; 65]));
    let _ = drain(&mut src, true);
    assert_eq!(src.stats().kernel.unwrap().lost_toobig, 1);
}

/// Writes records until `n` sub-buffers are ready past the consumed count.
fn fill(model: &mut ModelBuffer, n: u64, seq: &mut u64) {
    let consumed = model.state().unwrap().consumed;
    while model.produced() < consumed + n {
        assert!(model.write(&record(*seq)));
        *seq += 1;
    }
}

// ---- the pull API ---------------------------------------------------------

/// Takes every sub-buffer through the pull API, each dropped before the
/// next is taken, checking that each holds whole records.
fn pull_all<B: MappedBuffer>(src: &mut MappedSource<B>) -> Vec<u64> {
    let mut seqs = Vec::new();
    let mut last_seq = None;
    while let Some(sb) = src.next().unwrap() {
        assert!(
            sb.ends_with(b"\n") || sb.is_empty(),
            "sub-buffer ends inside a record"
        );
        assert!(last_seq < Some(sb.seq()), "sub-buffers out of order");
        last_seq = Some(sb.seq());
        assert_eq!(sb.as_subbuf().data, sb.data());
        seqs.extend(parse(&sb));
    }
    seqs
}

/// Every sub-buffer ready in `src`, flushed first with `flush`, through
/// the pull API or the callbacks.
fn take_all(src: &mut MappedSource<CallRecorder>, pull: bool, flush: bool) -> Vec<u64> {
    if flush {
        src.flush().unwrap();
    }
    if pull {
        return pull_all(src);
    }
    let mut got = Vec::new();
    src.drain(&mut |sb| {
        got.extend(parse(sb.data));
        Ok(())
    })
    .unwrap();
    got
}

#[test]
fn meta_area_drain_releases_a_batch_with_one_consume() {
    for (pull, overwrite) in [(false, false), (false, true), (true, false), (true, true)] {
        let mut src =
            MappedSource::new(CallRecorder::new(ModelBuffer::new(256, 8, overwrite))).unwrap();
        let mut seq = 0;
        let mut got = Vec::new();
        for round in 0..5u64 {
            fill(&mut src.buffer_mut().model, 7, &mut seq);
            let before = src.buffer().consumes.len();
            got.extend(take_all(&mut src, pull, false));
            assert_eq!(src.stats().subbufs, (round + 1) * 7, "pull {pull}");
            let calls = &src.buffer().consumes[before..];
            // No-overwrite releases every half ring (8 / 2), so that a
            // slow consumer does not hold the whole ring; overwrite mode
            // once per batch. The pull API releases as the callbacks do,
            // everything before `next` returns None.
            let expected: &[(u64, u64)] = if overwrite {
                &[(round * 7, 7)]
            } else {
                &[(round * 7, 4), (round * 7 + 4, 3)]
            };
            assert_eq!(
                calls, expected,
                "pull {pull}, overwrite {overwrite}: one CONSUME per half ring at most"
            );
        }
        // The last record written opened the sub-buffer still being filled.
        assert_eq!(got, (0..seq - 1).collect::<Vec<_>>(), "pull {pull}");
        assert_eq!(src.stats().lost_subbufs, 0);
        // Far fewer system calls than sub-buffers: the meta area is read
        // from memory.
        assert_eq!(src.buffer().syscalls(), if overwrite { 5 } else { 10 });
        // Nothing ready: no CONSUME at all.
        let before = src.buffer().consumes.len();
        assert!(take_all(&mut src, pull, false).is_empty());
        assert_eq!(src.buffer().consumes.len(), before);
    }
}

#[test]
fn ioctl_fallback_consumes_each_subbuf() {
    for (pull, overwrite) in [(false, false), (false, true), (true, false), (true, true)] {
        let model = ModelBuffer::without_meta(256, 8, overwrite);
        assert!(!model.validates_in_place());
        let mut src = MappedSource::new(CallRecorder::new(model)).unwrap();
        let mut seq = 0;
        fill(&mut src.buffer_mut().model, 7, &mut seq);
        assert_eq!(
            take_all(&mut src, pull, false),
            (0..seq - 1).collect::<Vec<_>>()
        );
        let expect: Vec<(u64, u64)> = (0..7).map(|s| (s, 1)).collect();
        assert_eq!(
            src.buffer().consumes,
            expect,
            "pull {pull}, overwrite {overwrite}"
        );
        assert_eq!(src.buffer().subbufs, 7);
    }
}

#[test]
fn overwrite_lap_is_found_by_the_slot_check() {
    for pull in [false, true] {
        // CONSUME hides the loss: only the slot's sequence number can tell
        // that the writer reused the slot while the reader copied it.
        let mut calls = CallRecorder::new(ModelBuffer::new(256, 4, true));
        calls.consume_hides_loss = true;
        let mut src = MappedSource::new(calls).unwrap();
        let mut seq = 0;
        fill(&mut src.buffer_mut().model, 2, &mut seq);
        let racing: Vec<Vec<u8>> = (1000..1200).map(record).collect();
        src.buffer_mut().model.race_before_consume(racing);
        let mut got = take_all(&mut src, pull, false);
        assert_lap_detected(src.stats(), &got, &format!("pull {pull}"));
        if !pull {
            // One CONSUME for the batch, covering the lost sub-buffers too.
            assert_eq!(src.buffer().consumes.len(), 1);
        }
        got.extend(take_all(&mut src, pull, true));
        assert!(got.windows(2).all(|w| w[0] < w[1]), "pull {pull}");
        let state = src.buffer_mut().model.state().unwrap();
        assert_eq!(src.stats().accounted(), state.produced, "pull {pull}");
        assert_eq!(
            src.stats().lost_subbufs,
            state.lost_overwritten,
            "pull {pull}"
        );
    }
}

#[test]
fn callback_error_in_a_batch_releases_what_was_delivered() {
    let mut src = MappedSource::new(CallRecorder::new(ModelBuffer::new(256, 8, false))).unwrap();
    let mut seq = 0;
    fill(&mut src.buffer_mut().model, 5, &mut seq);
    let mut calls = 0;
    let err = src.drain(&mut |_| {
        calls += 1;
        if calls == 3 {
            return Err(relay_reader::Error::Sink {
                target: "test".into(),
                source: std::io::Error::other("disk full"),
            });
        }
        Ok(())
    });
    assert!(err.is_err());
    assert_eq!(src.stats().subbufs, 2);
    assert_eq!(src.buffer().consumes, vec![(0, 2)]);
    // The one that failed comes again.
    let mut first = None;
    assert_eq!(
        src.drain(&mut |sb| {
            first.get_or_insert(sb.seq);
            Ok(())
        })
        .unwrap(),
        3
    );
    assert_eq!(first, Some(2));
    assert_eq!(src.buffer().consumes, vec![(0, 2), (2, 3)]);
}

#[test]
fn slots_tell_where_writes_were_dropped() {
    let mut src = MappedSource::new(ModelBuffer::new(256, 4, false)).unwrap();
    let mut seq = 0;
    // Fill the buffer until the writer refuses.
    while src.buffer_mut().write(&record(seq)) {
        seq += 1;
    }
    for _ in 0..4 {
        assert!(!src.buffer_mut().write(&record(seq)));
    }
    assert_eq!(drain(&mut src, false).len() as u64, seq);
    assert_eq!(src.stats().drops_before, 0);
    // The writer resumes in a new sub-buffer, after the 5 dropped writes.
    assert!(src.buffer_mut().write(&record(seq + 5)));
    assert_eq!(drain(&mut src, true), vec![seq + 5]);
    let stats = *src.stats();
    assert_eq!(stats.kernel.unwrap().lost_full, 5);
    assert_eq!((stats.drops_before, stats.subbufs_after_drops), (5, 1));
}

/// The model, with its consumed count readable while the reader holds a
/// sub-buffer (and so the source) borrowed.
struct Watched {
    model: ModelBuffer,
    consumed: Rc<Cell<u64>>,
}

impl MappedBuffer for Watched {
    fn info(&self) -> &BufInfo {
        self.model.info()
    }
    fn state(&mut self) -> relay_reader::Result<BufState> {
        self.model.state()
    }
    fn subbuf(&mut self, seq: u64) -> relay_reader::Result<SubbufLookup> {
        self.model.subbuf(seq)
    }
    fn release(&mut self, seq: u64, count: u64) -> relay_reader::Result<Released> {
        let released = self.model.release(seq, count)?;
        self.consumed.set(released.consumed);
        Ok(released)
    }
    fn flush(&mut self) -> relay_reader::Result<()> {
        self.model.flush()
    }
    fn data(&self, loc: &SubbufLoc) -> &[u8] {
        self.model.data(loc)
    }
    fn validates_in_place(&self) -> bool {
        self.model.validates_in_place()
    }
    fn still_holds(&self, loc: &SubbufLoc) -> bool {
        self.model.still_holds(loc)
    }
}

/// A source over `model` and its consumed count, watched.
fn watched(model: ModelBuffer) -> (MappedSource<Watched>, Rc<Cell<u64>>) {
    let consumed = Rc::new(Cell::new(0));
    let src = MappedSource::new(Watched {
        model,
        consumed: Rc::clone(&consumed),
    })
    .unwrap();
    (src, consumed)
}

/// Writes records until the writer refuses one (no-overwrite: the ring is
/// full); returns how many it took.
fn fill_ring(model: &mut ModelBuffer) -> u64 {
    let mut seq = 0;
    while model.write(&record(seq)) {
        seq += 1;
    }
    seq
}

#[test]
fn held_subbuf_is_not_released_until_dropped() {
    for meta in [true, false] {
        let (mut src, consumed) = watched(if meta {
            ModelBuffer::new(256, 4, false)
        } else {
            ModelBuffer::without_meta(256, 4, false)
        });
        // The writer stops until the reader releases.
        let seq = fill_ring(&mut src.buffer_mut().model);
        let produced = src.buffer().model.produced();
        assert_eq!(produced, 4);
        let mut got = Vec::new();
        for expect in 0..produced {
            let sb = src.next().unwrap().expect("a ready sub-buffer");
            assert_eq!(sb.seq(), expect);
            // Held: neither it nor anything after it went back to the
            // writer, so the writer cannot have reused its slot.
            assert!(
                consumed.get() <= expect,
                "meta {meta}: sub-buffer {expect} released while held (consumed {})",
                consumed.get()
            );
            got.extend(parse(&sb));
            drop(sb);
        }
        assert!(src.next().unwrap().is_none());
        assert_eq!(
            consumed.get(),
            produced,
            "meta {meta}: all released at the end"
        );
        assert_eq!(got, (0..seq).collect::<Vec<_>>());
        // The writer has room again.
        assert!(src.buffer_mut().model.write(&record(seq)));
    }
}

#[test]
fn forgotten_guard_is_never_given_back() {
    let (mut src, consumed) = watched(ModelBuffer::new(256, 4, false));
    let seq = fill_ring(&mut src.buffer_mut().model);
    let sb = src.next().unwrap().unwrap();
    assert_eq!(sb.seq(), 0);
    std::mem::forget(sb);
    // Not given back: not counted, not released, and the writer still
    // has no room; the next `next` hands out the same sub-buffer.
    assert_eq!(src.stats().subbufs, 0);
    assert_eq!(consumed.get(), 0);
    assert!(!src.buffer_mut().model.write(&record(seq)));
    assert_eq!(src.next().unwrap().unwrap().seq(), 0);
    assert_eq!(src.stats().subbufs, 1);
}

#[test]
fn pull_and_callbacks_share_one_position() {
    let mut src = MappedSource::new(CallRecorder::new(ModelBuffer::new(256, 8, false))).unwrap();
    let mut seq = 0;
    fill(&mut src.buffer_mut().model, 6, &mut seq);
    let mut got = Vec::new();
    // Two through the pull API, then the callbacks take the rest.
    for _ in 0..2 {
        got.extend(parse(&src.next().unwrap().unwrap()));
    }
    src.drain(&mut |sb| {
        got.extend(parse(sb.data));
        Ok(())
    })
    .unwrap();
    assert_eq!(got, (0..seq - 1).collect::<Vec<_>>());
    assert_eq!(src.stats().subbufs, 6);
    // The pulled pair went back with the drain's releases.
    assert_eq!(src.buffer().consumes, vec![(0, 4), (4, 2)]);
}

#[test]
fn dropping_the_source_releases_what_was_given_back() {
    let (mut src, consumed) = watched(ModelBuffer::new(256, 8, false));
    fill(&mut src.buffer_mut().model, 3, &mut 0);
    drop(src.next().unwrap().unwrap());
    drop(src.next().unwrap().unwrap());
    // Within the batch: not released yet.
    assert_eq!(consumed.get(), 0);
    drop(src);
    assert_eq!(consumed.get(), 2);
}

/// A live reader takes the records of the partly filled sub-buffer while
/// the writer goes on, and the writer carries on in the next sub-buffer:
/// nothing is lost, duplicated or torn.
#[test]
fn take_partial_hands_over_the_sub_buffer_being_written() {
    let mut src = MappedSource::new(ModelBuffer::new(512, 4, false)).unwrap();
    let mut got = Vec::new();
    let take = |src: &mut MappedSource<ModelBuffer>, got: &mut Vec<u64>| {
        src.take_partial(&mut |sb| {
            got.extend(parse(sb.data));
            Ok(())
        })
        .unwrap()
        .expect("the model flushes like RELAY_IOC_FLUSH")
    };
    for seq in 0..3 {
        assert!(src.buffer_mut().write(&record(seq)));
    }
    assert!(drain(&mut src, false).is_empty(), "no sub-buffer is full");
    assert_eq!(take(&mut src, &mut got), 1);
    assert_eq!(got, [0, 1, 2]);
    // Nothing waits: nothing is delivered, no empty sub-buffer made.
    let produced = src.buffer().produced();
    assert_eq!(take(&mut src, &mut got), 0);
    assert_eq!(src.buffer().produced(), produced);
    for seq in 3..200 {
        assert!(src.buffer_mut().write(&record(seq)));
        if seq % 7 == 0 {
            take(&mut src, &mut got);
        }
    }
    got.extend(drain(&mut src, true));
    assert_eq!(got, (0..200).collect::<Vec<_>>());
    assert_eq!(src.stats().lost_subbufs, 0);
}

#[test]
fn the_model_read_like_a_kernel_mapping_gives_the_same_data_and_calls() {
    for overwrite in [false, true] {
        let mut checked =
            MappedSource::new(CallRecorder::new(ModelBuffer::new(256, 8, overwrite))).unwrap();
        let mut mapped =
            MappedSource::new(ModelMapping::new(ModelBuffer::new(256, 8, overwrite)).unwrap())
                .unwrap();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..40u64 {
            // Batches of none to about 10 sub-buffers' worth (records of
            // about 21 bytes): overwrite laps the reader in some, a full
            // ring drops in others.
            for seq in round * 100..round * 100 + (round % 6) * 25 {
                checked.buffer_mut().model.write(&record(seq));
                mapped.buffer_mut().model.write(&record(seq));
            }
            checked
                .drain(&mut |sb| {
                    a.extend(parse(sb.data));
                    Ok(())
                })
                .unwrap();
            mapped
                .drain(&mut |sb| {
                    b.extend(parse(sb.data));
                    Ok(())
                })
                .unwrap();
        }
        assert!(!a.is_empty());
        // Both kinds of loss happened.
        let stats = mapped.stats();
        if overwrite {
            assert!(stats.lost_subbufs > 0, "{stats:?}");
        } else {
            assert!(stats.kernel.unwrap().lost_full > 0, "{stats:?}");
        }
        assert_eq!(a, b, "overwrite {overwrite}");
        assert_eq!(checked.stats(), mapped.stats(), "overwrite {overwrite}");
        assert_eq!(
            checked.buffer().syscalls(),
            mapped.buffer().syscalls(),
            "overwrite {overwrite}"
        );
    }
    assert!(ModelMapping::new(ModelBuffer::without_meta(256, 8, false)).is_none());
}
