//! Live output: when a reader hands over the records that wait in a partly
//! filled sub-buffer.
//!
//! relay wakes readers only when a sub-buffer is finished, so on a quiet
//! channel a record can wait in the sub-buffer being written for as long
//! as it takes to fill (minutes, with blktrace's 512 KiB sub-buffers and a
//! few I/Os a second). With [`crate::Recording::flush_when_idle`] a reader
//! that delivered nothing for an interval takes them itself
//! ([`relay_reader::Reader::take_partial`]) and flushes its sink, so every
//! record reaches the output at most about one interval after it was
//! written. Busy buffers deliver whole sub-buffers and are never flushed.

use std::time::{Duration, Instant};

use relay_reader::SubBuf;

use crate::sink::Sink;

/// Delivers the records of the partly filled sub-buffers into the callback
/// ([`relay_reader::Reader::take_partial`] with its CPU argument bound).
pub(crate) type TakePartial<'a> = &'a mut dyn FnMut(SubBuf<'_>) -> relay_reader::Result<()>;

/// The idle timer of one reader: due once nothing was delivered for
/// `every`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdleFlush {
    every: Duration,
    last: Instant,
}

impl IdleFlush {
    /// A timer that starts at `now`.
    pub(crate) fn new(every: Duration, now: Instant) -> IdleFlush {
        IdleFlush { every, last: now }
    }

    /// How long the reader may wait at `now`: up to `max`, and no longer
    /// than until a flush is due.
    pub(crate) fn wait(&self, max: Duration, now: Instant) -> Duration {
        max.min(
            self.every
                .saturating_sub(now.saturating_duration_since(self.last)),
        )
    }

    /// True when nothing was delivered (or flushed) for `every` at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= self.every
    }

    /// Something was delivered, or the partly filled sub-buffer was taken,
    /// at `now`: the next flush is due `every` later.
    pub(crate) fn reset(&mut self, now: Instant) {
        self.last = now;
    }

    /// After a poll that delivered `delivered` sub-buffers into `sink`:
    /// flushes the sink if anything came; else, once due, lets `take`
    /// deliver the records waiting in the partly filled sub-buffers into
    /// `sink` and flushes it.
    pub(crate) fn after_poll(
        &mut self,
        delivered: u64,
        sink: &mut dyn Sink,
        take: impl FnOnce(TakePartial<'_>) -> relay_reader::Result<Option<u64>>,
    ) -> relay_reader::Result<()> {
        let now = Instant::now();
        if delivered == 0 {
            if !self.due(now) {
                return Ok(());
            }
            take(&mut |sb| sink.write(&sb))?;
        }
        sink.flush()?;
        self.reset(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn due_after_an_interval_without_deliveries_and_waits_no_longer() {
        let t0 = Instant::now();
        let mut idle = IdleFlush::new(500 * MS, t0);
        assert!(!idle.due(t0));
        assert_eq!(idle.wait(Duration::from_secs(1), t0), 500 * MS);
        assert_eq!(
            idle.wait(100 * MS, t0),
            100 * MS,
            "never past the caller's bound"
        );
        assert_eq!(idle.wait(Duration::from_secs(1), t0 + 300 * MS), 200 * MS);
        assert!(!idle.due(t0 + 499 * MS));
        assert!(idle.due(t0 + 500 * MS));
        assert_eq!(
            idle.wait(Duration::from_secs(1), t0 + 700 * MS),
            Duration::ZERO
        );
        // A delivery (or a flush) starts the interval again.
        idle.reset(t0 + 700 * MS);
        assert!(!idle.due(t0 + 1100 * MS));
        assert!(idle.due(t0 + 1200 * MS));
    }

    /// A sink that logs what happens to it.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Sink for Log {
        fn write(&mut self, sb: &SubBuf<'_>) -> relay_reader::Result<()> {
            self.0
                .push(format!("write {}", String::from_utf8_lossy(sb.data)));
            Ok(())
        }
        fn finish(&mut self) -> relay_reader::Result<()> {
            self.0.push("finish".into());
            Ok(())
        }
        fn flush(&mut self) -> relay_reader::Result<()> {
            self.0.push("flush".into());
            Ok(())
        }
    }

    fn partial(f: TakePartial<'_>) -> relay_reader::Result<Option<u64>> {
        f(SubBuf {
            cpu: 0,
            seq: 7,
            data: b"partial",
        })?;
        Ok(Some(1))
    }

    /// Data that came is flushed to the output at once; an idle buffer is
    /// asked for its partial sub-buffer only once the interval passed, and
    /// that data is flushed too; nothing is ever finished.
    #[test]
    fn after_poll_flushes_deliveries_and_takes_partial_sub_buffers_when_idle() {
        let mut idle = IdleFlush::new(Duration::from_secs(3600), Instant::now());
        let mut sink = Log::default();
        idle.after_poll(2, &mut sink, |_| panic!("not idle"))
            .unwrap();
        assert_eq!(sink.0, ["flush"]);
        idle.after_poll(0, &mut sink, |_| panic!("not due"))
            .unwrap();
        assert_eq!(sink.0, ["flush"], "nothing came, nothing due");

        let mut idle = IdleFlush::new(Duration::ZERO, Instant::now());
        idle.after_poll(0, &mut sink, partial).unwrap();
        assert_eq!(sink.0, ["flush", "write partial", "flush"]);
        // A buffer that cannot hand its records over is flushed all the same.
        idle.after_poll(0, &mut sink, |_| Ok(None)).unwrap();
        assert_eq!(sink.0.last().unwrap(), "flush");
        assert!(!sink.0.contains(&"finish".to_string()));
    }

    /// A clock read before the timer's last reset (another thread's
    /// `Instant`) neither panics nor makes it due.
    #[test]
    fn an_earlier_instant_is_not_due() {
        let t0 = Instant::now();
        let idle = IdleFlush::new(10 * MS, t0 + 50 * MS);
        assert!(!idle.due(t0));
        assert_eq!(idle.wait(Duration::from_secs(1), t0), 10 * MS);
    }
}
