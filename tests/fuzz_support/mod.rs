//! Shared settings for the `fuzz_*` property tests: a case budget small enough for CI, raised for
//! a long run with `PROPTEST_CASES` (see `docs/fuzzing.md`), and helpers to cut a byte string
//! into the chunks a socket might deliver.

#![allow(dead_code)]

use proptest::prelude::*;
use proptest::sample::Index;

/// Proptest settings with `ci_cases` cases unless `PROPTEST_CASES` says otherwise.
pub fn config(ci_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    config
}

/// As [`config`], but never more than `max_cases` even in a long run: for properties whose
/// cases are costly and whose input space is small (e.g. a nesting depth).
pub fn config_capped(ci_cases: u32, max_cases: u32) -> ProptestConfig {
    let mut config = config(ci_cases);
    config.cases = config.cases.min(max_cases);
    config
}

/// Random cut points for [`chunks`].
pub fn cuts() -> impl Strategy<Value = Vec<Index>> {
    prop::collection::vec(any::<Index>(), 0..24)
}

/// `bytes` cut at `cuts` (positions taken modulo the length, sorted, duplicates dropped): the
/// reads a peer's writes could arrive as.
pub fn chunks<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &bytes[w[0]..w[1]]).collect()
}
