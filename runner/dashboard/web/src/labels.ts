// Short names for fused stages. The runner names a fused stage by all its
// transforms ("A/B/x, A/B/y, A/C/z, Key"); a person wants the shape:
// "A/{B, C} + Key". Transforms are grouped by their path's first segment;
// a group of one keeps its whole path; a stage that is one group is named
// by that prefix and what it splits into.

import type { Stage } from "./api";

export function stageLabel(stage: Stage): string {
  if (stage.transforms.length < 2) return stage.name;
  return summarize(stage.transforms.map((t) => t.split("/")));
}

function summarize(paths: string[][]): string {
  const groups = new Map<string, string[][]>();
  for (const [head, ...rest] of paths) {
    const group = groups.get(head);
    if (group) group.push(rest);
    else groups.set(head, [rest]);
  }
  if (groups.size === 1) {
    const [[head, rests]] = groups;
    if (rests.length === 1) return [head, ...rests[0]].join("/");
    // The composite itself runs here too: its name says it all.
    if (rests.some((r) => r.length === 0)) return head;
    const parts = [...new Set(rests.map((r) => r[0]))];
    if (parts.length === 1) return `${head}/${summarize(rests)}`;
    return `${head}/{${parts.join(", ")}}`;
  }
  return [...groups]
    .map(([head, rests]) => (rests.length === 1 ? [head, ...rests[0]].join("/") : head))
    .join(" + ");
}
