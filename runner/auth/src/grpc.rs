//! gRPC: a tower layer for `tonic::transport::Server::builder().layer(..)`
//! (one per server, so no service can be forgotten) and a client
//! interceptor for our own clients.

use std::task::{Context, Poll};

use futures::future::{Either, Ready};
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;

use crate::AuthToken;

/// What a rejected call is told.
pub const UNAUTHENTICATED_MESSAGE: &str =
    "ferrobeam: this server needs its auth token: send the gRPC metadata \
     `authorization: Bearer <token>` (the ferrobeam CLI and workers read the token from \
     --auth_token_file PATH or $FERROBEAM_AUTH_TOKEN; the Python SDK from \
     --ferrobeam_auth_token_file PATH or $FERROBEAM_AUTH_TOKEN)";

/// Checks `authorization: Bearer <token>` on every request of the server it
/// wraps; with no token, lets everything through (so a server can always
/// be built the same way).
#[derive(Clone, Debug, Default)]
pub struct GrpcAuthLayer {
    token: Option<AuthToken>,
}

impl GrpcAuthLayer {
    pub fn new(token: Option<AuthToken>) -> Self {
        Self { token }
    }
}

impl<S> tower_layer::Layer<S> for GrpcAuthLayer {
    type Service = GrpcAuth<S>;

    fn layer(&self, inner: S) -> GrpcAuth<S> {
        GrpcAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`GrpcAuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct GrpcAuth<S> {
    inner: S,
    token: Option<AuthToken>,
}

/// Whether a request carries the token (always, if there is none to check).
pub fn request_authorized<B>(token: Option<&AuthToken>, req: &http::Request<B>) -> bool {
    match token {
        None => true,
        Some(token) => req
            .headers()
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .any(|v| token.matches_bearer(v.as_bytes())),
    }
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if request_authorized(self.token.as_ref(), &req) {
            Either::Right(self.inner.call(req))
        } else {
            tracing::debug!(path = %req.uri().path(), "rejected a call without the auth token");
            // Dropping `req` closes its body: a client streaming a large
            // upload is cut off here, before anything of it is read.
            let status = tonic::Status::unauthenticated(UNAUTHENTICATED_MESSAGE);
            Either::Left(futures::future::ready(Ok(status.into_http())))
        }
    }
}

/// Adds `authorization: Bearer <token>` to every call of a tonic client
/// (nothing without a token).
#[derive(Clone, Default)]
pub struct ClientAuth {
    header: Option<AsciiMetadataValue>,
}

impl ClientAuth {
    pub fn new(token: Option<&AuthToken>) -> Self {
        let header = token.map(|t| {
            let mut v: AsciiMetadataValue = MetadataValue::try_from(t.bearer())
                .expect("a validated token is a valid header value");
            v.set_sensitive(true);
            v
        });
        Self { header }
    }
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(h) = &self.header {
            req.metadata_mut().insert("authorization", h.clone());
        }
        Ok(req)
    }
}

/// A channel that sends the token on every call: `XClient::new(authed(channel, token))`.
pub type AuthChannel = InterceptedService<Channel, ClientAuth>;

/// Wraps `channel` so that every call on it carries `token` (if any).
pub fn authed(channel: Channel, token: Option<&AuthToken>) -> AuthChannel {
    InterceptedService::new(channel, ClientAuth::new(token))
}
