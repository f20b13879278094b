//! Which environments we can provide, and how.

use std::collections::HashMap;

use ferrobeam_proto::pipeline::v1::{self as pb, Components};
use prost::Message;

use crate::error::GraphError;
use crate::plan::Environment;
use crate::urns;

/// Classifies every environment the pipeline's transforms use.  `used`
/// pairs each environment id with the transform needing it (for errors).
pub fn resolve(
    components: &Components,
    used: impl IntoIterator<Item = (String, String)>,
    strict: bool,
    notes: &mut Vec<String>,
) -> Result<HashMap<String, Environment>, GraphError> {
    let mut out = HashMap::new();
    for (id, transform) in used {
        if out.contains_key(&id) {
            continue;
        }
        let env = components.environments.get(&id).ok_or_else(|| {
            GraphError::Malformed(format!(
                "transform {transform} names an unknown environment id {id:?}"
            ))
        })?;
        out.insert(id.clone(), classify(&id, &transform, env, strict, notes)?);
    }
    Ok(out)
}

fn classify(
    id: &str,
    transform: &str,
    env: &pb::Environment,
    strict: bool,
    notes: &mut Vec<String>,
) -> Result<Environment, GraphError> {
    let err = |reason: String| GraphError::Environment {
        transform: transform.to_owned(),
        id: id.to_owned(),
        urn: env.urn.clone(),
        reason,
    };
    match env.urn.as_str() {
        urns::ENV_EMBEDDED_PYTHON | urns::ENV_DEFAULT => Ok(Environment::LocalPython),
        urns::ENV_EXTERNAL => {
            let p = pb::ExternalPayload::decode(env.payload.as_ref())
                .map_err(|e| err(format!("bad ExternalPayload: {e}")))?;
            let endpoint = p.endpoint.map(|e| e.url).unwrap_or_default();
            if endpoint.is_empty() {
                return Err(err("the external environment names no worker pool endpoint".into()));
            }
            Ok(Environment::External { endpoint, params: p.params })
        }
        urns::ENV_PROCESS => {
            let p = pb::ProcessPayload::decode(env.payload.as_ref())
                .map_err(|e| err(format!("bad ProcessPayload: {e}")))?;
            if p.command.is_empty() {
                return Err(err("the process environment has no command".into()));
            }
            Ok(Environment::Process { command: p.command, env: p.env })
        }
        urns::ENV_DOCKER => {
            let p = pb::DockerPayload::decode(env.payload.as_ref())
                .map_err(|e| err(format!("bad DockerPayload: {e}")))?;
            let image = p.container_image;
            if is_beam_python_image(&image) && !strict {
                notes.push(format!(
                    "Environment '{id}' asks for Docker image {image}, but no Docker engine is needed: \
                     ferrobeam runs those stages on the stock Python SDK harness without a container \
                     (pass --ferrobeam_strict_environments to refuse such pipelines)."
                ));
                Ok(Environment::LocalPython)
            } else if is_beam_python_image(&image) {
                Err(err(format!(
                    "Docker image {image} was requested and strict environments are on; ferrobeam does not run \
                     Docker. Use --environment_type=LOOPBACK, PROCESS or beam:env:embedded_python:v1"
                )))
            } else {
                Err(err(format!(
                    "ferrobeam does not run Docker containers (image {image}). Use \
                     --environment_type=LOOPBACK, --environment_type=PROCESS with a boot command, \
                     or EXTERNAL with a running worker pool"
                )))
            }
        }
        other => Err(err(format!(
            "unknown environment type {other}; supported: LOOPBACK/EXTERNAL, PROCESS, beam:env:embedded_python:v1, \
             and Beam's Python SDK Docker image (run locally)"
        ))),
    }
}

/// Beam's own Python SDK container, e.g. `apache/beam_python3.11_sdk:2.77.0`.
fn is_beam_python_image(image: &str) -> bool {
    let name = image.rsplit('/').next().unwrap_or(image);
    name.starts_with("beam_python") && name.contains("_sdk")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_beam_python_images() {
        assert!(is_beam_python_image("apache/beam_python3.11_sdk:2.77.0"));
        assert!(is_beam_python_image("gcr.io/x/beam_python3.10_sdk"));
        assert!(!is_beam_python_image("apache/beam_java11_sdk:2.77.0"));
        assert!(!is_beam_python_image("python:3.11"));
    }
}
