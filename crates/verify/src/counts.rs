//! Where replicas are: indexes of the instance's sites and workloads, and
//! (workload, site) → replicas counts.

use std::collections::{BTreeMap, HashMap};

use edgeplan_model::instance::Instance;

pub(crate) fn site_index(inst: &Instance) -> HashMap<&str, usize> {
    inst.sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect()
}

/// (workload, site) → replicas, as the loads and spread checks read them.
pub(crate) type Counts = BTreeMap<(usize, usize), u32>;

pub(crate) fn entries(counts: &Counts) -> impl Iterator<Item = (usize, usize, u32)> + '_ {
    counts.iter().map(|(&(w, s), &n)| (w, s, n))
}

/// Where the instance's replicas run now, and the (workload, site) pairs of
/// `current` that name no site.
pub(crate) fn current_counts<'a>(
    inst: &'a Instance,
    site_ix: &HashMap<&str, usize>,
) -> (Counts, Vec<(&'a str, &'a str)>) {
    let mut counts = Counts::new();
    let mut unknown = Vec::new();
    for (wi, w) in inst.workloads.iter().enumerate() {
        for (sid, n) in &w.current {
            match site_ix.get(sid.as_str()) {
                Some(&si) => *counts.entry((wi, si)).or_default() += n,
                None => unknown.push((w.id.as_str(), sid.as_str())),
            }
        }
    }
    (counts, unknown)
}

pub(crate) fn workload_index(inst: &Instance) -> HashMap<&str, usize> {
    inst.workloads
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect()
}
