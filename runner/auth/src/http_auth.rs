//! Plain HTTP (the dashboard and `/metrics`): the token in an
//! `Authorization: Bearer` header, in a cookie, or once in `?token=`
//! (answered with an HttpOnly cookie, so the page's own fetches carry it).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, SET_COOKIE, WWW_AUTHENTICATE};
use http::{HeaderValue, StatusCode};

use crate::AuthToken;

/// The cookie the dashboard sets after a `?token=` visit.
pub const COOKIE_NAME: &str = "ferrobeam_token";

const UNAUTHORIZED_BODY: &str = "401 Unauthorized: this ferrobeam server needs its auth token. \
    Open this page once as /?token=<token> (a cookie keeps it), or send the header \
    `Authorization: Bearer <token>` (e.g. Prometheus' `authorization` setting).\n";

/// How a request proved it knows the token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpProof {
    /// No token is configured.
    NotNeeded,
    Header,
    Cookie,
    /// In the URL: answer with the cookie.
    Query,
}

/// Whether the request carries the token, and how.
pub fn check_http<B>(token: Option<&AuthToken>, req: &http::Request<B>) -> Option<HttpProof> {
    let Some(token) = token else {
        return Some(HttpProof::NotNeeded);
    };
    let headers = req.headers();
    if headers
        .get_all(AUTHORIZATION)
        .iter()
        .any(|v| token.matches_bearer(v.as_bytes()))
    {
        return Some(HttpProof::Header);
    }
    let from_cookie = headers.get_all(COOKIE).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b';')
            .filter_map(|kv| {
                let kv = kv.trim_ascii();
                let eq = kv.iter().position(|b| *b == b'=')?;
                (&kv[..eq] == COOKIE_NAME.as_bytes()).then(|| &kv[eq + 1..])
            })
            .any(|v| token.matches(v))
    });
    if from_cookie {
        return Some(HttpProof::Cookie);
    }
    let from_query = req.uri().query().is_some_and(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("token="))
            .any(|v| token.matches(&percent_decode(v)))
    });
    from_query.then_some(HttpProof::Query)
}

fn percent_decode(s: &str) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Checks the token on every HTTP request of the router it wraps; answers
/// 401 without it.  With no token, lets everything through.
#[derive(Clone, Debug, Default)]
pub struct HttpAuthLayer {
    token: Option<AuthToken>,
}

impl HttpAuthLayer {
    pub fn new(token: Option<AuthToken>) -> Self {
        Self { token }
    }
}

impl<S> tower_layer::Layer<S> for HttpAuthLayer {
    type Service = HttpAuth<S>;

    fn layer(&self, inner: S) -> HttpAuth<S> {
        HttpAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service [`HttpAuthLayer`] makes.
#[derive(Clone, Debug)]
pub struct HttpAuth<S> {
    inner: S,
    token: Option<AuthToken>,
}

impl<S, B, ResBody> tower_service::Service<http::Request<B>> for HttpAuth<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<ResBody>>,
    ResBody: From<String>,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = HttpAuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match check_http(self.token.as_ref(), &req) {
            Some(proof) => {
                let cookie = match (proof, &self.token) {
                    (HttpProof::Query, Some(t)) => HeaderValue::try_from(format!(
                        "{COOKIE_NAME}={}; HttpOnly; SameSite=Strict; Path=/",
                        t.expose()
                    ))
                    .ok()
                    .map(|mut v| {
                        v.set_sensitive(true);
                        v
                    }),
                    _ => None,
                };
                HttpAuthFuture::Pass {
                    inner: Box::pin(self.inner.call(req)),
                    cookie,
                }
            }
            None => {
                let mut resp = http::Response::new(ResBody::from(UNAUTHORIZED_BODY.to_owned()));
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                let h = resp.headers_mut();
                h.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"ferrobeam\""),
                );
                h.insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                HttpAuthFuture::Rejected(Some(Box::new(resp)))
            }
        }
    }
}

/// The future of [`HttpAuth`].
pub enum HttpAuthFuture<F, B> {
    Pass {
        inner: Pin<Box<F>>,
        cookie: Option<HeaderValue>,
    },
    Rejected(Option<Box<http::Response<B>>>),
}

impl<F, B, E> Future for HttpAuthFuture<F, B>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            HttpAuthFuture::Pass { inner, cookie } => match inner.as_mut().poll(cx) {
                Poll::Ready(Ok(mut resp)) => {
                    if let Some(c) = cookie.take() {
                        resp.headers_mut().append(SET_COOKIE, c);
                    }
                    Poll::Ready(Ok(resp))
                }
                other => other,
            },
            HttpAuthFuture::Rejected(resp) => {
                Poll::Ready(Ok(*resp.take().expect("polled after completion")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";

    fn req(uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn finds_the_token_in_header_cookie_or_query() {
        let t = AuthToken::new(GOOD, "t").unwrap();
        let t = Some(&t);
        assert_eq!(check_http(None, &req("/", &[])), Some(HttpProof::NotNeeded));
        assert_eq!(check_http(t, &req("/", &[])), None);
        assert_eq!(
            check_http(
                t,
                &req("/", &[("authorization", &format!("Bearer {GOOD}"))])
            ),
            Some(HttpProof::Header)
        );
        assert_eq!(
            check_http(
                t,
                &req("/", &[("cookie", &format!("a=b; {COOKIE_NAME}={GOOD}"))])
            ),
            Some(HttpProof::Cookie)
        );
        assert_eq!(
            check_http(t, &req(&format!("/metrics?x=1&token={GOOD}"), &[])),
            Some(HttpProof::Query)
        );
        assert_eq!(
            check_http(t, &req("/?token=0123456789abcdef0123456789abcdeF", &[])),
            None
        );
        assert_eq!(
            check_http(
                t,
                &req("/", &[("cookie", &format!("x{COOKIE_NAME}={GOOD}"))])
            ),
            None
        );
        assert_eq!(
            check_http(t, &req("/", &[("authorization", "Bearer nope")])),
            None
        );
    }

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(percent_decode("a%2Fb%3d"), b"a/b=");
        assert_eq!(percent_decode("a%2"), b"a%2");
        assert_eq!(percent_decode("%zz"), b"%zz");
    }
}
