//! `augurctl image plan REF`: an image's layers in the order Augur prefers to fetch them and the
//! models' prefetch plan for it, through the admin API (`POST /manifest/parse`).

use std::fmt::Write as _;

use augur_snapshotter::admin::manifest::ImagePlan;

use crate::admin_args::AdminArgs;
use crate::cache::human;

/// Chunks of the plan printed as text (`--json` has them all).
const SHOWN: usize = 10;

/// `augurctl image plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: AdminArgs,
    /// `os/architecture[/variant]` of the manifest to plan; default the daemon host's.
    #[arg(long)]
    platform: Option<String>,
    /// The image reference, as it would be pulled.
    image: String,
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let mut body = serde_json::json!({ "image": args.image });
    if let Some(p) = &args.platform {
        body["platform"] = p.clone().into();
    }
    let plan: ImagePlan = args.common.client()?.post("/manifest/parse", &body).await?;
    if args.common.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render(&plan));
    }
    Ok(())
}

fn render(p: &ImagePlan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}), manifest {}\nlayers, preferred first:",
        p.image, p.platform, p.manifest_digest
    );
    let _ = writeln!(
        out,
        "{:>3} {:<19} {:>10} {:>5} {:>10} {:>8}  note",
        "#", "layer", "size", "lazy", "landmark", "planned"
    );
    for (i, l) in p.layers.iter().enumerate() {
        let _ = writeln!(
            out,
            "{:>3} {:<19} {:>10} {:>5} {:>10} {:>8}  {}",
            i + 1,
            l.digest.chars().take(19).collect::<String>(),
            human(l.size),
            if l.lazy { "yes" } else { "no" },
            l.prefetch_landmark_bytes.map_or("-".into(), human),
            l.planned_chunks,
            l.note.as_deref().unwrap_or(""),
        );
    }
    let _ = writeln!(out, "order: {}", p.rule);
    match &p.plan.note {
        Some(note) => {
            let _ = writeln!(out, "prefetch plan: none ({note})");
        }
        None => render_plan(&mut out, p),
    }
    out
}

fn render_plan(out: &mut String, p: &ImagePlan) {
    let chunks = &p.plan.chunks;
    let cached = chunks.iter().filter(|c| c.cached).count();
    let _ = writeln!(
        out,
        "prefetch plan: {} chunks, {cached} cached already; first {}:",
        chunks.len(),
        chunks.len().min(SHOWN)
    );
    for c in chunks.iter().take(SHOWN) {
        let _ = writeln!(
            out,
            "  p={:.2} at +{}ms {}{}",
            c.probability,
            c.expected_in_ms,
            c.path.as_deref().unwrap_or(&c.chunk),
            if c.cached { " (cached)" } else { "" }
        );
    }
}
