//! Blob reads: size (HEAD), exact ranges (single-flight, optionally merged), the tail of a blob
//! with its size in one round trip, streams from an offset, and verified full pulls.
//!
//! A registry that ignores `Range` and answers 200 with the whole blob is tolerated: the wanted
//! window is cut out of the stream (reading stops at its end) and the host is logged once.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use futures::future::{FutureExt, try_join_all};
use futures::stream::{BoxStream, StreamExt};
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, HeaderMap, HeaderValue, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::digest::Digest;
use super::endpoint::{Cap, Endpoint};
use super::ranges::{MAX_SPAN, MERGE_GAP, merge};
use super::transport::{Failure, Request, Target, describe};
use super::{Net, Registry, RegistryError, Repo, parse_reference};

impl Registry {
    /// The size of a blob (a HEAD request).
    pub async fn blob_size(&self, reference: &str, digest: &str) -> Result<u64, RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = Digest::parse(digest)?;
        let eps = self.net.endpoints(&repo, Cap::Pull).await?;
        let req = blob_request(&repo, &digest, Method::HEAD, HeaderMap::new(), true);
        let read = |ep: Arc<Endpoint>, resp: Response| {
            async move {
                header_u64(&resp, CONTENT_LENGTH.as_str()).ok_or_else(|| {
                    Failure::Final(RegistryError::protocol(
                        &ep.host,
                        "HEAD of a blob without Content-Length",
                    ))
                })
            }
            .boxed()
        };
        self.net.transport.run(&eps, &req, &read).await
    }

    /// Exactly `len` bytes at `offset` of the blob. Concurrent identical calls share one request.
    /// Retries with backoff on connection errors, timeouts and 5xx; re-authenticates once on 401;
    /// mirrors first, the registry itself last. A registry that sends fewer or more bytes than
    /// asked for is a [`RegistryError::Protocol`] error.
    pub async fn read_range(
        &self,
        reference: &str,
        digest: &str,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = Digest::parse(digest)?;
        if len == 0 {
            return Ok(Bytes::new());
        }
        if offset.checked_add(len).is_none() {
            return Err(RegistryError::InvalidReference {
                reference: format!("{digest} at {offset}+{len}"),
                reason: "the range ends beyond 2^64".to_owned(),
            });
        }
        let key = (
            repo.registry.clone(),
            repo.repository.clone(),
            digest.to_string(),
            offset,
            len,
        );
        let net = self.net.clone();
        let work = async move { net.fetch_range(&repo, &digest, offset, len).await };
        self.flights.run(key, move || work.boxed()).await
    }

    /// The last `len` bytes of the blob (all of it if it is shorter) and the blob's size, in one
    /// request (`Range: bytes=-len`, the size from `Content-Range`): what a HEAD and a read of
    /// the end would give, in one round trip instead of two. Retried like [`Registry::read_range`].
    pub async fn read_tail(
        &self,
        reference: &str,
        digest: &str,
        len: u64,
    ) -> Result<(Bytes, u64), RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = Digest::parse(digest)?;
        let eps = self.net.endpoints(&repo, Cap::Pull).await?;
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, range_header(&format!("bytes=-{}", len.max(1))));
        let req = blob_request(&repo, &digest, Method::GET, headers, true);
        let read = |ep: Arc<Endpoint>, resp: Response| tail(ep, resp, len.max(1)).boxed();
        self.net.transport.run(&eps, &req, &read).await
    }

    /// Several ranges of one blob; ranges that overlap or lie close together are fetched in one
    /// request (see [`super::ranges::merge`]). The result has one entry per range, in order.
    pub async fn read_ranges(
        &self,
        reference: &str,
        digest: &str,
        ranges: &[(u64, u64)],
    ) -> Result<Vec<Bytes>, RegistryError> {
        let spans = merge(ranges, MERGE_GAP, MAX_SPAN);
        let reads = spans
            .iter()
            .map(|s| self.read_range(reference, digest, s.offset, s.len));
        let data = try_join_all(reads).await?;
        let mut out = vec![Bytes::new(); ranges.len()];
        for (span, bytes) in spans.iter().zip(data) {
            for &i in &span.members {
                let (off, len) = ranges[i];
                let start = usize::try_from(off - span.offset).unwrap_or(usize::MAX);
                let end = usize::try_from(len).map_or(usize::MAX, |l| start.saturating_add(l));
                out[i] = bytes
                    .get(start..end)
                    .map(|_| bytes.slice(start..end))
                    .unwrap_or_default();
            }
        }
        Ok(out)
    }

    /// The blob from `offset` to its end, as a stream (for background full-layer fetches). The
    /// request is retried and sent to mirrors like any other; once the stream runs, an error
    /// ends it (resume with a new call at the offset reached).
    pub async fn stream_blob(
        &self,
        reference: &str,
        digest: &str,
        offset: u64,
    ) -> Result<BoxStream<'static, Result<Bytes, RegistryError>>, RegistryError> {
        let repo = parse_reference(reference)?;
        let digest = Digest::parse(digest)?;
        let eps = self.net.endpoints(&repo, Cap::Pull).await?;
        let mut headers = HeaderMap::new();
        if offset > 0 {
            headers.insert(RANGE, range_header(&format!("bytes={offset}-")));
        }
        let req = blob_request(&repo, &digest, Method::GET, headers, false);
        let open = |ep: Arc<Endpoint>, resp: Response| {
            async move {
                let skip = match resp.status() {
                    StatusCode::PARTIAL_CONTENT => {
                        check_content_range(&ep, &resp, offset)?;
                        0
                    }
                    _ if offset == 0 => 0,
                    _ => {
                        note_ignored_range(&ep);
                        offset
                    }
                };
                Ok((ep.host.clone(), resp, skip))
            }
            .boxed()
        };
        let (host, resp, skip) = self.net.transport.run(&eps, &req, &open).await?;
        Ok(skipping(resp, skip, host))
    }

    /// The whole blob into `out`, verified against `digest` (the data is written as it arrives;
    /// on a mismatch the error comes after the last write).
    pub async fn pull_blob(
        &self,
        reference: &str,
        digest: &str,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<(), RegistryError> {
        let expected = Digest::parse(digest)?;
        let mut stream = self.stream_blob(reference, digest, 0).await?;
        let mut verifier = expected.verifier();
        let write_err = |e: std::io::Error| RegistryError::Write {
            digest: expected.to_string(),
            source: Arc::new(e),
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            verifier.update(&chunk);
            out.write_all(&chunk).await.map_err(write_err)?;
        }
        out.flush().await.map_err(write_err)?;
        let actual = verifier.finish();
        if actual != expected {
            let repo = parse_reference(reference)?;
            return Err(RegistryError::protocol(
                &repo.registry,
                format!(
                    "blob {expected} of {} has digest {actual}: corrupt or wrong content",
                    repo.display
                ),
            ));
        }
        Ok(())
    }
}

