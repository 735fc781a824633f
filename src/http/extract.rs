//! Reading `/.auth/` requests: query parameters, bounded and timed bodies, form fields.

use std::collections::HashMap;

use crate::request::ClientBody;
use bytes::Bytes;
use http::{header, HeaderMap, Request};
use http_body_util::BodyExt;

use crate::error::AuthError;

/// One query parameter.
pub(crate) fn query_param(req: &Request<ClientBody>, name: &str) -> Option<String> {
    query(req).remove(name)
}

pub(crate) fn query(req: &Request<ClientBody>) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// Reads a `/.auth/` request body: at most `limits.max_auth_body_bytes` (else 413, after draining),
/// and within `limits.header_read_timeout` (else 408: a trickling client cannot hold a task).
pub(crate) async fn read_body(
    req: Request<ClientBody>,
    limits: &crate::config::Limits,
) -> Result<(HeaderMap, Bytes), AuthError> {
    let limit = limits.max_auth_body_bytes;
    let (parts, body) = req.into_parts();
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            drain(body).await;
            return Err(AuthError::PayloadTooLarge);
        }
    }
    let read = async move {
        let mut body = body;
        let mut buf = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                AuthError::BadRequest("bad_body", format!("cannot read the request body: {e}"))
            })?;
            if let Ok(data) = frame.into_data() {
                if buf.len() + data.len() > limit {
                    drain(body).await;
                    return Err(AuthError::PayloadTooLarge);
                }
                buf.extend_from_slice(&data);
            }
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(limits.header_read_timeout, read).await {
        Ok(body) => Ok((parts.headers, body?)),
        Err(_) => Err(AuthError::BodyTimeout),
    }
}

/// Reads and discards what is left of an oversized body (at most 1 MiB, at most 2 s), so the
/// client gets to read the 413 instead of a reset connection.
async fn drain(mut body: ClientBody) {
    let mut left: usize = 1 << 20;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), async {
        while let Some(Ok(frame)) = body.frame().await {
            let n = frame.data_ref().map_or(0, |d| d.len());
            if n >= left {
                break;
            }
            left -= n;
        }
    })
    .await;
}

/// The fields of a `application/x-www-form-urlencoded` body.
pub(crate) fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}
