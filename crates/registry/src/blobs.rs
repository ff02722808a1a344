//! The blob routes: `GET`/`HEAD` with `Range`, `PUT` (verified before it is kept),
//! `POST /v1/blobs/missing`, and `POST /v1/blobs/batch` (many whole blobs in one answer).

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hoard_types::Digest;
use hoard_types::registry::{
    BATCH_ABSENT, BatchRequest, MAX_BATCH, MissingRequest, MissingResponse, problem,
};
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use crate::api::ApiError;
use crate::api::{UPLOAD_OFFSET, blocking};
use crate::state::{Caller, State};
use hoard_http::{Body, empty, json};

/// Read size for blob bodies sent; a blob up to this size is read whole when opened.
const SEND_CHUNK: usize = 1 << 20;
/// Upload bytes gathered before one write to disk.
const WRITE_BATCH: usize = 1 << 20;
/// Batch answer bytes gathered before one hand-off to the connection.
const BATCH_FLUSH: usize = 256 << 10;

/// What a `Range` header asks of a blob of a given size (RFC 9110 §14).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ranged {
    /// No (usable) `Range`: send it all. Malformed and multi-range headers are ignored,
    /// as the RFC allows.
    Full,
    /// `first..=last`.
    Part { first: u64, last: u64 },
    /// 416.
    Unsatisfiable,
}

pub(crate) fn parse_range(header: Option<&str>, size: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Full;
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    let part = |first: u64, last: Option<u64>| {
        if last.is_some_and(|l| l < first) {
            Ranged::Full
        } else if first >= size {
            Ranged::Unsatisfiable
        } else {
            Ranged::Part {
                first,
                last: last.map_or(size - 1, |l| l.min(size - 1)),
            }
        }
    };
    match (number(first), number(last)) {
        // bytes=-N: the last N bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || size == 0 {
                Ranged::Unsatisfiable
            } else {
                part(size.saturating_sub(n), None)
            }
        }
        (Some(first), None) if last.is_empty() => part(first, None),
        (Some(first), Some(last)) => part(first, Some(last)),
        _ => Ranged::Full,
    }
}

fn parse_digest(text: &str) -> Result<Digest, ApiError> {
    text.parse()
        .map_err(|e: hoard_types::Error| ApiError::bad_request(e.to_string()))
}

pub(crate) async fn get(
    state: &Arc<State>,
    caller: &Caller,
    digest: &str,
    request: &Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let digest = parse_digest(digest)?;
    state.may_read_blob(caller, &digest)?;
    let path = state.root.blob_path(&digest);
    // One trip to the blocking pool opens, sizes and, for a small blob, reads it whole:
    // a round trip per step (tokio::fs) was half of the registry's CPU time serving
    // 20,000 small blobs, all of it thread hand-offs.
    let opened = tokio::task::spawn_blocking(move || open_blob(&path)).await;
    let (file, size, whole) = match opened {
        Ok(Ok(Some(opened))) => opened,
        Ok(Ok(None)) => return Err(ApiError::not_found(format!("blob `{digest}`"))),
        Ok(Err((path, e))) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read blob");
            return Err(storage_failed());
        }
        Err(e) => {
            tracing::error!(error = %e, "blob task panicked");
            return Err(storage_failed());
        }
    };
    let range = request
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok());
    let mut response = Response::new(empty());
    let headers = response.headers_mut();
    let etag = HeaderValue::from_str(&format!("\"{digest}\"")).expect("hex is a valid header");
    headers.insert(header::ETAG, etag);
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    let (first, len) = match parse_range(range, size) {
        Ranged::Full => (0, size),
        Ranged::Part { first, last } => {
            *response.status_mut() = StatusCode::PARTIAL_CONTENT;
            response.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {first}-{last}/{size}"))
                    .expect("numbers are a valid header"),
            );
            (first, last - first + 1)
        }
        Ranged::Unsatisfiable => {
            let mut error = ApiError::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                problem::RANGE_NOT_SATISFIABLE,
                format!("blob `{digest}` has {size} bytes; the requested range is outside it"),
            )
            .into_response();
            error.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}")).expect("a valid header"),
            );
            return Ok(error);
        }
    };
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if request.method() == http::Method::HEAD || len == 0 {
        return Ok(response);
    }
    *response.body_mut() = match whole {
        Some(bytes) => {
            let first = usize::try_from(first).expect("a small blob's offsets fit in usize");
            let len = usize::try_from(len).expect("a small blob's offsets fit in usize");
            state.metrics.served(len as u64);
            hoard_http::full(bytes.slice(first..first + len))
        }
        None => file_body(state.clone(), file, first, len),
    };
    Ok(response)
}

