//! One integration-test crate (one link of the big binary): modules by topic.

mod bad_input;
mod brute_force;
mod cli;
mod cluster;
mod common;
mod completion_order;
mod crash;
mod execution;
mod explanations;
mod export;
mod fast;
mod faults;
mod figures;
mod incremental;
mod inputs;
mod known_optimum;
mod live;
mod plan;
mod report;
mod seams;
mod security;
mod service;
mod store;
mod telemetry;
mod uplink;
mod whatif;
