//! Artifact staging and retrieval over real loopback gRPC.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use ferrobeam_jobs::JobServiceConfig;
use ferrobeam_proto::job_api::artifact_retrieval_service_client::ArtifactRetrievalServiceClient;
use ferrobeam_proto::job_api::{GetArtifactRequest, ResolveArtifactsRequest};
use ferrobeam_proto::pipeline::v1::{ArtifactFilePayload, ArtifactInformation};
use prost::Message;
use tonic::Code;

/// Every file below `dir`, recursively.
fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn hostile_environment_ids_cannot_escape_the_job_directory() {
    let executor = FakeExecutor::new(Behavior::Succeed(Duration::ZERO));
    let server = TestServer::start(executor.clone()).await;
    let mut client = server.client().await;
    let files: HashMap<String, Vec<u8>> = [
        ("a".to_string(), b"A".to_vec()),
        ("b".to_string(), b"B".to_vec()),
    ]
    .into_iter()
    .collect();
    // Plain names (and none: the empty name) are staged as they are.
    let names = ["pickled_main_session", "x.whl", "", "a..b"];
    let deps: Vec<ArtifactInformation> = names
        .iter()
        .enumerate()
        .map(|(i, name)| file_artifact(if i % 2 == 0 { "a" } else { "b" }, Some(name)))
        .collect();
    let envs = [
        ("../../evil_env", deps.clone()),
        ("/abs_env", deps[..1].to_vec()),
    ];
    let prep = prepare(&mut client, pipeline(&envs)).await;
    stage_prepared(10, &prep, &files, 1).await.unwrap();
    run_job(&mut client, &prep.preparation_id).await.unwrap();

    // Everything written lives in the job's directory.
    let root = server.dir.path();
    let job_dir = server.server.artifact_root().join(&prep.preparation_id);
    for f in all_files(root) {
        assert!(
            f.starts_with(&job_dir) || f.starts_with(root.join("jobs/work")),
            "escaped: {f:?}"
        );
    }
    assert_eq!(all_files(&job_dir).len(), names.len() + 1);

    let seen = executor.seen.lock().remove(0);
    let staged = &seen.artifacts["../../evil_env"];
    assert_eq!(staged.len(), names.len());
    for (artifact, name) in staged.iter().zip(names) {
        assert_eq!(staged_name(artifact), name);
        let path = std::path::PathBuf::from(file_path(artifact));
        assert!(path.starts_with(&job_dir), "{path:?}");
        assert!(!path
            .components()
            .any(|c| c == std::path::Component::ParentDir));
    }
    assert_eq!(std::fs::read(file_path(&staged[0])).unwrap(), b"A");
    assert_eq!(std::fs::read(file_path(&staged[1])).unwrap(), b"B");
    server.stop().await;
}

/// A staged name that is not a plain file name (`../`, an absolute path,
/// a separator) fails staging with a clear error, before any byte of it
/// is read, and the job cannot run.
#[tokio::test]
async fn path_traversal_in_staged_names_is_refused() {
    let hostile = [
        "../../../../escaped",
        "/tmp/absolute_escape",
        "..",
        "..\\..\\win_escape",
        "sub/dir/../../x",
    ];
    for name in hostile {
        let server = TestServer::start(FakeExecutor::new(Behavior::Succeed(Duration::ZERO))).await;
        let mut client = server.client().await;
        let files: HashMap<String, Vec<u8>> = [("a".to_string(), b"A".to_vec())].into();
        let deps = vec![file_artifact("a", Some(name))];
        let prep = prepare(&mut client, pipeline(&[("env", deps)])).await;
        let err = stage_prepared(10, &prep, &files, 1).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(
            err.message().contains("not a plain file name"),
            "{name}: {}",
            err.message()
        );
        let root = server.dir.path();
        assert!(all_files(root).is_empty(), "{name}: {:?}", all_files(root));
        assert!(!Path::new("/tmp/absolute_escape").exists());
        let run = run_job(&mut client, prep.preparation_id).await.unwrap_err();
        assert_eq!(run.code(), Code::FailedPrecondition, "{name}");
        server.stop().await;
    }
}

async fn expect_staging_refused(
    config: impl FnOnce(JobServiceConfig) -> JobServiceConfig,
    sizes: &[usize],
) {
    let server =
        TestServer::start_with(FakeExecutor::new(Behavior::Succeed(Duration::ZERO)), config).await;
    let mut client = server.client().await;
    let files: HashMap<String, Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("f{i}"), vec![7u8; *n]))
        .collect();
    let deps = (0..sizes.len())
        .map(|i| file_artifact(&format!("f{i}"), Some("x")))
        .collect();
    let prep = prepare(&mut client, pipeline(&[("env", deps)])).await;
    let err = stage_prepared(10, &prep, &files, 100).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("limit"), "{}", err.message());
    // Partial files are gone and the job cannot run.
    let job_dir = server.server.artifact_root().join(&prep.preparation_id);
    assert!(all_files(&job_dir).is_empty());
    let run = run_job(&mut client, prep.preparation_id).await.unwrap_err();
    assert_eq!(run.code(), Code::FailedPrecondition);
    assert!(run.message().contains("limit"), "{}", run.message());
    server.stop().await;
}

