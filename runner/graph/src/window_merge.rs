//! Custom merging window functions: the descriptor that lets the SDK merge.
//!
//! The runner merges session windows itself, but a custom merging `WindowFn`
//! is user code. Beam's answer is the `beam:transform:merge_windows:v1`
//! primitive, which every SDK harness implements: given
//! `KV<nonce, iterable<window>>` it runs the `WindowFn`'s merge and answers
//! `KV<nonce, KV<iterable<unmerged window>, iterable<KV<merged window,
//! iterable<original window>>>>>`. This module builds a tiny process bundle
//! descriptor around it (data source → merge → data sink) that the engine
//! runs before grouping.

use std::collections::HashMap;

use ferrobeam_proto::fn_api::{ProcessBundleDescriptor, RemoteGrpcPort};
use ferrobeam_proto::pipeline::v1::{
    self as pb, ApiServiceDescriptor, Components, FunctionSpec, PCollection, PTransform,
    WindowingStrategy,
};
use prost::Message;

use crate::coders::ensure;
use crate::error::GraphError;
use crate::plan::WindowMerge;
use crate::urns;

/// Whether grouping in `ws` needs the SDK to merge windows: the window
/// function merges and is not one the runner merges natively (sessions).
pub fn needs_sdk_merge(ws: &WindowingStrategy) -> bool {
    let urn = ws.window_fn.as_ref().map(|f| f.urn.as_str()).unwrap_or("");
    ws.merge_status == pb::merge_status::Enum::NeedsMerge as i32
        && ![
            urns::GLOBAL_WINDOWS,
            urns::FIXED_WINDOWS,
            urns::SLIDING_WINDOWS,
            urns::SESSION_WINDOWS,
        ]
        .contains(&urn)
}

/// The environment the window function runs in: the windowing strategy's
/// own, else that of the transform that assigned the windows.
pub fn environment(
    components: &Components,
    ws_id: &str,
    gbk: &PTransform,
) -> Result<String, GraphError> {
    let ws = &components.windowing_strategies[ws_id];
    if !ws.environment_id.is_empty() {
        return Ok(ws.environment_id.clone());
    }
    let mut assigners: Vec<&PTransform> = components
        .transforms
        .values()
        .filter(|t| {
            t.spec
                .as_ref()
                .is_some_and(|s| s.urn == urns::ASSIGN_WINDOWS)
                && !t.environment_id.is_empty()
        })
        .filter(|t| {
            t.outputs.values().any(|pc| {
                components
                    .pcollections
                    .get(pc)
                    .is_some_and(|p| p.windowing_strategy_id == ws_id)
            })
        })
        .collect();
    assigners.sort_by(|a, b| a.unique_name.cmp(&b.unique_name));
    assigners
        .first()
        .map(|t| t.environment_id.clone())
        .ok_or_else(|| {
            GraphError::unsupported(
            gbk,
            "its custom merging window function names no environment to run in, and no WindowInto \
             producing its windows does either",
        )
        })
}

