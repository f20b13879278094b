//! Beam's cross-language coder vectors (`standard_coders.yaml`, from the
//! installed `apache_beam` package) against our coders.
//!
//! Each yaml document gives a coder spec, optionally `nested` (absent means
//! both contexts) and `examples`: encoded bytes (a string whose chars are
//! latin-1 bytes) mapped to the expected value in a JSON-like form. For
//! every case we decode and compare, re-encode and compare bytes (only a
//! decode/round-trip check for coders marked `non_deterministic`), and for
//! nested cases check that `skip` finds the end, alone and in a stream of
//! all the document's cases concatenated. Windowed values also go through
//! the zero-copy header parser. Every case must pass; nothing is skipped.

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use ferrobeam_coders::{
    encode_windowed_value, urns, Coder, FieldKind, FieldType, IntervalWindow, PaneInfo, RowSchema,
    Timer, TimerFiring, Timing, Value, WindowRef, WindowedValue,
};
use ferrobeam_proto::pipeline::v1::{Coder as CoderProto, Components, FunctionSpec};
use serde_yaml::Value as Y;

/// The python interpreter: `$PYTHON`, else `python3`.
fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

fn run_python(code: &str) -> String {
    let out = Command::new(python())
        .args(["-c", code])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (set PYTHON to an interpreter with apache_beam): {e}",
                python()
            )
        });
    assert!(
        out.status.success(),
        "{} -c {code:?} failed: {}",
        python(),
        String::from_utf8_lossy(&out.stderr)
    );
    // Beam logs warnings on import; the answer is the last stdout line.
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn yaml_path() -> String {
    let dir = run_python("import apache_beam, os; print(os.path.dirname(apache_beam.__file__))");
    format!("{dir}/portability/api/standard_coders.yaml")
}

/// The yaml's strings are bytes, one char per byte.
fn latin1(s: &str) -> Vec<u8> {
    s.chars()
        .map(|c| {
            u8::try_from(c as u32).unwrap_or_else(|_| panic!("char {c:?} is not latin-1 in {s:?}"))
        })
        .collect()
}

fn get<'a>(y: &'a Y, key: &str) -> &'a Y {
    y.get(key)
        .unwrap_or_else(|| panic!("missing {key:?} in {y:?}"))
}

fn as_i64(y: &Y) -> i64 {
    y.as_i64().unwrap_or_else(|| panic!("not an i64: {y:?}"))
}

fn as_str(y: &Y) -> &str {
    y.as_str().unwrap_or_else(|| panic!("not a string: {y:?}"))
}

/// Adds the yaml coder spec (and its components) to `components`; returns its id.
fn add_coder(spec: &Y, components: &mut Components) -> String {
    let ids: Vec<String> = spec
        .get("components")
        .and_then(Y::as_sequence)
        .map(|cs| cs.iter().map(|c| add_coder(c, components)).collect())
        .unwrap_or_default();
    let id = format!("c{}", components.coders.len());
    let payload = spec
        .get("payload")
        .map(|p| latin1(as_str(p)))
        .unwrap_or_default();
    components.coders.insert(
        id.clone(),
        CoderProto {
            spec: Some(FunctionSpec {
                urn: as_str(get(spec, "urn")).to_string(),
                payload: payload.into(),
            }),
            component_coder_ids: ids,
        },
    );
    id
}

fn parse_double(y: &Y) -> f64 {
    if let Some(f) = y.as_f64() {
        return f;
    }
    match as_str(y) {
        "NaN" => f64::NAN,
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        s => s
            .parse()
            .unwrap_or_else(|e| panic!("bad double {s:?}: {e}")),
    }
}

fn parse_pane(y: &Y) -> PaneInfo {
    PaneInfo {
        is_first: get(y, "is_first").as_bool().unwrap(),
        is_last: get(y, "is_last").as_bool().unwrap(),
        timing: Timing::from_name(as_str(get(y, "timing"))).unwrap(),
        index: as_i64(get(y, "index")),
        on_time_index: as_i64(get(y, "on_time_index")),
    }
}