fn storage_failed() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        problem::INTERNAL,
        "The registry's storage failed; see the server log",
    )
}

/// A blob opened for sending: the file, its size, and its bytes when it is small enough
/// to be read whole. `None` when there is no such blob.
type Opened = (Arc<std::fs::File>, u64, Option<Bytes>);

fn open_blob(path: &Path) -> Result<Option<Opened>, (PathBuf, std::io::Error)> {
    let failed = |e| (path.to_path_buf(), e);
    let (file, size) = match hoard_layout::dir::open_regular_len(path) {
        Ok(opened) => opened,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let whole = if size <= SEND_CHUNK as u64 {
        let mut buf = Vec::with_capacity(size as usize);
        (&file).take(size).read_to_end(&mut buf).map_err(failed)?;
        if buf.len() as u64 != size {
            return Err(failed(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the blob changed size while it was read",
            )));
        }
        Some(Bytes::from(buf))
    } else {
        None
    };
    Ok(Some((Arc::new(file), size, whole)))
}

/// `len` bytes of `file` from offset `first`, read by position in chunks of [`SEND_CHUNK`]
/// (one trip to the blocking pool each), counted as served.
fn file_body(state: Arc<State>, file: Arc<std::fs::File>, first: u64, len: u64) -> Body {
    let stream =
        futures_util::stream::unfold((state, file, first, len), |(state, file, at, left)| {
            async move {
                if left == 0 {
                    return None;
                }
                let want = SEND_CHUNK.min(usize::try_from(left).unwrap_or(SEND_CHUNK));
                let reader = file.clone();
                let read = tokio::task::spawn_blocking(move || {
                    let mut buf = BytesMut::zeroed(want);
                    let n = reader.read_at(&mut buf, at)?;
                    buf.truncate(n);
                    Ok::<_, std::io::Error>(buf)
                })
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
                match read {
                    // The file shrank under us: end early; the client sees a short body.
                    Ok(buf) if buf.is_empty() => None,
                    Ok(buf) => {
                        let n = buf.len() as u64;
                        state.metrics.served(n);
                        Some((
                            Ok(Frame::data(buf.freeze())),
                            (state, file, at + n, left - n),
                        ))
                    }
                    Err(e) => Some((Err(e), (state, file, at, 0))),
                }
            }
        });
    StreamBody::new(stream).boxed_unsync()
}

