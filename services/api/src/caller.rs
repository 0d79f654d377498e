//! The authenticated caller of a request, from its `Authorization: Bearer` header.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, web};
use flowsync_auth::Principal;

use crate::error::ApiError;
use crate::startup::AppState;

/// Who is calling: every route that touches a flow takes one, so no route skips the token
/// check or the subject's rate limit (DESIGN §7).
#[derive(Debug)]
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::Unexpected(anyhow::anyhow!("no app state"))));
        };
        let token = req
            .headers()
            .get("Authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(flowsync_auth::bearer_token);
        let result = state
            .auth
            .authenticate(token)
            .map_err(ApiError::from)
            .and_then(|principal| {
                state
                    .limiter
                    .check(principal.actor.id.as_str())
                    .map_err(ApiError::RateLimited)?;
                Ok(Caller(principal))
            });
        ready(result)
    }
}