/// The expected value of a yaml example for `coder`.
fn parse_value(coder: &Coder, y: &Y) -> Value {
    match coder {
        Coder::Bytes => Value::bytes(as_str(y).as_bytes().to_vec()),
        Coder::StringUtf8 => Value::String(as_str(y).to_string()),
        Coder::Bool => Value::Bool(y.as_bool().unwrap()),
        Coder::Varint => Value::Int(as_i64(y)),
        Coder::Double => Value::Double(parse_double(y)),
        Coder::Kv { key, value } => Value::kv(
            parse_value(key, get(y, "key")),
            parse_value(value, get(y, "value")),
        ),
        Coder::Iterable(e) | Coder::StateBackedIterable(e) => Value::Iterable(
            y.as_sequence()
                .unwrap()
                .iter()
                .map(|x| parse_value(e, x))
                .collect(),
        ),
        Coder::LengthPrefix(inner) => parse_value(inner, y),
        Coder::GlobalWindow => Value::GlobalWindow,
        Coder::IntervalWindow => Value::IntervalWindow(IntervalWindow::from_end_span(
            as_i64(get(y, "end")),
            as_i64(get(y, "span")),
        )),
        Coder::CustomWindow(w) => {
            let window = parse_value(w, get(y, "window"));
            let max_timestamp = match &window {
                Value::IntervalWindow(iw) => iw.max_timestamp(),
                other => panic!("no max timestamp for custom window {other:?}"),
            };
            Value::CustomWindow {
                max_timestamp,
                window: Box::new(window),
            }
        }
        Coder::WindowedValue { value, window }
        | Coder::ParamWindowedValue { value, window, .. } => {
            Value::WindowedValue(Box::new(WindowedValue {
                value: parse_value(value, get(y, "value")),
                timestamp: as_i64(get(y, "timestamp")),
                windows: get(y, "windows")
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|w| parse_value(window, w))
                    .collect(),
                pane: y.get("pane").map(parse_pane).unwrap_or(PaneInfo::NO_FIRING),
            }))
        }
        Coder::Timer { key, window } => {
            let clear = get(y, "clearBit").as_bool().unwrap();
            Value::Timer(Box::new(Timer {
                user_key: parse_value(key, get(y, "userKey")),
                dynamic_timer_tag: as_str(get(y, "dynamicTimerTag")).to_string(),
                windows: get(y, "windows")
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|w| parse_value(window, w))
                    .collect(),
                firing: (!clear).then(|| TimerFiring {
                    fire_timestamp: as_i64(get(y, "fireTimestamp")),
                    hold_timestamp: as_i64(get(y, "holdTimestamp")),
                    pane: parse_pane(get(y, "pane")),
                }),
            }))
        }
        Coder::Row(schema) => parse_row(schema, y),
        Coder::ShardedKey(k) => Value::ShardedKey {
            shard_id: Bytes::from(as_str(get(y, "shardId")).as_bytes().to_vec()),
            key: Box::new(parse_value(k, get(y, "key"))),
        },
        Coder::Nullable(c) => {
            if y.is_null() {
                Value::Null
            } else {
                parse_value(c, y)
            }
        }
        Coder::Unknown { urn, .. } => panic!("the yaml uses a coder we do not know: {urn}"),
    }
}

/// A row from a mapping of field name to the representation-typed value.
fn parse_row(schema: &RowSchema, y: &Y) -> Value {
    let map = y
        .as_mapping()
        .unwrap_or_else(|| panic!("row is not a mapping: {y:?}"));
    for k in map.keys() {
        assert!(
            schema.field_index(as_str(k)).is_some(),
            "yaml field {k:?} not in schema"
        );
    }
    Value::Row(
        schema
            .fields
            .iter()
            .map(|f| parse_field(&f.ty, get(y, &f.name)))
            .collect(),
    )
}

fn parse_field(ty: &FieldType, y: &Y) -> Value {
    if y.is_null() {
        return Value::Null;
    }
    match &ty.kind {
        FieldKind::Byte | FieldKind::Int16 | FieldKind::Int32 | FieldKind::Int64 => {
            Value::Int(as_i64(y))
        }
        FieldKind::Float => Value::Float(match y.as_f64() {
            Some(f) => f as f32,
            None => as_str(y).parse().unwrap(),
        }),
        FieldKind::Double => Value::Double(parse_double(y)),
        FieldKind::String => Value::String(as_str(y).to_string()),
        FieldKind::Boolean => Value::Bool(y.as_bool().unwrap()),
        FieldKind::Bytes => Value::bytes(as_str(y).as_bytes().to_vec()),
        FieldKind::Array(e) | FieldKind::Iterable(e) => Value::Iterable(
            y.as_sequence()
                .unwrap()
                .iter()
                .map(|x| parse_field(e, x))
                .collect(),
        ),
        FieldKind::Map(k, v) => Value::Map(
            y.as_mapping()
                .unwrap()
                .iter()
                .map(|(a, b)| (parse_field(k, a), parse_field(v, b)))
                .collect(),
        ),
        FieldKind::Row(s) => parse_row(s, y),
        // The yaml gives the representation: the encoded i64 bit pattern.
        FieldKind::MillisInstant => Value::Timestamp(((as_i64(y) as u64) ^ (1 << 63)) as i64),
        FieldKind::Decimal => parse_decimal(as_str(y)),
        FieldKind::Logical { representation, .. } => parse_field(representation, y),
        FieldKind::Unsupported(why) => panic!("unsupported field type in yaml: {why}"),
    }
}

