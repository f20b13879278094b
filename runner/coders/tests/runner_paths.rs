//! The runner's own uses of this crate: splitting data-plane streams with
//! `skip`, reading element headers, and wrapping unknown coders.

use ferrobeam_coders::{
    encode_timestamp, encode_windowed_value, encode_windowed_value_raw, urns, wrap_unknown_coders,
    Coder, CoderError, IntervalWindow, PaneInfo, Timing, Value, WindowRef,
    GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS, MAX_TIMESTAMP_MILLIS, MIN_TIMESTAMP_MILLIS, PYTHON_ANY_URN,
};
use ferrobeam_proto::pipeline::v1::{
    self as pb, field_type::TypeInfo, Coder as CoderProto, Components, FunctionSpec,
};
use prost::Message;

const PICKLED: &str = "beam:coder:pickled_python:v1";

fn proto(urn: &str, components: &[&str]) -> CoderProto {
    CoderProto {
        spec: Some(FunctionSpec {
            urn: urn.to_string(),
            payload: Default::default(),
        }),
        component_coder_ids: components.iter().map(|s| s.to_string()).collect(),
    }
}

fn components(coders: &[(&str, CoderProto)]) -> Components {
    let mut c = Components::default();
    for (id, p) in coders {
        c.coders.insert(id.to_string(), p.clone());
    }
    c
}

/// wv(kv(pickled, varint), <window>) in the shape the Python SDK sends.
fn python_kv_components(window_urn: &str) -> Components {
    components(&[
        ("pickled", proto(PICKLED, &[])),
        ("varint", proto(urns::VARINT, &[])),
        ("kv", proto(urns::KV, &["pickled", "varint"])),
        ("window", proto(window_urn, &[])),
        ("wv", proto(urns::WINDOWED_VALUE, &["kv", "window"])),
    ])
}

fn pane(index: i64, on_time_index: i64, timing: Timing) -> PaneInfo {
    PaneInfo {
        is_first: index == 0,
        is_last: false,
        timing,
        index,
        on_time_index,
    }
}

// ---------------------------------------------------------------- wrapping

#[test]
fn wrap_length_prefixes_unknown_coders_through_composites() {
    let mut c = python_kv_components(urns::GLOBAL_WINDOW);
    assert!(matches!(
        Coder::from_components(&c, "wv").unwrap().skip(&[0; 16], 0),
        Err(CoderError::NotSkippable { ref urn, ref id }) if urn == PICKLED && id == "pickled"
    ));

    let wrapped = wrap_unknown_coders(&mut c, "wv");
    assert_eq!(wrapped, "wv_lp");
    assert_eq!(
        c.coders["wv_lp"],
        proto(urns::WINDOWED_VALUE, &["kv_lp", "window"])
    );
    assert_eq!(
        c.coders["kv_lp"],
        proto(urns::KV, &["pickled_lp", "varint"])
    );
    assert_eq!(
        c.coders["pickled_lp"],
        proto(urns::LENGTH_PREFIX, &["pickled"])
    );
    // The originals are untouched: other transforms may still use them.
    assert_eq!(
        c.coders["wv"],
        proto(urns::WINDOWED_VALUE, &["kv", "window"])
    );

    let coder = Coder::from_components(&c, &wrapped).unwrap();
    assert!(coder.is_skippable());

    // Deterministic and idempotent: the same ids, nothing new added.
    let n = c.coders.len();
    assert_eq!(wrap_unknown_coders(&mut c, "wv"), "wv_lp");
    assert_eq!(wrap_unknown_coders(&mut c, "wv_lp"), "wv_lp");
    assert_eq!(c.coders.len(), n);
}

#[test]
fn wrap_leaves_known_coders_alone() {
    let mut c = python_kv_components(urns::INTERVAL_WINDOW);
    c.coders.insert("bytes".into(), proto(urns::BYTES, &[]));
    c.coders
        .insert("kv2".into(), proto(urns::KV, &["bytes", "varint"]));
    c.coders
        .insert("it".into(), proto(urns::ITERABLE, &["kv2"]));
    c.coders
        .insert("lp".into(), proto(urns::LENGTH_PREFIX, &["pickled"]));
    let n = c.coders.len();
    assert_eq!(wrap_unknown_coders(&mut c, "it"), "it");
    assert_eq!(wrap_unknown_coders(&mut c, "lp"), "lp");
    assert_eq!(c.coders.len(), n);
}

