//! `augurctl cache status|evict|thresholds`: the chunk cache, through the daemon's admin API.

use augur_snapshotter::admin::Thresholds;

use crate::admin_args::AdminArgs;
use augur_snapshotter::cache::{CacheStatus, Evicted};

/// `augurctl cache ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: AdminArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Budgets, use and counters of each tier.
    Status,
    /// Drop the chunks of removed images now (or, with --all, every chunk).
    Evict {
        /// Also drop chunks that mounted layers use (they are fetched again when read).
        #[arg(long)]
        all: bool,
    },
    /// Set the probabilities above which prefetched chunks go to RAM and to NVMe.
    Thresholds {
        /// Prefetches at least this likely go to RAM (0-1).
        #[arg(long)]
        ram: f32,
        /// Prefetches at least this likely go to NVMe (0-1, at most --ram).
        #[arg(long)]
        nvme: f32,
    },
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = args.common.client()?;
    let json = args.common.json;
    match args.command {
        Command::Status => {
            let status: CacheStatus = client.get("/cache/status").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", render_status(&status));
            }
        }
        Command::Evict { all } => {
            let scope = if all { "all" } else { "unreferenced" };
            let evicted: Evicted = client
                .post("/cache/evict", &serde_json::json!({ "scope": scope }))
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&evicted)?);
            } else {
                println!("evicted {} chunks ({scope})", evicted.chunks);
            }
        }
        Command::Thresholds { ram, nvme } => {
            let t: Thresholds = client
                .put(
                    "/cache/thresholds",
                    &serde_json::json!({ "ram": ram, "nvme": nvme }),
                )
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&t)?);
            } else {
                println!("thresholds: ram >= {:.2}, nvme >= {:.2}", t.ram, t.nvme);
            }
        }
    }
    Ok(())
}

/// Bytes as a person reads them (binary units, one decimal).
pub(crate) fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn render_status(s: &CacheStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "policy {}; prefetches go to RAM at p >= {:.2}, to NVMe at p >= {:.2}",
        s.policy, s.ram_threshold, s.nvme_threshold
    );
    let _ = writeln!(
        out,
        "{:<5} {:>11} {:>11} {:>5} {:>8} {:>10} {:>10} {:>10} {:>10}  path",
        "tier", "used", "budget", "use%", "chunks", "hits", "evictions", "promoted", "demoted"
    );
    for t in &s.tiers {
        let pct = if t.budget_bytes == 0 {
            0.0
        } else {
            100.0 * t.used_bytes as f64 / t.budget_bytes as f64
        };
        let _ = writeln!(
            out,
            "{:<5} {:>11} {:>11} {:>4.0}% {:>8} {:>10} {:>10} {:>10} {:>10}  {}",
            serde_json::to_value(t.tier)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            human(t.used_bytes),
            human(t.budget_bytes),
            pct,
            t.chunks,
            t.hits,
            t.evictions,
            t.promotions,
            t.demotions,
            t.path
                .as_ref()
                .map_or("-".into(), |p| p.display().to_string()),
        );
    }
    let _ = writeln!(
        out,
        "misses {}, corrupt chunks dropped {}, chunks no tier took {}, chunks of mounted layers {}",
        s.misses, s.corrupt, s.rejected, s.referenced_chunks
    );
    out
}
