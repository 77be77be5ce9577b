import type { HttpResponse } from './types';

/** The problems this package answers with, as RFC 9457 `problem+json` documents. */
export type ProblemName = 'idempotency-key-missing' | 'idempotency-key-invalid' | 'idempotency-key-in-use' | 'idempotency-key-reused' | 'json-member-repeated' | 'request-body-unread';

const TITLES: Record<ProblemName, { status: number; title: string }> = {
  'idempotency-key-missing': { status: 400, title: 'Idempotency-Key is missing' },
  'idempotency-key-invalid': { status: 400, title: 'Idempotency-Key is invalid' },
  'idempotency-key-in-use': { status: 409, title: 'A request with this Idempotency-Key is being processed' },
  'idempotency-key-reused': { status: 422, title: 'Idempotency-Key reused with a different request' },
  'json-member-repeated': { status: 400, title: 'The JSON body repeats a member' },
  'request-body-unread': { status: 415, title: 'The request body was not read' },
};

/**
 * Builds an RFC 9457 problem response (`application/problem+json`) whose `type` is
 * `typeBase` + the problem name, with extra headers such as `Retry-After`.
 */
export function problemResponse(name: ProblemName, typeBase: string, detail: string, headers: Record<string, string> = {}): HttpResponse {
  const { status, title } = TITLES[name];
  const body = Buffer.from(JSON.stringify({ type: typeBase + name, title, status, detail }), 'utf8');
  return { status, headers: { 'content-type': 'application/problem+json', ...headers }, body };
}
