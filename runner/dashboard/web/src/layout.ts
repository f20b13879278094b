// A layered layout of a stage DAG, left to right: a stage's layer is the
// longest path to it from a source; edges that skip layers pass through
// virtual points, one per layer skipped, so they route around the stages
// in between; a few barycenter sweeps order each layer to keep crossings
// few. Pure functions of the graph (no DOM), so a layout is stable for a
// given graph.

export interface GraphNode {
  id: string;
  inputs: string[];
}

export interface Box {
  id: string;
  layer: number;
  x: number;
  y: number;
}

export interface Edge {
  from: string;
  to: string;
  /** From the source's right side to the target's left side. */
  points: [number, number][];
}

export interface Layout {
  boxes: Box[];
  edges: Edge[];
  width: number;
  height: number;
}

export interface Sizes {
  nodeWidth: number;
  nodeHeight: number;
  /** Horizontal room between layers (for the edges). */
  gapX: number;
  /** Vertical room between stages of a layer. */
  gapY: number;
  /** Room a passing edge takes in a layer. */
  laneHeight: number;
  margin: number;
}

interface Slot {
  id: string;
  /** A stage, or a point an edge passes through. */
  real: boolean;
  layer: number;
  preds: Slot[];
  succs: Slot[];
  order: number;
  y: number;
}

/** Longest path from a source; ignores unknown inputs and cycles. */
export function layers(nodes: GraphNode[]): Map<string, number> {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const layer = new Map<string, number>();
  const visiting = new Set<string>();
  const depth = (id: string): number => {
    const known = layer.get(id);
    if (known !== undefined) return known;
    if (visiting.has(id)) return 0;
    visiting.add(id);
    let d = 0;
    for (const input of byId.get(id)!.inputs) {
      if (byId.has(input) && input !== id) d = Math.max(d, depth(input) + 1);
    }
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  nodes.forEach((n) => depth(n.id));
  return layer;
}

export function layout(nodes: GraphNode[], sizes: Sizes): Layout {
  const layerOf = layers(nodes);
  const slots = new Map<string, Slot>();
  const byLayer: Slot[][] = [];
  const add = (id: string, real: boolean, layer: number): Slot => {
    const slot: Slot = { id, real, layer, preds: [], succs: [], order: 0, y: 0 };
    slots.set(id, slot);
    (byLayer[layer] ??= []).push(slot);
    slot.order = byLayer[layer].length - 1;
    return slot;
  };
  for (const n of nodes) add(n.id, true, layerOf.get(n.id)!);

  // Each edge as a chain of slots, through a virtual slot per skipped layer.
  const chains: { from: string; to: string; slots: Slot[] }[] = [];
  for (const n of nodes) {
    const target = slots.get(n.id)!;
    for (const input of new Set(n.inputs)) {
      const source = slots.get(input);
      if (!source || input === n.id || !source.real) continue;
      if (source.layer >= target.layer) continue; // a cycle: not drawn
      const chain = [source];
      for (let l = source.layer + 1; l < target.layer; l++) {
        chain.push(add(`${input}->${n.id}@${l}`, false, l));
      }
      chain.push(target);
      for (let i = 1; i < chain.length; i++) {
        chain[i - 1].succs.push(chain[i]);
        chain[i].preds.push(chain[i - 1]);
      }
      chains.push({ from: input, to: n.id, slots: chain });
    }
  }

  // Barycenter sweeps: down using predecessors, up using successors.
  const sortLayer = (layer: Slot[], neighbours: (s: Slot) => Slot[]) => {
    const key = new Map<Slot, number>();
    for (const s of layer) {
      const ns = neighbours(s);
      key.set(s, ns.length ? ns.reduce((a, n) => a + n.order, 0) / ns.length : s.order);
    }
    layer.sort((a, b) => key.get(a)! - key.get(b)! || a.order - b.order);
    layer.forEach((s, i) => (s.order = i));
  };
  for (let sweep = 0; sweep < 4; sweep++) {
    for (let l = 1; l < byLayer.length; l++) sortLayer(byLayer[l], (s) => s.preds);
    for (let l = byLayer.length - 2; l >= 0; l--) sortLayer(byLayer[l], (s) => s.succs);
  }

  // Stack each layer, centred on the tallest.
  const heightOf = (s: Slot) => (s.real ? sizes.nodeHeight : sizes.laneHeight);
  const layerHeight = (layer: Slot[]) =>
    layer.reduce((a, s) => a + heightOf(s), 0) + Math.max(0, layer.length - 1) * sizes.gapY;
  const tallest = Math.max(0, ...byLayer.map(layerHeight));
  byLayer.forEach((layer) => {
    let y = sizes.margin + (tallest - layerHeight(layer)) / 2;
    for (const s of layer) {
      s.y = y;
      y += heightOf(s) + sizes.gapY;
    }
  });

  const step = sizes.nodeWidth + sizes.gapX;
  const xOf = (layer: number) => sizes.margin + layer * step;
  const boxes: Box[] = nodes.map((n) => {
    const s = slots.get(n.id)!;
    return { id: n.id, layer: s.layer, x: xOf(s.layer), y: s.y };
  });
  const edges: Edge[] = chains.map((c) => {
    const points: [number, number][] = [];
    c.slots.forEach((s, i) => {
      const cy = s.y + heightOf(s) / 2;
      if (i === 0) points.push([xOf(s.layer) + sizes.nodeWidth, cy]);
      else if (i === c.slots.length - 1) points.push([xOf(s.layer), cy]);
      else points.push([xOf(s.layer), cy], [xOf(s.layer) + sizes.nodeWidth, cy]);
    });
    return { from: c.from, to: c.to, points };
  });
  return {
    boxes,
    edges,
    width: sizes.margin * 2 + Math.max(0, byLayer.length * step - sizes.gapX),
    height: sizes.margin * 2 + tallest,
  };
}

/** An SVG path through the points: straight through the layers a passing
 * edge crosses, curved between layers. */
export function edgePath(points: [number, number][]): string {
  let d = `M${points[0][0]},${points[0][1]}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    if (y0 === y1) {
      d += ` L${x1},${y1}`;
    } else {
      const mx = (x0 + x1) / 2;
      d += ` C${mx},${y0} ${mx},${y1} ${x1},${y1}`;
    }
  }
  return d;
}