#[test]
fn wrap_avoids_id_clashes_and_shares_wrappers() {
    let mut c = components(&[
        ("pickled", proto(PICKLED, &[])),
        // Someone else's coder already uses the id we would pick.
        ("pickled_lp", proto(urns::BYTES, &[])),
        ("kv", proto(urns::KV, &["pickled", "pickled"])),
    ]);
    assert_eq!(wrap_unknown_coders(&mut c, "kv"), "kv_lp");
    assert_eq!(
        c.coders["kv_lp"],
        proto(urns::KV, &["pickled_lp2", "pickled_lp2"])
    );
    assert_eq!(c.coders["pickled_lp"], proto(urns::BYTES, &[]));
    assert_eq!(
        c.coders["pickled_lp2"],
        proto(urns::LENGTH_PREFIX, &["pickled"])
    );
}

#[test]
fn wrap_handles_odd_coders() {
    let mut c = components(&[
        // A standard URN with the wrong components cannot be parsed.
        ("badkv", proto(urns::KV, &["varint"])),
        ("varint", proto(urns::VARINT, &[])),
        // A window coder the runner does not know, inside custom_window.
        ("pywin", proto("beam:coder:pickled_window:v1", &[])),
        ("custom", proto(urns::CUSTOM_WINDOW, &["pywin"])),
        ("wv", proto(urns::WINDOWED_VALUE, &["varint", "custom"])),
        // A cycle.
        ("loop", proto(urns::ITERABLE, &["loop"])),
        ("nullable", proto(urns::NULLABLE, &["missing"])),
    ]);
    assert_eq!(wrap_unknown_coders(&mut c, "badkv"), "badkv_lp");
    assert_eq!(wrap_unknown_coders(&mut c, "wv"), "wv_lp");
    assert_eq!(
        c.coders["custom_lp"],
        proto(urns::CUSTOM_WINDOW, &["pywin_lp"])
    );
    assert!(Coder::from_components(&c, "wv_lp").unwrap().is_skippable());
    // Terminates (depth limit), and building the original reports the cycle.
    wrap_unknown_coders(&mut c, "loop");
    assert!(matches!(
        Coder::from_components(&c, "loop"),
        Err(CoderError::TooDeep { .. })
    ));
    // A missing id is wrapped rather than panicking.
    assert_eq!(wrap_unknown_coders(&mut c, "nullable"), "nullable_lp");
    assert_eq!(
        c.coders["missing_lp"],
        proto(urns::LENGTH_PREFIX, &["missing"])
    );
    assert!(matches!(
        Coder::from_components(&c, "nullable"),
        Err(CoderError::MissingCoder { .. })
    ));
}

fn row_coder(fields: Vec<(&str, pb::FieldType)>) -> CoderProto {
    let schema = pb::Schema {
        fields: fields
            .into_iter()
            .map(|(name, ty)| pb::Field {
                name: name.into(),
                r#type: Some(ty),
                ..Default::default()
            })
            .collect(),
        id: "schema-id".into(),
        ..Default::default()
    };
    CoderProto {
        spec: Some(FunctionSpec {
            urn: urns::ROW.into(),
            payload: schema.encode_to_vec().into(),
        }),
        component_coder_ids: vec![],
    }
}

fn atomic(t: pb::AtomicType, nullable: bool) -> pb::FieldType {
    pb::FieldType {
        nullable,
        type_info: Some(TypeInfo::AtomicType(t as i32)),
    }
}

