//! `edgeplan replay`: a fleet stepped hour by hour through a real year of
//! prices, carbon and weather under policies side by side (see
//! `edgeplan::replay`), the comparison on the terminal and the tables in
//! CSV, Parquet or JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use edgeplan::replay::{
    comparison_table, replay, Demand, PolicyKind, ReplayOptions, Year, YearFiles,
};

use super::io::{load, read, write};
use super::whatif::{table_format, TableFormatArg};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum DemandArg {
    Diurnal,
    Flat,
}

#[derive(clap::Args)]
pub struct Args {
    /// The fleet (an instance file: sites, workloads, today's placement).
    #[arg(long)]
    pub fleet: PathBuf,
    /// A directory of hourly series (zones.csv, price_usd_per_mwh.csv,
    /// carbon_g_per_kwh.csv, temperature_c.csv, humidity_pct.csv); the
    /// shipped 2023 at ten grid zones when unset.
    #[arg(long)]
    pub year: Option<PathBuf>,
    /// First day (YYYY-MM-DD, or a full UTC hour); forecasts need the two
    /// days before it.
    #[arg(long, default_value = "2023-01-03")]
    pub from: String,
    #[arg(long, default_value_t = 7)]
    pub days: usize,
    /// Hours instead of --days.
    #[arg(long)]
    pub hours: Option<usize>,
    /// Policies, comma-separated: edgeplan, edgeplan-foresight, static,
    /// latency-only, lowest-price, lowest-carbon, most-available,
    /// round-robin, reactive-thermal (all when unset).
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// A site's zone (SITE=ZONE, repeatable); others take the zone whose
    /// weather station is nearest.
    #[arg(long = "zone")]
    pub zones: Vec<String>,
    /// Work budget of each hourly re-plan of edgeplan.
    #[arg(long)]
    pub work: Option<u64>,
    /// Hours edgeplan prices a move over when it decides (1: a move must
    /// pay for itself within the hour); outcomes count the full cost.
    #[arg(long, default_value_t = edgeplan::replay::DEFAULT_MOVE_AMORTIZATION_HOURS)]
    pub amortize_hours: f64,
    /// Workload demand: `diurnal` (the Azure 2019 mean day at each
    /// workload's users' local hour) or `flat` (the fleet's utilisation).
    #[arg(long, value_enum, default_value_t = DemandArg::Diurnal)]
    pub demand: DemandArg,
    /// Hours between decisions: `1h` (every hour), `4h`, `1d`; every hour
    /// is judged.
    #[arg(long, default_value = "1h")]
    pub step: String,
    /// Hour × policy table here; the day × policy table (`NAME-days.EXT`)
    /// and the hour × site × policy table (`NAME-sites.EXT`) beside it.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The replay report, one self-contained HTML page.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(long, value_enum)]
    pub format: Option<TableFormatArg>,
    /// Print the totals and the site zones as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let fleet = load(&args.fleet)?;
    let year = match &args.year {
        None => Year::shipped_2023().map_err(anyhow::Error::msg)?,
        Some(dir) => {
            let file = |name: &str| read(&dir.join(name));
            let texts = [
                file("zones.csv")?,
                file("price_usd_per_mwh.csv")?,
                file("carbon_g_per_kwh.csv")?,
                file("temperature_c.csv")?,
                file("humidity_pct.csv")?,
            ];
            Year::parse(&YearFiles {
                zones: &texts[0],
                price_usd_per_mwh: &texts[1],
                carbon_g_per_kwh: &texts[2],
                temperature_c: &texts[3],
                humidity_pct: &texts[4],
            })
            .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        }
    };
    let from_hour = year
        .hour_of(&args.from)
        .map_err(|e| anyhow::anyhow!("--from: {e}"))?;
    let hours = args.hours.unwrap_or(args.days * 24);
    let policies = if args.policies.is_empty() {
        PolicyKind::ALL.to_vec()
    } else {
        args.policies
            .iter()
            .map(|p| {
                p.parse::<PolicyKind>()
                    .map_err(|e| anyhow::anyhow!("--policies: {e}"))
            })
            .collect::<Result<Vec<_>>>()?
    };
    let mut zones = BTreeMap::new();
    for z in &args.zones {
        let Some((site, zone)) = z.split_once('=') else {
            bail!("--zone {z:?}: expected SITE=ZONE");
        };
        if !fleet.sites.iter().any(|s| s.id == site) {
            bail!("--zone {z:?}: the fleet has no site {site:?}");
        }
        zones.insert(site.to_string(), zone.to_string());
    }
    let mut opts = ReplayOptions {
        from_hour,
        hours,
        policies,
        zones,
        site_hours: args.out.is_some() || args.report.is_some(),
        step_hours: step_hours(&args.step)?,
        demand: match args.demand {
            DemandArg::Diurnal => Demand::Diurnal,
            DemandArg::Flat => Demand::Flat,
        },
        move_amortization_hours: args.amortize_hours,
        ..ReplayOptions::default()
    };
    if let Some(work) = args.work {
        opts.replan_work = work;
    }
    let bar = indicatif::ProgressBar::new(hours as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} hours {elapsed} (eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let result = replay(&fleet, &year, &opts, &|h| bar.set_position(h as u64))
        .with_context(|| format!("replaying {}", args.fleet.display()))?;
    bar.finish_and_clear();
    eprint!("{}", comparison_table(&result));
    eprintln!(
        "{} hours × {} policies in {:.1} s",
        hours,
        opts.policies.len(),
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.out {
        let fmt = table_format(args.format, path);
        let written = edgeplan::tables::write_replay(path, &result, fmt)?;
        let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
        eprintln!("wrote {}", names.join(", "));
    }
    if let Some(path) = &args.report {
        let title = format!(
            "{} replayed, {} to {}",
            args.fleet.file_name().map_or_else(
                || args.fleet.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            result.first_hour,
            result.last_hour
        );
        write(path, &edgeplan::replay_report::html(&title, &result))?;
        eprintln!("wrote {}", path.display());
    }
    if args.json {
        let summary = serde_json::json!({
            "first_hour": result.first_hour,
            "last_hour": result.last_hour,
            "hours": result.hours,
            "start": result.start,
            "site_zones": result.site_zones,
            "totals": result.totals,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    }
    Ok(())
}

/// `1h`, `4h`, `1d`, or a bare number of hours.
fn step_hours(text: &str) -> Result<usize> {
    let t = text.trim();
    let (number, unit) = match t.strip_suffix('d') {
        Some(n) => (n, 24),
        None => (t.strip_suffix('h').unwrap_or(t), 1),
    };
    match number.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n * unit),
        _ => bail!("--step {text:?}: expected whole hours or days, at least one (1h, 4h, 1d)"),
    }
}