/// Opens the caller's partial upload of `digest` to continue at `offset` (0 starts over):
/// the partial, a hasher over its bytes so far, and its length. When the partial holds a
/// different number of bytes, `409` says how many in `Upload-Offset`.
async fn resume(
    state: &Arc<State>,
    caller: &Caller,
    digest: Digest,
    offset: u64,
) -> Result<(hoard_layout::dir::TempBlob, blake3::Hasher, u64), ApiError> {
    let (root, owner) = (state.root.clone(), caller.name().to_owned());
    let opened = blocking(move || {
        let Some((temp, len)) = root.resumable_blob(&owner, &digest)? else {
            return Ok(Err(None));
        };
        if offset != len && offset != 0 {
            return Ok(Err(Some(len)));
        }
        if offset == 0 {
            temp.file_ref()
                .set_len(0)
                .map_err(|e| hoard_layout::Error::Io {
                    op: "truncate",
                    path: temp.path().to_owned(),
                    source: e,
                })?;
            return Ok(Ok((temp, blake3::Hasher::new(), 0)));
        }
        // Continuing: hash what is there (one read, from the page cache mostly).
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_reader(temp.file_ref())
            .map_err(|e| hoard_layout::Error::Io {
                op: "read",
                path: temp.path().to_owned(),
                source: e,
            })?;
        Ok(Ok((temp, hasher, len)))
    })
    .await?;
    match opened {
        Ok(resumed) => Ok(resumed),
        Err(None) => Err(ApiError::new(
            StatusCode::CONFLICT,
            problem::CONFLICT,
            format!("another upload of blob `{digest}` with this credential is in progress"),
        )),
        Err(Some(len)) => {
            let mut error = ApiError::new(
                StatusCode::CONFLICT,
                problem::CONFLICT,
                format!("the upload of blob `{digest}` is at byte {len}, not {offset}"),
            );
            error.upload_offset = Some(len);
            Err(error)
        }
    }
}

/// `GET /v1/blobs/{digest}/upload`: how many bytes of a resumable upload by this caller
/// the registry holds.
pub(crate) async fn upload_offset(
    state: &Arc<State>,
    caller: &Caller,
    digest: &str,
) -> Result<Response<Body>, ApiError> {
    let digest = parse_digest(digest)?;
    caller.may_upload()?;
    let (root, owner) = (state.root.clone(), caller.name().to_owned());
    let offset = blocking(move || root.upload_offset(&owner, &digest)).await?;
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({"digest": digest, "offset": offset}),
    ))
}

pub(crate) async fn put(
    state: &Arc<State>,
    caller: &Caller,
    digest: &str,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let digest = parse_digest(digest)?;
    caller.may_upload()?;
    let max = state.limits.max_blob;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            problem::TOO_LARGE,
            format!("blobs larger than {max} bytes are not accepted"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(too_large());
    }
    let offset = match request.headers().get(UPLOAD_OFFSET) {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("`Upload-Offset` must be a byte count"))?,
        ),
    };
    let (temp, hasher, start) = match offset {
        None => {
            let root = state.root.clone();
            let temp = blocking(move || root.temp_blob()).await?;
            (temp, blake3::Hasher::new(), 0)
        }
        Some(offset) => resume(state, caller, digest, offset).await?,
    };
    let (temp, hasher, size) = receive(
        state,
        request.into_body(),
        Received {
            temp,
            hasher,
            size: start,
        },
        offset.is_some(),
    )
    .await?;
    if declared.is_some_and(|len| len != size - start) {
        return Err(ApiError::bad_request(format!(
            "the upload has {} bytes, Content-Length said {}",
            size - start,
            declared.unwrap_or_default()
        )));
    }
    let actual = Digest::from(hasher.finalize());
    if actual != digest {
        temp.discard();
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            problem::DIGEST_MISMATCH,
            format!(
                "the uploaded bytes have digest `{actual}`, not `{digest}`; nothing was stored"
            ),
        ));
    }
    let root = state.root.clone();
    let existed = blocking(move || {
        let existed = root.blob_size(&digest)?.is_some();
        root.keep_blob(temp, &digest, true)?;
        Ok(existed)
    })
    .await?;
    state.note_proven(caller, digest);
    tracing::debug!(%digest, size, existed, caller = caller.name(), "blob stored");
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(json(
        status,
        &serde_json::json!({"digest": digest, "size": size}),
    ))
}

/// An upload so far: the file, the hash and the size of what it holds.
struct Received {
    temp: hoard_layout::dir::TempBlob,
    hasher: blake3::Hasher,
    size: u64,
}