#[test]
fn wrap_rows_only_when_the_runner_cannot_code_them() {
    let any = pb::FieldType {
        nullable: false,
        type_info: Some(TypeInfo::LogicalType(Box::new(pb::LogicalType {
            urn: PYTHON_ANY_URN.into(),
            representation: Some(Box::new(atomic(pb::AtomicType::Bytes, false))),
            ..Default::default()
        }))),
    };
    let mut c = components(&[
        (
            "good",
            row_coder(vec![
                ("s", atomic(pb::AtomicType::String, false)),
                ("n", atomic(pb::AtomicType::Int64, true)),
            ]),
        ),
        (
            "bad",
            row_coder(vec![
                ("s", atomic(pb::AtomicType::String, false)),
                ("obj", any),
            ]),
        ),
    ]);
    assert_eq!(wrap_unknown_coders(&mut c, "good"), "good");
    assert_eq!(wrap_unknown_coders(&mut c, "bad"), "bad_lp");

    let bad = Coder::from_components(&c, "bad").unwrap();
    assert!(!bad.is_skippable());
    assert!(matches!(
        bad.skip(&[2, 0, 1, b'x', 0], 0),
        Err(CoderError::NotSkippable { .. })
    ));

    let good = Coder::from_components(&c, "good").unwrap();
    let row = Value::Row(vec![Value::String("hi".into()), Value::Null]);
    let bytes = good.encode_to_vec(&row, true).unwrap();
    assert_eq!(bytes, [2, 1, 0b10, 2, b'h', b'i']);
    assert_eq!(good.skip(&bytes, 0).unwrap(), bytes.len());
    assert_eq!(good.decode(&bytes, true).unwrap(), row);
}

// ---------------------------------------------------------------- skipping

/// One element of wv(kv(lp(pickled), varint), global), as the SDK sends it.
fn python_element(out: &mut Vec<u8>, timestamp: i64, pickled: &[u8], count: u8) {
    let mut value = vec![pickled.len() as u8];
    value.extend_from_slice(pickled);
    value.push(count);
    encode_windowed_value(
        out,
        timestamp,
        &[WindowRef::Global],
        &PaneInfo::NO_FIRING,
        &value,
    );
}

#[test]
fn skip_splits_a_data_plane_stream() {
    let mut c = python_kv_components(urns::GLOBAL_WINDOW);
    let id = wrap_unknown_coders(&mut c, "wv");
    let coder = Coder::from_components(&c, &id).unwrap();

    let mut stream = Vec::new();
    let mut ends = Vec::new();
    for i in 0..100u8 {
        python_element(
            &mut stream,
            i as i64 * 1000,
            &vec![0x80 | i; i as usize % 7],
            i % 100,
        );
        ends.push(stream.len());
    }
    let mut pos = 0;
    let mut got = Vec::new();
    while pos < stream.len() {
        pos = coder.skip(&stream, pos).unwrap();
        got.push(pos);
    }
    assert_eq!(got, ends);

    // Data messages may cut elements anywhere: a truncation error means
    // "wait for more bytes", and the split points come out the same.
    for chunk in [1, 7, 64, 1000] {
        let mut pending: Vec<u8> = Vec::new();
        let mut consumed = 0;
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            let mut pos = 0;
            loop {
                match coder.skip(&pending, pos) {
                    Ok(end) => {
                        got.push(consumed + end);
                        pos = end;
                    }
                    Err(e) if e.is_truncated() => break,
                    Err(e) => panic!("{e}"),
                }
            }
            pending.drain(..pos);
            consumed += pos;
        }
        assert!(pending.is_empty());
        assert_eq!(got, ends, "chunk size {chunk}");
    }

    // The structured view agrees with the zero-copy one.
    let first = coder.decode_at(&stream, 0, true).unwrap().0;
    let Value::WindowedValue(wv) = first else {
        panic!()
    };
    assert_eq!(wv.value, Value::kv(Value::bytes(vec![]), Value::Int(0)));
    assert_eq!(wv.windows, vec![Value::GlobalWindow]);
}

