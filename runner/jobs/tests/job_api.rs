//! The Job API over real loopback gRPC with a fake executor.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use ferrobeam_proto::job_api::job_message::MessageImportance;
use ferrobeam_proto::job_api::job_messages_response::Response as MsgResponse;
use ferrobeam_proto::job_api::job_state::Enum as JobState;
use ferrobeam_proto::job_api::{
    DescribePipelineOptionsRequest, GetJobMetricsRequest, GetJobPipelineRequest,
    GetJobStateRequest, GetJobsRequest, JobMessagesRequest, JobMessagesResponse, PrepareJobRequest,
};
use ferrobeam_proto::pipeline::v1::{FunctionSpec, PTransform};
use tonic::transport::Channel;
use tonic::Code;

type Client = ferrobeam_proto::job_api::job_service_client::JobServiceClient<Channel>;

/// Every item of a server stream until it ends.
async fn drain<T>(mut stream: tonic::Streaming<T>) -> Vec<T> {
    let mut all = Vec::new();
    while let Some(item) = stream.message().await.unwrap() {
        all.push(item);
    }
    all
}

async fn collect_states(client: &mut Client, job_id: &str) -> Vec<JobState> {
    let request = GetJobStateRequest {
        job_id: job_id.into(),
    };
    let stream = client.get_state_stream(request).await.unwrap().into_inner();
    drain(stream)
        .await
        .into_iter()
        .map(|event| JobState::try_from(event.state).unwrap())
        .collect()
}

async fn collect_messages(client: &mut Client, job_id: &str) -> Vec<JobMessagesResponse> {
    let request = JobMessagesRequest {
        job_id: job_id.into(),
    };
    drain(
        client
            .get_message_stream(request)
            .await
            .unwrap()
            .into_inner(),
    )
    .await
}

/// Follows a job's state stream in the background.
fn spawn_states(client: &Client, job_id: &str) -> tokio::task::JoinHandle<Vec<JobState>> {
    let (mut c, id) = (client.clone(), job_id.to_string());
    tokio::spawn(async move { collect_states(&mut c, &id).await })
}

/// Follows a job's message stream in the background.
fn spawn_messages(
    client: &Client,
    job_id: &str,
) -> tokio::task::JoinHandle<Vec<JobMessagesResponse>> {
    let (mut c, id) = (client.clone(), job_id.to_string());
    tokio::spawn(async move { collect_messages(&mut c, &id).await })
}

/// Text of ERROR messages, and the states, in stream order.
fn summarize(messages: &[JobMessagesResponse]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m.response.as_ref().unwrap() {
            MsgResponse::MessageResponse(msg) => format!(
                "{}:{}",
                MessageImportance::try_from(msg.importance)
                    .unwrap()
                    .as_str_name(),
                msg.message_text
            ),
            MsgResponse::StateResponse(s) => JobState::try_from(s.state)
                .unwrap()
                .as_str_name()
                .to_string(),
        })
        .collect()
}

type Envs = Vec<(
    &'static str,
    Vec<ferrobeam_proto::pipeline::v1::ArtifactInformation>,
)>;

fn client_files() -> (HashMap<String, Vec<u8>>, Envs) {
    let session: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let files: HashMap<String, Vec<u8>> = [
        ("/client/tmp/pickled_main_session".to_string(), session),
        (
            "/client/tmp/reqs.txt".to_string(),
            b"apache-beam==2.77.0\n".to_vec(),
        ),
        ("/client/tmp/other.bin".to_string(), b"xyz".to_vec()),
    ]
    .into_iter()
    .collect();
    let envs = vec![
        (
            "python_env",
            vec![
                file_artifact(
                    "/client/tmp/pickled_main_session",
                    Some("pickled_main_session"),
                ),
                file_artifact(
                    "/client/tmp/reqs.txt",
                    Some("submission_environment_dependencies.txt"),
                ),
            ],
        ),
        (
            "other_env",
            vec![file_artifact("/client/tmp/other.bin", None)],
        ),
        ("no_deps_env", vec![]),
    ];
    (files, envs)
}

