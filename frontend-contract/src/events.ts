/**
 * Run events (the JSON of each SSE frame) and a pure reducer over them. Hand-written from
 * CONTRACT.md until the union is published in the OpenAPI document: swap this file's types for
 * the generated ones then; nothing else in the package declares event shapes.
 */

import type { Problem } from "./problem.js";

/** Fields every event carries; `seq` starts at 1 and grows by exactly 1 per event of a run. */
export interface RunEventBase<T extends string> {
  type: T;
  seq: number;
  run_id: string;
  /** RFC 3339 UTC. */
  created_at: string;
}

export interface RunStarted extends RunEventBase<"run.started"> {
  kind?: string;
}
export interface MessageStarted extends RunEventBase<"message.started"> {
  message_id: string;
  role?: string;
}
export interface MessageDelta extends RunEventBase<"message.delta"> {
  message_id: string;
  text: string;
}
export interface MessageCompleted extends RunEventBase<"message.completed"> {
  message_id: string;
}
export interface ToolCallStarted extends RunEventBase<"tool_call.started"> {
  tool_call_id: string;
  name: string;
}
export interface ToolCallArgumentsDelta extends RunEventBase<"tool_call.arguments.delta"> {
  tool_call_id: string;
  name: string;
  /** A fragment of the JSON-encoded arguments. */
  text: string;
}
export interface ToolCallCompleted extends RunEventBase<"tool_call.completed"> {
  tool_call_id: string;
  name: string;
  arguments?: Record<string, unknown>;
  result?: unknown;
}
export interface ApprovalRequested extends RunEventBase<"approval.requested"> {
  approval_id: string;
  tool_call_id: string;
  name: string;
  arguments: Record<string, unknown>;
}
export interface ApprovalDecided extends RunEventBase<"approval.decided"> {
  approval_id: string;
  tool_call_id?: string;
  /** Open enum: `approve`, `deny`. */
  decision: string;
  reason?: string;
}
export interface Usage extends RunEventBase<"usage"> {
  input_tokens: number;
  output_tokens: number;
  cost: number;
}
export interface StepStarted extends RunEventBase<"step.started"> {
  step_id?: string;
  agent_id: string;
  agent_name: string;
}
export interface StepCompleted extends RunEventBase<"step.completed"> {
  step_id?: string;
  agent_id: string;
  agent_name: string;
}
export type RunCompleted = RunEventBase<"run.completed">;
export interface RunFailed extends RunEventBase<"run.failed"> {
  problem: Problem;
}
export interface RunCancelled extends RunEventBase<"run.cancelled"> {
  reason?: string;
}

/** The discriminated union on `type`. Unknown types may arrive (enums are open): ignore them. */
export type RunEvent =
  | RunStarted
  | MessageStarted
  | MessageDelta
  | MessageCompleted
  | ToolCallStarted
  | ToolCallArgumentsDelta
  | ToolCallCompleted
  | ApprovalRequested
  | ApprovalDecided
  | Usage
  | StepStarted
  | StepCompleted
  | RunCompleted
  | RunFailed
  | RunCancelled;

export type RunEventType = RunEvent["type"];
export type TerminalRunEvent = RunCompleted | RunFailed | RunCancelled;

export const TERMINAL_EVENT_TYPES: ReadonlySet<string> = new Set(["run.completed", "run.failed", "run.cancelled"]);

export function isTerminalEvent(event: { type: string }): event is TerminalRunEvent {
  return TERMINAL_EVENT_TYPES.has(event.type);
}

// ---------------------------------------------------------------------------------------------
// Reducer

export type RunStatus = "pending" | "running" | "completed" | "failed" | "cancelled";

export interface MessageState {
  id: string;
  text: string;
  completed: boolean;
}

export interface ToolCallState {
  id: string;
  name: string;
  /** Concatenated `tool_call.arguments.delta` fragments (JSON text, possibly incomplete). */
  argumentsText: string;
  arguments?: Record<string, unknown>;
  result?: unknown;
  completed: boolean;
}

export interface ApprovalState {
  id: string;
  tool_call_id: string;
  name: string;
  arguments: Record<string, unknown>;
  /** `pending` until an `approval.decided` arrives, then its decision. */
  decision: string;
  reason?: string;
}

export interface StepState {
  agent_id: string;
  agent_name: string;
  step_id?: string;
  completed: boolean;
}

export interface SeqGap {
  /** The seq the reducer needed next. */
  expected: number;
  /** The seq that arrived instead. */
  received: number;
}

export interface RunState {
  run_id: string | null;
  status: RunStatus;
  /** Highest seq applied: resume with `Last-Event-ID: lastSeq`. */
  lastSeq: number;
  /** Set when an event skipped ahead; events are held back until the missing ones arrive. */
  gap: SeqGap | null;
  /** Messages in the order they started. */
  messages: MessageState[];
  toolCalls: ToolCallState[];
  approvals: ApprovalState[];
  steps: StepState[];
  /** Summed over every `usage` event of the run. */
  usage: { input_tokens: number; output_tokens: number; cost: number };
  problem: Problem | null;
}

