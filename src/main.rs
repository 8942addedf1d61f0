//! The `edgeplan` command line: a thin shell over the library (file I/O,
//! argument parsing, exit codes, timing). No placement logic lives here.
//!
//! This file only parses and dispatches: each subcommand is a module of
//! `cmd` with its flags (`Args`) and its `run`.

mod cmd;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgeplan",
    version,
    about = "Workload-aware placement for fleets of micro data centers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Each variant's doc comment is its subcommand's about text in `--help`.
#[derive(Subcommand)]
enum Command {
    /// See edgeplan work: a real-city fleet, live telemetry, a heat wave and
    /// a price spike, re-plans executed by a provisioner, an operator report.
    Demo(cmd::demo::Args),
    /// Run the gRPC service (inventory, telemetry, placement, dispatch).
    Serve(cmd::serve::Args),
    /// Run the reference provisioner, which simulates executing plan steps.
    ProvisionerSim(cmd::provisioner_sim::Args),
    /// Make a bearer token for `serve`'s `auth.tokens`: prints the token
    /// (give it to its holder) and the config entry (only its SHA-256).
    Token(cmd::token::Args),
    /// Publish synthetic site telemetry to NATS JetStream (what sites'
    /// gateways do in cluster mode); with --server, register the fleet and
    /// wait until the service's state holds every reading, then print the
    /// rate end to end.
    Publish(cmd::publish::Args),
    /// Poll servers' BMCs over Redfish (inlet, power, fans, GPU power) and
    /// send the readings to the service or to NATS JetStream.
    Collect(cmd::collect::Args),
    /// Measure `collect` against simulated BMCs on loopback: readings/s,
    /// and with --server the delay from a BMC change to WatchSites.
    CollectBench(cmd::collect::BenchArgs),
    /// Load a running service: telemetry streams, solves and watches for a
    /// fixed time; prints samples/s, ack and solve latency, errors, memory.
    #[command(alias = "load-telemetry")]
    Load(cmd::load::Args),
    /// Write the operator report: one self-contained HTML page, or Markdown.
    Report(cmd::report::Args),
    /// Register an instance file's fleet with a running service.
    Push(cmd::push::Args),
    /// Check an instance file; lists every problem with its path.
    Validate(cmd::validate::Args),
    /// Print the JSON Schema of the instance format.
    Schema(cmd::schema::Args),
    /// List the built-in server power models.
    Models(cmd::models::Args),
    /// Solve the exact placement model.
    Solve(cmd::solve::Args),
    /// Solve INSTANCE on the fast path, then re-plan incrementally for the
    /// changes that turn it into CHANGED (a site's telemetry, a workload's
    /// demand…): only what must change moves.
    Replan(cmd::replan::Args),
    /// Plan the migration from today's placement to a target placement.
    Plan(cmd::plan::Args),
    /// Replay a plan against an instance: safety at every wave, limits, end state, staleness.
    VerifyPlan(cmd::verify_plan::Args),
    /// Check a placement against an instance; lists every violation.
    Verify(cmd::verify::Args),
    /// Per-site spot prices (the optimizer's multipliers on the on-demand
    /// work, above an energy and carbon floor), each explained, and what
    /// the spot workloads get at them.
    SpotPrices(cmd::spot_prices::Args),
    /// Write the exact MILP in a standard format.
    Export(cmd::export::Args),
    /// Apply sensor telemetry to an instance: sanity checks, fitted thermal and
    /// power models, ambient and demand forecasts → the effective instance.
    Telemetry(cmd::telemetry::Args),
    /// Run what-if scenarios in parallel and compare their KPIs.
    Whatif(cmd::whatif::Args),
    /// Replay a fleet hour by hour through a real year of prices, carbon
    /// and weather under policies side by side; compare cost, carbon,
    /// moves, SLOs and breaches.
    Replay(cmd::replay::Args),
    /// Scale benchmark: per size, generate an instance, solve it in a fresh
    /// process and print method, wall time, objective, bound, gap and peak
    /// memory.
    Bench(cmd::bench::Args),
    /// Generate a realistic instance from the shipped real data.
    Gen(cmd::gen::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("EDGEPLAN_LOG"))
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => cmd::demo::run(args)?,
        Command::Serve(args) => cmd::serve::run(args)?,
        Command::ProvisionerSim(args) => cmd::provisioner_sim::run(args)?,
        Command::Token(args) => cmd::token::run(args)?,
        Command::Publish(args) => cmd::publish::run(args)?,
        Command::Collect(args) => cmd::collect::run(args)?,
        Command::CollectBench(args) => cmd::collect::bench(args)?,
        Command::Load(args) => cmd::load::run(args)?,
        Command::Report(args) => cmd::report::run(args)?,
        Command::Push(args) => cmd::push::run(args)?,
        Command::Validate(args) => cmd::validate::run(args)?,
        Command::Schema(args) => cmd::schema::run(args)?,
        Command::Models(args) => cmd::models::run(args)?,
        Command::Solve(args) => cmd::solve::run(args)?,
        Command::Replan(args) => cmd::replan::run(args)?,
        Command::Plan(args) => cmd::plan::run(args)?,
        Command::SpotPrices(args) => cmd::spot_prices::run(args)?,
        // The verifiers pick their exit code: failure when what they check is broken.
        Command::VerifyPlan(args) => return cmd::verify_plan::run(args),
        Command::Verify(args) => return cmd::verify::run(args),
        Command::Export(args) => cmd::export::run(args)?,
        Command::Telemetry(args) => cmd::telemetry::run(args)?,
        Command::Whatif(args) => cmd::whatif::run(args)?,
        Command::Replay(args) => cmd::replay::run(args)?,
        Command::Bench(args) => cmd::bench::run(args)?,
        Command::Gen(args) => cmd::gen::run(args)?,
    }
    Ok(ExitCode::SUCCESS)
}
