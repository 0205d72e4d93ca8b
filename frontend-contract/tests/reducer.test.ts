import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { applyRunEvent, initialRunState, type RunEvent, type RunState } from "../src/events.js";

const RUN = "0190a0b0-0000-7000-8000-000000000001";
const at = "2026-01-01T00:00:00Z";

function events(): RunEvent[] {
  const base = { run_id: RUN, created_at: at };
  return [
    { ...base, type: "run.started", seq: 1 },
    { ...base, type: "message.started", seq: 2, message_id: "m1" },
    { ...base, type: "message.delta", seq: 3, message_id: "m1", text: "Hel" },
    { ...base, type: "message.delta", seq: 4, message_id: "m1", text: "lo" },
    { ...base, type: "tool_call.started", seq: 5, tool_call_id: "t1", name: "search" },
    { ...base, type: "tool_call.arguments.delta", seq: 6, tool_call_id: "t1", name: "search", text: '{"q":' },
    { ...base, type: "tool_call.arguments.delta", seq: 7, tool_call_id: "t1", name: "search", text: '"x"}' },
    { ...base, type: "approval.requested", seq: 8, approval_id: "a1", tool_call_id: "t1", name: "search", arguments: { q: "x" } },
    { ...base, type: "approval.decided", seq: 9, approval_id: "a1", tool_call_id: "t1", decision: "approve" },
    { ...base, type: "tool_call.completed", seq: 10, tool_call_id: "t1", name: "search", arguments: { q: "x" }, result: [1] },
    { ...base, type: "usage", seq: 11, input_tokens: 10, output_tokens: 5, cost: 0.25 },
    { ...base, type: "message.delta", seq: 12, message_id: "m1", text: ", world" },
    { ...base, type: "message.completed", seq: 13, message_id: "m1" },
    { ...base, type: "usage", seq: 14, input_tokens: 1, output_tokens: 2, cost: 0.5 },
    { ...base, type: "run.completed", seq: 15 },
  ];
}

function reduce(list: RunEvent[], state: RunState = initialRunState()): RunState {
  return list.reduce(applyRunEvent, state);
}

describe("applyRunEvent", () => {
  it("builds message text, tool calls, approvals and usage", () => {
    const state = reduce(events());
    assert.equal(state.status, "completed");
    assert.equal(state.run_id, RUN);
    assert.equal(state.lastSeq, 15);
    assert.equal(state.gap, null);
    assert.deepEqual(state.messages, [{ id: "m1", text: "Hello, world", completed: true }]);
    assert.deepEqual(state.toolCalls, [
      { id: "t1", name: "search", argumentsText: '{"q":"x"}', arguments: { q: "x" }, result: [1], completed: true },
    ]);
    assert.equal(state.approvals[0]?.decision, "approve");
    assert.deepEqual(state.usage, { input_tokens: 11, output_tokens: 7, cost: 0.75 });
  });

  it("never mutates its input", () => {
    const before = initialRunState();
    const snapshot = structuredClone(before);
    const after = applyRunEvent(before, events()[0]!);
    assert.deepEqual(before, snapshot);
    assert.notEqual(after, before);
  });

  it("ignores duplicates (seq at or below lastSeq)", () => {
    const list = events();
    const once = reduce(list.slice(0, 4));
    const again = reduce(list.slice(2, 4), once);
    assert.equal(again, once);
    assert.equal(again.messages[0]?.text, "Hello");
  });

  it("detects a seq gap, holds later events back, and recovers when the missing event arrives", () => {
    const list = events();
    let state = reduce(list.slice(0, 3)); // seq 1..3
    state = applyRunEvent(state, list[4]!); // seq 5: 4 missing
    assert.deepEqual(state.gap, { expected: 4, received: 5 });
    assert.equal(state.lastSeq, 3);
    state = applyRunEvent(state, list[5]!); // seq 6: still missing 4, first gap kept
    assert.deepEqual(state.gap, { expected: 4, received: 5 });
    state = reduce(list.slice(3), state); // a resume replays 4..15
    assert.equal(state.gap, null);
    assert.equal(state.lastSeq, 15);
    assert.equal(state.messages[0]?.text, "Hello, world");
  });

  it("records the problem of a failed run", () => {
    const problem = { type: "about:blank", title: "Upstream error", status: 502, code: "provider_error" };
    const state = reduce([
      { type: "run.started", seq: 1, run_id: RUN, created_at: at },
      { type: "run.failed", seq: 2, run_id: RUN, created_at: at, problem },
    ]);
    assert.equal(state.status, "failed");
    assert.deepEqual(state.problem, problem);
  });

  it("advances past unknown event types without changing anything else", () => {
    const unknown = { type: "future.thing", seq: 1, run_id: RUN, created_at: at } as unknown as RunEvent;
    const state = applyRunEvent(initialRunState(), unknown);
    assert.equal(state.lastSeq, 1);
    assert.deepEqual(state.messages, []);
  });
});
