//! Questions asked of the core: what-if scenarios, a year replayed under
//! policies side by side, the solve report, the synthetic fleet generator
//! and the benchmark suite built from it. Pure.

pub mod accelerator_catalogue;
pub mod gen;
pub mod replay;
pub mod report;
pub mod suite;
pub mod whatif;
