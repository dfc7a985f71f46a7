//! Where an image is read from or written to: a registry reference, or an OCI image layout
//! directory in skopeo's syntax (`oci:DIR[:TAG]`).
//!
//! Registry references are parsed by the registry client (`host[:port]/repo[:tag|@digest]`, short
//! names meaning Docker Hub as everywhere in containerd); skopeo's `docker://` prefix is accepted
//! too, so a command line that works with skopeo works here. skopeo's other transports are named
//! in the error, since a user copying a skopeo command would otherwise get a puzzling "invalid
//! reference".

use std::path::PathBuf;

use super::ConvertError;
use crate::registry::{RegistryError, repository_of};

/// skopeo transports this tool does not read or write.
const OTHER_TRANSPORTS: &[&str] = &[
    "containers-storage",
    "dir",
    "docker-archive",
    "docker-daemon",
    "oci-archive",
    "ostree",
    "sif",
    "tarball",
];

/// A parsed SRC or DST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// An image in a registry.
    Registry {
        /// The reference, e.g. `127.0.0.1:5000/busybox:latest` (without `docker://`).
        reference: String,
    },
    /// An image in an OCI image layout directory.
    Layout {
        /// The layout directory.
        dir: PathBuf,
        /// The `org.opencontainers.image.ref.name` to read or write; `None` as a source means
        /// "the only image in the layout", as a destination `latest`.
        tag: Option<String>,
    },
}

/// Which side a location is, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The image read.
    Src,
    /// The image written.
    Dst,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Src => "SRC",
            Side::Dst => "DST",
        }
    }
}

impl Location {
    /// Parses `input` as the `side` argument.
    pub fn parse(input: &str, side: Side) -> Result<Location, ConvertError> {
        let bad = |reason: String| ConvertError::Location {
            which: side.name(),
            input: input.to_owned(),
            reason,
        };
        if let Some(rest) = input.strip_prefix("oci:") {
            return parse_layout(rest).map_err(bad);
        }
        if let Some((transport, _)) = input.split_once(':')
            && OTHER_TRANSPORTS.contains(&transport)
        {
            return Err(bad(format!(
                "skopeo's `{transport}:` transport is not supported; use a registry reference \
                 (host[:port]/repo:tag) or an OCI layout (oci:DIR[:TAG])"
            )));
        }
        let reference = input.strip_prefix("docker://").unwrap_or(input);
        repository_of(reference).map_err(|e| {
            let reason = match e {
                RegistryError::InvalidReference { reason, .. } => reason,
                other => other.to_string(),
            };
            bad(format!(
                "{reason}; write host[:port]/repo:tag, host[:port]/repo@sha256:…, or \
                 oci:DIR[:TAG]"
            ))
        })?;
        if side == Side::Dst && reference.contains('@') {
            return Err(bad(
                "a destination is written with a tag (host[:port]/repo:tag): the converted \
                 image's digest is not known before it is made"
                    .to_owned(),
            ));
        }
        Ok(Location::Registry {
            reference: reference.to_owned(),
        })
    }

    /// How the location is shown to a person.
    pub fn display(&self) -> String {
        match self {
            Location::Registry { reference } => reference.clone(),
            Location::Layout { dir, tag: Some(t) } => format!("oci:{}:{t}", dir.display()),
            Location::Layout { dir, tag: None } => format!("oci:{}", dir.display()),
        }
    }
}

/// `DIR[:TAG]` after `oci:`. As in skopeo, the directory ends at the first `:`.
fn parse_layout(rest: &str) -> Result<Location, String> {
    let (dir, tag) = match rest.split_once(':') {
        Some((dir, tag)) => (dir, Some(tag)),
        None => (rest, None),
    };
    if dir.is_empty() {
        return Err("an OCI layout is written oci:DIR[:TAG], e.g. oci:/srv/images/app:v1".into());
    }
    if let Some(t) = tag
        && (t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(format!(
            "the tag after the directory must be non-empty and without spaces, got {t:?}"
        ));
    }
    Ok(Location::Layout {
        dir: PathBuf::from(dir),
        tag: tag.map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(r: &str) -> Location {
        Location::Registry {
            reference: r.to_owned(),
        }
    }

    fn layout(dir: &str, tag: Option<&str>) -> Location {
        Location::Layout {
            dir: PathBuf::from(dir),
            tag: tag.map(str::to_owned),
        }
    }

    #[test]
    fn registry_references_and_the_docker_prefix() {
        for (input, want) in [
            (
                "127.0.0.1:5000/busybox:latest",
                "127.0.0.1:5000/busybox:latest",
            ),
            ("docker://127.0.0.1:5000/a/b:1", "127.0.0.1:5000/a/b:1"),
            ("localhost:5000/x", "localhost:5000/x"),
            ("busybox", "busybox"),
            ("busybox:latest", "busybox:latest"),
        ] {
            assert_eq!(Location::parse(input, Side::Src).unwrap(), registry(want));
        }
        let d = format!("h:1/x@sha256:{}", "a".repeat(64));
        assert_eq!(Location::parse(&d, Side::Src).unwrap(), registry(&d));
    }

    #[test]
    fn oci_layouts_in_skopeo_syntax() {
        assert_eq!(
            Location::parse("oci:/srv/img:v1", Side::Src).unwrap(),
            layout("/srv/img", Some("v1"))
        );
        assert_eq!(
            Location::parse("oci:relative/dir", Side::Dst).unwrap(),
            layout("relative/dir", None)
        );
        // Everything after the first colon is the tag, as in skopeo.
        assert_eq!(
            Location::parse("oci:/d:a:b", Side::Src).unwrap(),
            layout("/d", Some("a:b"))
        );
        assert_eq!(
            layout("/d", Some("t")).display(),
            "oci:/d:t",
            "shown as it is written"
        );
    }

    #[test]
    fn bad_syntax_says_what_is_accepted() {
        let cases = [
            ("", Side::Src, "write host[:port]/repo:tag"),
            ("UPPER/case:1", Side::Src, "host[:port]/repo:tag"),
            ("h:1/x@sha256:short", Side::Src, "oci:DIR[:TAG]"),
            ("oci:", Side::Src, "oci:DIR[:TAG]"),
            ("oci::tag", Side::Src, "oci:DIR[:TAG]"),
            ("oci:/d:", Side::Dst, "non-empty"),
            ("oci:/d:a b", Side::Dst, "without spaces"),
            (
                "docker-archive:/x.tar",
                Side::Src,
                "`docker-archive:` transport",
            ),
            ("dir:/tmp/x", Side::Dst, "`dir:` transport"),
        ];
        for (input, side, needle) in cases {
            let e = Location::parse(input, side).expect_err(input).to_string();
            assert!(e.contains(needle), "{input:?}: {e}");
            let which = if side == Side::Src { "SRC" } else { "DST" };
            assert!(e.starts_with(which), "{input:?}: {e}");
        }
    }

    #[test]
    fn a_destination_needs_a_tag_not_a_digest() {
        let d = format!("h:1/x@sha256:{}", "a".repeat(64));
        let e = Location::parse(&d, Side::Dst).unwrap_err().to_string();
        assert!(e.contains("with a tag"), "{e}");
    }
}
