//! Debian's headless Chromium, for tests of pages the daemon serves: [`dump_dom`] (the DOM after
//! the page's scripts ran) and [`screenshot`] (a PNG), each one bounded run whose whole process
//! group is killed if it outlives its limit or the test panics ([`Browser`]). Its profile lives
//! in the test's directory, never in the user's home.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long one Chromium run may take (start-up on a loaded 2-core machine is slow; the page's
/// own time is virtual and bounded by `--virtual-time-budget`).
const LIMIT: Duration = Duration::from_secs(120);

/// A running Chromium, in its own process group: killed with its children on drop.
#[derive(Debug)]
struct Browser {
    child: Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if let Ok(pid) = i32::try_from(self.child.id()) {
                // Chromium forks zygote and renderer processes: end the group it leads.
                let _ = Command::new("kill")
                    .args(["-KILL", "--", &format!("-{pid}")])
                    .status();
            }
            let _ = self.child.wait();
        }
    }
}

/// `chromium --headless … <extra> url` with its profile under `dir`; stdout on success,
/// panics with stderr on failure or after [`LIMIT`].
fn run(dir: &Path, extra: &[&str], url: &str) -> String {
    std::fs::create_dir_all(dir).expect("create the browser's directory");
    let out = dir.join("stdout");
    let err = dir.join("stderr");
    let mut cmd = Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-breakpad",
        "--disable-crash-reporter",
        "--window-size=1280,900",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", dir.join("profile").display()))
    .args(extra)
    .arg(url)
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&out).expect("create stdout file"))
    .stderr(std::fs::File::create(&err).expect("create stderr file"))
    .process_group(0);
    let child = cmd
        .spawn()
        .expect("start chromium (run integration-tests/scripts/deps.sh)");
    let mut browser = Browser { child };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = browser.child.try_wait().expect("wait for chromium") {
            break s;
        }
        assert!(
            start.elapsed() < LIMIT,
            "chromium {extra:?} {url} ran over {LIMIT:?}; stderr:\n{}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium {extra:?} {url}: {status}; stderr:\n{}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    std::fs::read_to_string(&out).expect("read chromium's stdout")
}

/// The DOM of `url` after its scripts ran for 5 s of virtual time, serialised.
pub fn dump_dom(dir: &Path, url: &str) -> String {
    run(&dir.join("dom"), &["--dump-dom"], url)
}

/// Writes a 1280×900 screenshot of `url` (after 5 s of virtual time) to `png`.
pub fn screenshot(dir: &Path, url: &str, png: &Path) {
    let arg = format!("--screenshot={}", png.display());
    run(&dir.join("shot"), &[&arg], url);
    assert!(
        png.is_file(),
        "chromium wrote no screenshot at {}",
        png.display()
    );
}

/// Width and height of a PNG, from its IHDR chunk; `None` if `bytes` is not a PNG.
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.len() < 24 || !bytes.starts_with(SIGNATURE) || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    Some((be(&bytes[16..20]), be(&bytes[20..24])))
}
