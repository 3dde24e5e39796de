/* paxos viz: animates a trace of a Multi-Paxos run (paxos sim --trace-json) or live nodes.
 *
 * Plain browser JavaScript, no build step, no external resources (the page also works as
 * one self-contained file opened from disk). The trace follows the event contract: one
 * object per event with "t" and "kind"; kinds this page does not know are ignored.
 *
 * How it stays fast on long traces: events are kept sorted by time; the state at time T
 * is the state after every event with t <= T, rebuilt from the nearest checkpoint (taken
 * every CHECKPOINT_EVERY events) when going back; messages in flight are found by binary
 * search over the sends, looking back no further than the longest flight; only the last
 * LOG_CELLS slots of each node's log and the last ORDER_CELLS delivered indexes are drawn.
 */
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const CHECKPOINT_EVERY = 2000;
  const RING = 256; // accepted slots remembered per node (>= LOG_CELLS)
  const LOG_CELLS = 64;
  const ORDER_CELLS = 48;
  const MAX_DOTS = 400;
  const MAX_LINKED_NODES = 32; // more nodes: no line for every pair (n * (n - 1) / 2 of them)
  const LABEL_DOTS = 60; // type labels next to dots when at most this many are drawn
  const SHORT_FLIGHT = 50; // flights longer than this (in ticks) are kept apart
  const LIVE_LAG_MS = 1200; // live: the view trails the newest events by this much
  const LIVE_FLIGHT_MS = 450; // live: how long a dot of a "sent" summary travels
  const LIVE_BURST_MAX = 5; // live: dots drawn per "sent" summary at most
  const LIVE_POLL_MS = 400;
  const LIVE_REPLY_EVENTS = 5000; // the viz server's events per /live reply at most
  const MAX_LIVE_EVENTS = 200000; // live: events kept in the page at most
  const SPEEDS = [0.25, 1, 4, 16, 64, 256, 1024];
  const W = 720, H = 540, CX = 290, CY = 270, RADIUS = 185;
  let NODE_R = 34; // smaller when many nodes share the circle

  const TYPE_COLORS = {
    Prepare: "#8e44ad", Promise: "#c38fdc", Accept: "#1f6fb2", Accepted: "#27ae60",
    Nack: "#c0392b", Commit: "#16a085", Heartbeat: "#a3aeb7", HeartbeatReply: "#c8d0d6",
    PreVote: "#d35400", PreVoteReply: "#f0a35e", CatchupRequest: "#d4ac0d",
    CatchupReply: "#f4d03f", Forward: "#34495e", SnapshotChunk: "#6e2c00",
    SnapshotRequest: "#a04000", TimeoutNow: "#e84393", ClientRequest: "#2c3e50",
    ClientReply: "#48c9b0", OpenRequest: "#5d6d7e", OpenReply: "#76d7c4",
    CloseRequest: "#85929e", SessionEnded: "#e59866",
  };
  const TYPE_SHORT = {
    Prepare: "Prep", Promise: "Prom", Accept: "Acc", Accepted: "Accd", Nack: "Nack",
    Commit: "Com", Heartbeat: "HB", HeartbeatReply: "HBr", PreVote: "PV", PreVoteReply: "PVr",
    CatchupRequest: "CUq", CatchupReply: "CUr", Forward: "Fwd", SnapshotChunk: "Snap",
    SnapshotRequest: "SnapQ", TimeoutNow: "TNow", ClientRequest: "Req", ClientReply: "Rep",
    OpenRequest: "Open", OpenReply: "Opened", CloseRequest: "Close", SessionEnded: "End",
  };
  const NOTABLE = new Set([
    "crash", "restart", "pause", "resume", "wipe", "partition", "heal", "members",
    "install", "phase", "gap", "reachable",
  ]);

  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, parent) => {
    const node = document.createElementNS(SVG, tag);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  };
  const colorOf = (type) => TYPE_COLORS[type] || "#7f8c8d";
  const isNodeId = (x) => typeof x === "number" && Number.isInteger(x);
  const isNum = (x) => typeof x === "number" && Number.isFinite(x);
  const isIdList = (x) => Array.isArray(x) && x.every(isNodeId);
  const NUMBER_FIELDS = ["slot", "to", "index", "count", "seq", "epoch", "chosen", "delivered",
    "missed", "id"];
  const STRING_FIELDS = ["kind", "type", "role", "why", "phase", "client"];

  // An event as the page may use it, or null: a trace or a live node is untrusted data, and
  // one field of the wrong type (a node id "__proto__", voters that are a string) must not
  // break the page's state or its drawing. Events with such fields are left out.
  function clean(ev) {
    if (!ev || typeof ev !== "object" || Array.isArray(ev) || !isNum(ev.t)) return null;
    for (const f of STRING_FIELDS) if (f in ev && typeof ev[f] !== "string") return null;
    if (typeof ev.kind !== "string") return null;
    if ("node" in ev && !isNodeId(ev.node)) return null;
    if ("leader" in ev && ev.leader !== null && !isNodeId(ev.leader)) return null;
    for (const f of ["src", "dst", "from"]) {
      if (f in ev && !isNodeId(ev[f]) && typeof ev[f] !== "string") return null;
    }
    for (const f of NUMBER_FIELDS) if (f in ev && !isNum(ev[f])) return null;
    if ("arrive" in ev && ev.arrive !== null && !isNum(ev.arrive)) return null;
    for (const f of ["voters", "learners", "bridge"]) if (f in ev && !isIdList(ev[f])) return null;
    if ("groups" in ev && !(Array.isArray(ev.groups) && ev.groups.every(isIdList))) return null;
    if ("types" in ev && !(Array.isArray(ev.types) && ev.types.every((x) => typeof x === "string"))) return null;
    if ("ballot" in ev && ev.ballot !== null &&
        !(Array.isArray(ev.ballot) && ev.ballot.length === 2 && ev.ballot.every(isNum))) return null;
    return ev;
  }
  const ballotText = (b) => (Array.isArray(b) ? b[0] + "." + b[1] : "–");

  // Sorted arrays: first index whose key is > x (key(a[i]) sorted ascending).
  function upperBound(arr, x, key) {
    let lo = 0, hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (key(arr[mid]) <= x) lo = mid + 1; else hi = mid;
    }
    return lo;
  }
  const byT = (e) => e.t;
  // Insert keeping arr sorted by t (items mostly arrive in order: search from the end).
  function insertByT(arr, item) {
    let i = arr.length;
    while (i > 0 && arr[i - 1].t > item.t) i--;
    if (i === arr.length) arr.push(item); else arr.splice(i, 0, item);
    return i;
  }

  // ------------------------------------------------------------------ the model

  const model = {
    mode: "file", // "file" | "live"
    unit: "tick", // "tick" | "ms"
    meta: {},
    events: [],
    nodes: [], // sorted node ids
    clients: [], // sorted client addresses (strings)
    nodeSet: new Set(),
    clientSet: new Set(),
    shortFlights: [], longFlights: [], maxLongFlight: 0,
    flightById: new Map(),
    drops: [],
    order: [], // delivered index -> "client:seq"
    keyFrom: new Map(), // a client's session key -> its address
    types: new Set(),
    t0: 0, t1: 0,
    layoutDirty: true,
  };

  function addNode(id) {
    if (isNodeId(id) && !model.nodeSet.has(id)) {
      model.nodeSet.add(id);
      model.nodes.push(id);
      model.nodes.sort((a, b) => a - b);
      model.layoutDirty = true;
    }
  }
  function addEndpoint(x) {
    if (isNodeId(x)) addNode(x);
    else if (typeof x === "string" && !model.clientSet.has(x)) {
      model.clientSet.add(x);
      model.clients.push(x);
      model.clients.sort((a, b) => a.localeCompare(b, undefined, { numeric: true }));
      model.layoutDirty = true;
    }
  }

  function addFlight(f) {
    if (f.end - f.t > SHORT_FLIGHT) {
      insertByT(model.longFlights, f);
      model.maxLongFlight = Math.max(model.maxLongFlight, f.end - f.t);
    } else {
      insertByT(model.shortFlights, f);
    }
  }

  // Index one event (its time order is the caller's business).
  function ingest(ev) {
    const k = ev.kind;
    if (ev.t > model.t1) model.t1 = ev.t;
    if (ev.node !== undefined) addNode(ev.node);
    if (k === "send" || k === "sent") {
      addEndpoint(ev.src);
      addEndpoint(ev.dst);
      model.types.add(ev.type);
      if (k === "send" && typeof ev.arrive === "number") {
        const f = { t: ev.t, end: Math.max(ev.arrive, ev.t + 0.5), src: ev.src, dst: ev.dst,
          type: ev.type, dropAt: Infinity, replay: !!ev.replay };
        if (ev.id !== undefined) model.flightById.set(ev.id, f);
        addFlight(f);
      } else if (k === "sent") {
        const n = Math.max(1, Math.min(LIVE_BURST_MAX, ev.count | 0));
        for (let i = 0; i < n; i++) {
          const t = ev.t + i * 60;
          addFlight({ t, end: t + LIVE_FLIGHT_MS, src: ev.src, dst: ev.dst, type: ev.type,
            dropAt: Infinity, count: ev.count });
        }
      }
    } else if (k === "drop") {
      addEndpoint(ev.src);
      addEndpoint(ev.dst);
      let frac = ev.why === "crashed" ? 0.9 : 0.2;
      const f = ev.id !== undefined ? model.flightById.get(ev.id) : undefined;
      if (f) {
        f.dropAt = ev.t;
        frac = Math.min(0.95, Math.max(0.05, (ev.t - f.t) / (f.end - f.t)));
      }
      insertByT(model.drops, { t: ev.t, src: ev.src, dst: ev.dst, type: ev.type, frac, why: ev.why });
    } else if (k === "deliver") {
      const count = Math.min(ev.count | 0 || 1, 100000);
      for (let i = 0; i < count; i++) {
        const idx = ev.index + i;
        if (model.order[idx] === undefined) model.order[idx] = ev.client + ":" + (ev.seq + i);
      }
    } else if (k === "submit") {
      if (ev.from !== undefined) {
        addEndpoint(ev.from);
        model.keyFrom.set(ev.client, ev.from);
      }
    } else if (k === "members") {
      for (const n of ev.voters || []) addNode(n);
      for (const n of ev.learners || []) addNode(n);
    } else if (k === "partition") {
      for (const g of ev.groups || []) for (const n of g) addNode(n);
    }
  }

  // ------------------------------------------------------------------ the state at T

  function newNodeState() {
    return {
      seen: false, role: "unknown", ballot: null, leader: null, up: true, paused: false,
      wiped: false, commit: 0, delivered: 0, snapshot: 0,
      accSlot: new Int32Array(RING), accRound: new Int32Array(RING),
    };
  }
  function newState() {
    return { nodes: Object.create(null), partition: null, cuts: Object.create(null), burst: null,
      members: null, phase: "", submitted: Object.create(null), acked: Object.create(null),
      maxSlot: 0 };
  }
  function cloneState(s) {
    const nodes = Object.create(null);
    for (const id in s.nodes) {
      const n = s.nodes[id];
      nodes[id] = Object.assign({}, n, { accSlot: n.accSlot.slice(), accRound: n.accRound.slice() });
    }
    const copy = (o) => Object.assign(Object.create(null), o);
    return { nodes, partition: s.partition, cuts: copy(s.cuts), burst: s.burst,
      members: s.members, phase: s.phase, submitted: copy(s.submitted),
      acked: copy(s.acked), maxSlot: s.maxSlot };
  }
  function nodeOf(s, id) {
    let n = s.nodes[id];
    if (!n) { n = newNodeState(); s.nodes[id] = n; }
    return n;
  }

  function apply(s, ev) {
    const k = ev.kind;
    let n;
    switch (k) {
      case "role":
        n = nodeOf(s, ev.node);
        n.seen = true;
        n.role = String(ev.role);
        n.ballot = ev.ballot || null;
        n.leader = ev.leader === undefined ? null : ev.leader;
        break;
      case "accept": {
        n = nodeOf(s, ev.node);
        n.seen = true;
        const last = typeof ev.to === "number" ? ev.to : ev.slot;
        const round = Array.isArray(ev.ballot) ? ev.ballot[0] : 0;
        for (let slot = Math.max(ev.slot, last - RING + 1); slot <= last; slot++) {
          n.accSlot[slot % RING] = slot;
          n.accRound[slot % RING] = round;
        }
        if (last > s.maxSlot) s.maxSlot = last;
        break;
      }
      case "chosen": {
        n = nodeOf(s, ev.node);
        n.seen = true;
        const last = typeof ev.to === "number" ? ev.to : ev.slot;
        if (last > n.commit) n.commit = last;
        if (last > s.maxSlot) s.maxSlot = last;
        break;
      }
      case "deliver": {
        n = nodeOf(s, ev.node);
        const last = ev.index + (ev.count === undefined ? 1 : ev.count) - 1;
        if (last > n.delivered) n.delivered = last;
        break;
      }
      case "crash":
        n = nodeOf(s, ev.node);
        n.up = false;
        n.paused = false;
        break;
      case "restart":
        n = nodeOf(s, ev.node);
        n.seen = true;
        n.up = true;
        n.paused = false;
        n.role = "follower";
        n.leader = null;
        // (the simulator says what the node recovered; its chosen ranges and deliveries
        // go on from there)
        if (typeof ev.chosen === "number") n.commit = ev.chosen;
        if (typeof ev.delivered === "number") n.delivered = ev.delivered;
        break;
      case "reachable": nodeOf(s, ev.node).up = true; break; // (the same process: no restart)
      case "pause": nodeOf(s, ev.node).paused = true; break;
      case "resume": nodeOf(s, ev.node).paused = false; break;
      case "wipe":
        n = nodeOf(s, ev.node);
        n.wiped = true;
        n.up = false;
        break;
      case "snapshot": nodeOf(s, ev.node).snapshot = ev.slot; break;
      case "install":
        n = nodeOf(s, ev.node);
        n.commit = Math.max(n.commit, ev.slot);
        if (typeof ev.index === "number") n.delivered = ev.index;
        if (ev.slot > s.maxSlot) s.maxSlot = ev.slot;
        break;
      case "partition": s.partition = { groups: ev.groups || [], bridge: ev.bridge || [] }; break;
      case "heal": s.partition = null; break;
      case "cut": s.cuts[ev.src + ">" + ev.dst] = true; break;
      case "uncut": delete s.cuts[ev.src + ">" + ev.dst]; break;
      case "burst": s.burst = ev.types && ev.types.length ? ev.types : null; break;
      case "members":
        if (!s.members || ev.epoch >= s.members.epoch) {
          s.members = { epoch: ev.epoch, voters: ev.voters || [], learners: ev.learners || [] };
        }
        break;
      case "phase": s.phase = String(ev.phase); break;
      case "submit": {
        const who = ev.from !== undefined ? ev.from : ev.client;
        s.submitted[who] = (s.submitted[who] || 0) + 1;
        break;
      }
      case "ack": {
        const who = model.keyFrom.get(ev.client);
        if (who !== undefined) s.acked[who] = (s.acked[who] || 0) + 1;
        break;
      }
      default: break; // unknown kinds are ignored (forward compatible)
    }
  }

  // The player: the state after every event with t <= T.
  const player = {
    T: 0, cursor: 0, state: newState(), checkpoints: [newState()],
    playing: false, following: false, speed: 4, lastFrame: 0, dirty: true,
  };

  function seek(T) {
    const events = model.events;
    const target = upperBound(events, T, byT);
    if (target < player.cursor) {
      const ck = Math.min(Math.floor(target / CHECKPOINT_EVERY), player.checkpoints.length - 1);
      player.state = cloneState(player.checkpoints[ck]);
      player.cursor = ck * CHECKPOINT_EVERY;
    }
    const s = player.state;
    while (player.cursor < target) {
      apply(s, events[player.cursor]);
      player.cursor++;
      if (player.cursor % CHECKPOINT_EVERY === 0) {
        const ck = player.cursor / CHECKPOINT_EVERY;
        if (ck === player.checkpoints.length) player.checkpoints.push(cloneState(s));
      }
    }
    player.T = T;
    player.dirty = true;
  }

  // An event arrived out of order at position i: forget what was built past it.
  function invalidateFrom(i) {
    const keep = Math.floor(i / CHECKPOINT_EVERY) + 1;
    if (player.checkpoints.length > keep) player.checkpoints.length = keep;
    if (i < player.cursor) {
      const ck = Math.min(Math.floor(i / CHECKPOINT_EVERY), player.checkpoints.length - 1);
      player.state = cloneState(player.checkpoints[ck]);
      player.cursor = ck * CHECKPOINT_EVERY;
    }
  }

  // ------------------------------------------------------------------ layout

  const pos = new Map(); // endpoint -> {x, y}
  const view = { ids: [], layoutKey: null, small: false, links: [], nodeEls: new Map(),
    clientEls: new Map(), rows: new Map(), dotPool: [], dropPool: [], orderKey: "",
    legendSize: -1, recentKey: null };

  // The nodes drawn: live, every node asked about; a trace, the nodes started by now and
  // not gone for good (a lost disk, or down and no longer a member).
  function shownNodes(s) {
    if (model.mode === "live") return model.nodes;
    const members = s.members;
    return model.nodes.filter((id) => {
      const n = s.nodes[id];
      if (!n || !n.seen || n.wiped) return false;
      const member = !members || members.voters.includes(id) || members.learners.includes(id);
      return n.up || member;
    });
  }

  function layout(ids) {
    model.layoutDirty = false;
    view.ids = ids;
    view.layoutKey = ids.join(",");
    pos.clear();
    NODE_R = Math.max(12, Math.min(34, (Math.PI * RADIUS) / Math.max(1, ids.length) - 4));
    const small = NODE_R < 26;
    view.small = small;
    ids.forEach((id, i) => {
      const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(1, ids.length);
      pos.set(id, { x: CX + RADIUS * Math.cos(a), y: CY + RADIUS * Math.sin(a) });
    });
    const cs = model.clients;
    cs.forEach((c, i) => {
      const y = cs.length === 1 ? CY : 50 + ((H - 100) * i) / (cs.length - 1);
      pos.set(c, { x: W - 48, y });
    });
    // links between every pair of nodes
    const links = $("links");
    links.textContent = "";
    view.links = [];
    const linked = ids.length <= MAX_LINKED_NODES ? ids.length : 0;
    for (let i = 0; i < linked; i++) {
      for (let j = i + 1; j < linked; j++) {
        const a = pos.get(ids[i]), b = pos.get(ids[j]);
        const line = el("line", { x1: a.x, y1: a.y, x2: b.x, y2: b.y, class: "link",
          "data-testid": "link-" + ids[i] + "-" + ids[j] }, links);
        view.links.push({ a: ids[i], b: ids[j], line, cls: "link" });
      }
    }
    // nodes
    const nodesG = $("nodes");
    nodesG.textContent = "";
    view.nodeEls.clear();
    for (const id of ids) {
      const p = pos.get(id);
      const g = el("g", { class: small ? "node small" : "node", "data-testid": "node-" + id, "data-node": id,
        transform: "translate(" + p.x.toFixed(1) + "," + p.y.toFixed(1) + ")" }, nodesG);
      el("circle", { r: NODE_R.toFixed(1), class: "body" }, g);
      const idT = el("text", { y: small ? 4 : -9, class: "id" }, g);
      idT.textContent = "n" + id;
      const role = el("text", { y: 5, class: "role", "data-testid": "node-role-" + id }, g);
      const ballot = el("text", { y: 18, class: "ballot", "data-testid": "node-ballot-" + id }, g);
      const flag = el("text", { y: NODE_R + 13, class: "flag" }, g);
      const extra = el("text", { y: -NODE_R - 6, class: "extra" }, g);
      view.nodeEls.set(id, { g, role, ballot, flag, extra, key: "" });
    }
    // clients
    const clientsG = $("clients");
    clientsG.textContent = "";
    view.clientEls.clear();
    for (const c of cs) {
      const p = pos.get(c);
      const g = el("g", { class: "client", "data-testid": "client-" + c,
        transform: "translate(" + p.x + "," + p.y + ")" }, clientsG);
      el("rect", { x: -40, y: -14, width: 80, height: 28, rx: 4 }, g);
      const name = el("text", { y: -2 }, g);
      name.textContent = c;
      const info = el("text", { y: 10, class: "quiet" }, g);
      view.clientEls.set(c, { info, key: "" });
    }
    // log rows
    const rows = $("log-rows");
    rows.textContent = "";
    view.rows.clear();
    for (const id of ids) {
      const label = document.createElement("div");
      label.className = "row-label";
      label.textContent = "n" + id;
      const cells = document.createElement("div");
      cells.className = "cells";
      cells.dataset.testid = "log-" + id;
      const cellEls = [];
      for (let i = 0; i < LOG_CELLS; i++) {
        const c = document.createElement("span");
        c.className = "cell";
        cells.appendChild(c);
        cellEls.push({ el: c, key: "" });
      }
      const count = document.createElement("div");
      count.className = "row-count";
      const chosen = document.createElement("span");
      chosen.dataset.testid = "node-chosen-" + id;
      const delivered = document.createElement("span");
      delivered.dataset.testid = "node-delivered-" + id;
      const more = document.createElement("span");
      count.append("chosen ", chosen, " · delivered ", delivered, " ", more);
      rows.append(label, cells, count);
      view.rows.set(id, { label, cells, cellEls, chosen, delivered, more, key: "" });
    }
    renderLegend();
  }

  function renderLegend() {
    const legend = $("legend");
    legend.textContent = "";
    for (const type of [...model.types].sort()) {
      const span = document.createElement("span");
      const dot = document.createElement("i");
      dot.style.background = colorOf(type);
      span.append(dot, type);
      legend.appendChild(span);
    }
    view.legendSize = model.types.size;
  }

  // ------------------------------------------------------------------ drawing

  function linkCut(s, a, b) {
    if (s.cuts[a + ">" + b] || s.cuts[b + ">" + a]) return true;
    const p = s.partition;
    if (!p) return false;
    if (p.bridge.includes(a) || p.bridge.includes(b)) return false;
    const side = (n) => {
      for (let i = 0; i < p.groups.length; i++) if (p.groups[i].includes(n)) return i;
      return 0; // (a node in no group is in the first)
    };
    return side(a) !== side(b);
  }

  function timeText(T) {
    if (model.unit === "ms") {
      const d = new Date(T);
      const p2 = (x) => String(x).padStart(2, "0");
      return p2(d.getHours()) + ":" + p2(d.getMinutes()) + ":" + p2(d.getSeconds()) + "." +
        String(d.getMilliseconds()).padStart(3, "0");
    }
    return "tick " + Math.floor(T) + " / " + model.t1;
  }

  function visibleFlights(T) {
    const out = [];
    const hideHb = $("hide-hb").checked;
    const scan = (arr, window) => {
      let i = upperBound(arr, T, byT) - 1;
      for (; i >= 0 && arr[i].t >= T - window && out.length < MAX_DOTS; i--) {
        const f = arr[i];
        if (f.end > T && f.dropAt > T && pos.has(f.src) && pos.has(f.dst)) {
          if (hideHb && (f.type === "Heartbeat" || f.type === "HeartbeatReply")) continue;
          out.push(f);
        }
      }
    };
    scan(model.shortFlights, model.unit === "ms" ? LIVE_FLIGHT_MS + 400 : SHORT_FLIGHT);
    if (model.longFlights.length) scan(model.longFlights, model.maxLongFlight);
    return out;
  }

  const endpointPos = (x) => pos.get(x) || { x: CX, y: CY };

  function drawDots(T) {
    const flights = visibleFlights(T);
    const layer = $("dots");
    const pool = view.dotPool;
    const labels = flights.length <= LABEL_DOTS;
    for (let i = 0; i < flights.length; i++) {
      const f = flights[i];
      let d = pool[i];
      if (!d) {
        const g = el("g", { class: "dot" }, layer);
        const c = el("circle", { r: 5 }, g);
        const t = el("text", { x: 7, y: 3 }, g);
        d = pool[i] = { g, c, t, type: "", label: null };
      }
      const a = endpointPos(f.src), b = endpointPos(f.dst);
      const frac = Math.min(1, Math.max(0, (T - f.t) / (f.end - f.t)));
      // the two directions of a link a little apart
      const dx = b.x - a.x, dy = b.y - a.y, len = Math.hypot(dx, dy) || 1;
      const off = 4;
      const x = a.x + dx * frac + (-dy / len) * off, y = a.y + dy * frac + (dx / len) * off;
      d.g.setAttribute("transform", "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")");
      d.g.style.display = "";
      if (d.type !== f.type) {
        d.type = f.type;
        d.c.setAttribute("fill", colorOf(f.type));
        d.c.setAttribute("data-type", f.type);
      }
      const label = labels ? TYPE_SHORT[f.type] || String(f.type).slice(0, 5) : "";
      if (d.label !== label) { d.label = label; d.t.textContent = label; }
    }
    for (let i = flights.length; i < pool.length; i++) pool[i].g.style.display = "none";
    return flights.length;
  }

  function drawDrops(T) {
    const show = model.unit === "ms" ? 700 : 6;
    const arr = model.drops;
    const hi = upperBound(arr, T, byT);
    const pool = view.dropPool;
    let n = 0;
    for (let i = hi - 1; i >= 0 && arr[i].t > T - show && n < MAX_DOTS; i--) {
      const dr = arr[i];
      if (!pos.has(dr.src) || !pos.has(dr.dst)) continue;
      let d = pool[n];
      if (!d) {
        const g = el("g", { class: "drop", "data-testid": "drop" }, $("drops"));
        el("line", { x1: -5, y1: -5, x2: 5, y2: 5 }, g);
        el("line", { x1: -5, y1: 5, x2: 5, y2: -5 }, g);
        const title = el("title", {}, g);
        d = pool[n] = { g, title };
      }
      const a = endpointPos(dr.src), b = endpointPos(dr.dst);
      const x = a.x + (b.x - a.x) * dr.frac, y = a.y + (b.y - a.y) * dr.frac;
      d.g.setAttribute("transform", "translate(" + x.toFixed(1) + "," + y.toFixed(1) + ")");
      d.g.style.display = "";
      d.title.textContent = dr.type + " " + dr.src + "→" + dr.dst + " dropped (" + dr.why + ")";
      n++;
    }
    for (let i = n; i < pool.length; i++) pool[i].g.style.display = "none";
  }

  function drawNodes(s) {
    const members = s.members;
    for (const id of view.ids) {
      const v = view.nodeEls.get(id);
      const n = s.nodes[id] || newNodeState();
      const absent = !n.seen && model.mode === "file"; // (not started yet: not shown)
      let role = n.role;
      const cls = [view.small ? "node small" : "node", role];
      if (!n.up) cls.push("down");
      if (n.paused) cls.push("paused");
      if (absent) cls.push("absent");
      let badge = "";
      if (members) {
        if (members.learners.includes(id)) badge = "learner";
        else if (!members.voters.includes(id)) { badge = "not a member"; cls.push("removed"); }
      }
      const flag = n.wiped ? "disk lost" : !n.up ? "crashed" : n.paused ? "paused" : "";
      const key = cls.join(" ") + "|" + ballotText(n.ballot) + "|" + flag + "|" + badge;
      if (key === v.key) continue;
      v.key = key;
      v.g.setAttribute("class", cls.join(" "));
      v.g.setAttribute("data-role", role);
      v.g.setAttribute("data-up", n.up ? "1" : "0");
      v.role.textContent = absent ? "not started" : role;
      v.ballot.textContent = n.ballot ? "ballot " + ballotText(n.ballot) : "";
      v.flag.textContent = flag;
      v.extra.textContent = badge;
    }
  }

  function drawLinks(s) {
    for (const l of view.links) {
      const cls = linkCut(s, l.a, l.b) ? "link cut" : "link";
      if (cls !== l.cls) { l.cls = cls; l.line.setAttribute("class", cls); }
    }
  }

  function drawClients(s) {
    for (const c of model.clients) {
      const v = view.clientEls.get(c);
      const sub = s.submitted[c] || 0, ack = s.acked[c] || 0;
      const key = sub + "/" + ack;
      if (key === v.key) continue;
      v.key = key;
      v.info.textContent = sub ? ack + "/" + sub + " acked" : "";
    }
  }

  function drawLogs(s) {
    let top = s.maxSlot;
    for (const id in s.nodes) top = Math.max(top, s.nodes[id].commit);
    const first = Math.max(1, top - LOG_CELLS + 1);
    for (const id of view.ids) {
      const row = view.rows.get(id);
      const n = s.nodes[id] || newNodeState();
      const rowKey = n.commit + "|" + n.delivered + "|" + (n.up ? 1 : 0) + "|" + first;
      if (row.key !== rowKey) {
        row.key = rowKey;
        row.chosen.textContent = String(n.commit);
        row.delivered.textContent = String(n.delivered);
        row.more.textContent = first > 1 ? "(+" + (first - 1) + " earlier slots)" : "";
        row.label.className = n.up ? "row-label" : "row-label down";
        row.cells.className = n.up ? "cells" : "cells down";
      }
      for (let i = 0; i < LOG_CELLS; i++) {
        const slot = first + i;
        const cell = row.cellEls[i];
        let key;
        if (slot > top) key = "";
        else if (slot <= n.commit) key = "c";
        else if (n.accSlot[slot % RING] === slot) key = "a" + n.accRound[slot % RING];
        else key = "";
        if (key === cell.key) continue;
        cell.key = key;
        if (key === "c") { cell.el.className = "cell c"; cell.el.style.background = ""; }
        else if (key) {
          cell.el.className = "cell a";
          cell.el.style.background = "hsl(" + ((n.accRound[slot % RING] * 67) % 360) + ",55%,72%)";
        } else { cell.el.className = "cell"; cell.el.style.background = ""; }
      }
    }
    return top;
  }

  function drawOrder(maxDelivered) {
    const first = Math.max(1, maxDelivered - ORDER_CELLS + 1);
    const key = first + "|" + maxDelivered;
    if (key === view.orderKey) return;
    view.orderKey = key;
    const strip = $("order-strip");
    strip.textContent = "";
    for (let i = first; i <= maxDelivered; i++) {
      const span = document.createElement("span");
      span.className = "ord";
      const b = document.createElement("b");
      b.textContent = "#" + i;
      span.append(b, model.order[i] || "?");
      strip.appendChild(span);
    }
    $("order-count").textContent = maxDelivered ? maxDelivered + " delivered" : "";
  }

  function describe(ev) {
    const n = ev.node !== undefined ? "n" + ev.node + " " : "";
    switch (ev.kind) {
      case "role": return n + (ev.role === "leader" ? "leads" : "is " + ev.role) + " (ballot " + ballotText(ev.ballot) + ")";
      case "crash": return n + "crashed";
      case "restart": return n + "restarted";
      case "pause": return n + "paused";
      case "resume": return n + "resumed";
      case "wipe": return n + "lost its disk";
      case "partition": return "partition " + (ev.groups || []).map((g) => "[" + g.join(",") + "]").join(" | ");
      case "heal": return "partition healed";
      case "members": return n + "applies members " + JSON.stringify(ev.voters) + (ev.learners && ev.learners.length ? " learners " + JSON.stringify(ev.learners) : "") + " (epoch " + ev.epoch + ")";
      case "install": return n + "installed a snapshot at slot " + ev.slot;
      case "phase": return ev.phase === "heal" ? "heal phase: faults over" : "phase " + ev.phase;
      case "gap": return n + "missed " + ev.missed + " events";
      case "reachable": return n + "answers again (not restarted)";
      default: return n + ev.kind;
    }
  }

  function drawRecent() {
    const items = [];
    const events = model.events;
    for (let i = player.cursor - 1; i >= 0 && i >= player.cursor - 20000 && items.length < 12; i--) {
      const ev = events[i];
      if (NOTABLE.has(ev.kind) || (ev.kind === "role" && ev.role !== "follower")) {
        items.push((model.unit === "ms" ? timeText(ev.t) : "t" + ev.t) + "  " + describe(ev));
      }
    }
    const key = items.join("\n");
    if (key === view.recentKey) return;
    view.recentKey = key;
    const ol = $("recent");
    ol.textContent = "";
    for (const text of items) {
      const li = document.createElement("li");
      li.textContent = text;
      ol.appendChild(li);
    }
  }

  function render() {
    const s = player.state, T = player.T;
    const shown = shownNodes(s);
    if (model.layoutDirty || shown.join(",") !== view.layoutKey) layout(shown);
    if (view.legendSize !== model.types.size) renderLegend();
    drawLinks(s);
    drawNodes(s);
    drawClients(s);
    const inFlight = drawDots(T);
    drawDrops(T);
    drawLogs(s);
    let maxCommit = 0, maxDelivered = 0;
    const leaders = [];
    for (const id of model.nodes) {
      const n = s.nodes[id];
      if (!n) continue;
      maxCommit = Math.max(maxCommit, n.commit);
      maxDelivered = Math.max(maxDelivered, n.delivered);
      if (n.role === "leader" && n.up) leaders.push("n" + id + " (" + ballotText(n.ballot) + ")");
    }
    drawOrder(maxDelivered);
    drawRecent();
    $("chosen-count").textContent = String(maxCommit);
    $("delivered-count").textContent = String(maxDelivered);
    $("leader").textContent = leaders.length ? leaders.join(", ") : "none";
    $("members").textContent = s.members
      ? s.members.voters.join(",") + (s.members.learners.length ? " + learners " + s.members.learners.join(",") : "") + " (epoch " + s.members.epoch + ")"
      : "–";
    const net = [];
    if (s.phase === "heal") net.push("healed");
    if (s.partition) net.push("partitioned");
    const cuts = Object.keys(s.cuts).length;
    if (cuts) net.push(cuts + " link(s) cut");
    if (s.burst) net.push("dropping " + s.burst.join(","));
    $("network").textContent = net.length ? net.join("; ") : "ok";
    $("in-flight").textContent = String(inFlight);
    $("applied").textContent = player.cursor + " / " + model.events.length;
    const time = $("time");
    time.textContent = timeText(T);
    time.dataset.t = String(Math.floor(T));
    const scrub = $("scrubber");
    scrub.min = String(model.t0);
    scrub.max = String(Math.max(model.t0, model.t1));
    if (document.activeElement !== scrub || player.playing) scrub.value = String(T);
    $("play").classList.toggle("on", player.playing);
    $("pause").classList.toggle("on", !player.playing);
    document.body.dataset.done = !player.playing && model.mode === "file" && T >= model.t1 ? "1" : "0";
    player.dirty = false;
  }

  // ------------------------------------------------------------------ controls

  const rateOf = () => (model.unit === "ms" ? 1000 : 10) * player.speed;
  function liveNow() { return Date.now() + (live.offset || 0) - LIVE_LAG_MS; }

  function play() {
    if (model.mode === "live") {
      player.following = true;
    } else if (player.T >= model.t1) {
      seek(model.t0);
    }
    player.playing = true;
    player.lastFrame = performance.now();
    player.dirty = true;
  }
  function pause() {
    player.playing = false;
    player.following = false;
    player.dirty = true;
  }
  function step() {
    pause();
    const next = player.cursor < model.events.length ? model.events[player.cursor].t : model.t1;
    seek(Math.max(player.T, next));
  }

  function frame(now) {
    requestAnimationFrame(frame); // (first: a failure below must not stop the animation)
    if (player.playing) {
      const dt = Math.min(0.25, (now - player.lastFrame) / 1000);
      player.lastFrame = now;
      if (player.following) {
        seek(Math.max(model.t0, liveNow()));
      } else {
        let T = player.T + dt * rateOf();
        if (model.mode === "file" && T >= model.t1) { T = model.t1; player.playing = false; }
        seek(T);
      }
    }
    if (player.dirty) render();
  }

  function setupControls() {
    const speed = $("speed");
    for (const x of SPEEDS) {
      const o = document.createElement("option");
      o.value = String(x);
      o.textContent = "×" + x + " (" + (model.unit === "ms" ? x + "× real time" : x * 10 + " ticks/s") + ")";
      speed.appendChild(o);
    }
    speed.value = String(player.speed);
    speed.addEventListener("change", () => { player.speed = Number(speed.value) || 1; });
    $("play").addEventListener("click", play);
    $("pause").addEventListener("click", pause);
    $("step").addEventListener("click", step);
    $("start").addEventListener("click", () => { pause(); seek(model.t0); });
    $("end").addEventListener("click", () => {
      if (model.mode === "live") play(); else { pause(); seek(model.t1); }
    });
    $("hide-hb").addEventListener("change", () => { player.dirty = true; });
    const scrub = $("scrubber");
    scrub.addEventListener("input", () => { pause(); seek(Number(scrub.value)); });
    document.addEventListener("keydown", (e) => {
      if (e.target && (e.target.tagName === "INPUT" || e.target.tagName === "SELECT")) return;
      if (e.key === " ") { e.preventDefault(); if (player.playing) pause(); else play(); }
      else if (e.key === "ArrowRight") step();
    });
  }

  // ------------------------------------------------------------------ loading

  function setStatus(text, error) {
    const st = $("status");
    st.textContent = text;
    st.classList.toggle("error", !!error);
  }

  function loadTrace(doc) {
    if (!doc || doc.format !== "paxos-trace" || !Array.isArray(doc.events)) {
      throw new Error("not a paxos trace");
    }
    model.meta = doc;
    model.unit = doc.time_unit === "ms" ? "ms" : "tick";
    if (Array.isArray(doc.nodes)) for (const id of doc.nodes) addNode(id);
    const events = doc.events.map(clean).filter((e) => e !== null);
    // (a stable sort: events of one time keep their order)
    let sorted = true;
    for (let i = 1; i < events.length; i++) if (events[i].t < events[i - 1].t) { sorted = false; break; }
    if (!sorted) events.sort((a, b) => a.t - b.t);
    model.events = events;
    model.t0 = events.length ? Math.min(0, events[0].t) : 0;
    if (model.unit === "ms" && events.length) model.t0 = events[0].t;
    model.t1 = model.t0;
    for (const ev of events) ingest(ev);
    if (typeof doc.ticks === "number" && doc.ticks > model.t1) model.t1 = doc.ticks;
    const src = doc.source === "live" ? "live recording" : "simulation, seed " + doc.seed;
    $("source").textContent = src + " · " + model.nodes.length + " nodes · " + events.length + " events" + (doc.truncated ? " (truncated)" : "");
    $("replay").textContent = doc.replay || "";
    $("replay").style.display = doc.replay ? "" : "none";
    setStatus(doc.truncated ? "trace truncated: " + (doc.note || "") : "");
    player.speed = model.unit === "ms" ? 1 : 4;
    setupControls();
    seek(model.t0);
    document.body.dataset.ready = "1";
  }

  const live = { next: 0, offset: 0, timer: 0, failures: 0 };

  async function pollLive() {
    let more = false;
    try {
      const res = await fetch("live?after=" + live.next, { cache: "no-store" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      const reply = await res.json();
      live.failures = 0;
      if (typeof reply.now === "number") live.offset = reply.now - Date.now();
      const events = Array.isArray(reply.events) ? reply.events : [];
      // The viz server's buffer is bounded: what it dropped before we read it is lost,
      // and said so (a "gap" in the recent events).
      const missed = isNodeId(reply.first) && live.next > 0 ? reply.first - live.next - 1 : 0;
      // (taken before the events: a reply is never applied twice)
      if (isNodeId(reply.next)) live.next = reply.next;
      if (missed > 0) {
        const first = events.length ? clean(events[0]) : null;
        events.unshift({ t: first ? first.t : liveNow(), kind: "gap", missed });
      }
      more = events.length >= LIVE_REPLY_EVENTS;
      let earliest = Infinity;
      for (const raw of events) {
        const ev = clean(raw);
        if (ev === null) continue;
        const i = insertByT(model.events, ev);
        if (i < model.events.length - 1) earliest = Math.min(earliest, i);
        if (ev.t < model.t0) model.t0 = ev.t; // (a node's ring may hold older events)
        ingest(ev);
      }
      if (earliest !== Infinity) invalidateFrom(earliest);
      if (model.events.length > MAX_LIVE_EVENTS) trimLive();
      if (Array.isArray(reply.nodes)) for (const id of reply.nodes) addNode(id);
      model.t1 = Math.max(model.t1, liveNow());
      const down = (reply.unreachable || []).map((n) => "n" + n);
      setStatus("live · " + model.events.length + " events" + (down.length ? " · unreachable: " + down.join(",") : ""));
      player.dirty = true;
    } catch (err) {
      live.failures++;
      setStatus("live: the viz server does not answer (" + err.message + ")", true);
    }
    live.timer = setTimeout(pollLive, more ? 0 : LIVE_POLL_MS); // (behind: at once)
  }

  // Live: keep the newest events only (the page would grow without bound).
  function trimLive() {
    const drop = model.events.length - Math.floor(MAX_LIVE_EVENTS * 0.8);
    // the state at the new first event: apply what goes away
    // (from the state at the old first event: what earlier trims dropped counts too)
    const base = cloneState(player.checkpoints[0]);
    for (let i = 0; i < drop; i++) apply(base, model.events[i]);
    model.events.splice(0, drop);
    model.t0 = model.events.length ? model.events[0].t : model.t0;
    const cut = (arr) => { const i = upperBound(arr, model.t0 - 5000, byT); if (i) arr.splice(0, i); };
    cut(model.shortFlights); cut(model.longFlights); cut(model.drops);
    player.checkpoints = [base];
    player.state = cloneState(base);
    player.cursor = 0;
    seek(Math.max(player.T, model.t0));
  }

  function startLive(info) {
    model.mode = "live";
    model.unit = "ms";
    model.meta = { nodes: info.nodes || [] };
    for (const id of info.nodes || []) addNode(id);
    model.t0 = model.t1 = liveNow();
    $("source").textContent = "live · " + (info.nodes || []).length + " nodes";
    $("replay").style.display = "none";
    player.speed = 1;
    setupControls();
    seek(model.t0);
    play();
    document.body.dataset.ready = "1";
    pollLive();
  }

  async function boot() {
    requestAnimationFrame(frame);
    const inline = document.getElementById("trace-data");
    try {
      if (inline) {
        loadTrace(JSON.parse(inline.textContent));
        return;
      }
      if (location.protocol === "file:") {
        throw new Error("open this page through `paxos viz`, or write a self-contained one with --out");
      }
      const info = await (await fetch("info.json", { cache: "no-store" })).json();
      if (info.mode === "live") {
        startLive(info);
      } else {
        const res = await fetch("trace.json", { cache: "no-store" });
        if (!res.ok) throw new Error("trace.json: HTTP " + res.status);
        loadTrace(await res.json());
      }
    } catch (err) {
      setStatus("cannot show the trace: " + err.message, true);
      document.body.dataset.ready = "error";
    }
  }

  // For tests and the console: the current view as numbers.
  window.paxosViz = {
    state: () => ({ T: player.T, cursor: player.cursor, events: model.events.length,
      nodes: model.nodes.slice(), playing: player.playing }),
    seek: (T) => { pause(); seek(T); },
  };

  boot();
})();
