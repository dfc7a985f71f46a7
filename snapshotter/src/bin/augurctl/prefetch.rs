//! `augurctl prefetch layer DIGEST [--wait]`: fetch a mounted lazy layer whole now, through the
//! admin API (`POST /prefetch/layer/{digest}`); with `--wait`, poll `GET /layers/{digest}` and
//! show bytes present of the layer's size until it is complete.

use std::time::Duration;

use anyhow::Context;
use augur_snapshotter::admin::AdminClient;
use augur_snapshotter::admin::layers::PrefetchLayer;
use augur_snapshotter::lazy::progress::LayerProgress;

use crate::admin_args::AdminArgs;
use crate::cache::human;

/// How often `--wait` asks for progress.
const POLL: Duration = Duration::from_millis(500);

/// `augurctl prefetch ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: AdminArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Fetch a mounted lazy layer whole now, in the background (demand reads still go first).
    Layer {
        /// The layer's digest (sha256:<64 hex>), as the image's manifest lists it.
        digest: String,
        /// Wait until every chunk is in the cache, with a progress bar on a terminal.
        #[arg(long)]
        wait: bool,
    },
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let Command::Layer { digest, wait } = args.command;
    let client = args.common.client()?;
    let asked: PrefetchLayer = client
        .post(&format!("/prefetch/layer/{digest}"), &serde_json::json!({}))
        .await?;
    if !wait || asked.layer.complete {
        if args.common.json {
            println!("{}", serde_json::to_string_pretty(&asked)?);
        } else {
            println!("{}: {}", asked.status, describe(&asked.layer));
        }
        return Ok(());
    }
    let done = wait_complete(&client, &asked.layer, args.common.quiet).await?;
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&done)?);
    } else {
        println!("complete: {}", describe(&done));
    }
    Ok(())
}

/// Polls the layer's progress until it is complete; fails if its fetch stops short.
async fn wait_complete(
    client: &AdminClient,
    start: &LayerProgress,
    quiet: bool,
) -> anyhow::Result<LayerProgress> {
    let bar = crate::progress::bytes(start.size_bytes, &short(&start.digest), quiet);
    let path = format!("/layers/{}", start.digest);
    loop {
        let p: LayerProgress = client
            .get(&path)
            .await
            .with_context(|| format!("following layer {}", start.digest))?;
        bar.set_position(p.present_bytes);
        if p.complete {
            bar.finish_and_clear();
            return Ok(p);
        }
        if !p.fetching {
            bar.abandon();
            anyhow::bail!(
                "the fetch of layer {} stopped with {} of {} present (the daemon's log says \
                 why; missing chunks are fetched when read); run the command again to retry",
                p.digest,
                human(p.present_bytes),
                human(p.size_bytes)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn describe(p: &LayerProgress) -> String {
    format!(
        "layer {} of {}: {} of {} present",
        p.digest,
        p.image_ref,
        human(p.present_bytes),
        human(p.size_bytes)
    )
}

/// `sha256:0123456789ab`, for the bar's label.
fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}
