/**
 * Run event streams over fetch (EventSource cannot send `Authorization`): an incremental parser
 * that follows the WHATWG event-stream rules, and `streamRunEvents`, which resumes with
 * `Last-Event-ID` after a dropped connection and stops at the run's terminal event.
 */

import { TERMINAL_EVENT_TYPES, type RunEvent } from "./events.js";
import { isProblemResponse, problemFromResponse, ProblemError } from "./problem.js";
import type { TokenSource } from "./client.js";

/** One dispatched frame, before JSON decoding. */
export interface SseFrame {
  event: string;
  /** The last event id seen on the stream so far ("" when none was ever sent). */
  id: string;
  data: string;
}

/**
 * Incremental event-stream parser: feed decoded text in chunks of any size; complete frames come
 * out. Handles CRLF, CR and LF line ends (a CR at a chunk end is paired with an LF opening the
 * next chunk), comments (`: ping`), multi-line `data`, `id` and `retry`.
 */
export class SseParser {
  /** Reconnection delay in ms from the latest valid `retry:` field, if any. */
  retry: number | undefined = undefined;
  private buffer = "";
  private skipLeadingLf = false;
  private first = true;
  private eventType = "";
  private data: string[] = [];
  private lastEventId = "";

  push(chunk: string): SseFrame[] {
    const frames: SseFrame[] = [];
    let text = chunk;
    if (this.first && text.length > 0) {
      this.first = false;
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
    }
    if (this.skipLeadingLf && text.length > 0) {
      this.skipLeadingLf = false;
      if (text[0] === "\n") text = text.slice(1);
    }
    this.buffer += text;
    let start = 0;
    for (;;) {
      let end = -1;
      for (let i = start; i < this.buffer.length; i++) {
        const c = this.buffer.charCodeAt(i);
        if (c === 10 || c === 13) {
          end = i;
          break;
        }
      }
      if (end === -1) break;
      const line = this.buffer.slice(start, end);
      let after = end + 1;
      if (this.buffer.charCodeAt(end) === 13) {
        if (after < this.buffer.length) {
          if (this.buffer.charCodeAt(after) === 10) after++;
        } else {
          this.skipLeadingLf = true;
        }
      }
      start = after;
      const frame = this.line(line);
      if (frame) frames.push(frame);
    }
    this.buffer = this.buffer.slice(start);
    return frames;
  }

  /** Forget a half-received frame (after a dropped connection); the last event id is kept. */
  reset(): void {
    this.buffer = "";
    this.skipLeadingLf = false;
    this.first = true;
    this.eventType = "";
    this.data = [];
  }

  private line(line: string): SseFrame | undefined {
    if (line === "") return this.dispatch();
    if (line[0] === ":") return undefined;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data.push(value);
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break; // unknown fields are ignored
    }
    return undefined;
  }

  private dispatch(): SseFrame | undefined {
    const data = this.data;
    const event = this.eventType;
    this.data = [];
    this.eventType = "";
    if (data.length === 0) return undefined;
    return { event: event || "message", id: this.lastEventId, data: data.join("\n") };
  }
}

/** A frame of a run stream with its JSON decoded. */
export interface RunEventFrame<E = RunEvent> {
  event: string;
  id: string;
  data: E;
}

export interface StreamRunEventsOptions {
  getToken?: TokenSource;
  /** Resume after this seq (e.g. the reducer's `lastSeq`). */
  lastEventId?: string | number;
  /** Aborting ends the iteration quietly. */
  signal?: AbortSignal;
  fetch?: typeof globalThis.fetch;
  /** First reconnection delay in ms until the server sends `retry:` (default 1000). */
  retryMs?: number;
  /** Upper bound of the exponential backoff in ms (default 30000). */
  maxRetryMs?: number;
  /** Consecutive failed connection attempts before giving up with the last error (default 8). */
  maxAttempts?: number;
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}

function seqOf(data: unknown): number | undefined {
  if (typeof data === "object" && data !== null && typeof (data as { seq?: unknown }).seq === "number") {
    return (data as { seq: number }).seq;
  }
  return undefined;
}

