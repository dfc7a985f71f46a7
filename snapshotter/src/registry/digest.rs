//! Content digests (`sha256:<hex>`, `sha512:<hex>`): parsing, which also makes a digest safe to
//! put in a URL path, and incremental verification of downloaded bytes.

use std::fmt;

use sha2::Digest as _;

use super::RegistryError;

/// A parsed, validated digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Digest {
    algorithm: Algorithm,
    hex: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

impl Digest {
    /// Parses `algorithm:hex`; only lower-case hex of the algorithm's length is accepted.
    pub(crate) fn parse(s: &str) -> Result<Digest, RegistryError> {
        let invalid = |reason: &str| RegistryError::InvalidReference {
            reference: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| invalid("a digest is written algorithm:hex, e.g. sha256:…"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(invalid("only sha256 and sha512 digests are supported")),
        };
        let hex_ok = hex.len() == algorithm.hex_len()
            && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex_ok {
            return Err(invalid(&format!(
                "the {alg} part must be {} lower-case hex digits",
                algorithm.hex_len()
            )));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }

    /// The digest of `data` with the same algorithm as `self`.
    pub(crate) fn of_same_kind(&self, data: &[u8]) -> Digest {
        let mut v = self.verifier();
        v.update(data);
        v.finish()
    }

    /// An incremental hasher for this digest's algorithm.
    pub(crate) fn verifier(&self) -> Verifier {
        match self.algorithm {
            Algorithm::Sha256 => Verifier::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Verifier::Sha512(sha2::Sha512::new()),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// The sha256 digest of `data`, as `sha256:<hex>`.
pub(crate) fn sha256(data: &[u8]) -> Digest {
    Digest {
        algorithm: Algorithm::Sha256,
        hex: hex::encode(sha2::Sha256::digest(data)),
    }
}

/// Hashes bytes as they stream past.
pub(crate) enum Verifier {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl Verifier {
    pub(crate) fn update(&mut self, data: &[u8]) {
        match self {
            Verifier::Sha256(h) => h.update(data),
            Verifier::Sha512(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        match self {
            Verifier::Sha256(h) => Digest {
                algorithm: Algorithm::Sha256,
                hex: hex::encode(h.finalize()),
            },
            Verifier::Sha512(h) => Digest {
                algorithm: Algorithm::Sha512,
                hex: hex::encode(h.finalize()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_back() {
        let s = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(Digest::parse(&s).map(|d| d.to_string()).ok(), Some(s));
    }

    #[test]
    fn refuses_what_could_escape_a_url_path() {
        for bad in [
            "sha256:../../etc",
            &format!("sha256:{}", "AB".repeat(32)),
            &format!("md5:{}", "ab".repeat(16)),
            "sha256",
            &format!("sha256:{}/x", "ab".repeat(31)),
        ] {
            assert!(Digest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn verifier_matches_one_shot_hash() {
        let d = sha256(b"hello world");
        assert_eq!(
            d.to_string(),
            "sha256:b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        let mut v = d.verifier();
        v.update(b"hello ");
        v.update(b"world");
        assert_eq!(v.finish(), d);
    }
}
