//! OCI image layouts (image-spec `image-layout.md`): `oci-layout`, `index.json` and
//! `blobs/<algorithm>/<hex>`, as skopeo and umoci write them.
//!
//! Reading finds an image by its `org.opencontainers.image.ref.name` annotation and checks every
//! blob against its digest. Writing puts blobs in place by rename (a reader never sees half a
//! blob) and replaces `index.json` atomically, keeping every other entry as it was. All functions
//! here block: callers run them on the blocking pool.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::ConvertError;
use crate::estargz::format_digest;

/// The annotation naming an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;
const INDEX_FILE: &str = "index.json";

/// One entry of `index.json`, as read.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// An OCI layout directory.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    dir: PathBuf,
}

impl Layout {
    /// An existing layout (it must have `oci-layout` and `index.json`).
    pub(crate) fn open(dir: &Path) -> Result<Layout, ConvertError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        for file in [LAYOUT_FILE, INDEX_FILE] {
            if !dir.join(file).is_file() {
                return Err(layout.error(format!(
                    "no {file}: not an OCI image layout (skopeo copy … oci:DIR:TAG makes one)"
                )));
            }
        }
        Ok(layout)
    }

    /// The layout at `dir`, made (with an empty index) if it does not exist yet.
    pub(crate) fn create(dir: &Path) -> Result<Layout, ConvertError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
        };
        fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(ConvertError::io("cannot create", dir))?;
        let marker = dir.join(LAYOUT_FILE);
        if !marker.exists() {
            write_atomic(&marker, LAYOUT_CONTENT.as_bytes())?;
        }
        if !dir.join(INDEX_FILE).exists() {
            let empty = json!({"schemaVersion": 2, "manifests": []});
            write_atomic(&dir.join(INDEX_FILE), empty.to_string().as_bytes())?;
        }
        Ok(layout)
    }

    fn error(&self, reason: impl Into<String>) -> ConvertError {
        ConvertError::Layout {
            dir: self.dir.clone(),
            reason: reason.into(),
        }
    }

    fn index(&self) -> Result<Value, ConvertError> {
        let path = self.dir.join(INDEX_FILE);
        let bytes = fs::read(&path).map_err(ConvertError::io("cannot read", &path))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.error(format!("index.json does not parse: {e}")))
    }

    /// The entry tagged `tag`, or with `None` the only entry.
    pub(crate) fn find(&self, tag: Option<&str>) -> Result<Entry, ConvertError> {
        let index = self.index()?;
        let entries = index["manifests"].as_array().cloned().unwrap_or_default();
        let name = |e: &Value| e["annotations"][REF_NAME].as_str().map(str::to_owned);
        let found = match tag {
            Some(t) => entries.iter().find(|e| name(e).as_deref() == Some(t)),
            None if entries.len() == 1 => entries.first(),
            None => None,
        };
        let Some(e) = found else {
            let tags: Vec<String> = entries.iter().filter_map(name).collect();
            let what = match tag {
                Some(t) => format!("no image tagged {t:?}"),
                None => format!("{} images, so a tag is needed", entries.len()),
            };
            return Err(self.error(format!("{what}; it has tags {tags:?} (oci:DIR:TAG)")));
        };
        let digest = e["digest"].as_str().unwrap_or_default().to_owned();
        self.blob_path(&digest)?;
        Ok(Entry {
            media_type: e["mediaType"].as_str().unwrap_or_default().to_owned(),
            size: e["size"].as_u64().unwrap_or(0),
            digest,
        })
    }

    /// Where blob `digest` is (or goes); only sha256 digests are accepted.
    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ConvertError> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .filter(|h| !h.bytes().any(|b| b.is_ascii_uppercase()))
            .ok_or_else(|| self.error(format!("{digest:?} is not a sha256 digest")))?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// The blob `digest` (at most `max` bytes), checked against its digest.
    pub(crate) fn read_blob(&self, digest: &str, max: u64) -> Result<Vec<u8>, ConvertError> {
        let path = self.blob_path(digest)?;
        let mut data = Vec::new();
        fs::File::open(&path)
            .and_then(|f| f.take(max + 1).read_to_end(&mut data))
            .map_err(ConvertError::io("cannot read", &path))?;
        if data.len() as u64 > max {
            return Err(self.error(format!("blob {digest} is larger than {max} bytes")));
        }
        let actual = format_digest(&Sha256::digest(&data).into());
        if actual != digest {
            return Err(ConvertError::Corrupt {
                what: format!("blob {}", path.display()),
                detail: format!("has digest {actual}, expected {digest}; the layout is damaged"),
            });
        }
        Ok(data)
    }

    /// Puts `data` in place as blob `digest` (skipped if it is there).
    pub(crate) fn put_blob(&self, data: &[u8], digest: &str) -> Result<(), ConvertError> {
        let path = self.blob_path(digest)?;
        if !path.exists() {
            write_atomic(&path, data)?;
        }
        Ok(())
    }

    /// Moves (or, across filesystems, copies) the file `from` into place as blob `digest`.
    pub(crate) fn put_blob_file(&self, from: &Path, digest: &str) -> Result<(), ConvertError> {
        let path = self.blob_path(digest)?;
        if path.exists() || fs::rename(from, &path).is_ok() {
            return Ok(());
        }
        self.copy_blob_file(from, digest)
    }

    /// Copies the file `from` into place as blob `digest`, checking the digest on the way.
    pub(crate) fn copy_blob_file(&self, from: &Path, digest: &str) -> Result<(), ConvertError> {
        let path = self.blob_path(digest)?;
        if path.exists() {
            return Ok(());
        }
        let tmp = temp_name(&path);
        let copied = (|| {
            let mut hash = HashingWriter {
                out: fs::File::create(&tmp)?,
                hash: Sha256::new(),
            };
            io::copy(&mut fs::File::open(from)?, &mut hash)?;
            hash.out.sync_all()?;
            Ok::<_, io::Error>(format_digest(&hash.hash.finalize().into()))
        })();
        let result = match copied {
            Ok(actual) if actual == digest => {
                fs::rename(&tmp, &path).map_err(ConvertError::io("cannot write", &path))
            }
            Ok(actual) => Err(ConvertError::Corrupt {
                what: format!("blob {}", from.display()),
                detail: format!("has digest {actual}, expected {digest}"),
            }),
            Err(e) => Err(ConvertError::io("cannot copy to", &path)(e)),
        };
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Tags `(media_type, digest, size)` as `tag` in `index.json`, replacing an entry with the
    /// same tag; the rest of the index is kept as it is.
    pub(crate) fn tag(&self, entry: &Entry, tag: &str) -> Result<(), ConvertError> {
        let mut index = self.index()?;
        let manifests = index
            .as_object_mut()
            .ok_or_else(|| self.error("index.json is not an object"))?
            .entry("manifests")
            .or_insert_with(|| json!([]));
        let list = manifests
            .as_array_mut()
            .ok_or_else(|| self.error("index.json's manifests is not a list"))?;
        list.retain(|e| e["annotations"][REF_NAME].as_str() != Some(tag));
        list.push(json!({
            "mediaType": entry.media_type,
            "digest": entry.digest,
            "size": entry.size,
            "annotations": {REF_NAME: tag},
        }));
        let bytes = serde_json::to_vec(&index).map_err(io::Error::other);
        let path = self.dir.join(INDEX_FILE);
        write_atomic(
            &path,
            &bytes.map_err(ConvertError::io("cannot write", &path))?,
        )
    }
}