export function initialRunState(): RunState {
  return {
    run_id: null,
    status: "pending",
    lastSeq: 0,
    gap: null,
    messages: [],
    toolCalls: [],
    approvals: [],
    steps: [],
    usage: { input_tokens: 0, output_tokens: 0, cost: 0 },
    problem: null,
  };
}

function upsert<T>(list: T[], match: (item: T) => boolean, update: (item: T | undefined) => T): T[] {
  const index = list.findIndex(match);
  if (index === -1) return [...list, update(undefined)];
  const copy = list.slice();
  copy[index] = update(list[index]);
  return copy;
}

/**
 * Applies one event and returns a new state (the input is never mutated). An event at or below
 * `lastSeq` is a duplicate and changes nothing; one beyond `lastSeq + 1` is not applied and sets
 * `gap` (reconnect with `Last-Event-ID: state.lastSeq` or re-read the run); the missing event
 * clears it. Unknown event types advance `lastSeq` and change nothing else.
 */
export function applyRunEvent(state: RunState, event: RunEvent): RunState {
  if (event.seq <= state.lastSeq) return state;
  if (event.seq !== state.lastSeq + 1) {
    if (state.gap && state.gap.received <= event.seq) return state;
    return { ...state, gap: { expected: state.lastSeq + 1, received: event.seq } };
  }
  const next: RunState = {
    ...state,
    run_id: state.run_id ?? event.run_id,
    lastSeq: event.seq,
    gap: null,
    status: state.status === "pending" ? "running" : state.status,
  };
  switch (event.type) {
    case "run.started":
      return next;
    case "message.started":
      return {
        ...next,
        messages: upsert(next.messages, (m) => m.id === event.message_id, (m) => m ?? { id: event.message_id, text: "", completed: false }),
      };
    case "message.delta":
      return {
        ...next,
        messages: upsert(
          next.messages,
          (m) => m.id === event.message_id,
          (m) => ({ id: event.message_id, text: (m?.text ?? "") + event.text, completed: m?.completed ?? false }),
        ),
      };
    case "message.completed":
      return {
        ...next,
        messages: upsert(
          next.messages,
          (m) => m.id === event.message_id,
          (m) => ({ id: event.message_id, text: m?.text ?? "", completed: true }),
        ),
      };
    case "tool_call.started":
    case "tool_call.arguments.delta":
    case "tool_call.completed":
      return {
        ...next,
        toolCalls: upsert(
          next.toolCalls,
          (t) => t.id === event.tool_call_id,
          (t) => {
            const base: ToolCallState = t ?? { id: event.tool_call_id, name: event.name, argumentsText: "", completed: false };
            if (event.type === "tool_call.arguments.delta") return { ...base, argumentsText: base.argumentsText + event.text };
            if (event.type === "tool_call.completed") {
              const done: ToolCallState = { ...base, name: event.name, completed: true };
              if (event.arguments !== undefined) done.arguments = event.arguments;
              if (event.result !== undefined) done.result = event.result;
              return done;
            }
            return base;
          },
        ),
      };
    case "approval.requested":
      return {
        ...next,
        approvals: upsert(
          next.approvals,
          (a) => a.id === event.approval_id,
          () => ({
            id: event.approval_id,
            tool_call_id: event.tool_call_id,
            name: event.name,
            arguments: event.arguments,
            decision: "pending",
          }),
        ),
      };
    case "approval.decided":
      return {
        ...next,
        approvals: upsert(
          next.approvals,
          (a) => a.id === event.approval_id,
          (a) => {
            const decided: ApprovalState = {
              ...(a ?? { id: event.approval_id, tool_call_id: event.tool_call_id ?? "", name: "", arguments: {} }),
              decision: event.decision,
            };
            if (event.reason !== undefined) decided.reason = event.reason;
            return decided;
          },
        ),
      };
    case "usage":
      return {
        ...next,
        usage: {
          input_tokens: next.usage.input_tokens + event.input_tokens,
          output_tokens: next.usage.output_tokens + event.output_tokens,
          cost: next.usage.cost + event.cost,
        },
      };
    case "step.started":
    case "step.completed": {
      const same = (s: StepState): boolean =>
        event.step_id !== undefined ? s.step_id === event.step_id : s.agent_id === event.agent_id && !s.completed;
      const completed = event.type === "step.completed";
      return {
        ...next,
        steps: upsert(next.steps, same, () => {
          const step: StepState = { agent_id: event.agent_id, agent_name: event.agent_name, completed };
          if (event.step_id !== undefined) step.step_id = event.step_id;
          return step;
        }),
      };
    }
    case "run.completed":
      return { ...next, status: "completed" };
    case "run.failed":
      return { ...next, status: "failed", problem: event.problem };
    case "run.cancelled":
      return { ...next, status: "cancelled" };
    default:
      return next;
  }
}
