/** The typed REST client: openapi-fetch over the generated schema, plus auth, request ids and problem errors. */

import createClient, { type Client, type Middleware } from "openapi-fetch";
import { isProblemResponse, problemFromResponse } from "./problem.js";
import type { paths } from "./schema.js";

export type TokenSource = () => string | null | undefined | Promise<string | null | undefined>;

export interface LiteskillClientOptions {
  /** Origin of the API, e.g. `https://liteskill.example.com` (paths already start with `/api/v1`). */
  baseUrl: string;
  /** Called before every request: return an access JWT or an `lsk_` API key (nothing: anonymous). */
  getToken?: TokenSource;
  /** A fetch implementation (tests, React Native polyfills); defaults to the global one. */
  fetch?: typeof globalThis.fetch;
}

export type LiteskillClient = Client<paths, `${string}/${string}`>;

/** A fresh random id for `X-Request-ID` and `Idempotency-Key`. */
export function randomId(): string {
  return globalThis.crypto.randomUUID();
}

/**
 * Middleware that adds `Authorization: Bearer`, an `X-Request-ID` when the caller set none, and
 * throws a typed {@link ProblemError} for any `application/problem+json` response.
 */
export function liteskillMiddleware(getToken?: TokenSource): Middleware {
  return {
    async onRequest({ request }) {
      if (getToken && !request.headers.has("authorization")) {
        const token = await getToken();
        if (token) request.headers.set("Authorization", `Bearer ${token}`);
      }
      if (!request.headers.has("x-request-id")) request.headers.set("X-Request-ID", randomId());
      return request;
    },
    async onResponse({ response }) {
      if (!response.ok && isProblemResponse(response)) throw await problemFromResponse(response.clone());
      return undefined;
    },
  };
}

/**
 * Creates the typed client. Calls resolve with `{data, response}` on success and reject with a
 * `ProblemError` (or `StreamExpiredError`) on any problem+json error response.
 */
export function createLiteskillClient(options: LiteskillClientOptions): LiteskillClient {
  const fetchImpl = options.fetch ?? globalThis.fetch;
  const client = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ""),
    // Bound late so polyfills installed after client creation and test doubles both work.
    fetch: (input: Request) => fetchImpl(input),
  });
  client.use(liteskillMiddleware(options.getToken));
  return client;
}

/** Headers for a POST that creates something or starts work: retrying with the same key is safe. */
export function idempotencyHeaders(key: string = randomId()): { "Idempotency-Key": string } {
  return { "Idempotency-Key": key };
}

/** Headers for a PATCH/DELETE guarded by the ETag of the representation the user edited (412 on mismatch). */
export function ifMatchHeaders(etag: string): { "If-Match": string } {
  return { "If-Match": etag };
}

/** The strong `ETag` of a response, to send back later with {@link ifMatchHeaders}. */
export function etagOf(response: Response): string | undefined {
  return response.headers.get("etag") ?? undefined;
}
