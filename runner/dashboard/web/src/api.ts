// The dashboard's JSON API (docs/dashboard-api.md). Times are Unix epoch
// milliseconds; `null` is a figure the runner does not know.

export interface JobSummary {
  id: string;
  name: string;
  state: string;
  streaming: boolean;
  created_ms: number;
  started_ms: number | null;
  finished_ms: number | null;
  duration_ms: number | null;
}

export interface JobList {
  version: string;
  now_ms: number;
  jobs: JobSummary[];
}

export interface Stage {
  id: string;
  name: string;
  kind: string;
  transforms: string[];
  inputs: string[];
  state: "pending" | "running" | "done" | "failed" | "cancelled" | string;
  elements_in: number | null;
  elements_out: number | null;
  bundles: number;
  bundle_ms_avg: number | null;
  bundle_ms_max: number | null;
  queued: number | null;
  input_watermark_ms: number | null;
  output_watermark_ms: number | null;
}

export interface Worker {
  id: string;
  environment: string;
  pid: number | null;
  /** The worker pool (host:port) that runs it, if one does. */
  pool: string | null;
  state: string;
  restarts: number;
  bundles: number;
}

export interface Checkpoint {
  id: number;
  kind: string;
  started_ms: number;
  duration_ms: number;
  bytes: number;
  ok: boolean;
  error: string | null;
}

export interface Metric {
  step: string;
  namespace: string;
  name: string;
  kind: "counter" | "gauge" | "distribution" | string;
  value?: number;
  count?: number;
  sum?: number;
  min?: number;
  max?: number;
}

export interface JobDetail extends JobSummary {
  now_ms: number;
  stages: Stage[];
  workers: Worker[];
  checkpoints: Checkpoint[];
  metrics: Metric[];
}

export interface Message {
  seq: number;
  time_ms: number | null;
  importance: "DEBUG" | "DETAILED" | "BASIC" | "WARNING" | "ERROR" | string;
  text: string;
}

export interface Messages {
  messages: Message[];
  next: number;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function getJson<T>(path: string): Promise<T> {
  const response = await fetch(path, {
    cache: "no-store",
    headers: { Accept: "application/json" },
  });
  if (!response.ok) {
    let reason = `${response.status} ${response.statusText}`;
    try {
      const body = (await response.json()) as { error?: string };
      if (body.error) reason = body.error;
    } catch {
      // Not JSON: keep the status line.
    }
    throw new HttpError(response.status, reason);
  }
  return (await response.json()) as T;
}

export const fetchJobs = () => getJson<JobList>("/api/jobs");

export const fetchJob = (id: string) =>
  getJson<JobDetail>(`/api/jobs/${encodeURIComponent(id)}`);

export const fetchMessages = (id: string, after: number | null) =>
  getJson<Messages>(
    `/api/jobs/${encodeURIComponent(id)}/messages` + (after === null ? "" : `?after=${after}`),
  );
