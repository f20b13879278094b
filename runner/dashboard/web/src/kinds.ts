// Stage kinds (docs/dashboard-api.md) as people read them.

const KINDS: Record<string, string> = {
  impulse: "Impulse",
  test_stream: "TestStream",
  sdk: "Python",
  gbk: "GroupByKey",
  flatten: "Flatten",
  identity: "Identity",
  kafka_read: "Kafka read",
  kafka_write: "Kafka write",
  file_write: "File write",
};

export function kindLabel(kind: string): string {
  return KINDS[kind] ?? kind;
}

/** A CSS-safe class for the kind's colour. */
export function kindClass(kind: string): string {
  return `kind-${kind in KINDS ? kind : "other"}`;
}
