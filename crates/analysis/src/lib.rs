//! Questions asked of the core: what-if scenarios, the solve report, and
//! the synthetic fleet generator. Pure.

pub mod gen;
pub mod report;
pub mod whatif;