/// Appends the body to the upload, hashing it. When the body breaks off or stalls, what
/// arrived is written first if the upload is resumable.
async fn receive(
    state: &Arc<State>,
    mut body: Incoming,
    so_far: Received,
    resumable: bool,
) -> Result<(hoard_layout::dir::TempBlob, blake3::Hasher, u64), ApiError> {
    let max = state.limits.max_blob;
    let Received {
        mut temp,
        mut hasher,
        mut size,
    } = so_far;
    let mut pending = Vec::with_capacity(WRITE_BATCH);
    loop {
        let frame = match tokio::time::timeout(state.limits.body_stall, body.frame()).await {
            Err(_) => Err("the upload stalled; try again".to_owned()),
            Ok(None) => break,
            Ok(Some(Err(e))) => Err(format!("the upload broke off: {e}")),
            Ok(Some(Ok(frame))) => Ok(frame),
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(reason) => {
                if resumable && !pending.is_empty() {
                    state.metrics.received(pending.len() as u64);
                    let _ = write(temp, pending).await;
                }
                return Err(ApiError::bad_request(reason));
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size += data.len() as u64;
        if size > max {
            temp.discard();
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                problem::TOO_LARGE,
                format!("blobs larger than {max} bytes are not accepted"),
            ));
        }
        hasher.update(&data);
        pending.extend_from_slice(&data);
        if pending.len() >= WRITE_BATCH {
            state.metrics.received(pending.len() as u64);
            (temp, pending) = write(temp, pending).await?;
        }
    }
    if !pending.is_empty() {
        state.metrics.received(pending.len() as u64);
        (temp, _) = write(temp, pending).await?;
    }
    Ok((temp, hasher, size))
}

/// Appends a batch to the temp file on the blocking pool.
async fn write(
    mut temp: hoard_layout::dir::TempBlob,
    mut pending: Vec<u8>,
) -> Result<(hoard_layout::dir::TempBlob, Vec<u8>), ApiError> {
    blocking(move || {
        temp.write_all(&pending)?;
        pending.clear();
        Ok((temp, pending))
    })
    .await
}

pub(crate) async fn missing(
    state: &Arc<State>,
    caller: &Caller,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    caller.may_upload()?;
    let asked: MissingRequest = state.read_json(request).await?;
    if asked.digests.len() > state.limits.max_missing {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            problem::TOO_LARGE,
            format!(
                "at most {} digests per request; split the list",
                state.limits.max_missing
            ),
        ));
    }
    let (st, who) = (state.clone(), caller.clone());
    let missing = blocking(move || {
        let mut missing = Vec::new();
        for digest in asked.digests {
            // A blob the caller may not read counts as missing: uploading it proves the
            // caller has the bytes, and a commit may then use it.
            let present =
                st.root.blob_size(&digest)?.is_some() && st.may_read_blob(&who, &digest).is_ok();
            if !present {
                missing.push(digest);
            }
        }
        Ok(missing)
    })
    .await?;
    Ok(json(StatusCode::OK, &MissingResponse { missing }))
}

