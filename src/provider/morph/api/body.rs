//! The answer bodies of the MorphCloud API: reading one whole within its
//! request's deadline and under the body limit, and scrubbing the API key
//! from it and from any text built from server data (a quote cut short
//! never ends in a piece of the key).

use std::time::Duration;

use awc::error::PayloadError;
use awc::http::StatusCode;
use bytes::Bytes;
use futures_util::Stream;

use super::{Api, Call};
use crate::error::Result;
use crate::provider::morph::wire;

impl Api {
    /// Reads the whole body of an answer with status `status`, within what is
    /// left of `timeout` (the request started at `started`) and at most
    /// `max_body_bytes` of it, and scrubs it of the API key.
    pub(super) async fn read_body<S>(
        &self,
        call: Call,
        what: &str,
        status: StatusCode,
        response: &mut awc::ClientResponse<S>,
        timeout: Duration,
        started: actix_rt::time::Instant,
    ) -> Result<Bytes>
    where
        S: Stream<Item = std::result::Result<Bytes, PayloadError>> + Unpin,
    {
        // awc's timeout covers only the head; the body (which a server can
        // trickle a byte at a time) gets what is left of the deadline.
        let left = timeout.saturating_sub(started.elapsed());
        let body =
            match actix_rt::time::timeout(left, response.body().limit(self.max_body_bytes)).await {
                Ok(body) => body.map_err(|e| self.body_error(call, what, status, e))?,
                Err(_) => {
                    return Err(call
                        .lost(format!(
                            "{what}: HTTP {}: the answer did not arrive within {timeout:?}",
                            status.as_u16()
                        ))
                        .with_status(status.as_u16()))
                }
            };
        // Whatever the server put in the body (an echo of the request's
        // headers, say) is scrubbed of the key before anything reads it, so
        // no message, excerpt or command output built from it can hold it.
        Ok(self.scrub_bytes(body))
    }

    /// `text` without the API key.
    pub(super) fn scrub(&self, text: &str) -> String {
        scrub_secret(text, &self.api_key)
    }

    /// A body without the API key (unchanged, without a copy, when it
    /// holds none).
    pub(super) fn scrub_bytes(&self, body: Bytes) -> Bytes {
        let key = self.api_key.as_bytes();
        if key.is_empty() || !body.windows(key.len()).any(|w| w == key) {
            return body;
        }
        let mut out = Vec::with_capacity(body.len());
        let mut rest = &body[..];
        while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(REDACTED.as_bytes());
            rest = &rest[at + key.len()..];
        }
        out.extend_from_slice(rest);
        Bytes::from(out)
    }

    /// At most `max` characters of `text`, scrubbed first, and cut so that
    /// no piece of the key of [`MIN_KEY_PIECE`] or more characters is left
    /// at the cut (a body that quoted only part of the key).
    pub(super) fn scrub_and_cut(&self, text: &str, max: usize) -> String {
        cut_without_secret(&self.scrub(text), &self.api_key, max)
    }
}

/// What replaces the API key in any text built from server data.
const REDACTED: &str = "[redacted]";

/// The shortest piece of the key that a cut may not leave at its edge.
const MIN_KEY_PIECE: usize = 8;

/// `text` with every occurrence of `secret` replaced.
pub(super) fn scrub_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    text.replace(secret, REDACTED)
}

/// [`wire::truncate_chars`], then [`redact_cut_edges`] (`text` is already
/// scrubbed, so only a cut can have left a piece of the key).
pub(super) fn cut_without_secret(text: &str, secret: &str, max: usize) -> String {
    redact_cut_edges(&wire::truncate_chars(text, max), secret)
}

/// `text` with any piece of `secret` of [`MIN_KEY_PIECE`] bytes or more
/// that ends right before a cut mark (`…`, which every excerpt and quote
/// in this backend ends with) replaced.
pub(super) fn redact_cut_edges(text: &str, secret: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('…').enumerate() {
        if i > 0 {
            redact_tail(&mut out, secret);
            out.push('…');
        }
        out.push_str(part);
    }
    out
}

fn redact_tail(out: &mut String, secret: &str) {
    for len in (MIN_KEY_PIECE..secret.len()).rev() {
        if secret.is_char_boundary(len) && out.ends_with(&secret[..len]) {
            out.truncate(out.len() - len);
            out.push_str(REDACTED);
            return;
        }
    }
}
