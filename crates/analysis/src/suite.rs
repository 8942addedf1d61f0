//! The benchmark suite: which generated fleets the optimizer is measured
//! on. One list, read by `edgeplan bench --suite`, `benches/suite.rs` and
//! (through `bench --suite NAME --list`) `scripts/peer.py`, so the three
//! never measure different things.

use crate::gen::Family;

/// One instance of the suite and the time it is solved in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SuiteEntry {
    pub family: Family,
    pub replicas: usize,
    pub sites: usize,
    /// Share of the fleet's CPU the demand uses.
    pub load: f64,
    pub seed: u64,
    pub time_limit_s: f64,
}

/// The suites by name, smallest first.
pub const SUITES: [&str; 3] = ["smoke", "quick", "full"];

/// The instances of suite `name`: families and loads where fleets are
/// tight, two seeds each, and the sizes the README's numbers are about.
/// - `smoke`: every family at 400 × 20, load 0.85, 0.5 s (for tests);
/// - `quick`: 5,000 × 100 — `standard` at loads 0.6 / 0.7 / 0.8 / 0.9,
///   `gpu-tight`, `metro` and `rules` at 0.8 — seeds 1 and 2, 1 s;
/// - `full`: `quick`, then 100,000 × 1,000 (`standard` at 0.8 and 0.9,
///   `gpu-tight` at 0.8) at 10 s and 1,000,000 × 5,000 at 60 s.
pub fn suite(name: &str) -> Result<Vec<SuiteEntry>, String> {
    let entry = |family, replicas, sites, load, seed, time_limit_s| SuiteEntry {
        family,
        replicas,
        sites,
        load,
        seed,
        time_limit_s,
    };
    let mut entries = Vec::new();
    match name {
        "smoke" => {
            for family in Family::ALL {
                entries.push(entry(family, 400, 20, 0.85, 1, 0.5));
            }
        }
        "quick" | "full" => {
            for load in [0.6, 0.7, 0.8, 0.9] {
                for seed in [1, 2] {
                    entries.push(entry(Family::Standard, 5_000, 100, load, seed, 1.0));
                }
            }
            for family in [Family::GpuTight, Family::Metro, Family::Rules] {
                for seed in [1, 2] {
                    entries.push(entry(family, 5_000, 100, 0.8, seed, 1.0));
                }
            }
            if name == "full" {
                for load in [0.8, 0.9] {
                    entries.push(entry(Family::Standard, 100_000, 1_000, load, 1, 10.0));
                }
                entries.push(entry(Family::GpuTight, 100_000, 1_000, 0.8, 1, 10.0));
                entries.push(entry(Family::Standard, 1_000_000, 5_000, 0.7, 1, 60.0));
            }
        }
        other => {
            return Err(format!(
                "unknown suite {other:?}: one of {}",
                SUITES.join(", ")
            ))
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_suite_exists_and_full_extends_quick() {
        for name in SUITES {
            assert!(!suite(name).unwrap().is_empty(), "{name}");
        }
        let quick = suite("quick").unwrap();
        let full = suite("full").unwrap();
        assert_eq!(&full[..quick.len()], &quick[..]);
        assert!(full.len() > quick.len());
        assert!(suite("huge").unwrap_err().contains("huge"));
    }
}
