//! One module per subcommand, each with its `Args` and `run`, and the few
//! helpers they share (`io`, `runtime`, `server_args`, `verified`).

pub mod bench;
pub mod collect;
pub mod demo;
pub mod export;
pub mod gen;
pub mod load;
pub mod models;
pub mod plan;
pub mod provisioner_sim;
pub mod publish;
pub mod push;
pub mod replan;
pub mod replay;
pub mod report;
pub mod schema;
pub mod serve;
pub mod solve;
pub mod spot_prices;
pub mod telemetry;
pub mod token;
pub mod validate;
pub mod verify;
pub mod verify_plan;
pub mod whatif;

mod io;
mod runtime;
mod server_args;
mod verified;
