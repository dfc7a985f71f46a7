//! `augurctl trace list|export`: the access traces the daemon kept, through its admin API.
//! `export` writes the JSON Lines of `docs/traces.md` (what the trainer and the evaluator read),
//! counting the runs as they pass (a bar of runs written, on a terminal).

use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use anyhow::Context as _;
use augur_snapshotter::admin::AdminClient;
use augur_snapshotter::admin::traces::TraceList;
use indicatif::ProgressBar;
use tokio::io::AsyncWrite;

use crate::admin_args::AdminArgs;
use crate::cache::human;

/// `augurctl trace ...`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    common: AdminArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The kept traces: run, image, workload, start, accesses, bytes read.
    List,
    /// Every kept trace as JSON Lines, to a file or stdout.
    Export {
        /// Write to FILE (replaced) instead of stdout.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Runs the subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = args.common.client()?;
    match args.command {
        Command::List => {
            let list: TraceList = client.get("/traces").await?;
            if args.common.json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", render_list(&list));
            }
        }
        Command::Export { out } => {
            // The bar's length: the runs kept now (more may be written meanwhile).
            let kept = if crate::progress::wanted(args.common.quiet) {
                client.get::<TraceList>("/traces").await?.traces.len() as u64
            } else {
                0
            };
            let bar = crate::progress::items(kept, "runs written", args.common.quiet);
            export(&client, out, args.common.json, &bar).await?;
        }
    }
    Ok(())
}

async fn export(
    client: &AdminClient,
    out: Option<PathBuf>,
    json: bool,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let (bytes, runs) = match &out {
        Some(path) => {
            // Written beside the target and renamed: a failed export leaves no half file.
            let tmp = path.with_extension("jsonl.partial");
            let file = tokio::fs::File::create(&tmp)
                .await
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let mut counted = CountRuns::new(file, bar.clone());
            let copied = match client.get_to("/traces/export", &mut counted).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(e.into());
                }
            };
            counted.inner.sync_all().await?;
            tokio::fs::rename(&tmp, path).await.with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), path.display())
            })?;
            (copied, counted.runs)
        }
        None => {
            // stdout as a tokio file (its writes run on the blocking pool).
            let fd = std::os::fd::AsFd::as_fd(&std::io::stdout()).try_clone_to_owned()?;
            let stdout = tokio::fs::File::from_std(std::fs::File::from(fd));
            let mut counted = CountRuns::new(stdout, bar.clone());
            let copied = client.get_to("/traces/export", &mut counted).await?;
            (copied, counted.runs)
        }
    };
    bar.finish_and_clear();
    let target = out.map_or("stdout".to_owned(), |p| p.display().to_string());
    if json {
        eprintln!(
            "{}",
            serde_json::json!({ "bytes": bytes, "runs": runs, "out": target })
        );
    } else {
        eprintln!(
            "exported {runs} run(s), {} of traces, to {target}",
            human(bytes)
        );
    }
    Ok(())
}

/// The start of a run's header line in the export.
const RUN_LINE: &[u8] = br#"{"type":"run""#;

/// A writer that passes bytes through and counts the run header lines among them.
struct CountRuns<W> {
    inner: W,
    bar: ProgressBar,
    /// The first bytes of the line being written.
    head: Vec<u8>,
    runs: u64,
}

impl<W> CountRuns<W> {
    fn new(inner: W, bar: ProgressBar) -> Self {
        CountRuns {
            inner,
            bar,
            head: Vec::with_capacity(RUN_LINE.len()),
            runs: 0,
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                if self.head == RUN_LINE {
                    self.runs += 1;
                    self.bar.inc(1);
                }
                self.head.clear();
            } else if self.head.len() < RUN_LINE.len() {
                self.head.push(b);
            }
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountRuns<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.scan(&buf[..n]);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn render_list(list: &TraceList) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if list.traces.is_empty() {
        out.push_str(
            "no traces kept yet: a trace is written when a container that ran on lazily mounted \
             layers is removed\n",
        );
    } else {
        let _ = writeln!(
            out,
            "{:<21} {:<24} {:>9} {:>10} {:<26} image",
            "run", "started (UTC)", "accesses", "read", "workload"
        );
    }
    for t in &list.traces {
        let _ = writeln!(
            out,
            "{:<21} {:<24} {:>9} {:>10} {:<26} {}",
            t.run,
            utc(t.started_unix_ms),
            t.accesses,
            human(t.bytes),
            t.workload,
            t.image
        );
    }
    let r = &list.recorder;
    let _ = writeln!(
        out,
        "active runs {}, traces written {}, events dropped {}, unattributed reads {}, write errors {}",
        r.active_runs, r.traces_written, r.dropped_events, r.unattributed_events, r.write_errors
    );
    out
}

/// Unix milliseconds as `YYYY-MM-DD hh:mm:ss` (UTC).
fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn run_lines_are_counted_across_writes() {
        use tokio::io::AsyncWriteExt;
        let mut w = super::CountRuns::new(Vec::new(), indicatif::ProgressBar::hidden());
        let text = "{\"type\":\"run\",\"v\":1}\n{\"type\":\"access\"}\n{\"type\":\"ru\"}\n{\"type\":\"run\"}\n";
        for piece in text.as_bytes().chunks(5) {
            w.write_all(piece).await.unwrap();
        }
        assert_eq!(w.runs, 2);
        assert_eq!(w.inner, text.as_bytes());
    }

    #[test]
    fn utc_dates_are_civil() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00");
        // 2026-11-29 23:53:21 UTC
        assert_eq!(super::utc(1_795_996_401_000), "2026-11-29 23:53:21");
        assert_eq!(super::utc(951_782_400_000), "2000-02-29 00:00:00");
    }
}