/**
 * Iterates a run's events from `url` (`/api/v1/runs/{run_id}/events`). Reconnects after a dropped
 * connection or a 5xx with `Last-Event-ID` set to the last id seen, waiting the server's `retry:`
 * (doubling per consecutive failure, capped); skips any frame whose seq was already yielded; ends
 * after `run.completed`, `run.failed` or `run.cancelled`. A problem+json answer throws a
 * `ProblemError`; 410 `stream_expired` throws `StreamExpiredError`: re-read the run and its messages.
 */
export async function* streamRunEvents<E = RunEvent>(
  url: string | URL,
  options: StreamRunEventsOptions = {},
): AsyncGenerator<RunEventFrame<E>, void, undefined> {
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const signal = options.signal;
  const maxRetryMs = options.maxRetryMs ?? 30_000;
  const maxAttempts = options.maxAttempts ?? 8;
  let retryMs = options.retryMs ?? 1000;
  let lastEventId = options.lastEventId === undefined ? "" : String(options.lastEventId);
  let lastSeq = lastEventId !== "" && /^[0-9]+$/.test(lastEventId) ? Number(lastEventId) : 0;
  let failures = 0;
  const parser = new SseParser();

  for (;;) {
    if (signal?.aborted) return;
    let lastError: unknown;
    let progressed = false;
    try {
      const headers: Record<string, string> = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
      const token = options.getToken ? await options.getToken() : undefined;
      if (token) headers.Authorization = `Bearer ${token}`;
      if (lastEventId !== "") headers["Last-Event-ID"] = lastEventId;
      const init: RequestInit = { method: "GET", headers };
      if (signal) init.signal = signal;
      const response = await fetchImpl(url, init);
      if (!response.ok) {
        const error = isProblemResponse(response)
          ? await problemFromResponse(response)
          : new Error(`event stream answered HTTP ${response.status}`);
        await response.body?.cancel().catch(() => undefined);
        const transient = response.status >= 500 || response.status === 429 || response.status === 408;
        if (!transient) throw error;
        if (error instanceof ProblemError && error.retryAfter !== undefined) {
          retryMs = Math.max(retryMs, error.retryAfter * 1000);
        }
        throw new TransientStreamError(error);
      }
      if (!response.body) throw new TransientStreamError(new Error("event stream has no body"));
      const reader = response.body.getReader();
      const decoder = new TextDecoder("utf-8");
      parser.reset();
      try {
        for (;;) {
          const { value, done } = await reader.read();
          const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
          const frames = parser.push(text);
          if (parser.retry !== undefined) retryMs = parser.retry;
          for (const frame of frames) {
            if (frame.id !== "") lastEventId = frame.id;
            const data = JSON.parse(frame.data) as unknown;
            const seq = seqOf(data);
            if (seq !== undefined) {
              if (seq <= lastSeq) continue; // already yielded before a reconnect
              lastSeq = seq;
            }
            progressed = true;
            failures = 0;
            yield { event: frame.event, id: frame.id, data: data as E };
            if (TERMINAL_EVENT_TYPES.has(frame.event)) return;
          }
          if (done) break;
        }
      } finally {
        await reader.cancel().catch(() => undefined);
      }
      lastError = new Error("event stream ended before a terminal event");
    } catch (error) {
      if (signal?.aborted) return;
      if (error instanceof TransientStreamError) lastError = error.cause;
      else if (error instanceof ProblemError || error instanceof SyntaxError) throw error;
      else if (isNetworkError(error)) lastError = error;
      else throw error;
    }
    if (!progressed) failures++;
    if (failures >= maxAttempts) throw lastError;
    const backoff = Math.min(maxRetryMs, retryMs * 2 ** Math.max(0, failures - 1));
    await sleep(backoff, signal);
  }
}

class TransientStreamError extends Error {
  constructor(cause: unknown) {
    super("transient event stream failure", { cause });
  }
}

function isNetworkError(error: unknown): boolean {
  // undici and browsers raise TypeError for network failures (refused, reset, body cut short);
  // some runtimes raise errors carrying a socket code instead.
  if (typeof error !== "object" || error === null) return false;
  const name = (error as { name?: unknown }).name;
  const code = (error as { code?: unknown }).code;
  return name === "TypeError" || typeof code === "string" || name === "NetworkError";
}
