//! Version 2 records as version 1 records, for Debian's blkparse: every
//! field v1 has is the same in v2 but the action, 64 bits wide in v2 and 32
//! in v1. A v2 record converts when its action fits: no category from bit
//! 16 on (zone management, write-zeroes) and an action code v1 knows.
//! Records that do not fit are never dropped silently: [`ToV1`] counts
//! them by kind, and both `relay-blktrace --to v1` and `relay-blktrace
//! convert` report the counts.

use std::collections::BTreeMap;

use relay_sys::blktrace::{
    __BLK_TA_CGROUP, __BLK_TA_DRV_DATA, __BLK_TA_ZONE_PLUG, __BLK_TA_ZONE_UNPLUG, BLK_TC_NOTIFY,
    BLK_TC_SHIFT,
};

use crate::record::{Abi, Record, CATEGORIES, V1_CATEGORIES};

/// What a v2 record is that v1 cannot carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Unfit {
    /// An operation of a category from bit 16 on (`zone-reset`,
    /// `write-zeroes`, ...).
    Category(&'static str),
    /// An action code v1 does not have (`zone-plug`, `zone-unplug`).
    Action(&'static str),
}

impl Unfit {
    /// The kind's name, as `-a` and the kernel's `act_mask` name categories.
    pub fn name(self) -> &'static str {
        match self {
            Unfit::Category(name) | Unfit::Action(name) => name,
        }
    }
}

/// The action code of a record's action (bits 0-15 without the cgroup flag).
pub fn action_code(action: u64) -> u32 {
    (action & 0xffff) as u32 & !__BLK_TA_CGROUP
}

/// The categories of a record's action (`BLK_TC_*` bits).
pub fn categories(action: u64) -> u64 {
    action >> BLK_TC_SHIFT
}

/// Why `action` has no v1 form, if it has none.
pub fn unfit(action: u64) -> Option<Unfit> {
    let categories = categories(action);
    let beyond = categories & !V1_CATEGORIES;
    if beyond != 0 {
        let bit = 1 << beyond.trailing_zeros();
        let name = CATEGORIES
            .iter()
            .find(|&&(_, b)| b == bit)
            .map_or("unknown category", |&(name, _)| name);
        return Some(Unfit::Category(name));
    }
    if categories & u64::from(BLK_TC_NOTIFY) != 0 {
        return None;
    }
    match action_code(action) {
        code if code <= __BLK_TA_DRV_DATA => None,
        __BLK_TA_ZONE_PLUG => Some(Unfit::Action("zone-plug")),
        __BLK_TA_ZONE_UNPLUG => Some(Unfit::Action("zone-unplug")),
        _ => Some(Unfit::Action("unknown action")),
    }
}

/// Appends the v1 form of `record` to `out` (a v1 record as it is), or
/// says why it has none.
pub fn to_v1(record: &Record<'_>, out: &mut Vec<u8>) -> Result<(), Unfit> {
    if record.abi() == Abi::V1 {
        out.extend_from_slice(record.bytes());
        return Ok(());
    }
    let action = record.action();
    if let Some(why) = unfit(action) {
        return Err(why);
    }
    let l = Abi::V1.layout();
    let start = out.len();
    out.resize(start + l.header_len, 0);
    let header = &mut out[start..];
    let mut put = |at: usize, bytes: &[u8]| header[at..at + bytes.len()].copy_from_slice(bytes);
    put(l.magic, &Abi::V1.magic().to_ne_bytes());
    put(l.sequence, &record.sequence().to_ne_bytes());
    put(l.time, &record.time().to_ne_bytes());
    put(l.sector, &record.sector().to_ne_bytes());
    put(l.bytes, &record.len_bytes().to_ne_bytes());
    // unfit() checked that it fits.
    put(l.action, &(action as u32).to_ne_bytes());
    put(l.pid, &record.pid().to_ne_bytes());
    put(l.device, &record.device().to_ne_bytes());
    put(l.cpu, &record.cpu().to_ne_bytes());
    put(l.error, &record.error().to_ne_bytes());
    put(l.pdu_len, &(record.pdu().len() as u16).to_ne_bytes());
    out.extend_from_slice(record.pdu());
    Ok(())
}

/// A conversion to v1 under way: what it converted and what it could not.
#[derive(Debug, Default, Clone)]
pub struct ToV1 {
    /// Records written as v1.
    pub converted: u64,
    /// Records v1 cannot carry, by kind.
    pub unfit: BTreeMap<Unfit, u64>,
}

impl ToV1 {
    /// Appends the v1 form of `record` to `out`, or counts it.
    pub fn convert(&mut self, record: &Record<'_>, out: &mut Vec<u8>) {
        match to_v1(record, out) {
            Ok(()) => self.converted += 1,
            Err(why) => *self.unfit.entry(why).or_default() += 1,
        }
    }

    /// Records not converted.
    pub fn unfit_total(&self) -> u64 {
        self.unfit.values().sum()
    }

