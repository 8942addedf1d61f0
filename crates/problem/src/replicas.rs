//! An indexed placement: per workload, the sites it runs on and how many
//! replicas on each — what the solvers return, `evaluate` prices, the
//! planner moves towards and explanations read. `Placement` (in the model)
//! is the same by ids, for files and the API; `Problem::placement_of` and
//! `Problem::index_placement` convert.

use std::ops::{Deref, DerefMut};

use crate::ix::{IndexVec, SiteIx, WorkloadIx};

/// One workload's sites: (site, replicas), no site twice.
pub type Sites = Vec<(SiteIx, u32)>;

/// Workload → (site, replicas), sites in no particular order, no site
/// twice; a site absent holds none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Replicas(IndexVec<WorkloadIx, Sites>);

impl Replicas {
    /// Nothing placed, for `workloads` workloads.
    pub fn empty(workloads: usize) -> Replicas {
        Replicas(IndexVec::from_elem_n(Vec::new(), workloads))
    }

    /// Replicas of workload `wi` on site `si`.
    pub fn count(&self, wi: WorkloadIx, si: SiteIx) -> u32 {
        self.0[wi]
            .iter()
            .find(|(s, _)| *s == si)
            .map_or(0, |(_, n)| *n)
    }

    /// Replicas of workload `wi` placed anywhere.
    pub fn placed(&self, wi: WorkloadIx) -> u32 {
        self.0[wi].iter().map(|(_, n)| n).sum()
    }

    pub fn into_inner(self) -> IndexVec<WorkloadIx, Sites> {
        self.0
    }
}

impl From<IndexVec<WorkloadIx, Sites>> for Replicas {
    fn from(per_workload: IndexVec<WorkloadIx, Sites>) -> Replicas {
        Replicas(per_workload)
    }
}

impl From<Vec<Sites>> for Replicas {
    fn from(per_workload: Vec<Sites>) -> Replicas {
        Replicas(IndexVec::from_raw(per_workload))
    }
}

impl FromIterator<Sites> for Replicas {
    fn from_iter<I: IntoIterator<Item = Sites>>(iter: I) -> Replicas {
        Replicas(iter.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Replicas {
    type Item = &'a Sites;
    type IntoIter = std::slice::Iter<'a, Sites>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl Deref for Replicas {
    type Target = IndexVec<WorkloadIx, Sites>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Replicas {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}