#[test]
fn skip_reports_truncation_at_every_cut() {
    let c = components(&[
        ("bytes", proto(urns::BYTES, &[])),
        ("str", proto(urns::STRING_UTF8, &[])),
        ("it", proto(urns::ITERABLE, &["str"])),
        ("kv", proto(urns::KV, &["bytes", "it"])),
        ("win", proto(urns::INTERVAL_WINDOW, &[])),
        ("wv", proto(urns::WINDOWED_VALUE, &["kv", "win"])),
    ]);
    let coder = Coder::from_components(&c, "wv").unwrap();
    let kv = Value::kv(
        Value::bytes(b"key".to_vec()),
        Value::Iterable(vec![Value::String("a".into()), Value::String("bc".into())]),
    );
    let mut value = Vec::new();
    let Coder::WindowedValue { value: vc, .. } = &coder else {
        panic!()
    };
    vc.encode(&kv, &mut value, true).unwrap();
    let mut bytes = Vec::new();
    let windows = [
        WindowRef::Interval(IntervalWindow::new(0, 60_000)),
        WindowRef::Interval(IntervalWindow::new(
            MIN_TIMESTAMP_MILLIS,
            MAX_TIMESTAMP_MILLIS,
        )),
    ];
    encode_windowed_value(&mut bytes, -5, &windows, &pane(3, 1, Timing::Late), &value);
    assert_eq!(coder.skip(&bytes, 0).unwrap(), bytes.len());
    for cut in 0..bytes.len() {
        match coder.skip(&bytes[..cut], 0) {
            Err(CoderError::Truncated { offset, .. }) => assert!(offset <= cut),
            other => panic!("cut at {cut}: {other:?}"),
        }
        assert!(coder.windowed_header(&bytes[..cut], 0).is_err());
        assert!(coder.decode(&bytes[..cut], true).is_err());
    }
}

#[test]
fn skip_state_backed_iterables_with_tokens() {
    let c = components(&[
        ("v", proto(urns::VARINT, &[])),
        ("sbi", proto(urns::STATE_BACKED_ITERABLE, &["v"])),
    ]);
    let coder = Coder::from_components(&c, "sbi").unwrap();
    let value = Value::StateBackedIterable {
        prefix: vec![Value::Int(200), Value::Int(-1)],
        state_token: bytes::Bytes::from_static(b"token"),
    };
    let bytes = coder.encode_to_vec(&value, true).unwrap();
    assert_eq!(coder.skip(&bytes, 0).unwrap(), bytes.len());
    assert_eq!(coder.decode(&bytes, true).unwrap(), value);
}

#[test]
fn unknown_coders_are_opaque_only_inside_length_prefix() {
    let c = components(&[
        ("pickled", proto(PICKLED, &[])),
        ("lp", proto(urns::LENGTH_PREFIX, &["pickled"])),
    ]);
    let unknown = Coder::from_components(&c, "pickled").unwrap();
    assert_eq!(
        unknown,
        Coder::Unknown {
            urn: PICKLED.into(),
            id: "pickled".into()
        }
    );
    let err = unknown.skip(b"\x80\x04.", 0).unwrap_err();
    assert!(err.to_string().contains("length_prefix"), "{err}");
    assert!(unknown.decode(b"abc", true).is_err());
    assert!(unknown
        .encode_to_vec(&Value::bytes(b"abc".to_vec()), true)
        .is_err());

    let lp = Coder::from_components(&c, "lp").unwrap();
    let pickle = b"\x80\x04\x95.";
    let bytes = lp
        .encode_to_vec(&Value::bytes(pickle.to_vec()), true)
        .unwrap();
    assert_eq!(bytes, [4, 0x80, 4, 0x95, b'.']);
    assert_eq!(lp.skip(&bytes, 0).unwrap(), 5);
    assert_eq!(
        lp.decode(&bytes, true).unwrap(),
        Value::bytes(pickle.to_vec())
    );
}