/// Hashes what it writes.
struct HashingWriter {
    out: fs::File,
    hash: Sha256,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// Writes `data` to a temporary file next to `path`, syncs it and renames it over `path`.
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), ConvertError> {
    let tmp = temp_name(path);
    let result = fs::File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ConvertError::io("cannot write", path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_layout_is_tagged_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        let l = Layout::create(&img).unwrap();
        let data = b"{\"hello\":1}";
        let digest = format_digest(&Sha256::digest(data).into());
        l.put_blob(data, &digest).unwrap();
        let entry = Entry {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: digest.clone(),
            size: data.len() as u64,
        };
        l.tag(&entry, "v1").unwrap();
        l.tag(&entry, "v2").unwrap();
        l.tag(&entry, "v1").unwrap(); // replaces, does not duplicate
        let again = Layout::open(&img).unwrap();
        assert_eq!(again.find(Some("v1")).unwrap().digest, digest);
        assert_eq!(again.read_blob(&digest, 100).unwrap(), data);
        let index = again.index().unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
        let e = again.find(None).unwrap_err().to_string();
        assert!(e.contains("2 images, so a tag is needed"), "{e}");
        let e = again.find(Some("v9")).unwrap_err().to_string();
        assert!(
            e.contains("no image tagged \"v9\"") && e.contains("v2"),
            "{e}"
        );
    }

    #[test]
    fn damaged_and_missing_layouts_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = Layout::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no oci-layout"), "{e}");
        let l = Layout::create(dir.path()).unwrap();
        let digest = format_digest(&Sha256::digest(b"right").into());
        fs::write(l.blob_path(&digest).unwrap(), b"wrong").unwrap();
        let e = l.read_blob(&digest, 100).unwrap_err().to_string();
        assert!(e.contains("the layout is damaged"), "{e}");
        let e = l.blob_path("sha256:../../etc").unwrap_err().to_string();
        assert!(e.contains("not a sha256 digest"), "{e}");
    }
}
