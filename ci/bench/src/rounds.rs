//! Contenders measured in rounds, taking turns: the runs, the median run,
//! and a table cell listing every run.

use anyhow::Result;

/// Runs `measure(i)` for every contender `i` in each of `rounds` rounds,
/// the contenders taking turns so that a slow phase of the host hits all of
/// them. Returns every contender's results in run order; a contender whose
/// `measure` gives `None` (could not be measured) has none from that round.
pub fn take_turns<T>(
    rounds: u32,
    contenders: usize,
    mut measure: impl FnMut(usize) -> Result<Option<T>>,
) -> Result<Vec<Vec<T>>> {
    let mut runs: Vec<Vec<T>> = (0..contenders).map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        for (i, of_contender) in runs.iter_mut().enumerate() {
            eprint!("round {round}/{rounds}: ");
            of_contender.extend(measure(i)?);
        }
    }
    Ok(runs)
}

/// The run with the median CPU time of `runs` (taken in turns), and the CPU
/// seconds of every run in run order.
pub fn median_run<T>(mut runs: Vec<T>, cpu: impl Fn(&T) -> f64) -> (T, Vec<f64>) {
    let of_each = runs.iter().map(&cpu).collect();
    runs.sort_by(|a, b| cpu(a).total_cmp(&cpu(b)));
    (runs.swap_remove(runs.len() / 2), of_each)
}

/// A table cell listing the per-run values `runs` (`-` without runs).
pub fn runs_cell<T>(runs: &[T], fmt: impl Fn(&T) -> String) -> String {
    if runs.is_empty() {
        return "-".into();
    }
    runs.iter().map(fmt).collect::<Vec<_>>().join(", ")
}

/// The spread of a ratio `a / b` over rounds taken in turns: the lowest
/// and highest of the per-round ratios `a[i] / b[i]`, times `scale` (the
/// part of the ratio that is the same in every round, such as bytes per
/// run). `None` without two rounds in common.
pub fn ratio_spread(a: &[f64], b: &[f64], scale: f64) -> Option<(f64, f64)> {
    let ratios: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(a, b)| a / b * scale)
        .filter(|r| r.is_finite())
        .collect();
    if ratios.len() < 2 {
        return None;
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((min, max))
}

/// `" (rounds 0.18-0.25, 5 rounds)"` for a spread, or nothing.
pub fn spread_note(spread: Option<(f64, f64)>, rounds: usize) -> String {
    spread.map_or(String::new(), |(lo, hi)| {
        format!(" (rounds {lo:.2}-{hi:.2}, {rounds} rounds)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_run_keeps_the_median_and_every_run_in_order() {
        let (median, of_each) = median_run(vec![("a", 3.0), ("b", 1.0), ("c", 2.0)], |r| r.1);
        assert_eq!(median, ("c", 2.0));
        assert_eq!(of_each, [3.0, 1.0, 2.0]);
        let (only, of_each) = median_run(vec![0.5], |&c| c);
        assert_eq!((only, of_each), (0.5, vec![0.5]));
    }

    #[test]
    fn take_turns_alternates_the_contenders_and_keeps_run_order() {
        let mut order = Vec::new();
        let runs = take_turns(2, 3, |i| {
            order.push(i);
            Ok((i != 1).then_some(order.len()))
        })
        .unwrap();
        assert_eq!(order, [0, 1, 2, 0, 1, 2]);
        assert_eq!(runs, [vec![1, 4], vec![], vec![3, 6]]);
    }

    #[test]
    fn ratio_spread_pairs_the_rounds() {
        let spread = ratio_spread(&[1.0, 2.0, 3.0], &[2.0, 2.0, 2.0], 0.5).unwrap();
        assert_eq!(spread, (0.25, 0.75));
        assert_eq!(ratio_spread(&[1.0], &[2.0], 1.0), None);
        assert_eq!(
            spread_note(Some((0.25, 0.75)), 3),
            " (rounds 0.25-0.75, 3 rounds)"
        );
        assert_eq!(spread_note(None, 3), "");
    }

    #[test]
    fn runs_cell_lists_the_runs_or_a_dash() {
        assert_eq!(runs_cell(&[0u64, 16684], u64::to_string), "0, 16684");
        assert_eq!(runs_cell(&[0.125f64], |c| format!("{c:.2}")), "0.12");
        assert_eq!(runs_cell::<u64>(&[], u64::to_string), "-");
    }
}