impl Net {
    async fn fetch_range(
        &self,
        repo: &Repo,
        digest: &Digest,
        offset: u64,
        len: u64,
    ) -> Result<Bytes, RegistryError> {
        let eps = self.endpoints(repo, Cap::Pull).await?;
        let mut headers = HeaderMap::new();
        let last = offset + len - 1;
        headers.insert(RANGE, range_header(&format!("bytes={offset}-{last}")));
        let req = blob_request(repo, digest, Method::GET, headers, true);
        let read = |ep: Arc<Endpoint>, resp: Response| exact_range(ep, resp, offset, len).boxed();
        self.transport.run(&eps, &req, &read).await
    }
}

fn blob_request<'a>(
    repo: &'a Repo,
    digest: &Digest,
    method: Method,
    headers: HeaderMap,
    whole_timeout: bool,
) -> Request<'a> {
    Request {
        method,
        cap: Cap::Pull,
        repository: &repo.repository,
        display: &repo.display,
        target: Target::Api(format!("blobs/{digest}")),
        headers,
        body: None,
        what: format!("blob {digest}"),
        whole_timeout,
    }
}

fn range_header(value: &str) -> HeaderValue {
    HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static("bytes=0-"))
}

/// The requested window of a range response (206), or cut out of a whole-blob response (200).
async fn exact_range(
    ep: Arc<Endpoint>,
    mut resp: Response,
    offset: u64,
    len: u64,
) -> Result<Bytes, Failure> {
    let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
    let skip = if partial {
        check_content_range(&ep, &resp, offset)?;
        0
    } else {
        note_ignored_range(&ep);
        offset
    };
    let data = window(&mut resp, skip, len).await?;
    let got = data.len() as u64;
    if got < len {
        return Err(Failure::Final(RegistryError::protocol(
            &ep.host,
            format!(
                "short read: asked for {len} bytes at {offset}, got {got} (the blob ends before the range?)"
            ),
        )));
    }
    if partial && matches!(resp.chunk().await, Ok(Some(c)) if !c.is_empty()) {
        return Err(Failure::Final(RegistryError::protocol(
            &ep.host,
            format!("asked for {len} bytes at {offset}, the registry sent more"),
        )));
    }
    Ok(data)
}

/// The body of a suffix-range response and the blob size: from a 206's `Content-Range`
/// (`bytes a-b/size`, the body must be exactly `b-a+1` bytes ending at `size`), or, when the
/// registry ignored the range (200), the last `len` bytes of the whole body.
async fn tail(ep: Arc<Endpoint>, mut resp: Response, len: u64) -> Result<(Bytes, u64), Failure> {
    if resp.status() != StatusCode::PARTIAL_CONTENT {
        note_ignored_range(&ep);
        return last_bytes(&mut resp, len).await;
    }
    let range = resp
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_content_range);
    let Some((first, last, size)) = range else {
        return Err(Failure::Final(RegistryError::protocol(
            &ep.host,
            "206 to a suffix range without a usable Content-Range",
        )));
    };
    if last + 1 != size || first > last || last - first + 1 > len {
        return Err(Failure::Final(RegistryError::protocol(
            &ep.host,
            format!("asked for the last {len} bytes, got bytes {first}-{last}/{size}"),
        )));
    }
    let want = last - first + 1;
    let data = window(&mut resp, 0, want).await?;
    if data.len() as u64 != want {
        return Err(Failure::Retry(format!(
            "short read: {} of {want} bytes at the end of the blob",
            data.len()
        )));
    }
    Ok((data, size))
}

