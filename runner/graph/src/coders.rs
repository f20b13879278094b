//! Adding coders to the pipeline's components without duplicating them.

use ferrobeam_proto::pipeline::v1::{Coder, Components, FunctionSpec};

/// Returns the id of a coder `urn(components...)`, adding it if no equal
/// coder exists yet.  Ids are derived from the structure, so the same request
/// always yields the same id.
pub fn ensure(components: &mut Components, urn: &str, component_coder_ids: Vec<String>) -> String {
    let wanted = Coder {
        spec: Some(FunctionSpec {
            urn: urn.to_owned(),
            payload: Default::default(),
        }),
        component_coder_ids,
    };
    if let Some((id, _)) = components.coders.iter().find(|(_, c)| **c == wanted) {
        return id.clone();
    }
    let short = urn
        .trim_start_matches("beam:coder:")
        .trim_end_matches(":v1");
    let base = format!(
        "ferrobeam_{short}({})",
        wanted.component_coder_ids.join(",")
    );
    let id = crate::leaves::unique_key(&components.coders, &base);
    components.coders.insert(id.clone(), wanted);
    id
}

/// The wire coder of a PCollection: its (already length-prefix-wrapped)
/// element coder in a windowed value with its window coder.
pub fn windowed(components: &mut Components, pcollection: &str) -> String {
    let pc = &components.pcollections[pcollection];
    let elem = pc.coder_id.clone();
    let window = components
        .windowing_strategies
        .get(&pc.windowing_strategy_id)
        .map(|w| w.window_coder_id.clone())
        .unwrap_or_default();
    let window = ferrobeam_coders::wrap_unknown_coders(components, &window);
    ensure(
        components,
        crate::urns::WINDOWED_VALUE_CODER,
        vec![elem, window],
    )
}

/// A string that is equal for structurally equal coders, whatever their ids.
pub fn canonical(components: &Components, coder_id: &str) -> String {
    match components.coders.get(coder_id) {
        None => format!("?{coder_id}"),
        Some(c) => {
            let spec = c.spec.clone().unwrap_or_default();
            let parts: Vec<String> = c
                .component_coder_ids
                .iter()
                .map(|id| canonical(components, id))
                .collect();
            format!(
                "{}#{:x?}({})",
                spec.urn,
                spec.payload.as_ref(),
                parts.join(",")
            )
        }
    }
}

/// Rewrites every windowing strategy's window coder with
/// [`ferrobeam_coders::wrap_unknown_coders`], so that windows the SDK
/// encodes on its own (state keys of side inputs and user state) have the
/// same bytes as the windows of data-plane elements, whose wire coders
/// ([`windowed`]) wrap the window coder the same way. Timer coders
/// (`beam:coder:timer:v1`, key and window components) need no extra step:
/// `wrap_unknown_coders` on the timer coder wraps its window component to
/// the same id.
pub fn wrap_window_coders(components: &mut Components) {
    let ids: Vec<String> = components.windowing_strategies.keys().cloned().collect();
    for id in ids {
        let window = components.windowing_strategies[&id].window_coder_id.clone();
        if window.is_empty() {
            continue;
        }
        let wrapped = ferrobeam_coders::wrap_unknown_coders(components, &window);
        components
            .windowing_strategies
            .get_mut(&id)
            .expect("exists")
            .window_coder_id = wrapped;
    }
}