/// Builds the merge descriptor for grouping in windowing strategy `ws_id`
/// (whose window coder must already be length-prefix-wrapped), adding the
/// coders and windowing strategy it needs to `components`.
pub fn build(
    components: &mut Components,
    ws_id: &str,
    gbk_name: &str,
    environment_id: &str,
    fn_endpoint: &str,
) -> WindowMerge {
    let ws = components.windowing_strategies[ws_id].clone();
    let window = ws.window_coder_id.clone();
    let bytes = ensure(components, urns::BYTES_CODER, vec![]);
    let global = ensure(components, urns::GLOBAL_WINDOW_CODER, vec![]);
    let windows = ensure(components, urns::ITERABLE_CODER, vec![window.clone()]);
    let request = ensure(
        components,
        urns::KV_CODER,
        vec![bytes.clone(), windows.clone()],
    );
    let merged = ensure(
        components,
        urns::KV_CODER,
        vec![window.clone(), windows.clone()],
    );
    let merged_list = ensure(components, urns::ITERABLE_CODER, vec![merged]);
    let result = ensure(components, urns::KV_CODER, vec![windows, merged_list]);
    let response = ensure(components, urns::KV_CODER, vec![bytes, result]);
    let input_coder_id = ensure(
        components,
        urns::WINDOWED_VALUE_CODER,
        vec![request.clone(), global.clone()],
    );
    let output_coder_id = ensure(
        components,
        urns::WINDOWED_VALUE_CODER,
        vec![response.clone(), global.clone()],
    );
    let global_ws = global_windowing(components, &global);

    let pc = |coder_id: &str, name: &str| PCollection {
        unique_name: format!("{gbk_name}/{name}"),
        coder_id: coder_id.to_owned(),
        is_bounded: pb::is_bounded::Enum::Bounded as i32,
        windowing_strategy_id: global_ws.clone(),
        ..Default::default()
    };
    let pcollections = HashMap::from([
        ("windows".to_owned(), pc(&request, "windows")),
        ("merged".to_owned(), pc(&response, "merged")),
    ]);
    let endpoint = Some(ApiServiceDescriptor {
        url: fn_endpoint.to_owned(),
        ..Default::default()
    });
    let port = |coder_id: &str| {
        RemoteGrpcPort {
            api_service_descriptor: endpoint.clone(),
            coder_id: coder_id.to_owned(),
        }
        .encode_to_vec()
    };
    let (source, merge, sink) = ("source".to_owned(), "merge".to_owned(), "sink".to_owned());
    let transforms = HashMap::from([
        (
            source.clone(),
            PTransform {
                unique_name: format!("{gbk_name}/MergeWindows/source"),
                spec: Some(FunctionSpec {
                    urn: urns::DATA_SOURCE.into(),
                    payload: port(&input_coder_id).into(),
                }),
                outputs: HashMap::from([("out".to_owned(), "windows".to_owned())]),
                ..Default::default()
            },
        ),
        (
            merge,
            PTransform {
                unique_name: format!("{gbk_name}/MergeWindows"),
                // The payload is the window function's own spec.
                spec: Some(FunctionSpec {
                    urn: urns::MERGE_WINDOWS.into(),
                    payload: ws
                        .window_fn
                        .clone()
                        .unwrap_or_default()
                        .encode_to_vec()
                        .into(),
                }),
                inputs: HashMap::from([("in".to_owned(), "windows".to_owned())]),
                outputs: HashMap::from([("out".to_owned(), "merged".to_owned())]),
                environment_id: environment_id.to_owned(),
                ..Default::default()
            },
        ),
        (
            sink.clone(),
            PTransform {
                unique_name: format!("{gbk_name}/MergeWindows/sink"),
                spec: Some(FunctionSpec {
                    urn: urns::DATA_SINK.into(),
                    payload: port(&output_coder_id).into(),
                }),
                inputs: HashMap::from([("in".to_owned(), "merged".to_owned())]),
                ..Default::default()
            },
        ),
    ]);
    let descriptor = ProcessBundleDescriptor {
        id: String::new(),
        transforms,
        pcollections,
        windowing_strategies: components.windowing_strategies.clone(),
        coders: components.coders.clone(),
        environments: components.environments.clone(),
        // The SDK opens a state channel for every descriptor.
        state_api_service_descriptor: endpoint,
        timer_api_service_descriptor: None,
    };
    WindowMerge {
        environment_id: environment_id.to_owned(),
        descriptor,
        source,
        sink,
        input_coder_id,
        output_coder_id,
        window_coder_id: window,
    }
}

/// A global-windows, default-trigger windowing strategy for the merge
/// descriptor's own pcollections.
fn global_windowing(components: &mut Components, global_window_coder: &str) -> String {
    let wanted = WindowingStrategy {
        window_fn: Some(FunctionSpec {
            urn: urns::GLOBAL_WINDOWS.into(),
            payload: Default::default(),
        }),
        merge_status: pb::merge_status::Enum::NonMerging as i32,
        window_coder_id: global_window_coder.to_owned(),
        trigger: Some(pb::Trigger {
            trigger: Some(pb::trigger::Trigger::Default(pb::trigger::Default {})),
        }),
        accumulation_mode: pb::accumulation_mode::Enum::Discarding as i32,
        output_time: pb::output_time::Enum::EndOfWindow as i32,
        closing_behavior: pb::closing_behavior::Enum::EmitIfNonempty as i32,
        on_time_behavior: pb::on_time_behavior::Enum::FireIfNonempty as i32,
        assigns_to_one_window: true,
        ..Default::default()
    };
    if let Some((id, _)) = components
        .windowing_strategies
        .iter()
        .find(|(_, w)| **w == wanted)
    {
        return id.clone();
    }
    let id = crate::leaves::unique_key(
        &components.windowing_strategies,
        "ferrobeam_global_windowing",
    );
    components.windowing_strategies.insert(id.clone(), wanted);
    id
}