/// A tiny deterministic generator, so the crate needs no rand dependency.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn garbage_never_panics() {
    let mut c = components(&[
        ("bytes", proto(urns::BYTES, &[])),
        ("str", proto(urns::STRING_UTF8, &[])),
        ("v", proto(urns::VARINT, &[])),
        ("d", proto(urns::DOUBLE, &[])),
        ("b", proto(urns::BOOL, &[])),
        ("gw", proto(urns::GLOBAL_WINDOW, &[])),
        ("iw", proto(urns::INTERVAL_WINDOW, &[])),
        ("cw", proto(urns::CUSTOM_WINDOW, &["iw"])),
        ("it", proto(urns::ITERABLE, &["str"])),
        ("sbi", proto(urns::STATE_BACKED_ITERABLE, &["gw"])),
        ("n", proto(urns::NULLABLE, &["d"])),
        ("sk", proto(urns::SHARDED_KEY, &["bytes"])),
        ("kv", proto(urns::KV, &["sk", "it"])),
        ("timer", proto(urns::TIMER, &["str", "cw"])),
        ("wv1", proto(urns::WINDOWED_VALUE, &["kv", "gw"])),
        ("wv2", proto(urns::WINDOWED_VALUE, &["n", "iw"])),
        ("wv3", proto(urns::WINDOWED_VALUE, &["sbi", "cw"])),
    ]);
    c.coders.insert(
        "row".into(),
        row_coder(vec![
            ("a", atomic(pb::AtomicType::Int32, true)),
            ("b", atomic(pb::AtomicType::Bytes, true)),
            ("c", atomic(pb::AtomicType::Float, false)),
        ]),
    );
    let ids = [
        "bytes", "str", "v", "d", "b", "gw", "iw", "cw", "it", "sbi", "n", "sk", "kv", "timer",
        "wv1", "wv2", "wv3", "row",
    ];
    let coders: Vec<Coder> = ids
        .iter()
        .map(|id| Coder::from_components(&c, id).unwrap())
        .collect();
    let mut rng = XorShift(0x9e3779b97f4a7c15);
    for _ in 0..20_000 {
        let len = (rng.next() % 40) as usize;
        // Bias towards small bytes so that counts and lengths are plausible.
        let buf: Vec<u8> = (0..len)
            .map(|_| {
                let r = rng.next();
                if r.is_multiple_of(3) {
                    r as u8
                } else {
                    (r % 4) as u8
                }
            })
            .collect();
        for coder in &coders {
            if let Ok(end) = coder.skip(&buf, 0) {
                assert!(end <= buf.len());
                // Whatever skip accepts, decode accepts with the same end
                // (bar invalid UTF-8, bools and indicators, which skip does
                // not validate).
                if let Ok((_, dend)) = coder.decode_at(&buf, 0, true) {
                    assert_eq!(dend, end, "{coder:?} on {buf:02x?}");
                }
            }
            let _ = coder.decode(&buf, false);
            let _ = coder.windowed_header(&buf, 0);
        }
    }
}

// ------------------------------------------------------- windowed headers

#[test]
fn windowed_header_of_interval_windows() {
    let mut c = python_kv_components(urns::INTERVAL_WINDOW);
    let id = wrap_unknown_coders(&mut c, "wv");
    let coder = Coder::from_components(&c, &id).unwrap();

    let pickled = b"\x80\x04K\x05.";
    let mut value = vec![pickled.len() as u8];
    value.extend_from_slice(pickled);
    value.push(42);
    let windows = [
        WindowRef::Interval(IntervalWindow::new(0, 10_000)),
        WindowRef::Interval(IntervalWindow::new(5_000, 15_000)),
    ];
    let p = pane(2, 1, Timing::Late);
    let mut bytes = vec![0xAA; 3]; // Elements need not start at 0.
    encode_windowed_value(&mut bytes, 7_500, &windows, &p, &value);
    let start = 3;

    let h = coder.windowed_header(&bytes, start).unwrap();
    assert_eq!(h.timestamp, 7_500);
    assert_eq!(h.pane, p);
    assert_eq!(h.windows.len(), 2);
    assert!(!h.windows.is_global());
    assert_eq!(h.windows.iter().collect::<Vec<_>>(), windows);
    assert_eq!(h.windows.single(), None);
    assert_eq!(&bytes[h.value.clone()], &value[..]);
    assert_eq!(h.end(), bytes.len());
    assert_eq!(windows[0].max_timestamp(), Some(9_999));

    // The key, for grouping, without decoding the pickle.
    let Coder::WindowedValue { value: kv, .. } = &coder else {
        panic!()
    };
    let key = kv.kv_key_range(&bytes, h.value.start).unwrap();
    assert_eq!(&bytes[key], &[5, 0x80, 4, b'K', 5, b'.']);

    // Re-emitting with a new timestamp and pane copies the windows as is.
    let mut out = Vec::new();
    encode_windowed_value_raw(
        &mut out,
        9_999,
        h.windows.encoded(),
        &PaneInfo::NO_FIRING,
        &bytes[h.value.clone()],
    );
    let h2 = coder.windowed_header(&out, 0).unwrap();
    assert_eq!((h2.timestamp, h2.pane), (9_999, PaneInfo::NO_FIRING));
    assert_eq!(h2.windows.iter().collect::<Vec<_>>(), windows);
    assert_eq!(&out[h2.value.clone()], &value[..]);
    assert_eq!(&out[..8], &encode_timestamp(9_999));
}