#[tokio::test]
async fn oversize_artifact_is_refused() {
    expect_staging_refused(
        |c| JobServiceConfig {
            max_artifact_bytes: 1000,
            ..c
        },
        &[10, 1001],
    )
    .await;
}

#[tokio::test]
async fn oversize_total_is_refused() {
    expect_staging_refused(
        |c| JobServiceConfig {
            max_artifact_bytes: 1000,
            max_total_artifact_bytes: 1500,
            ..c
        },
        &[900, 900],
    )
    .await;
}

#[tokio::test]
async fn too_many_artifacts_are_refused() {
    expect_staging_refused(
        |c| JobServiceConfig {
            max_artifacts_per_job: 2,
            ..c
        },
        &[1, 1, 1],
    )
    .await;
}

#[tokio::test]
async fn truncated_staging_fails_cleanly_and_can_be_retried() {
    let server =
        TestServer::start_with(FakeExecutor::new(Behavior::Succeed(Duration::ZERO)), |c| {
            JobServiceConfig {
                staging_idle_timeout: Duration::from_secs(2),
                ..c
            }
        })
        .await;
    let mut client = server.client().await;
    let files = one_file(vec![1u8; 1000]);
    let prep = prepare_one_file(&mut client, "f").await;
    let endpoint = prep.artifact_staging_endpoint.clone().unwrap().url;
    let quirks = ClientQuirks {
        hang_up_after_chunks: Some(3),
    };
    let err = within(
        10,
        stage(&endpoint, &prep.staging_session_token, &files, 100, quirks),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    let run = run_job(&mut client, &prep.preparation_id)
        .await
        .unwrap_err();
    assert_eq!(run.code(), Code::FailedPrecondition);

    // Unknown token, then a proper retry with the right one.
    let unknown = within(
        10,
        stage(&endpoint, "bogus", &files, 100, ClientQuirks::default()),
    )
    .await;
    assert_eq!(unknown.unwrap_err().code(), Code::NotFound);
    stage_prepared(10, &prep, &files, 100).await.unwrap();
    // Staging twice is refused.
    let twice = stage_prepared(10, &prep, &files, 100).await;
    assert_eq!(twice.unwrap_err().code(), Code::AlreadyExists);
    run_job(&mut client, prep.preparation_id).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn retrieval_serves_only_staged_files() {
    let executor = FakeExecutor::new(Behavior::Succeed(Duration::ZERO));
    let server = TestServer::start_with(executor.clone(), |c| JobServiceConfig {
        artifact_chunk_bytes: 1000,
        ..c
    })
    .await;
    let mut client = server.client().await;
    let payload: Vec<u8> = (0..5555u32).map(|i| i as u8).collect();
    let files = one_file(payload.clone());
    let prep = prepare_one_file(&mut client, "f.whl").await;
    stage_prepared(10, &prep, &files, 4096).await.unwrap();
    run_job(&mut client, &prep.preparation_id).await.unwrap();
    let staged = within(5, async {
        loop {
            if let Some(s) = executor.seen.lock().first() {
                break s.artifacts["env"][0].clone();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    let mut retrieval = ArtifactRetrievalServiceClient::connect(server.url())
        .await
        .unwrap();
    let resolved = retrieval
        .resolve_artifacts(ResolveArtifactsRequest {
            artifacts: vec![staged.clone()],
            preferred_urns: vec![],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resolved.replacements, vec![staged.clone()]);

    let mut stream = retrieval
        .get_artifact(GetArtifactRequest {
            artifact: Some(staged.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    let mut chunks = 0;
    while let Some(chunk) = stream.message().await.unwrap() {
        assert!(chunk.data.len() <= 1000);
        got.extend_from_slice(&chunk.data);
        chunks += 1;
    }
    assert_eq!(got, payload);
    assert_eq!(chunks, 6);

    let secret = server.dir.path().join("secret");
    std::fs::write(&secret, b"s").unwrap();
    let root = server.server.artifact_root().to_path_buf();
    let cases = [
        (secret.to_str().unwrap().to_string(), Code::PermissionDenied),
        ("../secret".to_string(), Code::PermissionDenied),
        (
            format!("{}/../../secret", root.display()),
            Code::PermissionDenied,
        ),
        ("/etc/passwd".to_string(), Code::PermissionDenied),
        (root.display().to_string(), Code::PermissionDenied),
        ("missing".to_string(), Code::NotFound),
    ];
    for (path, code) in cases {
        let artifact = ArtifactInformation {
            type_urn: FILE_URN.into(),
            type_payload: ArtifactFilePayload {
                path: path.clone(),
                sha256: String::new(),
            }
            .encode_to_vec()
            .into(),
            ..Default::default()
        };
        let err = retrieval
            .get_artifact(GetArtifactRequest {
                artifact: Some(artifact),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{path}: {err:?}");
    }
    let url = ArtifactInformation {
        type_urn: "beam:artifact:type:url:v1".into(),
        ..Default::default()
    };
    let err = retrieval
        .get_artifact(GetArtifactRequest {
            artifact: Some(url),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = retrieval
        .get_artifact(GetArtifactRequest { artifact: None })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}
