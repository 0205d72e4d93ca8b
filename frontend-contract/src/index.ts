/** Public surface of @liteskill/frontend-contract. */

export type { components, operations, paths } from "./schema.js";
export {
  createLiteskillClient,
  etagOf,
  idempotencyHeaders,
  ifMatchHeaders,
  liteskillMiddleware,
  randomId,
  type LiteskillClient,
  type LiteskillClientOptions,
  type TokenSource,
} from "./client.js";
export {
  isProblemResponse,
  problemFromResponse,
  ProblemError,
  PROBLEM_MEDIA_TYPE,
  StreamExpiredError,
  type FieldError,
  type Problem,
} from "./problem.js";
export { SseParser, streamRunEvents, type RunEventFrame, type SseFrame, type StreamRunEventsOptions } from "./sse.js";
export * from "./events.js";
