//! The job server's web dashboard: a single page (built from `web/`, served
//! from the binary), the JSON it reads, and Prometheus' `/metrics`.
//!
//! Served on a port of its own, loopback by default like every port of the
//! job server.  Read-only: nothing here changes a job (the CLI and the Job
//! API do), so the page cannot be used to run code.

mod assets;
mod monitoring;
mod prometheus;
mod views;

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferrobeam_engine::telemetry::TelemetryHub;
use ferrobeam_jobs::JobServer;
use tokio::net::TcpListener;

pub use monitoring::{MetricValue, UserMetric};

/// What the dashboard reads: the job service's jobs and the engine's
/// live figures of the ones it runs.
#[derive(Clone)]
pub struct Dashboard {
    pub jobs: Arc<JobServer>,
    pub telemetry: Arc<TelemetryHub>,
}

#[derive(Debug, thiserror::Error)]
pub enum DashboardError {
    #[error("the dashboard failed: {0}")]
    Serve(#[from] std::io::Error),
}

impl Dashboard {
    /// The routes: the page, its JSON and `/metrics`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(assets::index))
            .route("/app.js", get(assets::script))
            .route("/app.css", get(assets::style))
            .route("/api/jobs", get(job_list))
            .route("/api/jobs/{id}", get(job_detail))
            .route("/api/jobs/{id}/messages", get(job_messages))
            .route("/metrics", get(metrics))
            .with_state(self)
    }

    /// Serves on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        self.serve_with_auth(listener, None, shutdown).await
    }

    /// [`Dashboard::serve`], answering 401 to every request (the page, its
    /// JSON and `/metrics`) that does not carry `token` (see
    /// [`ferrobeam_auth::HttpAuthLayer`]: a bearer header, `?token=` once,
    /// then the cookie that sets).
    pub async fn serve_with_auth(
        self,
        listener: TcpListener,
        token: Option<ferrobeam_auth::AuthToken>,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), DashboardError> {
        let router = self
            .router()
            .layer(ferrobeam_auth::HttpAuthLayer::new(token));
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    fn detail(&self, job: &ferrobeam_jobs::JobOverview, now: SystemTime) -> views::JobDetail {
        let telemetry = self.telemetry.get(&job.id);
        let infos = self.jobs.job_metrics(&job.id).unwrap_or_default();
        views::JobDetail::new(job, telemetry.as_deref(), &infos, now)
    }
}

fn not_found(job_id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({ "error": format!("no job {job_id:?} on this server") })),
    )
        .into_response()
}

async fn job_list(State(d): State<Dashboard>) -> Json<views::JobList> {
    let now = SystemTime::now();
    let jobs = d.jobs.job_overviews();
    // The job service forgets old jobs; so does the hub.
    d.telemetry.retain(&|id| jobs.iter().any(|j| j.id == id));
    Json(views::JobList {
        version: env!("CARGO_PKG_VERSION"),
        now_ms: views::millis(now),
        jobs: jobs
            .iter()
            .map(|j| views::JobSummary::new(j, now))
            .collect(),
    })
}

async fn job_detail(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    match d.jobs.job_overview(&id) {
        Some(job) => Json(d.detail(&job, SystemTime::now())).into_response(),
        None => not_found(&id),
    }
}

#[derive(serde::Deserialize)]
struct After {
    after: Option<u64>,
}

async fn job_messages(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Query(q): Query<After>,
) -> Response {
    match d.jobs.job_messages(&id, q.after) {
        Some((messages, last)) => Json(views::Messages {
            messages: messages.into_iter().map(Into::into).collect(),
            next: last,
        })
        .into_response(),
        None => not_found(&id),
    }
}

async fn metrics(State(d): State<Dashboard>) -> Response {
    let now = SystemTime::now();
    let details: Vec<views::JobDetail> = d
        .jobs
        .job_overviews()
        .iter()
        .map(|j| d.detail(j, now))
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus::render(&details, now),
    )
        .into_response()
}