/// The last `len` bytes of a whole-blob body and its length, holding at most about `2 × len`
/// bytes however large the blob.
async fn last_bytes(resp: &mut Response, len: u64) -> Result<(Bytes, u64), Failure> {
    let keep = usize::try_from(len).unwrap_or(usize::MAX);
    let announced = header_u64(resp, CONTENT_LENGTH.as_str());
    let mut buf = BytesMut::new();
    let mut size = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?
    {
        size += chunk.len() as u64;
        buf.extend_from_slice(&chunk);
        if buf.len() > keep.saturating_mul(2) {
            let _ = buf.split_to(buf.len() - keep);
        }
    }
    if announced.is_some_and(|n| n != size) {
        return Err(Failure::Retry(format!(
            "body of {size} bytes, Content-Length {announced:?}"
        )));
    }
    let start = buf.len().saturating_sub(keep);
    Ok((buf.freeze().slice(start..), size))
}

/// `bytes <first>-<last>/<size>`.
fn parse_content_range(value: &str) -> Option<(u64, u64, u64)> {
    let (range, size) = value.strip_prefix("bytes ")?.split_once('/')?;
    let (first, last) = range.split_once('-')?;
    Some((
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        size.trim().parse().ok()?,
    ))
}

/// Reads `resp`'s body, dropping the first `skip` bytes and keeping at most `len`; stops reading
/// once `len` are kept (the rest stays unread). A body cut off is transient.
async fn window(resp: &mut Response, mut skip: u64, len: u64) -> Result<Bytes, Failure> {
    let want = usize::try_from(len).unwrap_or(usize::MAX);
    let mut buf = BytesMut::new();
    while let Some(mut chunk) = resp
        .chunk()
        .await
        .map_err(|e| Failure::Retry(describe(&e)))?
    {
        if skip > 0 {
            let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
            skip -= n as u64;
            chunk = chunk.slice(n..);
        }
        let room = want - buf.len();
        if buf.is_empty() && chunk.len() >= want {
            // One chunk covers the window: hand it out without copying.
            return Ok(chunk.slice(..want));
        }
        if buf.is_empty() {
            buf.reserve(want.min(usize::try_from(MAX_SPAN).unwrap_or(usize::MAX)));
        }
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() == want {
            break;
        }
    }
    Ok(buf.freeze())
}

/// A 206 must start where it was asked to.
fn check_content_range(ep: &Endpoint, resp: &Response, offset: u64) -> Result<(), Failure> {
    let Some(value) = resp
        .headers()
        .get(CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let start = value
        .strip_prefix("bytes ")
        .and_then(|r| r.split('-').next())
        .and_then(|s| s.trim().parse::<u64>().ok());
    if start == Some(offset) {
        Ok(())
    } else {
        Err(Failure::Final(RegistryError::protocol(
            &ep.host,
            format!("asked for bytes from {offset}, got Content-Range {value:?}"),
        )))
    }
}

fn note_ignored_range(ep: &Endpoint) {
    if !ep.ignored_range.swap(true, Ordering::Relaxed) {
        tracing::warn!(host = %ep.host, "registry ignores Range requests and sends whole blobs; lazy reads from it are slow");
    }
}

fn header_u64(resp: &Response, name: &str) -> Option<u64> {
    resp.headers().get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The body of `resp` without its first `skip` bytes, errors as [`RegistryError::Unreachable`].
fn skipping(
    resp: Response,
    mut skip: u64,
    host: String,
) -> BoxStream<'static, Result<Bytes, RegistryError>> {
    resp.bytes_stream()
        .map(move |chunk| {
            let mut chunk = chunk.map_err(|e| RegistryError::Unreachable {
                host: host.clone(),
                attempts: 1,
                last_error: describe(&e),
            })?;
            if skip > 0 {
                let n = usize::try_from(skip).unwrap_or(usize::MAX).min(chunk.len());
                skip -= n as u64;
                chunk = chunk.slice(n..);
            }
            Ok(chunk)
        })
        .filter(|c| futures::future::ready(!matches!(c, Ok(b) if b.is_empty())))
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::parse_content_range;

    #[test]
    fn content_range_of_a_suffix_request() {
        assert_eq!(
            parse_content_range("bytes 1000-1099/1100"),
            Some((1000, 1099, 1100))
        );
        assert_eq!(parse_content_range("bytes 0-9/10"), Some((0, 9, 10)));
        assert_eq!(parse_content_range("bytes */10"), None);
        assert_eq!(parse_content_range("bytes 0-9/*"), None);
        assert_eq!(parse_content_range("items 0-9/10"), None);
    }
}
