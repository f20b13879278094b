//! The page, built from `web/` by Vite (`npm run build`) and checked in
//! under `web/dist`, embedded so the binary serves it with no files around.

use axum::http::header;
use axum::response::IntoResponse;

const INDEX: &str = include_str!("../web/dist/index.html");
const SCRIPT: &str = include_str!("../web/dist/app.js");
const STYLE: &str = include_str!("../web/dist/app.css");

pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX)
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}