/// `POST /v1/blobs/batch`: the asked blobs, framed as [`BatchRequest`] says. The answer is
/// read in pieces of about [`BATCH_FLUSH`] bytes, one trip to the blocking pool each, as
/// the connection takes them: a client that reads slowly holds no thread, and the first
/// blobs are on their way while later ones are read. A blob the caller may not read is
/// sent as absent, like one the server lacks: a `GET` of it tells the caller which (`403`
/// or `404`).
pub(crate) async fn batch(
    state: &Arc<State>,
    caller: &Caller,
    request: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let asked: BatchRequest = state.read_json(request).await?;
    if asked.digests.len() > MAX_BATCH {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            problem::TOO_LARGE,
            format!("at most {MAX_BATCH} digests per batch; split the list"),
        ));
    }
    let wanted: Vec<(Digest, bool)> = asked
        .digests
        .into_iter()
        .map(|digest| {
            let readable = state.may_read_blob(caller, &digest).is_ok();
            (digest, readable)
        })
        .collect();
    let cursor = BatchCursor {
        state: state.clone(),
        wanted: wanted.into_iter(),
        open: None,
    };
    let pieces = futures_util::stream::unfold(Some(cursor), |cursor| async move {
        let mut cursor = cursor?;
        let read = tokio::task::spawn_blocking(move || {
            let piece = cursor.next_piece();
            (cursor, piece)
        })
        .await;
        match read {
            Ok((_, None)) => None,
            Ok((cursor, Some(Ok(piece)))) => Some((Ok(Frame::data(piece)), Some(cursor))),
            // The answer ends early: the client sees it break off, and asks for the rest
            // one by one.
            Ok((_, Some(Err(e)))) => Some((Err(e), None)),
            Err(e) => {
                tracing::error!(error = %e, "blob task panicked");
                Some((Err(std::io::Error::other("the blob task failed")), None))
            }
        }
    });
    let mut response = Response::new(StreamBody::new(pieces).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

/// How far a batch answer is: the blobs still to send, and the one being sent (its file
/// and the bytes of it still to read).
struct BatchCursor {
    state: Arc<State>,
    wanted: std::vec::IntoIter<(Digest, bool)>,
    open: Option<(std::fs::File, u64, PathBuf)>,
}

impl BatchCursor {
    /// The next piece of the answer (at least [`BATCH_FLUSH`] bytes unless it is the
    /// last); `None` after the last. `Err` when a blob cannot be read whole.
    fn next_piece(&mut self) -> Option<std::io::Result<Bytes>> {
        let mut out = BytesMut::new();
        while out.len() < BATCH_FLUSH {
            if let Some((file, left, path)) = &mut self.open {
                if *left == 0 {
                    self.open = None;
                    self.state.metrics.batched();
                    continue;
                }
                let want = SEND_CHUNK.min(usize::try_from(*left).unwrap_or(SEND_CHUNK));
                let start = out.len();
                out.resize(start + want, 0);
                if let Err(e) = file.read_exact(&mut out[start..]) {
                    tracing::error!(path = %path.display(), error = %e, "cannot read blob");
                    return Some(Err(e));
                }
                self.state.metrics.served(want as u64);
                *left -= want as u64;
                continue;
            }
            let Some((digest, readable)) = self.wanted.next() else {
                break;
            };
            let path = self.state.root.blob_path(&digest);
            let opened = readable
                .then(|| hoard_layout::dir::open_regular_len(&path))
                .filter(
                    |opened| !matches!(opened, Err(e) if e.kind() == std::io::ErrorKind::NotFound),
                );
            match opened {
                None => out.extend_from_slice(&BATCH_ABSENT.to_be_bytes()),
                Some(Ok((file, size))) => {
                    out.extend_from_slice(&size.to_be_bytes());
                    self.open = Some((file, size, path));
                }
                Some(Err(e)) => {
                    tracing::error!(path = %path.display(), error = %e, "cannot read blob");
                    return Some(Err(e));
                }
            }
        }
        (!out.is_empty()).then(|| Ok(out.freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        let r = |h: &str, size| parse_range(Some(h), size);
        let part = |first, last| Ranged::Part { first, last };
        assert_eq!(r("bytes=0-0", 10), part(0, 0));
        assert_eq!(r("bytes=2-5", 10), part(2, 5));
        assert_eq!(r("bytes=2-", 10), part(2, 9));
        assert_eq!(r("bytes=2-100", 10), part(2, 9));
        assert_eq!(r("bytes=-3", 10), part(7, 9));
        assert_eq!(r("bytes=-30", 10), part(0, 9));
        assert_eq!(r("bytes=10-", 10), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=10-20", 10), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=-0", 10), Ranged::Unsatisfiable);
        assert_eq!(r("bytes=0-", 0), Ranged::Unsatisfiable);
        // Malformed or multi-range: ignored, the whole blob is sent.
        for h in [
            "bytes=5-2",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=",
            "bytes=-",
            "bytes=1-2-3",
        ] {
            assert_eq!(r(h, 10), Ranged::Full, "{h}");
        }
        assert_eq!(parse_range(None, 10), Ranged::Full);
    }
}
