//! The Beam URNs the translator recognises, in one place.

// Primitives the engine runs natively.
pub const IMPULSE: &str = "beam:transform:impulse:v1";
pub const GROUP_BY_KEY: &str = "beam:transform:group_by_key:v1";
pub const FLATTEN: &str = "beam:transform:flatten:v1";
// Composites the engine replaces with a native operation.
/// ferrobeam's committing line sink (`ferrobeam.io.WriteLines`): a
/// composite the engine runs natively, publishing files on checkpoints.
pub const WRITE_LINES: &str = "ferrobeam:transform:write_lines:v1";
// Beam's Kafka cross-language transforms, run natively (runner/io-kafka).
pub const KAFKA_READ_WITHOUT_METADATA: &str =
    "beam:transform:org.apache.beam:kafka_read_without_metadata:v1";
pub const KAFKA_READ_WITH_METADATA: &str =
    "beam:transform:org.apache.beam:kafka_read_with_metadata:v1";
pub const KAFKA_WRITE: &str = "beam:transform:org.apache.beam:kafka_write:v1";
pub const KAFKA_WRITE_WITH_HEADERS: &str =
    "beam:transform:org.apache.beam:kafka_write_with_headers:v1";
pub const RESHUFFLE: &str = "beam:transform:reshuffle:v1";
pub const REDISTRIBUTE_ARBITRARILY: &str = "beam:transform:redistribute_arbitrarily:v1";
pub const REDISTRIBUTE_BY_KEY: &str = "beam:transform:redistribute_by_key:v1";
pub const COMBINE_PER_KEY: &str = "beam:transform:combine_per_key:v1";
// Executed by the SDK.
pub const PAR_DO: &str = "beam:transform:pardo:v1";
pub const ASSIGN_WINDOWS: &str = "beam:transform:window_into:v1";
pub const MAP_WINDOWS: &str = "beam:transform:map_windows:v1";
pub const MERGE_WINDOWS: &str = "beam:transform:merge_windows:v1";
pub const TO_STRING: &str = "beam:transform:to_string:v1";
pub const COMBINE_PRECOMBINE: &str = "beam:transform:combine_per_key_precombine:v1";
pub const COMBINE_MERGE: &str = "beam:transform:combine_per_key_merge_accumulators:v1";
pub const COMBINE_EXTRACT: &str = "beam:transform:combine_per_key_extract_outputs:v1";
pub const COMBINE_GROUPED_VALUES: &str = "beam:transform:combine_grouped_values:v1";
pub const COMBINE_CONVERT: &str = "beam:transform:combine_per_key_convert_to_accumulators:v1";
pub const SDF_PAIR: &str = "beam:transform:sdf_pair_with_restriction:v1";
pub const SDF_SPLIT_AND_SIZE: &str = "beam:transform:sdf_split_and_size_restrictions:v1";
pub const SDF_PROCESS: &str = "beam:transform:sdf_process_sized_element_and_restrictions:v1";
pub const SDF_TRUNCATE: &str = "beam:transform:sdf_truncate_sized_restrictions:v1";
pub const TEST_STREAM: &str = "beam:transform:teststream:v1";
pub const TIMER_CODER: &str = "beam:coder:timer:v1";
// Data-plane edges of a fused stage.
pub const DATA_SOURCE: &str = "beam:runner:source:v1";
pub const DATA_SINK: &str = "beam:runner:sink:v1";

// Coders.
pub const KV_CODER: &str = "beam:coder:kv:v1";
pub const BYTES_CODER: &str = "beam:coder:bytes:v1";
pub const STRING_UTF8_CODER: &str = "beam:coder:string_utf8:v1";
pub const NULLABLE_CODER: &str = "beam:coder:nullable:v1";
pub const LENGTH_PREFIX_CODER: &str = "beam:coder:length_prefix:v1";
pub const ROW_CODER: &str = "beam:coder:row:v1";
pub const DOUBLE_CODER: &str = "beam:coder:double:v1";
pub const ITERABLE_CODER: &str = "beam:coder:iterable:v1";
pub const WINDOWED_VALUE_CODER: &str = "beam:coder:windowed_value:v1";
pub const GLOBAL_WINDOW_CODER: &str = "beam:coder:global_window:v1";
pub const INTERVAL_WINDOW_CODER: &str = "beam:coder:interval_window:v1";

// Window functions.
pub const GLOBAL_WINDOWS: &str = "beam:window_fn:global_windows:v1";
pub const FIXED_WINDOWS: &str = "beam:window_fn:fixed_windows:v1";
pub const SLIDING_WINDOWS: &str = "beam:window_fn:sliding_windows:v1";
pub const SESSION_WINDOWS: &str = "beam:window_fn:session_windows:v1";

// Side input access patterns.
pub const SIDE_INPUT_ITERABLE: &str = "beam:side_input:iterable:v1";
pub const SIDE_INPUT_MULTIMAP: &str = "beam:side_input:multimap:v1";

// Environments.
pub const ENV_DOCKER: &str = "beam:env:docker:v1";
pub const ENV_PROCESS: &str = "beam:env:process:v1";
pub const ENV_EXTERNAL: &str = "beam:env:external:v1";
pub const ENV_EMBEDDED_PYTHON: &str = "beam:env:embedded_python:v1";
pub const ENV_DEFAULT: &str = "beam:env:default:v1";

// Pipeline requirements we honour.
pub const REQ_SPLITTABLE_DOFN: &str = "beam:requirement:pardo:splittable_dofn:v1";
pub const REQ_STATEFUL: &str = "beam:requirement:pardo:stateful:v1";
pub const REQ_STABLE_INPUT: &str = "beam:requirement:pardo:stable_input:v1";
pub const REQ_TIME_SORTED_INPUT: &str = "beam:requirement:pardo:time_sorted_input:v1";
pub const REQ_FINALIZATION: &str = "beam:requirement:pardo:finalization:v1";
