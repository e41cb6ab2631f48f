//! Bearer-token auth on every route but `/healthz`, compared in constant
//! time. The token is never logged; a refused request gets 401 in the API's
//! error shape.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::AUTHORIZATION;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError as _};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use super::routes::AppState;

/// The one route open without a token.
pub const OPEN_PATH: &str = "/healthz";

/// Whether `header` (an `Authorization` value) carries `token`. The
/// comparison takes the same time wherever the first wrong byte is.
pub fn bearer_matches(header: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(header) = header else {
        return false;
    };
    let Some(given) = header
        .strip_prefix(b"Bearer ")
        .or_else(|| header.strip_prefix(b"bearer "))
    else {
        return false;
    };
    let given = given.trim_ascii();
    bool::from(given.ct_eq(token))
}

/// The middleware: lets `/healthz` through, checks the token everywhere
/// else.
pub async fn require_token(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if req.path() != OPEN_PATH {
        let ok = req.app_data::<web::Data<AppState>>().is_some_and(|state| {
            bearer_matches(
                req.headers().get(AUTHORIZATION).map(|v| v.as_bytes()),
                state.token.expose().as_bytes(),
            )
        });
        if !ok {
            let resp = ApiError::unauthorized().error_response();
            return Ok(req.into_response(resp));
        }
    }
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let token = b"0123456789abcdef";
        assert!(bearer_matches(Some(b"Bearer 0123456789abcdef"), token));
        assert!(bearer_matches(Some(b"bearer 0123456789abcdef "), token));
        for bad in [
            &b"Bearer 0123456789abcdeF"[..],
            b"Bearer 0123456789abcde",
            b"Bearer 0123456789abcdef0",
            b"Basic 0123456789abcdef",
            b"0123456789abcdef",
            b"Bearer ",
            b"",
        ] {
            assert!(!bearer_matches(Some(bad), token), "{bad:?}");
        }
        assert!(!bearer_matches(None, token));
    }
}
