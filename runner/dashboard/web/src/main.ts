// The dashboard page: hash routes (#/ the jobs, #/jobs/ID a job), each
// view polled about once a second and updated in place.

import "./style.css";
import { fetchJobs } from "./api";
import { setClass, setText } from "./dom";
import { clock } from "./format";
import { JobView } from "./job-view";
import { JobsView } from "./jobs-view";
import type { View } from "./view";

const POLL_MS = 1000;

const app = document.getElementById("app")!;
const conn = document.getElementById("conn")!;
const version = document.getElementById("version")!;

let generation = 0;

function viewFor(hash: string): View {
  const m = /^#\/jobs\/(.+)$/.exec(hash);
  return m ? new JobView(decodeURIComponent(m[1])) : new JobsView();
}

function showVersion(v: string | void): void {
  if (v) setText(version, `v${v}`);
}

async function run(view: View, mine: number): Promise<void> {
  while (mine === generation) {
    const started = performance.now();
    try {
      showVersion(await view.poll());
      if (mine !== generation) return;
      setText(conn, `live · ${clock(Date.now()).slice(0, 8)}`);
      setClass(conn, "conn conn-ok");
    } catch (e) {
      if (mine !== generation) return;
      setText(conn, "cannot reach the job server · retrying");
      setClass(conn, "conn conn-down");
      console.warn("dashboard poll failed", e);
    }
    const wait = Math.max(100, POLL_MS - (performance.now() - started));
    await new Promise((resolve) => setTimeout(resolve, wait));
  }
}

function route(): void {
  const mine = ++generation;
  const view = viewFor(location.hash);
  app.replaceChildren(view.el);
  window.scrollTo(0, 0);
  void run(view, mine);
}

window.addEventListener("hashchange", route);
route();
// The job page does not read the list; the version comes from it once.
fetchJobs().then((l) => showVersion(l.version), () => {});