    /// Adds another conversion's counts.
    pub fn add(&mut self, other: &ToV1) {
        self.converted += other.converted;
        for (&why, &n) in &other.unfit {
            *self.unfit.entry(why).or_default() += n;
        }
    }

    /// "N events v1 cannot carry (a zone-reset, b write-zeroes)", or
    /// `None` when everything converted.
    pub fn report(&self) -> Option<String> {
        let total = self.unfit_total();
        (total > 0).then(|| {
            let kinds: Vec<String> = self
                .unfit
                .iter()
                .map(|(why, n)| format!("{n} {}", why.name()))
                .collect();
            format!(
                "{total} events v1 cannot carry are not in the v1 output ({})",
                kinds.join(", ")
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record_on;
    use relay_sys::blktrace::{
        __BLK_TA_COMPLETE, __BLK_TA_QUEUE, __BLK_TN_PROCESS, BLK_TC_COMPLETE, BLK_TC_QUEUE,
        BLK_TC_WRITE, BLK_TC_WRITE_ZEROES, BLK_TC_ZONE_RESET,
    };

    fn act(code: u32, categories: u32) -> u64 {
        u64::from(code) | (u64::from(categories) << BLK_TC_SHIFT)
    }

    #[test]
    fn a_fitting_v2_record_becomes_the_v1_record_of_the_same_event() {
        let action = act(__BLK_TA_QUEUE, BLK_TC_QUEUE | BLK_TC_WRITE);
        let mut v2 = record_on(Abi::V2, 42, 1, action, b"pdu");
        // Fill every field with something distinct.
        let l2 = Abi::V2.layout();
        v2[l2.time..l2.time + 8].copy_from_slice(&123_456_789u64.to_ne_bytes());
        v2[l2.sector..l2.sector + 8].copy_from_slice(&8000u64.to_ne_bytes());
        v2[l2.bytes..l2.bytes + 4].copy_from_slice(&4096u32.to_ne_bytes());
        v2[l2.pid..l2.pid + 4].copy_from_slice(&77u32.to_ne_bytes());
        v2[l2.device..l2.device + 4].copy_from_slice(&((254u32 << 20) | 3).to_ne_bytes());
        v2[l2.error..l2.error + 2].copy_from_slice(&5u16.to_ne_bytes());
        let (r2, _) = Record::parse(&v2).unwrap().unwrap();
        let mut out = Vec::new();
        to_v1(&r2, &mut out).unwrap();
        let (r1, len) = Record::parse(&out).unwrap().unwrap();
        assert_eq!(len, out.len());
        assert_eq!(r1.abi(), Abi::V1);
        assert_eq!(
            (
                r1.sequence(),
                r1.time(),
                r1.sector(),
                r1.len_bytes(),
                r1.action()
            ),
            (42, 123_456_789, 8000, 4096, action)
        );
        assert_eq!(
            (r1.pid(), r1.device(), r1.cpu(), r1.error(), r1.pdu()),
            (77, (254 << 20) | 3, 1, 5, &b"pdu"[..])
        );
        // A v1 record stays as it is.
        let mut again = Vec::new();
        to_v1(&r1, &mut again).unwrap();
        assert_eq!(again, out);
    }

    #[test]
    fn what_v1_cannot_carry_is_counted_by_kind() {
        let mut conversion = ToV1::default();
        let mut out = Vec::new();
        let records = [
            act(
                __BLK_TA_QUEUE,
                BLK_TC_QUEUE | BLK_TC_WRITE | BLK_TC_ZONE_RESET,
            ),
            act(
                __BLK_TA_COMPLETE,
                BLK_TC_COMPLETE | BLK_TC_WRITE | BLK_TC_ZONE_RESET,
            ),
            act(
                __BLK_TA_QUEUE,
                BLK_TC_QUEUE | BLK_TC_WRITE | BLK_TC_WRITE_ZEROES,
            ),
            act(__BLK_TA_ZONE_PLUG, BLK_TC_QUEUE | BLK_TC_WRITE),
            act(__BLK_TA_COMPLETE, BLK_TC_COMPLETE | BLK_TC_WRITE),
            act(__BLK_TN_PROCESS, BLK_TC_NOTIFY),
        ];
        for (seq, action) in records.into_iter().enumerate() {
            let bytes = record_on(Abi::V2, seq as u32, 0, action, b"");
            let (r, _) = Record::parse(&bytes).unwrap().unwrap();
            conversion.convert(&r, &mut out);
        }
        assert_eq!(conversion.converted, 2);
        assert_eq!(out.len(), 2 * 48);
        assert_eq!(conversion.unfit_total(), 4);
        assert_eq!(
            conversion.report().unwrap(),
            "4 events v1 cannot carry are not in the v1 output \
             (1 write-zeroes, 2 zone-reset, 1 zone-plug)"
        );
        assert_eq!(ToV1::default().report(), None);
    }
}
