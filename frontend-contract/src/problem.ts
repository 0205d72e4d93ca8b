/** RFC 9457 problem details as typed errors, shared by the REST client and the SSE helper. */

import type { components } from "./schema.js";

export type Problem = components["schemas"]["Problem"];
export type FieldError = components["schemas"]["FieldError"];

export const PROBLEM_MEDIA_TYPE = "application/problem+json";

/** A 4xx/5xx answered with `application/problem+json`. Switch on `code`, never on `detail`. */
export class ProblemError extends Error {
  readonly status: number;
  readonly code: string;
  readonly type: string;
  readonly title: string;
  readonly detail: string | undefined;
  readonly instance: string | undefined;
  readonly request_id: string | undefined;
  readonly errors: FieldError[];
  readonly problem: Problem;
  /** `Retry-After` in seconds when the server sent one (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(problem: Problem, retryAfter?: number) {
    super(problem.detail ? `${problem.code}: ${problem.detail}` : problem.code);
    this.name = "ProblemError";
    this.problem = problem;
    this.status = problem.status;
    this.code = problem.code;
    this.type = problem.type;
    this.title = problem.title;
    this.detail = problem.detail;
    this.instance = problem.instance;
    this.request_id = problem.request_id;
    this.errors = problem.errors ?? [];
    this.retryAfter = retryAfter;
  }
}

/** 410 `stream_expired`: the requested position is no longer retained; re-read the run and its messages. */
export class StreamExpiredError extends ProblemError {
  constructor(problem: Problem, retryAfter?: number) {
    super(problem, retryAfter);
    this.name = "StreamExpiredError";
  }
}

export function isProblemResponse(response: Response): boolean {
  const type = response.headers.get("content-type") ?? "";
  return type.split(";", 1)[0]!.trim().toLowerCase() === PROBLEM_MEDIA_TYPE;
}

function retryAfterSeconds(response: Response): number | undefined {
  const raw = response.headers.get("retry-after");
  if (raw === null) return undefined;
  const seconds = Number(raw);
  if (Number.isFinite(seconds)) return seconds;
  const date = Date.parse(raw);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - Date.now()) / 1000);
}

function asProblem(body: unknown, response: Response): Problem {
  const fallback: Problem = {
    type: "about:blank",
    title: response.statusText || "Error",
    status: response.status,
    code: "unknown_error",
    request_id: response.headers.get("x-request-id") ?? undefined,
  };
  if (typeof body !== "object" || body === null || Array.isArray(body)) return fallback;
  const b = body as Record<string, unknown>;
  const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
  const errors = Array.isArray(b.errors)
    ? b.errors
        .filter((e): e is Record<string, unknown> => typeof e === "object" && e !== null)
        .map((e) => {
          const fe: FieldError = { detail: str(e.detail) ?? "", code: str(e.code) ?? "invalid" };
          const pointer = str(e.pointer);
          const parameter = str(e.parameter);
          if (pointer !== undefined) fe.pointer = pointer;
          if (parameter !== undefined) fe.parameter = parameter;
          return fe;
        })
    : undefined;
  const problem: Problem = {
    type: str(b.type) ?? fallback.type,
    title: str(b.title) ?? fallback.title,
    status: typeof b.status === "number" ? b.status : response.status,
    code: str(b.code) ?? fallback.code,
  };
  const detail = str(b.detail);
  const instance = str(b.instance);
  const requestId = str(b.request_id) ?? fallback.request_id;
  if (detail !== undefined) problem.detail = detail;
  if (instance !== undefined) problem.instance = instance;
  if (requestId !== undefined) problem.request_id = requestId;
  if (errors !== undefined) problem.errors = errors;
  return problem;
}

/** Reads a problem+json response (the body is consumed) into the matching error class. */
export async function problemFromResponse(response: Response): Promise<ProblemError> {
  let body: unknown = undefined;
  try {
    body = await response.json();
  } catch {
    // A malformed body still becomes a ProblemError carrying the HTTP status.
  }
  const problem = asProblem(body, response);
  const retryAfter = retryAfterSeconds(response);
  if (problem.status === 410 && problem.code === "stream_expired") return new StreamExpiredError(problem, retryAfter);
  return new ProblemError(problem, retryAfter);
}