/// "-100.123" -> scale 3, unscaled -100123 as minimal two's complement.
fn parse_decimal(s: &str) -> Value {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let unscaled: i128 = format!("{int}{frac}").parse().unwrap();
    let bytes = unscaled.to_be_bytes();
    // Drop leading bytes that only repeat the sign.
    let mut start = 0;
    while start < 15 {
        let (b, next) = (bytes[start], bytes[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    Value::Decimal {
        scale: frac.len() as i64,
        unscaled: Bytes::copy_from_slice(&bytes[start..]),
    }
}

/// Replaces a state-backed iterable's token by the elements the yaml's
/// `state` map holds for it (a missing token means an empty suffix).
fn resolve_state(coder: &Coder, state: Option<&Y>, v: Value) -> Value {
    let (
        Coder::StateBackedIterable(e),
        Value::StateBackedIterable {
            prefix,
            state_token,
        },
    ) = (coder, &v)
    else {
        return v;
    };
    let key: String = state_token.iter().map(|&b| b as char).collect();
    let suffix = state
        .and_then(|s| s.get(key.as_str()))
        .map(|s| latin1(as_str(s)))
        .unwrap_or_default();
    let mut elems = prefix.clone();
    let mut pos = 0;
    while pos < suffix.len() {
        let (x, p) = e.decode_at(&suffix, pos, true).unwrap();
        elems.push(x);
        pos = p;
    }
    Value::Iterable(elems)
}

/// Sorts map entries, for coders whose map order is not deterministic.
fn canonical(v: Value) -> Value {
    match v {
        Value::Map(mut entries) => {
            entries = entries
                .into_iter()
                .map(|(k, v)| (canonical(k), canonical(v)))
                .collect();
            entries.sort_by_key(|(k, _)| format!("{k:?}"));
            Value::Map(entries)
        }
        Value::Row(fields) => Value::Row(fields.into_iter().map(canonical).collect()),
        Value::Iterable(xs) => Value::Iterable(xs.into_iter().map(canonical).collect()),
        other => other,
    }
}

fn window_value(w: WindowRef<'_>) -> Value {
    match w {
        WindowRef::Global => Value::GlobalWindow,
        WindowRef::Interval(iw) => Value::IntervalWindow(iw),
        other => panic!("unexpected window {other:?}"),
    }
}

/// Checks one case; returns a description of the first mismatch.
fn check_case(
    coder: &Coder,
    spec: &Y,
    bytes: &[u8],
    expected: &Value,
    nested: bool,
) -> Result<(), String> {
    let non_deterministic = spec
        .get("non_deterministic")
        .and_then(Y::as_bool)
        .unwrap_or(false);
    let decoded = coder
        .decode(bytes, nested)
        .map_err(|e| format!("decode failed: {e}"))?;
    let resolved = resolve_state(coder, spec.get("state"), decoded.clone());
    if non_deterministic {
        if canonical(resolved.clone()) != canonical(expected.clone()) {
            return Err(format!("decoded {resolved:?}, expected {expected:?}"));
        }
        // Bytes may legitimately differ; the value must survive a round trip.
        let again = coder
            .encode_to_vec(&decoded, nested)
            .map_err(|e| format!("re-encode failed: {e}"))?;
        let back = coder
            .decode(&again, nested)
            .map_err(|e| format!("decode of re-encoding failed: {e}"))?;
        if back != decoded {
            return Err(format!("round trip changed {decoded:?} into {back:?}"));
        }
    } else {
        if resolved != *expected {
            return Err(format!("decoded {resolved:?}, expected {expected:?}"));
        }
        let encoded = coder
            .encode_to_vec(expected, nested)
            .map_err(|e| format!("encode failed: {e}"))?;
        if encoded != bytes {
            return Err(format!("encoded {encoded:02x?}, expected {bytes:02x?}"));
        }
    }
    if nested {
        let end = coder
            .skip(bytes, 0)
            .map_err(|e| format!("skip failed: {e}"))?;
        if end != bytes.len() {
            return Err(format!("skip returned {end}, length is {}", bytes.len()));
        }
        for cut in 0..bytes.len() {
            if coder.skip(&bytes[..cut], 0).is_ok() {
                // A prefix can only be a complete value if the coder could
                // stop earlier, which none of these can.
                return Err(format!("skip accepted a truncation to {cut} bytes"));
            }
        }
        if let Value::WindowedValue(wv) = expected {
            check_windowed_header(coder, bytes, wv)?;
        }
    }
    Ok(())
}

fn check_windowed_header(coder: &Coder, bytes: &[u8], wv: &WindowedValue) -> Result<(), String> {
    let h = coder
        .windowed_header(bytes, 0)
        .map_err(|e| format!("windowed_header failed: {e}"))?;
    let windows: Vec<Value> = h.windows.iter().map(window_value).collect();
    if h.timestamp != wv.timestamp
        || h.pane != wv.pane
        || windows != wv.windows
        || h.end() != bytes.len()
    {
        return Err(format!(
            "windowed header {h:?} (windows {windows:?}) does not match {wv:?}"
        ));
    }
    if let Coder::WindowedValue { .. } = coder {
        let refs: Vec<WindowRef<'_>> = h.windows.iter().collect();
        let mut out = Vec::new();
        encode_windowed_value(
            &mut out,
            h.timestamp,
            &refs,
            &h.pane,
            &bytes[h.value.clone()],
        );
        if out != bytes {
            return Err(format!(
                "encode_windowed_value gave {out:02x?}, expected {bytes:02x?}"
            ));
        }
    }
    Ok(())
}

#[test]
fn standard_coders_yaml() {
    let path = yaml_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    let docs: Vec<Y> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|d: &Y| !d.is_null())
        .collect();

    // Python's YAML loader is the reference reading of the file: make sure
    // we see the same documents and the same number of examples in each.
    let counts = run_python(&format!(
        "import yaml; print(','.join(str(len(d['examples'])) for d in yaml.safe_load_all(open({path:?}, 'rb')) if d))"
    ));
    let ours: Vec<String> = docs
        .iter()
        .map(|d| get(d, "examples").as_mapping().unwrap().len().to_string())
        .collect();
    assert_eq!(
        ours.join(","),
        counts,
        "serde_yaml and PyYAML disagree on the examples"
    );

    let mut passed: BTreeMap<String, usize> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut total = 0;
    for (ix, doc) in docs.iter().enumerate() {
        let spec = get(doc, "coder");
        let urn = as_str(get(spec, "urn"));
        let name = urn.split(':').nth_back(1).unwrap().to_string();
        let mut components = Components::default();
        let id = add_coder(spec, &mut components);
        let coder = match Coder::from_components(&components, &id) {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("doc {ix} ({urn}): from_components: {e}"));
                continue;
            }
        };
        assert_eq!(coder.urn(), urn);
        let contexts = match doc.get("nested") {
            Some(n) => vec![n.as_bool().unwrap()],
            None => vec![true, false],
        };
        let examples = get(doc, "examples").as_mapping().unwrap();
        for &nested in &contexts {
            let mut stream = Vec::new();
            let mut ends = Vec::new();
            for (k, v) in examples {
                total += 1;
                let bytes = latin1(as_str(k));
                let expected = parse_value(&coder, v);
                match check_case(&coder, spec, &bytes, &expected, nested) {
                    Ok(()) => *passed.entry(name.clone()).or_default() += 1,
                    Err(e) => failures.push(format!(
                        "doc {ix} ({urn}, nested={nested}) case {bytes:02x?}: {e}"
                    )),
                }
                stream.extend_from_slice(&bytes);
                ends.push(stream.len());
            }
            // The data-plane situation: values back to back.
            if nested {
                let mut pos = 0;
                for &end in &ends {
                    match coder.skip(&stream, pos) {
                        Ok(p) if p == end => pos = p,
                        other => {
                            failures.push(format!("doc {ix} ({urn}): skipping the concatenated cases gave {other:?} at {pos}, expected {end}"));
                            break;
                        }
                    }
                }
            }
        }
    }

    println!(
        "standard_coders.yaml: {} documents, {total} cases",
        docs.len()
    );
    for (name, n) in &passed {
        println!("  {name:<24} {n:>3} passed");
    }
    println!(
        "  {:<24} {:>3} passed, {} failed",
        "TOTAL",
        passed.values().sum::<usize>(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        passed.values().sum::<usize>(),
        total,
        "every case must be checked"
    );
    // Sanity: the file still exercises every standard coder we implement
    // (length_prefix only appears wrapped by the runner, so not in it).
    for urn in [
        urns::BYTES,
        urns::STRING_UTF8,
        urns::BOOL,
        urns::VARINT,
        urns::DOUBLE,
        urns::KV,
        urns::ITERABLE,
        urns::GLOBAL_WINDOW,
        urns::INTERVAL_WINDOW,
        urns::WINDOWED_VALUE,
        urns::PARAM_WINDOWED_VALUE,
        urns::TIMER,
        urns::STATE_BACKED_ITERABLE,
        urns::CUSTOM_WINDOW,
        urns::ROW,
        urns::SHARDED_KEY,
        urns::NULLABLE,
    ] {
        let name = urn.split(':').nth_back(1).unwrap();
        assert!(passed.contains_key(name), "no case for {urn}");
    }
}
