//! Checking relay_readtest events as they arrive: every event is
//! `u32 cpu, u32 size, u64 seq` followed by `size - 16` bytes, each the low
//! byte of seq. The checker keeps one bit per (CPU, seq) produced, so it
//! tells duplicates from reordering whatever buffer an event arrives in
//! (a work item moved off an offlined CPU writes into another CPU's buffer).

use std::collections::BTreeMap;

use relay_readtest_event::Event;

/// What the received events showed.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Distinct valid events received.
    pub received: u64,
    /// Valid events received a second time.
    pub duplicated: u64,
    /// Byte runs that were not a valid event (torn, overwritten while
    /// read, or garbage), counted once per run.
    pub corrupt: u64,
    /// Valid events that came before an earlier-numbered one of the same
    /// CPU in the same buffer.
    pub out_of_order: u64,
    /// Sub-buffer padding words skipped (read(2) returns them as data on
    /// a channel with padding headers).
    #[serde(default)]
    pub padding_words: u64,
}

/// Per source CPU: which sequence numbers arrived.
#[derive(Debug)]
struct Seen {
    bits: Vec<u64>,
}

impl Seen {
    fn new(n: u64) -> Seen {
        Seen {
            bits: vec![0; n.div_ceil(64) as usize],
        }
    }

    /// Marks `seq`; false if it was marked already.
    fn mark(&mut self, seq: u64) -> bool {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        let was = self.bits[word] & (1 << bit) != 0;
        self.bits[word] |= 1 << bit;
        !was
    }
}

/// The checker of one test.
#[derive(Debug)]
pub struct Checker {
    size: usize,
    event_n: u64,
    seen: BTreeMap<u32, Seen>,
    /// Per buffer: bytes of an event split across read(2) chunks.
    carry: BTreeMap<u32, Vec<u8>>,
    /// Per (buffer, source CPU): the last seq seen.
    last: BTreeMap<(u32, u32), u64>,
    /// What was found.
    pub counts: Counts,
    /// The first few problems, described.
    pub problems: Vec<String>,
    /// Largest plausible padding word, when the data may hold the 4-byte
    /// padding word at the head of each sub-buffer (read mode).
    padding_words: Option<u32>,
}

impl Checker {
    /// A checker for events of `size` bytes, `event_n` per CPU.
    pub fn new(size: u64, event_n: u64) -> Checker {
        Checker {
            size: size as usize,
            event_n,
            seen: BTreeMap::new(),
            carry: BTreeMap::new(),
            last: BTreeMap::new(),
            counts: Counts::default(),
            problems: Vec::new(),
            padding_words: None,
        }
    }

    /// Expects the padding word of each sub-buffer of `subbuf_size` bytes
    /// among the events, as read(2) returns it: skipped, and counted.
    pub fn with_padding_words(mut self, subbuf_size: u64) -> Checker {
        self.padding_words = Some(subbuf_size.saturating_sub(4) as u32);
        self
    }