#[test]
fn windowed_header_of_global_and_extreme_timestamps() {
    let c = components(&[
        ("bytes", proto(urns::BYTES, &[])),
        ("gw", proto(urns::GLOBAL_WINDOW, &[])),
        ("wv", proto(urns::WINDOWED_VALUE, &["bytes", "gw"])),
    ]);
    let coder = Coder::from_components(&c, "wv").unwrap();
    for ts in [
        MIN_TIMESTAMP_MILLIS,
        -1,
        0,
        GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS,
        MAX_TIMESTAMP_MILLIS,
    ] {
        let mut bytes = Vec::new();
        encode_windowed_value(
            &mut bytes,
            ts,
            &[WindowRef::Global],
            &PaneInfo::NO_FIRING,
            b"\x03abc",
        );
        assert_eq!(bytes.len(), 8 + 4 + 1 + 4);
        let h = coder.windowed_header(&bytes, 0).unwrap();
        assert_eq!(h.timestamp, ts);
        assert!(h.windows.is_global());
        assert_eq!(h.windows.single(), Some(WindowRef::Global));
        assert_eq!(
            h.windows.single().unwrap().max_timestamp(),
            Some(GLOBAL_WINDOW_MAX_TIMESTAMP_MILLIS)
        );
        assert_eq!(h.value, 13..17);
    }
    // Not a windowed coder.
    let bytes_coder = Coder::from_components(&c, "bytes").unwrap();
    assert!(matches!(
        bytes_coder.windowed_header(b"\x00", 0),
        Err(CoderError::WrongCoder { .. })
    ));
}

#[test]
fn windowed_header_of_custom_windows() {
    let mut c = components(&[
        ("v", proto(urns::VARINT, &[])),
        ("pywin", proto("beam:coder:pickled_window:v1", &[])),
        ("cw", proto(urns::CUSTOM_WINDOW, &["pywin"])),
        ("wv", proto(urns::WINDOWED_VALUE, &["v", "cw"])),
    ]);
    let id = wrap_unknown_coders(&mut c, "wv");
    let coder = Coder::from_components(&c, &id).unwrap();
    // Custom window: max timestamp, then the length-prefixed opaque window.
    let mut window = encode_timestamp(1_234).to_vec();
    window.extend_from_slice(&[3, b'w', b'i', b'n']);
    let mut bytes = Vec::new();
    encode_windowed_value(
        &mut bytes,
        1_000,
        &[WindowRef::Other(&window)],
        &pane(0, 0, Timing::OnTime),
        &[7],
    );
    let h = coder.windowed_header(&bytes, 0).unwrap();
    let w = h.windows.single().unwrap();
    assert_eq!(
        w,
        WindowRef::Custom {
            max_timestamp: 1_234,
            encoded: &window
        }
    );
    assert_eq!(w.max_timestamp(), Some(1_234));
    assert_eq!(h.value, bytes.len() - 1..bytes.len());
}

#[test]
fn windowed_header_of_param_windowed_values() {
    // Payload: timestamp 1000, one interval window [10, 20), pane ON_TIME 30/40, value.
    let mut payload = Vec::new();
    let p = PaneInfo {
        is_first: false,
        is_last: true,
        timing: Timing::OnTime,
        index: 30,
        on_time_index: 40,
    };
    encode_windowed_value(
        &mut payload,
        1_000,
        &[WindowRef::Interval(IntervalWindow::new(10, 20))],
        &p,
        &[0],
    );
    let mut pwv = proto(urns::PARAM_WINDOWED_VALUE, &["v", "iw"]);
    pwv.spec.as_mut().unwrap().payload = payload.into();
    let c = components(&[
        ("v", proto(urns::VARINT, &[])),
        ("iw", proto(urns::INTERVAL_WINDOW, &[])),
        ("pwv", pwv),
    ]);
    let coder = Coder::from_components(&c, "pwv").unwrap();
    let bytes = [0xac, 0x02, 0xff];
    let h = coder.windowed_header(&bytes, 0).unwrap();
    assert_eq!(h.timestamp, 1_000);
    assert_eq!(h.pane, p);
    assert_eq!(
        h.windows.single(),
        Some(WindowRef::Interval(IntervalWindow::new(10, 20)))
    );
    assert_eq!(h.value, 0..2);
}
