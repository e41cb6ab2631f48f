//! The classification of the MorphCloud API's failures into [`ErrorKind`]s:
//! a lost answer by what the call may have done, a transport failure by
//! what awc reports, a non-2xx status by its code and the call, and a
//! timeout by the setting its deadline came from.

use std::fmt;
use std::time::Duration;

use awc::error::{ConnectError, PayloadError, SendRequestError};
use awc::http::StatusCode;

use super::{Api, Call, Reply};
use crate::error::{Error, ErrorKind, Result};
use crate::provider::morph::wire;

/// Longest server body quoted in an error message, in characters.
const MAX_QUOTED_BODY: usize = 500;

impl Call {
    /// The error for a request whose answer was lost after it may have
    /// reached the server.
    pub(super) fn lost(self, message: String) -> Error {
        match self {
            Call::Exec => Error::new(
                ErrorKind::Indeterminate,
                format!("{message}; the command may have run on the instance"),
            ),
            // The start path looks the create's attempt up before anything
            // retries it (see `start`), so that a lost answer does not make
            // a second instance.
            Call::Start => Error::new(
                ErrorKind::Indeterminate,
                format!("{message}; the instance may have been created"),
            ),
            // GET, DELETE and setting the TTL are idempotent.
            Call::Get | Call::List | Call::Delete | Call::Ttl => Error::transient(message),
        }
    }
}

/// The text of an awc failure, scrubbed of the API key, kept as an error's
/// [`source`](std::error::Error::source): awc's own errors are not `Send`,
/// and their text is only safe to keep once scrubbed.
#[derive(Debug)]
struct TransportError(String);

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TransportError {}

impl Api {
    pub(super) fn transport_error(
        &self,
        call: Call,
        what: &str,
        timeout: Duration,
        err: SendRequestError,
    ) -> Error {
        let err_text = self.scrub(&err.to_string());
        let source = TransportError(err_text.clone());
        let classified = match err {
            SendRequestError::Connect(ConnectError::SslIsNotSupported) => Error::config(format!(
                "{what}: MORPH_BASE_URL needs TLS, which this build does not include"
            )),
            // Despite its name, awc reports end-of-file while waiting for the
            // answer (after the request was written) as `Disconnected`: the
            // server may have acted on it.
            SendRequestError::Connect(ConnectError::Disconnected) => call.lost(format!(
                "{what}: the connection closed before an answer arrived: {err_text}"
            )),
            SendRequestError::Connect(_) => Error::transient(format!(
                "{what}: could not connect to the MorphCloud API at {}: {err_text}",
                self.base_url
            )),
            SendRequestError::Url(_) | SendRequestError::Http(_) => Error::new(
                ErrorKind::Config,
                format!("{what}: cannot build the request (check MORPH_BASE_URL): {err_text}"),
            ),
            SendRequestError::Timeout => call.lost(format!(
                "{what}: no answer within {timeout:?}{}",
                self.deadline_name(call, timeout)
            )),
            _ => call.lost(format!(
                "{what}: the connection failed before an answer arrived: {err_text}"
            )),
        };
        classified.with_source(source)
    }

    pub(super) fn body_error(
        &self,
        call: Call,
        what: &str,
        status: StatusCode,
        err: PayloadError,
    ) -> Error {
        let source = TransportError(self.scrub(&err.to_string()));
        let classified = match err {
            PayloadError::Overflow => {
                let ran = if call == Call::Exec && status.is_success() {
                    " (the command ran, but its output was too large to receive)"
                } else {
                    ""
                };
                Error::new(
                    ErrorKind::Protocol,
                    format!(
                        "{what}: HTTP {}: the answer is larger than max_body_bytes ({} bytes){ran}",
                        status.as_u16(),
                        self.max_body_bytes
                    ),
                )
            }
            _ => call.lost(format!(
                "{what}: HTTP {}: the answer broke off: {source}",
                status.as_u16(),
            )),
        };
        classified.with_status(status.as_u16()).with_source(source)
    }

    /// Which setting a request's deadline came from, for its timeout error:
    /// every call but exec waits the request timeout, except a readiness
    /// poll near the end of the ready timeout, which waits what is left.
    fn deadline_name(&self, call: Call, timeout: Duration) -> &'static str {
        match call {
            Call::Exec => "",
            _ if timeout == self.request_timeout => " (the MorphCloud request timeout)",
            Call::Get => " (what was left of HECATE_MORPH_READY_TIMEOUT_SECONDS)",
            Call::Start | Call::List | Call::Delete | Call::Ttl => "",
        }
    }

    /// Passes a 2xx answer through and turns any other status into an error
    /// of the right kind.
    pub(super) fn check(&self, call: Call, what: &str, reply: Reply) -> Result<Reply> {
        let status = reply.status;
        if status.is_success() {
            return Ok(reply);
        }
        let code = status.as_u16();
        let detail = self.scrub_and_cut(&wire::error_detail(&reply.body), MAX_QUOTED_BODY);
        let base = format!("{what}: HTTP {code}: {detail}");
        let err = match code {
            401 | 403 => Error::new(
                ErrorKind::Rejected,
                format!(
                    "{what}: HTTP {code}: MorphCloud rejected the API key (check MORPH_API_KEY): \
                     {detail}"
                ),
            ),
            404 => match call {
                Call::Exec | Call::Get | Call::Ttl => Error::new(
                    ErrorKind::InstanceGone,
                    format!(
                        "{base} (the instance no longer exists: stopped by its TTL or deleted \
                         elsewhere)"
                    ),
                ),
                Call::Start | Call::List | Call::Delete => Error::new(ErrorKind::Rejected, base),
            },
            // 409: the instance is not ready (or busy); 408: the server did
            // not get the whole request. Neither ran anything.
            408 | 409 | 429 | 503 => Error::transient(base).with_retry_after(reply.retry_after),
            400..=499 => Error::new(ErrorKind::Rejected, base),
            500..=599 => call.lost(base),
            300..=399 => Error::new(
                ErrorKind::Protocol,
                format!("{base} (unexpected redirect; redirects are not followed)"),
            ),
            _ => Error::new(ErrorKind::Protocol, format!("{base} (unexpected status)")),
        };
        Err(err.with_status(code))
    }
}
