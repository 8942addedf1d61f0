//! `edgeplan report`: the operator report (HTML or Markdown) from an
//! instance file, a running service's state, or what-if results alone.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

use edgeplan::instance::Instance;
use edgeplan::placement::Placement;
use edgeplan::problem::Problem;

use super::io::{load, read, write_out};
use super::runtime::runtime;
use super::server_args::ServerArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The instance (with today's placement); or use --server, or --whatif alone.
    #[arg(long, required_unless_present_any = ["server", "whatif"])]
    pub instance: Option<PathBuf>,
    /// A placement (or `solve`'s output) to report on; default today's placement.
    #[arg(long)]
    pub placement: Option<PathBuf>,
    /// A migration plan (`solve --plan-out` or `plan`).
    #[arg(long)]
    pub plan: Option<PathBuf>,
    /// What-if results: the JSON `edgeplan whatif` prints without --out.
    #[arg(long)]
    pub whatif: Option<PathBuf>,
    /// Report on a running service's state (the inventory as its telemetry
    /// makes it effective, as the solver sees it; the latest plan).
    #[arg(long, conflicts_with = "instance")]
    pub server: Option<String>,
    #[command(flatten)]
    pub auth: ServerArgs,
    #[arg(long, value_enum, default_value = "html")]
    pub format: ReportFormat,
    #[arg(long)]
    pub title: Option<String>,
    /// Where to write (stdout if absent).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let Args {
        instance,
        placement,
        plan,
        whatif,
        server,
        auth,
        format,
        title,
        out,
    } = args;
    let results: Option<Vec<edgeplan::whatif::ScenarioResult>> = match &whatif {
        Some(path) => Some(serde_json::from_str(&read(path)?).with_context(|| {
            format!(
                "{} is not what-if results (edgeplan whatif's JSON)",
                path.display()
            )
        })?),
        None => None,
    };
    let (inst, live_plan) = match (&instance, &server, &results) {
        (Some(path), _, _) => (load(path)?, None),
        (None, Some(url), _) => runtime()?.block_on(fetch_live(&auth.connect(url)))?,
        (None, None, Some(results)) => {
            // What-if results alone: the comparison and the base's sites.
            let title = title.unwrap_or_else(|| "edgeplan what-if report".into());
            let text = match format {
                ReportFormat::Html => edgeplan::operator_report::whatif_html(&title, results),
                ReportFormat::Md => edgeplan::operator_report::whatif_markdown(&title, results),
            };
            write_out(out.as_deref(), &text)?;
            return Ok(());
        }
        (None, None, None) => bail!("give --instance, --server or --whatif"),
    };
    let problem = Problem::build(&inst)?;
    let x = match &placement {
        Some(path) => {
            let p: Placement = serde_json::from_str(&read(path)?)
                .with_context(|| format!("{} is not a placement", path.display()))?;
            problem.index_placement(&p)?
        }
        None => problem.current_placement(),
    };
    let plan: Option<edgeplan::plan::Plan> = match &plan {
        Some(path) => Some(
            serde_json::from_str(&read(path)?)
                .with_context(|| format!("{} is not a plan", path.display()))?,
        ),
        None => live_plan,
    };
    let title = title.unwrap_or_else(|| {
        if inst.name.is_empty() {
            "edgeplan report".to_string()
        } else {
            format!("edgeplan report: {}", inst.name)
        }
    });
    let input = edgeplan::operator_report::ReportInput {
        title: &title,
        instance: &inst,
        problem: &problem,
        x: &x,
        plan: plan.as_ref(),
        whatif: results.as_deref(),
    };
    let text = match format {
        ReportFormat::Html => edgeplan::operator_report::html(&input),
        ReportFormat::Md => edgeplan::operator_report::markdown(&input),
    };
    write_out(out.as_deref(), &text)?;
    if let Some(path) = &out {
        eprintln!("report written to {}", path.display());
    }
    Ok(())
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ReportFormat {
    Html,
    Md,
}

/// A running service's effective inventory (as an instance: declared limits
/// as telemetry makes them now) and its latest plan that is not superseded.
async fn fetch_live(
    server: &edgeplan::service::client::Connect,
) -> Result<(Instance, Option<edgeplan::plan::Plan>)> {
    use edgeplan::api::pb;
    let channel = server.channel().await?;
    let mut inv = pb::inventory_client::InventoryClient::new(channel.clone());
    // The inventory as telemetry makes it effective: what the solver used.
    let snap = inv
        .get_inventory(pb::GetInventoryRequest {
            effective: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    let inst: Instance = serde_json::from_str(&snap.instance_json)?;
    let mut placement = pb::placement_client::PlacementClient::new(channel);
    let plans = placement
        .list_plans(pb::ListPlansRequest::default())
        .await?
        .into_inner()
        .plans;
    let latest = plans
        .iter()
        .rev()
        .find(|p| p.state != pb::PlanState::Superseded as i32);
    let plan = match latest {
        Some(p) => Some(
            edgeplan::service::client::plan_of(&mut placement, p.plan_id)
                .await?
                .1,
        ),
        None => None,
    };
    Ok((inst, plan))
}
