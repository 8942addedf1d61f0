//! An indexed placement: per workload, the sites it runs on and how many
//! replicas on each — what the solvers return, `evaluate` prices, the
//! planner moves towards and explanations read. `Placement` (in the model)
//! is the same by ids, for files and the API; `Problem::placement_of` and
//! `Problem::index_placement` convert.

use std::ops::{Deref, DerefMut};

/// Workload index → (site index, replicas), sites in no particular order,
/// no site twice; a site absent holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replicas(Vec<Vec<(usize, u32)>>);

impl Replicas {
    /// Nothing placed, for `workloads` workloads.
    pub fn empty(workloads: usize) -> Replicas {
        Replicas(vec![Vec::new(); workloads])
    }

    /// Replicas of workload `wi` on site `si`.
    pub fn count(&self, wi: usize, si: usize) -> u32 {
        self.0[wi]
            .iter()
            .find(|(s, _)| *s == si)
            .map_or(0, |(_, n)| *n)
    }

    /// Replicas of workload `wi` placed anywhere.
    pub fn placed(&self, wi: usize) -> u32 {
        self.0[wi].iter().map(|(_, n)| n).sum()
    }

    pub fn into_inner(self) -> Vec<Vec<(usize, u32)>> {
        self.0
    }
}

impl From<Vec<Vec<(usize, u32)>>> for Replicas {
    fn from(per_workload: Vec<Vec<(usize, u32)>>) -> Replicas {
        Replicas(per_workload)
    }
}

impl FromIterator<Vec<(usize, u32)>> for Replicas {
    fn from_iter<I: IntoIterator<Item = Vec<(usize, u32)>>>(iter: I) -> Replicas {
        Replicas(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Replicas {
    type Item = &'a Vec<(usize, u32)>;
    type IntoIter = std::slice::Iter<'a, Vec<(usize, u32)>>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Deref for Replicas {
    type Target = [Vec<(usize, u32)>];
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Replicas {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
