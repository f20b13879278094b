//! Shared-token authentication for every port ferrobeam opens.
//!
//! The job server runs the (pickled) code it is sent, so anyone who can
//! reach one of its ports can run code as its user.  Ports bind loopback by
//! default; binding anything else needs `--allow-remote` *and* a token
//! ([`check_bind`]), which every call must then carry:
//!
//! - gRPC servers: `Server::builder().layer(GrpcAuthLayer::new(token))`,
//!   once per server, so every service on it is covered;
//! - HTTP (the dashboard): `router.layer(HttpAuthLayer::new(token))`;
//! - our own gRPC clients: `XClient::new(authed(channel, token.as_ref()))`;
//! - processes we start: `FERROBEAM_AUTH_TOKEN` ([`TOKEN_ENV`]) in their
//!   environment, which the Python harness hooks turn into the header.
//!
//! The token travels as `authorization: Bearer <token>` in clear text:
//! there is no TLS yet, so on an untrusted network it can be sniffed.

mod grpc;
mod http_auth;
mod token;

use std::net::IpAddr;

pub use grpc::{
    authed, request_authorized, AuthChannel, ClientAuth, GrpcAuth, GrpcAuthLayer,
    UNAUTHENTICATED_MESSAGE,
};
pub use http_auth::{check_http, HttpAuth, HttpAuthFuture, HttpAuthLayer, HttpProof, COOKIE_NAME};
pub use token::{AuthError, AuthToken, MIN_TOKEN_LEN, TOKEN_ENV, TOKEN_HINT};

/// Why a listening address was refused.
#[derive(Debug, thiserror::Error)]
pub enum BindRefused {
    #[error(
        "refusing to bind {ip}: {why}. Bind 127.0.0.1 (the default), or, to expose it, pass \
         --allow-remote together with --auth_token_file PATH (or set $FERROBEAM_AUTH_TOKEN)"
    )]
    NotAllowed { ip: IpAddr, why: String },
    #[error(
        "refusing to bind {ip} without an auth token: {why}. Pass --auth_token_file PATH (a file \
         holding a random token of at least {MIN_TOKEN_LEN} characters, {TOKEN_HINT}) or set \
         $FERROBEAM_AUTH_TOKEN; every client then has to send it"
    )]
    NoToken { ip: IpAddr, why: String },
}

/// The bind policy: loopback always; anything else only with
/// `allow_remote` and a token.  `why` says what an open port would expose.
pub fn check_bind(
    ip: IpAddr,
    allow_remote: bool,
    token: Option<&AuthToken>,
    why: &str,
) -> Result<(), BindRefused> {
    if ip.is_loopback() {
        return Ok(());
    }
    if !allow_remote {
        return Err(BindRefused::NotAllowed {
            ip,
            why: why.into(),
        });
    }
    if token.is_none() {
        return Err(BindRefused::NoToken {
            ip,
            why: why.into(),
        });
    }
    tracing::warn!(
        %ip,
        "listening beyond loopback: every call must carry the auth token, which travels in \
         clear text (ferrobeam has no TLS yet): use a trusted network, a VPN or a TLS proxy"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::task::{Context, Poll};
    use tower_layer::Layer;
    use tower_service::Service;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn bind_policy() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let lo6: IpAddr = "::1".parse().unwrap();
        let any: IpAddr = "0.0.0.0".parse().unwrap();
        assert!(check_bind(lo, false, None, "x").is_ok());
        assert!(check_bind(lo6, false, None, "x").is_ok());
        assert!(check_bind(lo, false, Some(&t), "x").is_ok());
        let e = check_bind(any, false, Some(&t), "x")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--allow-remote") && e.contains("--auth_token_file"),
            "{e}"
        );
        let e = check_bind(any, true, None, "x").unwrap_err().to_string();
        assert!(e.contains("--auth_token_file"), "{e}");
        assert!(check_bind(any, true, Some(&t), "x").is_ok());
    }

    /// Answers 200 with "ok" to anything.
    #[derive(Clone)]
    struct Ok200;
    impl<B> Service<http::Request<B>> for Ok200 {
        type Response = http::Response<String>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Self::Response, Infallible>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<B>) -> Self::Future {
            std::future::ready(Ok(http::Response::new("ok".into())))
        }
    }

    fn call<S: Service<http::Request<()>>>(s: &mut S, r: http::Request<()>) -> S::Response
    where
        S::Error: std::fmt::Debug,
    {
        futures::executor::block_on(s.call(r)).unwrap()
    }

    fn req(headers: &[(&str, &str)], uri: &str) -> http::Request<()> {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn grpc_layer_rejects_without_the_token() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        let mut svc = GrpcAuthLayer::new(Some(t.clone())).layer(Ok200);
        let bearer = t.bearer();
        let ok = call(&mut svc, req(&[("authorization", &bearer)], "/x.Y/Z"));
        assert_eq!(ok.body(), "ok");
        for bad in [
            vec![],
            vec![("authorization", "Bearer wrong-token-wrong-token")],
        ] {
            let resp = call(&mut svc, req(&bad, "/x.Y/Z"));
            let status = tonic::Status::from_header_map(resp.headers()).unwrap();
            assert_eq!(status.code(), tonic::Code::Unauthenticated);
            assert!(status.message().contains("--auth_token_file"));
        }
        // Without a token, everything passes.
        let mut open = GrpcAuthLayer::new(None).layer(Ok200);
        assert_eq!(call(&mut open, req(&[], "/x.Y/Z")).body(), "ok");
    }

    #[test]
    fn http_layer_answers_401_and_sets_the_cookie() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        let mut svc = HttpAuthLayer::new(Some(t.clone())).layer(Ok200);
        let resp = call(&mut svc, req(&[], "/metrics"));
        assert_eq!(resp.status(), http::StatusCode::UNAUTHORIZED);
        assert!(resp.body().contains("?token="));
        let resp = call(&mut svc, req(&[], &format!("/?token={GOOD}")));
        assert_eq!(resp.status(), http::StatusCode::OK);
        let cookie = resp.headers()[http::header::SET_COOKIE].to_str().unwrap();
        assert!(cookie.starts_with(&format!("{COOKIE_NAME}={GOOD};")));
        assert!(cookie.contains("HttpOnly"));
        let resp = call(&mut svc, req(&[("authorization", &t.bearer())], "/metrics"));
        assert_eq!(resp.status(), http::StatusCode::OK);
        assert!(resp.headers().get(http::header::SET_COOKIE).is_none());
    }

    #[test]
    fn client_interceptor_adds_the_header() {
        use tonic::service::Interceptor;
        let t = AuthToken::new(GOOD, "t").unwrap();
        let mut c = ClientAuth::new(Some(&t));
        let r = c.call(tonic::Request::new(())).unwrap();
        assert_eq!(r.metadata().get("authorization").unwrap(), &t.bearer());
        assert!(!format!("{c:?}").contains(GOOD));
        let r = ClientAuth::new(None).call(tonic::Request::new(())).unwrap();
        assert!(r.metadata().get("authorization").is_none());
    }

    /// The layer fits `tonic::transport::Server::builder().layer(..)`.
    #[tokio::test]
    async fn fits_a_tonic_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        tonic::transport::Server::builder()
            .layer(GrpcAuthLayer::new(None))
            .add_routes(tonic::service::Routes::default())
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {},
            )
            .await
            .unwrap();
    }
}