    /// A padding word at `at`, followed by a valid event or by the end of
    /// the data (`None`: not enough bytes yet to tell).
    fn padding_word_at(&self, bytes: &[u8], at: usize) -> Option<bool> {
        let max = self.padding_words?;
        let word = u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?);
        if word > max {
            return Some(false);
        }
        let next = bytes.get(at + 4..at + 4 + self.size)?;
        Some(self.parse(next).is_some())
    }

    fn problem(&mut self, what: String) {
        if self.problems.len() < 5 {
            self.problems.push(what);
        }
    }

    /// The event at the start of `ev` (at least `size` bytes), if valid.
    fn parse(&self, bytes: &[u8]) -> Option<(u32, u64)> {
        let ev = Event::parse(bytes)?;
        let valid = ev.size as usize == self.size
            && ev.cpu < 4096
            && ev.seq < self.event_n
            && ev.payload_intact(bytes);
        valid.then_some((ev.cpu, ev.seq))
    }

    fn accept(&mut self, buf: u32, cpu: u32, seq: u64) {
        let event_n = self.event_n;
        let fresh = self
            .seen
            .entry(cpu)
            .or_insert_with(|| Seen::new(event_n))
            .mark(seq);
        if fresh {
            self.counts.received += 1;
        } else {
            self.counts.duplicated += 1;
            self.problem(format!("cpu {cpu} event {seq} received twice"));
        }
        if let Some(prev) = self.last.insert((buf, cpu), seq) {
            if seq <= prev && fresh {
                self.counts.out_of_order += 1;
                self.problem(format!(
                    "buffer {buf}: cpu {cpu} event {seq} after event {prev}"
                ));
            }
        }
    }

    /// Checks the bytes `data` delivered from the buffer of `buf`. With
    /// `stream` (read(2) chunks) an event may continue in the next chunk;
    /// otherwise (a whole sub-buffer) trailing bytes are a torn event.
    pub fn feed(&mut self, buf: u32, data: &[u8], stream: bool) {
        let mut bytes = self.carry.remove(&buf).unwrap_or_default();
        let had_carry = !bytes.is_empty();
        bytes.extend_from_slice(data);
        let size = self.size;
        let mut at = 0;
        let mut in_garbage = false;
        while at + size <= bytes.len() {
            match self.parse(&bytes[at..at + size]) {
                Some((cpu, seq)) => {
                    self.accept(buf, cpu, seq);
                    at += size;
                    in_garbage = false;
                }
                None if self.padding_words.is_some()
                    && !in_garbage
                    && self.padding_word_at(&bytes, at).is_none() =>
                {
                    // Perhaps a padding word: wait for the bytes after it.
                    break;
                }
                None if !in_garbage && self.padding_word_at(&bytes, at) == Some(true) => {
                    self.counts.padding_words += 1;
                    at += 4;
                }
                None => {
                    if !in_garbage {
                        self.counts.corrupt += 1;
                        let what = if had_carry && at == 0 {
                            "an event split across read(2) chunks does not continue"
                        } else {
                            "bytes that are not a valid event"
                        };
                        self.problem(format!("buffer {buf}: {what} at offset {at}"));
                        in_garbage = true;
                    }
                    // Resynchronise on the next valid event.
                    at += 1;
                }
            }
        }
        let rest = &bytes[at..];
        if !rest.is_empty() {
            if stream {
                self.carry.insert(buf, rest.to_vec());
            } else if !in_garbage {
                self.counts.corrupt += 1;
                self.problem(format!(
                    "buffer {buf}: sub-buffer ends with {} bytes of a torn event",
                    rest.len()
                ));
            }
        }
    }

    /// Ends the test: bytes still carried over are torn events.
    pub fn finish(&mut self) {
        let carried: Vec<(u32, usize)> = self.carry.iter().map(|(b, v)| (*b, v.len())).collect();
        for (buf, len) in carried {
            // A padding word alone at the very end: the last sub-buffer
            // holds nothing else.
            if len == 4 && self.padding_words.is_some() {
                self.counts.padding_words += 1;
                continue;
            }
            self.counts.corrupt += 1;
            self.problem(format!(
                "buffer {buf}: the stream ends with {len} bytes of a torn event"
            ));
        }
        self.carry.clear();
    }

    /// Distinct events received per source CPU.
    pub fn received_of(&self, cpu: u32) -> u64 {
        self.seen.get(&cpu).map_or(0, |s| {
            s.bits.iter().map(|w| u64::from(w.count_ones())).sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(cpu: u32, seq: u64, size: usize) -> Vec<u8> {
        let mut ev = Vec::with_capacity(size);
        ev.extend_from_slice(&cpu.to_ne_bytes());
        ev.extend_from_slice(&(size as u32).to_ne_bytes());
        ev.extend_from_slice(&seq.to_ne_bytes());
        ev.resize(size, seq as u8);
        ev
    }

    #[test]
    fn counts_duplicates_torn_and_split_events() {
        let mut c = Checker::new(24, 100);
        let mut data: Vec<u8> = (0..4).flat_map(|s| event(0, s, 24)).collect();
        c.feed(0, &data, false);
        assert_eq!(c.counts.received, 4);
        // A duplicate and a torn tail.
        data = event(0, 3, 24);
        data.extend_from_slice(&event(0, 4, 24)[..10]);
        c.feed(0, &data, false);
        assert_eq!((c.counts.duplicated, c.counts.corrupt), (1, 1));
        // Split across chunks: fine.
        let ev = event(1, 7, 24);
        c.feed(1, &ev[..5], true);
        c.feed(1, &ev[5..], true);
        c.finish();
        assert_eq!(c.counts.received, 5);
        assert_eq!(c.counts.corrupt, 1);
        // Garbage in the middle resynchronises.
        let mut data = event(0, 10, 24);
        data.extend_from_slice(&[0xee; 7]);
        data.extend_from_slice(&event(0, 11, 24));
        c.feed(0, &data, false);
        assert_eq!((c.counts.received, c.counts.corrupt), (7, 2));
        assert_eq!(c.received_of(0), 6);
    }

    #[test]
    fn padding_words_of_read_chunks_are_skipped() {
        let mut c = Checker::new(24, 100).with_padding_words(64);
        let mut data = 12u32.to_ne_bytes().to_vec();
        data.extend(event(0, 0, 24));
        data.extend(event(0, 1, 24));
        data.extend(0u32.to_ne_bytes());
        data.extend(&event(0, 2, 24)[..3]);
        c.feed(0, &data[..26], true);
        c.feed(0, &data[26..], true);
        c.feed(0, &event(0, 2, 24)[3..], true);
        c.feed(0, &7u32.to_ne_bytes(), true);
        c.finish();
        assert_eq!(
            (c.counts.received, c.counts.padding_words, c.counts.corrupt),
            (3, 3, 0)
        );
        // Too large to be a padding word.
        c.feed(1, &99u32.to_ne_bytes(), true);
        c.feed(1, &event(1, 0, 24), true);
        c.finish();
        assert_eq!(c.counts.corrupt, 1);
    }
}
