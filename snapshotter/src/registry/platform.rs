//! Platforms (`os/architecture[/variant]`) and the choice of one manifest from an image index,
//! following containerd's matcher: os and architecture must be equal, the variant must match
//! after normalisation (`arm64` means `arm64/v8`, `arm` means `arm/v7`), and an entry or request
//! without a variant matches any variant, ranked below an exact match.

use std::fmt;

use oci_client::manifest::{ImageIndexEntry, OciImageIndex};

use super::RegistryError;

/// The platform an image is selected for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// GOOS value, e.g. `linux`.
    pub os: String,
    /// GOARCH value, e.g. `amd64`, `arm64`.
    pub architecture: String,
    /// CPU variant, e.g. `v8`, `v7`.
    pub variant: Option<String>,
}

impl Platform {
    /// `linux/<this host's architecture>` (with `v8`/`v7` for arm64/arm).
    pub fn host() -> Platform {
        let architecture = goarch(std::env::consts::ARCH);
        let variant = default_variant(architecture).map(str::to_owned);
        Platform {
            os: "linux".to_owned(),
            architecture: architecture.to_owned(),
            variant,
        }
    }

    /// Parses `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
    pub fn parse(s: &str) -> Result<Platform, RegistryError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = (2..=3).contains(&parts.len()) && parts.iter().all(|p| !p.is_empty());
        if !ok {
            return Err(RegistryError::InvalidReference {
                reference: s.to_owned(),
                reason: "a platform is written os/architecture[/variant], e.g. linux/arm64/v8"
                    .to_owned(),
            });
        }
        Ok(Platform {
            os: parts[0].to_owned(),
            architecture: parts[1].to_owned(),
            variant: parts.get(2).map(|v| (*v).to_owned()),
        })
    }

    /// How well an index entry's platform fits this one: `None` if it does not, higher is better.
    fn score(&self, os: &str, architecture: &str, variant: Option<&str>) -> Option<u8> {
        if os != self.os || architecture != self.architecture {
            return None;
        }
        let want = self
            .variant
            .as_deref()
            .or_else(|| default_variant(architecture));
        let have = variant.or_else(|| default_variant(architecture));
        match (want, have) {
            (Some(w), Some(h)) if w == h => Some(2),
            (Some(_), Some(_)) => None,
            _ => Some(1),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The entry of `index` that best fits `want` (the first of equally good ones).
pub fn select<'a>(index: &'a OciImageIndex, want: &Platform) -> Option<&'a ImageIndexEntry> {
    let mut best: Option<(u8, &ImageIndexEntry)> = None;
    for entry in &index.manifests {
        let Some(p) = &entry.platform else { continue };
        let score = want.score(
            &p.os.to_string(),
            &p.architecture.to_string(),
            p.variant.as_deref(),
        );
        if let Some(s) = score
            && best.is_none_or(|(b, _)| s > b)
        {
            best = Some((s, entry));
        }
    }
    best.map(|(_, e)| e)
}

/// The platforms an index offers, for error messages.
pub fn offered(index: &OciImageIndex) -> String {
    let list: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os, p.architecture);
            if let Some(v) = &p.variant {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}

/// Rust's `target_arch` → Go's GOARCH.
fn goarch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        "mips64" if cfg!(target_endian = "little") => "mips64le",
        other => other,
    }
}

/// The variant an architecture means when none is written (containerd's normalisation).
fn default_variant(architecture: &str) -> Option<&'static str> {
    match architecture {
        "arm64" => Some("v8"),
        "arm" => Some("v7"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index as docker buildx pushes it: two platforms, arm with variants, an attestation.
    const INDEX: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.oci.image.index.v1+json",
      "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:amd", "platform": {"architecture": "amd64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:armv6", "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:armv7", "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:arm64", "platform": {"architecture": "arm64", "os": "linux"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:att", "platform": {"architecture": "unknown", "os": "unknown"}},
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:win", "platform": {"architecture": "amd64", "os": "windows"}}
      ]
    }"#;

    fn pick(platform: &str) -> Option<String> {
        let index: OciImageIndex = serde_json::from_str(INDEX).expect("test index parses");
        let want = Platform::parse(platform).expect("test platform parses");
        select(&index, &want).map(|e| e.digest.clone())
    }

    #[test]
    fn selects_by_os_and_architecture() {
        assert_eq!(pick("linux/amd64").as_deref(), Some("sha256:amd"));
        assert_eq!(pick("windows/amd64").as_deref(), Some("sha256:win"));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(pick("darwin/amd64"), None);
    }

    #[test]
    fn variants_normalise_like_containerd() {
        // arm64 entries without a variant are v8; asking for v8 or nothing finds them.
        assert_eq!(pick("linux/arm64/v8").as_deref(), Some("sha256:arm64"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("sha256:arm64"));
        // arm means arm/v7, and an explicit v6 gets v6.
        assert_eq!(pick("linux/arm").as_deref(), Some("sha256:armv7"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("sha256:armv6"));
        assert_eq!(pick("linux/arm/v5"), None);
    }

    #[test]
    fn host_platform_is_linux_goarch() {
        let p = Platform::host();
        assert_eq!(p.os, "linux");
        assert!(!p.architecture.contains('_'), "{p} is not a GOARCH name");
        if cfg!(target_arch = "x86_64") {
            assert_eq!(p.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn parse_refuses_malformed() {
        for bad in ["linux", "linux/", "/amd64", "a/b/c/d"] {
            assert!(Platform::parse(bad).is_err(), "{bad} accepted");
        }
        let index: OciImageIndex = serde_json::from_str(INDEX).expect("test index parses");
        assert!(offered(&index).contains("linux/arm/v6"));
    }
}