#[tokio::test]
async fn prepare_stage_run_done() {
    let executor = FakeExecutor::new(Behavior::Succeed(Duration::from_millis(200)));
    let server = TestServer::start(executor.clone()).await;
    let mut client = server.client().await;

    let options = client
        .describe_pipeline_options(DescribePipelineOptionsRequest {})
        .await
        .unwrap();
    assert!(options.into_inner().options.is_empty());

    let (files, envs) = client_files();
    let prep = prepare(&mut client, pipeline(&envs)).await;
    let endpoint = prep.artifact_staging_endpoint.clone().unwrap().url;
    assert_eq!(
        endpoint,
        server.addr.to_string(),
        "staging endpoint is our own address"
    );
    assert!(!prep.staging_session_token.is_empty());
    assert_ne!(prep.staging_session_token, prep.preparation_id);

    stage_prepared(20, &prep, &files, 64 * 1024).await.unwrap();

    // Beam's client opens both streams with the preparation id before Run.
    let job_id = prep.preparation_id.clone();
    let states = spawn_states(&client, &job_id);
    let messages = spawn_messages(&client, &job_id);
    tokio::time::sleep(Duration::from_millis(50)).await;

    let run = run_job(&mut client, &job_id).await;
    assert_eq!(run.unwrap().job_id, job_id);

    let states = within(10, states).await.unwrap();
    assert_eq!(
        states,
        vec![
            JobState::Stopped,
            JobState::Starting,
            JobState::Running,
            JobState::Done
        ]
    );
    let messages = summarize(&within(10, messages).await.unwrap());
    assert_eq!(messages.first().map(String::as_str), Some("STOPPED"));
    assert_eq!(messages.last().map(String::as_str), Some("DONE"));
    assert!(messages.contains(&"JOB_MESSAGE_BASIC:fake execution started".to_string()));

    // What the executor got.
    let seen = executor.seen.lock().remove(0);
    assert_eq!(seen.job_id, job_id);
    assert!(seen.work_dir.is_dir());
    let job_dir = server.server.artifact_root().join(&job_id);
    assert_eq!(seen.artifacts.len(), 3);
    assert!(seen.artifacts["no_deps_env"].is_empty());
    let python = &seen.artifacts["python_env"];
    assert_eq!(python.len(), 2);
    assert_eq!(staged_name(&python[0]), "pickled_main_session");
    assert_eq!(
        staged_name(&python[1]),
        "submission_environment_dependencies.txt"
    );
    for (artifact, original) in python
        .iter()
        .zip(["/client/tmp/pickled_main_session", "/client/tmp/reqs.txt"])
    {
        assert_eq!(artifact.role_urn, STAGING_TO_URN);
        let path = std::path::PathBuf::from(file_path(artifact));
        assert!(path.starts_with(job_dir.join("python_env")), "{path:?}");
        assert_eq!(std::fs::read(&path).unwrap(), files[original]);
    }
    let other = &seen.artifacts["other_env"][0];
    assert_eq!(other.role_urn, "");
    assert_eq!(std::fs::read(file_path(other)).unwrap(), b"xyz");
    // The pipeline handed over agrees with the artifacts.
    let env = &seen.pipeline.components.as_ref().unwrap().environments["python_env"];
    assert_eq!(&env.dependencies, python);

    // GetPipeline, GetState, GetJobs, metrics.
    let pipeline = client
        .get_pipeline(GetJobPipelineRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap();
    let env = &pipeline
        .into_inner()
        .pipeline
        .unwrap()
        .components
        .unwrap()
        .environments["other_env"];
    assert_eq!(env.dependencies[0].type_urn, FILE_URN);
    let state = job_state(&mut client, &job_id).await.unwrap();
    assert_eq!(state.state, JobState::Done as i32);
    assert!(state.timestamp.is_some());
    let jobs = client
        .get_jobs(GetJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .job_info;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].job_name, "test job");
    assert_eq!(jobs[0].state, JobState::Done as i32);
    let metrics = client
        .get_job_metrics(GetJobMetricsRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap();
    let metrics = metrics.into_inner().metrics.unwrap();
    assert_eq!(metrics.attempted, vec![user_counter("elements", 42)]);
    assert_eq!(metrics.committed, vec![user_counter("elements", 40)]);

    // A late subscriber gets the whole history and an ended stream.
    let replay = summarize(&within(5, collect_messages(&mut client, &job_id)).await);
    assert_eq!(replay, messages);

    // A job runs once.
    let again = run_job(&mut client, &job_id).await;
    assert_eq!(again.unwrap_err().code(), Code::FailedPrecondition);
    server.stop().await;
}

#[tokio::test]
async fn failing_executor_reports_error_then_failed() {
    let text =
        "Traceback (most recent call last):\n  ...\nValueError: boom [while running 'Map(fail)']";
    let (server, mut client) = serve(Behavior::Fail(text.into())).await;
    let prep = prepare(&mut client, pipeline(&[("env", vec![])])).await;
    // No artifacts at all: Run does not insist on a staging round trip.
    let job_id = prep.preparation_id;
    let messages = spawn_messages(&client, &job_id);
    run_job(&mut client, &job_id).await.unwrap();

    let states = within(10, collect_states(&mut client, &job_id)).await;
    assert_eq!(states.last(), Some(&JobState::Failed));
    let messages = summarize(&within(10, messages).await.unwrap());
    let n = messages.len();
    assert_eq!(messages[n - 1], "FAILED");
    assert_eq!(
        messages[n - 2],
        format!("JOB_MESSAGE_ERROR:{text}"),
        "error comes right before FAILED"
    );
    server.stop().await;
}

#[tokio::test]
async fn panicking_executor_fails_the_job_not_the_server() {
    let (server, mut client) = serve(Behavior::Panic).await;
    let job_id = prepare_and_run_empty(&mut client).await;
    let states = within(10, collect_states(&mut client, &job_id)).await;
    assert_eq!(states.last(), Some(&JobState::Failed));
    let messages = summarize(&collect_messages(&mut client, &job_id).await);
    assert!(messages
        .iter()
        .any(|m| m.starts_with("JOB_MESSAGE_ERROR:") && m.contains("fake executor exploded")));
    // Still serving.
    client.get_jobs(GetJobsRequest {}).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn cancel_running_job() {
    let (server, mut client) = serve(Behavior::WaitForCancel).await;
    let job_id = prepare_empty(&mut client).await;
    let states = spawn_states(&client, &job_id);
    run_job(&mut client, &job_id).await.unwrap();
    // Wait until it runs.
    within(5, async {
        loop {
            let s = job_state(&mut client, &job_id).await.unwrap();
            if s.state == JobState::Running as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let cancel = cancel_job(&mut client, &job_id).await.unwrap();
    assert!(
        cancel.state == JobState::Cancelling as i32 || cancel.state == JobState::Cancelled as i32
    );
    let states = within(10, states).await.unwrap();
    assert_eq!(
        states,
        vec![
            JobState::Stopped,
            JobState::Starting,
            JobState::Running,
            JobState::Cancelling,
            JobState::Cancelled
        ]
    );
    // Cancelling a finished job is harmless.
    let again = cancel_job(&mut client, &job_id).await.unwrap();
    assert_eq!(again.state, JobState::Cancelled as i32);
    server.stop().await;
}

#[tokio::test]
async fn cancel_gives_up_on_an_executor_that_ignores_it() {
    let server = TestServer::start_with(FakeExecutor::new(Behavior::Hang), |c| {
        ferrobeam_jobs::JobServiceConfig {
            cancel_timeout: Duration::from_millis(200),
            ..c
        }
    })
    .await;
    let mut client = server.client().await;
    let job_id = prepare_and_run_empty(&mut client).await;
    cancel_job(&mut client, &job_id).await.unwrap();
    let states = within(10, collect_states(&mut client, &job_id)).await;
    assert_eq!(states.last(), Some(&JobState::Cancelled));
    let messages = summarize(&collect_messages(&mut client, &job_id).await);
    assert!(messages.iter().any(|m| m.contains("abandoned")));
    server.stop().await;
}

#[tokio::test]
async fn cancel_before_run() {
    let (server, mut client) = serve(Behavior::Succeed(Duration::ZERO)).await;
    let job_id = prepare_empty(&mut client).await;
    let cancel = cancel_job(&mut client, &job_id).await.unwrap();
    assert_eq!(cancel.state, JobState::Cancelled as i32);
    let run = run_job(&mut client, &job_id).await;
    assert_eq!(run.unwrap_err().code(), Code::FailedPrecondition);
    let states = within(5, collect_states(&mut client, &job_id)).await;
    assert_eq!(states, vec![JobState::Stopped, JobState::Cancelled]);
    server.stop().await;
}

#[tokio::test]
async fn garbage_requests_get_statuses() {
    let (server, mut client) = serve(Behavior::Succeed(Duration::ZERO)).await;

    let run = run_job(&mut client, "nope").await;
    assert_eq!(run.unwrap_err().code(), Code::NotFound);
    // A huge id is not echoed back whole (clients cap header sizes).
    let huge = "x".repeat(1 << 20);
    let err = run_job(&mut client, huge).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().len() < 1000);
    let s = client
        .get_state_stream(GetJobStateRequest {
            job_id: "nope".into(),
        })
        .await;
    assert_eq!(s.unwrap_err().code(), Code::NotFound);
    let m = client
        .get_message_stream(JobMessagesRequest {
            job_id: "nope".into(),
        })
        .await;
    assert_eq!(m.unwrap_err().code(), Code::NotFound);
    for code in [
        job_state(&mut client, "nope").await.unwrap_err().code(),
        client
            .get_pipeline(GetJobPipelineRequest {
                job_id: "nope".into(),
            })
            .await
            .unwrap_err()
            .code(),
        cancel_job(&mut client, "nope").await.unwrap_err().code(),
        drain_job(&mut client, "nope").await.unwrap_err().code(),
        client
            .get_job_metrics(GetJobMetricsRequest {
                job_id: "nope".into(),
            })
            .await
            .unwrap_err()
            .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }

    let no_pipeline = client
        .prepare(PrepareJobRequest {
            pipeline: None,
            pipeline_options: None,
            job_name: "x".into(),
        })
        .await;
    assert_eq!(no_pipeline.unwrap_err().code(), Code::InvalidArgument);

    // The executor's verdict reaches the client verbatim.
    let mut bad = pipeline(&[]);
    bad.components.as_mut().unwrap().transforms.insert(
        "bad".into(),
        PTransform {
            unique_name: "Bad".into(),
            spec: Some(FunctionSpec {
                urn: REJECT_URN.into(),
                payload: Default::default(),
            }),
            ..Default::default()
        },
    );
    let refused = client
        .prepare(PrepareJobRequest {
            pipeline: Some(bad),
            pipeline_options: None,
            job_name: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains(REJECT_URN),
        "{}",
        refused.message()
    );

    // Artifacts declared but never staged.
    let (_, envs) = client_files();
    let job_id = prepare(&mut client, pipeline(&envs)).await.preparation_id;
    let run = run_job(&mut client, job_id).await;
    let err = run.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("staged"), "{}", err.message());

    // Hostile job names become safe ids.
    let prep = client
        .prepare(PrepareJobRequest {
            pipeline: Some(pipeline(&[])),
            pipeline_options: None,
            job_name: "../../etc/passwd\0".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!prep.preparation_id.contains('/') && !prep.preparation_id.starts_with('.'));
    run_job(&mut client, &prep.preparation_id).await.unwrap();
    let states = within(5, collect_states(&mut client, &prep.preparation_id)).await;
    assert_eq!(states.last(), Some(&JobState::Done));
    server.stop().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let (server, mut client) = serve(Behavior::Hang).await;
    let job_id = prepare_and_run_empty(&mut client).await;
    let mut stream = client
        .get_message_stream(JobMessagesRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let reader = tokio::spawn(async move {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                other => return other.map(|_| ()),
            }
        }
    });
    // The job hangs forever, but stopping the server still completes.
    within(10, server.stop()).await;
    let end = within(5, reader).await.unwrap();
    if let Err(status) = end {
        assert!(
            matches!(
                status.code(),
                Code::Unavailable | Code::Cancelled | Code::Unknown
            ),
            "{status:?}"
        );
    }
}

#[tokio::test]
async fn old_jobs_are_forgotten_with_their_files() {
    let server =
        TestServer::start_with(FakeExecutor::new(Behavior::Succeed(Duration::ZERO)), |c| {
            ferrobeam_jobs::JobServiceConfig {
                max_finished_jobs: 1,
                prepared_job_ttl: Duration::from_millis(100),
                ..c
            }
        })
        .await;
    let mut client = server.client().await;
    let files = one_file(b"data".to_vec());
    let mut finished = Vec::new();
    for _ in 0..3 {
        let prep = prepare_one_file(&mut client, "f").await;
        stage_prepared(10, &prep, &files, 10).await.unwrap();
        let id = prep.preparation_id;
        run_job(&mut client, &id).await.unwrap();
        assert_eq!(
            within(5, collect_states(&mut client, &id)).await.last(),
            Some(&JobState::Done)
        );
        finished.push(id);
    }
    // A prepared job nobody runs; a stream following it must end when it
    // is forgotten.
    let idle = prepare_empty(&mut client).await;
    let idle_states = spawn_states(&client, &idle);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // Eviction happens on Prepare.
    let newest = prepare_empty(&mut client).await;
    let ids: Vec<String> = client
        .get_jobs(GetJobsRequest {})
        .await
        .unwrap()
        .into_inner()
        .job_info
        .into_iter()
        .map(|j| j.job_id)
        .collect();
    assert_eq!(ids, vec![finished[2].clone(), newest]);
    assert_eq!(
        within(5, idle_states).await.unwrap(),
        vec![JobState::Stopped, JobState::Cancelled]
    );
    within(5, async {
        while finished[..2]
            .iter()
            .any(|id| server.server.artifact_root().join(id).exists())
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(server.server.artifact_root().join(&finished[2]).exists());
    server.stop().await;
}

/// Text of every message (any importance) in a job's message stream.
fn message_texts(messages: &[JobMessagesResponse]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m.response.as_ref()? {
            MsgResponse::MessageResponse(msg) => Some(msg.message_text.clone()),
            MsgResponse::StateResponse(_) => None,
        })
        .collect()
}

#[tokio::test]
async fn drain_running_streaming_job() {
    let (server, mut client) = serve(Behavior::WaitForDrain).await;
    let job_id = prepare_streaming(&mut client).await;
    let states = spawn_states(&client, &job_id);
    let messages = spawn_messages(&client, &job_id);
    run_job(&mut client, &job_id).await.unwrap();
    wait_for_state(&mut client, &job_id, JobState::Running).await;

    let drain = drain_job(&mut client, &job_id).await.unwrap();
    // The fake executor returns as soon as it sees the flag, so the job may
    // already have ended.
    assert!(
        drain.state == JobState::Draining as i32 || drain.state == JobState::Drained as i32,
        "{:?}",
        JobState::try_from(drain.state)
    );
    let states = within(10, states).await.unwrap();
    assert_eq!(
        states,
        vec![
            JobState::Stopped,
            JobState::Starting,
            JobState::Running,
            JobState::Draining,
            JobState::Drained
        ]
    );
    let messages = summarize(&within(10, messages).await.unwrap());
    assert_eq!(messages.last().map(String::as_str), Some("DRAINED"));
    // Draining (or cancelling) a drained job changes nothing.
    let again = drain_job(&mut client, &job_id).await.unwrap();
    assert_eq!(again.state, JobState::Drained as i32);
    let cancel = cancel_job(&mut client, &job_id).await.unwrap();
    assert_eq!(cancel.state, JobState::Drained as i32);
    server.stop().await;
}

#[tokio::test]
async fn drain_unknown_job_is_not_found() {
    let (server, mut client) = serve(Behavior::WaitForDrain).await;
    let err = drain_job(&mut client, "no-such-job").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("no-such-job"), "{}", err.message());
    server.stop().await;
}

#[tokio::test]
async fn drain_finished_job_leaves_its_state() {
    let (server, mut client) = serve(Behavior::Succeed(Duration::ZERO)).await;
    let job_id = prepare_streaming(&mut client).await;
    run_job(&mut client, &job_id).await.unwrap();
    let states = within(10, collect_states(&mut client, &job_id)).await;
    assert_eq!(states.last(), Some(&JobState::Done));
    let drain = drain_job(&mut client, &job_id).await.unwrap();
    assert_eq!(drain.state, JobState::Done as i32);
    assert_eq!(
        job_state(&mut client, &job_id).await.unwrap().state,
        JobState::Done as i32
    );
    server.stop().await;
}

#[tokio::test]
async fn cancel_while_draining() {
    // This executor ignores the drain flag, as a job stuck in its drain would.
    let (server, mut client) = serve(Behavior::WaitForCancel).await;
    let job_id = prepare_streaming(&mut client).await;
    let states = spawn_states(&client, &job_id);
    run_job(&mut client, &job_id).await.unwrap();
    wait_for_state(&mut client, &job_id, JobState::Running).await;

    let drain = drain_job(&mut client, &job_id).await.unwrap();
    assert_eq!(drain.state, JobState::Draining as i32);
    let cancel = cancel_job(&mut client, &job_id).await.unwrap();
    assert!(
        cancel.state == JobState::Cancelling as i32 || cancel.state == JobState::Cancelled as i32
    );
    let states = within(10, states).await.unwrap();
    assert_eq!(
        states,
        vec![
            JobState::Stopped,
            JobState::Starting,
            JobState::Running,
            JobState::Draining,
            JobState::Cancelling,
            JobState::Cancelled
        ]
    );
    server.stop().await;
}

#[tokio::test]
async fn drain_that_fails_ends_failed() {
    let (server, mut client) = serve(Behavior::FailOnDrain("flush failed".into())).await;
    let job_id = prepare_streaming(&mut client).await;
    run_job(&mut client, &job_id).await.unwrap();
    wait_for_state(&mut client, &job_id, JobState::Running).await;
    drain_job(&mut client, &job_id).await.unwrap();
    let states = within(10, collect_states(&mut client, &job_id)).await;
    assert_eq!(
        &states[states.len() - 2..],
        &[JobState::Draining, JobState::Failed]
    );
    let messages = summarize(&collect_messages(&mut client, &job_id).await);
    assert!(messages.contains(&"JOB_MESSAGE_ERROR:flush failed".to_string()));
    server.stop().await;
}

#[tokio::test]
async fn drain_of_batch_job_lets_it_finish() {
    let (server, mut client) = serve(Behavior::Succeed(Duration::from_millis(300))).await;
    let job_id = prepare_and_run_empty(&mut client).await;
    wait_for_state(&mut client, &job_id, JobState::Running).await;
    let drain = drain_job(&mut client, &job_id).await.unwrap();
    assert_eq!(drain.state, JobState::Running as i32);
    let states = within(10, collect_states(&mut client, &job_id)).await;
    assert_eq!(
        states,
        vec![
            JobState::Stopped,
            JobState::Starting,
            JobState::Running,
            JobState::Done
        ]
    );
    let texts = message_texts(&collect_messages(&mut client, &job_id).await);
    assert!(
        texts.iter().any(|t| t.contains("batch job")),
        "no message explains the ignored drain: {texts:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn drain_before_run_is_refused() {
    let (server, mut client) = serve(Behavior::WaitForDrain).await;
    let job_id = prepare_streaming(&mut client).await;
    let err = drain_job(&mut client, &job_id).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("cancel"), "{}", err.message());
    // The job is untouched and still runs.
    assert_eq!(
        job_state(&mut client, &job_id).await.unwrap().state,
        JobState::Stopped as i32
    );
    run_job(&mut client, &job_id).await.unwrap();
    wait_for_state(&mut client, &job_id, JobState::Running).await;
    cancel_job(&mut client, &job_id).await.unwrap();
    server.stop().await;
}
